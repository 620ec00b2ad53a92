//! Webhook intake: authenticate, parse, store durably, then acknowledge. Nothing here
//! decides anything; a stored entry is the worker's to process.

use std::sync::Arc;

use serde_json::json;
use tracing::{info, warn};
use uuid::Uuid;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{ApiError, Request, json};
use crate::domain::RecordId;
use crate::engine::Engine;
use crate::machine::{Event, JobId};
use crate::metrics::{WebhookLabels, WebhookOutcome};
use crate::store::{Accepted, NewEntry, Payload, Source};
use crate::webhook::auth::{
    GOAPI_SECRET_HEADER, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, verify_shared_secret,
};
use crate::webhook::callback::{CallbackEndpoint, CallbackParams};
use crate::webhook::goapi::parse_goapi;
use crate::webhook::nca::{self, parse_nca};

/// Headers worth keeping with a stored webhook (never the secret itself).
const KEPT_HEADERS: [&str; 5] = [
    "content-type",
    "user-agent",
    HEADER_ID,
    HEADER_TIMESTAMP,
    "x-forwarded-for",
];

fn kept_headers(req: &Request) -> String {
    let map: serde_json::Map<String, serde_json::Value> = KEPT_HEADERS
        .iter()
        .filter_map(|h| req.header(h).map(|v| ((*h).to_owned(), json!(v))))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The job a callback URL we signed names (`job`, our job id). Every URL we hand out carries
/// `job` and `token` together, so a `job` that arrives without its token is refused rather
/// than trusted: whoever dropped the token could have changed the job.
fn named_job(req: &Request, verified: bool) -> Result<Option<JobId>, ApiError> {
    let Some(job) = req.param("job") else {
        return Ok(None);
    };
    if req.param("token").is_none_or(|t| t.is_empty()) {
        return Err(ApiError::unauthorized(
            "this callback URL was issued with a token and arrived without one",
        ));
    }
    if !verified {
        return Ok(None);
    }
    Uuid::parse_str(&job)
        .map(|u| Some(JobId(u)))
        .map_err(|_| ApiError::bad_request("invalid_job", "job must be a job id (a UUID)"))
}

fn video_param(req: &Request, names: &[&str]) -> Result<RecordId, ApiError> {
    let raw = names
        .iter()
        .find_map(|n| req.param(n))
        .ok_or_else(|| ApiError::bad_request("missing_video_id", "video_id is required"))?;
    RecordId::parse(&raw).map_err(|_| {
        ApiError::bad_request(
            "invalid_video_id",
            "video_id must be an Airtable record id (rec followed by 14 letters or digits)",
        )
    })
}

fn body_text(req: &Request) -> Result<String, ApiError> {
    String::from_utf8(req.body.to_vec())
        .map_err(|_| ApiError::bad_request("invalid_json", "body is not UTF-8 JSON"))
}

/// GoAPI's own secret header, or a relay's Standard Webhooks signature. With neither
/// configured (only possible in --dev) anything is let in, and said so in the log.
fn authenticate_goapi(engine: &Engine, req: &Request) -> Result<(), ApiError> {
    let s = &engine.settings;
    if let Some(sig) = req.header(HEADER_SIGNATURE) {
        let Some(verifier) = &engine.relay else {
            return Err(ApiError::unauthorized(
                "a signed webhook arrived but no WEBHOOK_RELAY_SECRETS is configured",
            ));
        };
        let id = req.header(HEADER_ID).unwrap_or_default();
        let ts = req.header(HEADER_TIMESTAMP).unwrap_or_default();
        return verifier
            .verify(id, ts, sig, &req.body, crate::clock::now())
            .map_err(|e| ApiError::unauthorized(e.to_string()));
    }
    match &s.goapi_webhook_secret {
        Some(secret) => verify_shared_secret(req.header(GOAPI_SECRET_HEADER), secret)
            .map_err(|e| ApiError::unauthorized(e.to_string())),
        None if s.relay_secrets.is_empty() && s.dev => Ok(()),
        None => Err(ApiError::unauthorized(
            "webhooks must be signed by the configured relay (webhook-signature)",
        )),
    }
}

fn accepted_reply(engine: &Engine, source: Source, a: Accepted) -> Response {
    match a {
        Accepted::New(id) => {
            engine
                .metrics
                .webhooks
                .get_or_create(&WebhookLabels {
                    service: source,
                    outcome: WebhookOutcome::Accepted,
                })
                .inc();
            json(
                StatusCode::ACCEPTED,
                &json!({"status": "accepted", "event_id": id}),
            )
        }
        Accepted::Duplicate { of, entry } => {
            engine
                .metrics
                .webhooks
                .get_or_create(&WebhookLabels {
                    service: source,
                    outcome: WebhookOutcome::Duplicate,
                })
                .inc();
            json(
                StatusCode::OK,
                &json!({"status": "duplicate", "event_id": entry, "duplicate_of": of}),
            )
        }
    }
}

fn reject(engine: &Engine, source: Source, e: ApiError) -> ApiError {
    engine
        .metrics
        .webhooks
        .get_or_create(&WebhookLabels {
            service: source,
            outcome: WebhookOutcome::Refused(e.code),
        })
        .inc();
    warn!(service = %source, code = e.code, status = e.status.as_u16(), "webhook rejected");
    e
}

pub(crate) async fn goapi(engine: &Arc<Engine>, req: &Request) -> Result<Response, ApiError> {
    let source = Source::Goapi;
    let result = async {
        // `target_id` is the production pipeline's older URL shape
        // (?job_id=<job record>&operation=generate_music_only&target_id=<video record>).
        let video = video_param(req, &["video_id", "target_id"])?;
        let pipeline_job = match req.param("job_id") {
            Some(job) => Some(RecordId::parse(&job).map_err(|_| {
                ApiError::bad_request("invalid_job_id", "job_id must be an Airtable record id")
            })?),
            None => None,
        };
        authenticate_goapi(engine, req)?;
        named_job(req, false)?;
        // A callback URL we signed must not be altered, even though GoAPI authenticates
        // with its secret; URLs without a token (configured elsewhere) rely on the secret.
        let signed = req.param("token").is_some();
        if let Some(token) = req.param("token") {
            let params = CallbackParams {
                video_id: Some(video.to_string()),
                operation: req.param("operation"),
                job: req.param("job"),
                token: Some(token),
            };
            engine
                .signer
                .verify(CallbackEndpoint::Goapi, &params)
                .map_err(|e| ApiError::unauthorized(e.to_string()))?;
        }
        let text = body_text(req)?;
        let mut hook = parse_goapi(&req.body)
            .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
        // Only a URL that names a job can bind the task to a job that has no task id yet:
        // one we signed, or the pipeline's own (`job_id`, its Jobs record, authenticated by
        // GoAPI's secret like the rest of the call).
        hook.update.named_job = named_job(req, signed)?
            .or_else(|| pipeline_job.as_ref().map(JobId::for_record));
        let dedupe_key = hook.dedupe_key(req.header(HEADER_ID), &req.body);
        let payload = if hook.is_music {
            Payload::Event {
                event: Event::GoapiTaskUpdate(hook.update.clone()),
            }
        } else {
            Payload::NotMusic {
                task_id: hook.task_id.clone(),
                description: format!(
                    "model {}, task type {}",
                    hook.model.as_deref().unwrap_or("?"),
                    hook.task_type.as_deref().unwrap_or("?")
                ),
            }
        };
        let entry = NewEntry {
            event_id: crate::store::new_event_id(),
            video_id: video.clone(),
            source,
            endpoint: "/webhooks/goapi".into(),
            dedupe_key: Some(dedupe_key),
            raw_body: text,
            headers: kept_headers(req),
            received_at: crate::clock::now(),
            payload,
        };
        let accepted = engine.enqueue(entry).await?;
        info!(video_id = %video, task_id = %hook.task_id, status = %hook.update.status, ?accepted, "GoAPI webhook stored");
        Ok(accepted)
    }
    .await;
    match result {
        Ok(a) => Ok(accepted_reply(engine, source, a)),
        Err(e) => Err(reject(engine, source, e)),
    }
}

pub(crate) async fn nca(engine: &Arc<Engine>, req: &Request) -> Result<Response, ApiError> {
    let source = Source::Nca;
    let result = async {
        let video = video_param(req, &["video_id"])?;
        let operation = req.param("operation");
        if operation.as_deref() != Some("add_music") {
            return Err(ApiError::bad_request(
                "invalid_operation",
                "operation must be add_music",
            ));
        }
        // NCA signs nothing: the token in the URL we handed out is the authentication.
        let params = CallbackParams {
            video_id: Some(video.to_string()),
            operation,
            job: req.param("job"),
            token: req.param("token"),
        };
        let verified = engine.signer.verify(CallbackEndpoint::Nca, &params);
        // Development mode lets token-less URLs in (the reference handler's shape, which
        // names no job); a token that is present must always be right.
        let dev_exception = engine.settings.dev && params.token.is_none() && params.job.is_none();
        match &verified {
            Err(e) if !dev_exception => return Err(ApiError::unauthorized(e.to_string())),
            _ => {}
        }
        let text = body_text(req)?;
        let mut hook =
            parse_nca(&req.body).map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
        hook.update.named_job = named_job(req, verified.is_ok())?;
        let entry = NewEntry {
            event_id: crate::store::new_event_id(),
            video_id: video.clone(),
            source,
            endpoint: "/webhooks/nca-toolkit".into(),
            dedupe_key: Some(nca::dedupe_key(&video, &req.body)),
            raw_body: text,
            headers: kept_headers(req),
            received_at: crate::clock::now(),
            payload: Payload::Event {
                event: Event::NcaJobFinished(hook.update.clone()),
            },
        };
        let accepted = engine.enqueue(entry).await?;
        info!(video_id = %video, ?accepted, "NCA callback stored");
        Ok(accepted)
    }
    .await;
    match result {
        Ok(a) => Ok(accepted_reply(engine, source, a)),
        Err(e) => Err(reject(engine, source, e)),
    }
}
