//! State inspection and operations: what people who run reelstate use every day.

use std::sync::Arc;

use serde_json::{Value, json};
use uuid::Uuid;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{ApiError, Request, json};
use crate::commands::{self, CommandOutcome, Submitted};
use crate::domain::RecordId;
use crate::engine::Engine;
use crate::machine::{JobId, Snapshot, next_events};
use crate::store::{EffectState, EntryOutcome, EventQuery, HistoryRow, InboxEntry, OutboxEntry};

/// A video id from a path; every route answers one that is not a record id the same way.
pub(super) fn record_id(id: &str) -> Result<RecordId, ApiError> {
    RecordId::parse(id).map_err(|_| {
        ApiError::bad_request(
            "invalid_video_id",
            "expected an Airtable record id (rec followed by 14 letters or digits)",
        )
    })
}

fn uuid(id: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::bad_request(what, "expected a UUID"))
}

fn effect_json(e: &OutboxEntry) -> Value {
    json!({
        "effect_id": e.effect_id,
        "kind": e.effect.kind(),
        "state": e.state,
        "attempts": e.attempts,
        "next_attempt_at": e.next_attempt_at,
        "last_error": e.last_error,
        "event_id": e.event_id,
        "effect": e.effect,
    })
}

fn entry_json(e: &InboxEntry) -> Value {
    let (kind, detail) = match &e.payload {
        crate::store::Payload::Event { event } => (event.label().to_owned(), json!(event)),
        crate::store::Payload::NotMusic {
            task_id,
            description,
        } => (
            "not_music".to_owned(),
            json!({"task_id": task_id, "description": description}),
        ),
        crate::store::Payload::Duplicate { of } => ("duplicate".to_owned(), json!({"of": of})),
    };
    json!({
        "event_id": e.event_id,
        "seq": e.seq,
        "video_id": e.video_id,
        "source": e.source,
        "endpoint": e.endpoint,
        "received_at": e.received_at,
        "event": kind,
        "detail": detail,
        "state": e.state,
        "outcome": e.outcome,
        "note": e.note,
        "job_id": e.job.map(|j| j.to_string()),
    })
}

/// The video named in the path, as the admin API and the operator page show it: its id,
/// snapshot, transitions and effects; not found until the engine has handled it.
pub(super) async fn handled(
    engine: &Engine,
    id: &str,
) -> Result<(RecordId, Snapshot, Vec<HistoryRow>, Vec<OutboxEntry>), ApiError> {
    let video = record_id(id)?;
    let Some(snapshot) = engine.store.snapshot(&video).await? else {
        return Err(ApiError::not_found(format!(
            "reelstate has not handled video {video} yet"
        )));
    };
    let history = engine.store.history(&video).await?;
    let effects = engine.store.effects_of(&video).await?;
    Ok((video, snapshot, history, effects))
}

pub async fn video(engine: &Arc<Engine>, id: &str) -> Result<Response, ApiError> {
    let (video, s, history, effects) = handled(engine, id).await?;
    let mut jobs = Vec::new();
    for j in &s.jobs {
        let record = engine.store.job_location(j.id).await?.and_then(|(_, r)| r);
        let attempts: u32 = effects
            .iter()
            .filter(|e| e.effect.job() == Some(j.id))
            .map(|e| e.attempts)
            .sum();
        let mut body = job_json(j, record.as_ref());
        body["attempts"] = json!(attempts);
        jobs.push(body);
    }
    let open: Vec<Value> = effects
        .iter()
        .filter(|e| e.state != EffectState::Done)
        .map(effect_json)
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "video_id": video,
            "status": s.video.status.name(),
            "music": s.video.music,
            "final_video": s.video.final_video,
            "source_video": s.video.source_video,
            "error_details": s.video.error_details,
            "retries": s.video.retries,
            "jobs": jobs,
            "history": history,
            "effects": open,
            "accepts_next": next_events(&s, engine.policy()),
        }),
    ))
}

pub async fn job(engine: &Arc<Engine>, id: &str) -> Result<Response, ApiError> {
    let job = JobId(uuid(id, "invalid_job_id")?);
    let Some((video, record)) = engine.store.job_location(job).await? else {
        return Err(ApiError::not_found(format!("no job {job}")));
    };
    let snapshot = engine.store.snapshot(&video).await?;
    let Some(j) = snapshot.as_ref().and_then(|s| s.job(job)) else {
        return Err(ApiError::not_found(format!("no job {job}")));
    };
    let effects: Vec<Value> = engine
        .store
        .effects_of(&video)
        .await?
        .iter()
        .filter(|e| e.effect.job() == Some(job))
        .map(effect_json)
        .collect();
    let mut body = job_json(j, record.as_ref());
    body["video_id"] = json!(video);
    body["effects"] = json!(effects);
    Ok(json(StatusCode::OK, &body))
}

fn job_json(j: &crate::machine::Job, record: Option<&RecordId>) -> Value {
    json!({
        "job_id": j.id.to_string(),
        "record_id": record,
        "type": j.kind.name(),
        "status": j.status,
        "external_id": j.external_id,
        "submission_id": j.submission_id,
        "resubmissions": j.resubmissions,
        "error": j.error,
        "created_at": j.created_at,
        "ended_at": j.ended_at,
    })
}

/// What the event log can be filtered on: every outcome, and `failed` (events with an
/// effect that failed for good).
pub(super) fn outcomes() -> Vec<&'static str> {
    use strum::IntoEnumIterator;
    EntryOutcome::iter()
        .map(|o| -> &'static str { o.into() })
        .chain(["failed"])
        .collect()
}

pub async fn events(engine: &Arc<Engine>, req: &Request) -> Result<Response, ApiError> {
    let outcome = req.param("outcome");
    let outcomes = outcomes();
    if let Some(o) = outcome.as_deref().filter(|o| !outcomes.contains(o)) {
        return Err(ApiError::bad_request(
            "invalid_outcome",
            format!("outcome {o:?} is not one of {}", outcomes.join(", ")),
        ));
    }
    let video = req.param("video_id").map(|v| record_id(&v)).transpose()?;
    let before_seq = req
        .param("before")
        .map(|b| b.parse::<i64>())
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid_cursor", "before must be an integer"))?;
    let limit = req
        .param("limit")
        .map(|l| l.parse::<u32>())
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid_limit", "limit must be an integer"))?
        .unwrap_or(50)
        .clamp(1, 500);
    let entries = engine
        .store
        .events(EventQuery {
            outcome,
            video,
            source: None,
            before_seq,
            limit,
        })
        .await?;
    let next = (entries.len() as u32 == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(json(
        StatusCode::OK,
        &json!({
            "events": entries.iter().map(entry_json).collect::<Vec<_>>(),
            "next_before": next,
        }),
    ))
}

pub async fn event(engine: &Arc<Engine>, id: &str) -> Result<Response, ApiError> {
    let id = uuid(id, "invalid_event_id")?;
    let Some(e) = engine.store.entry(id).await? else {
        return Err(ApiError::not_found(format!("no event {id}")));
    };
    let mut body = entry_json(&e);
    body["raw_payload"] = json!(e.raw_body);
    Ok(json(StatusCode::OK, &body))
}

pub async fn replay(engine: &Arc<Engine>, id: &str) -> Result<Response, ApiError> {
    let id = uuid(id, "invalid_event_id")?;
    let submitted = commands::Replay::apply_to(engine, id).await?;
    Ok(command_reply(submitted))
}

pub async fn retry_effect(engine: &Arc<Engine>, id: &str) -> Result<Response, ApiError> {
    let requeued = commands::RetryEffect::apply_to(engine, id).await?;
    Ok(json(
        StatusCode::ACCEPTED,
        &json!({"status": "requeued", "effect_id": requeued.effect_id}),
    ))
}

pub async fn music(engine: &Arc<Engine>, id: &str, req: &Request) -> Result<Response, ApiError> {
    let command = commands::Music::parse(record_id(id)?, &req.body)?;
    Ok(command_reply(command.apply(engine).await?))
}

pub async fn retry(engine: &Arc<Engine>, id: &str, req: &Request) -> Result<Response, ApiError> {
    let command = commands::Retry::parse(record_id(id)?, &req.body)?;
    Ok(command_reply(command.apply(engine).await?))
}

fn command_reply(Submitted { event_id, answer }: Submitted) -> Response {
    match answer {
        Some(CommandOutcome::Done {
            outcome,
            status,
            job,
        }) => json(
            StatusCode::ACCEPTED,
            &json!({"status": outcome, "event_id": event_id, "video_status": status,
                    "job_id": job.map(|j| j.to_string())}),
        ),
        Some(CommandOutcome::Rejected(reason)) => {
            ApiError::new(StatusCode::CONFLICT, "rejected", reason).into_response()
        }
        Some(CommandOutcome::VideoNotFound) => {
            ApiError::not_found("no such video in the Videos table").into_response()
        }
        None => json(
            StatusCode::ACCEPTED,
            &json!({"status": "queued", "event_id": event_id}),
        ),
    }
}
