//! State inspection and operations: what people who run reelstate use every day.

use std::sync::Arc;

use serde_json::{Value, json};
use uuid::Uuid;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{ApiError, Request, json};
use crate::domain::RecordId;
use crate::engine::{CommandOutcome, Engine};
use crate::machine::{Event, JobId, RetryFrom, next_events};
use crate::store::{EventQuery, InboxEntry, OutboxEntry};

fn record_id(id: &str) -> Result<RecordId, ApiError> {
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

pub async fn video(engine: &Arc<Engine>, id: &str) -> Result<Response, ApiError> {
    let video = record_id(id)?;
    let Some(s) = engine.store.snapshot(&video).await? else {
        return Err(ApiError::not_found(format!(
            "reelstate has not handled video {video} yet"
        )));
    };
    let history = engine.store.history(&video).await?;
    let effects = engine.store.effects_of(&video).await?;
    let mut jobs = Vec::new();
    for j in &s.jobs {
        let record = engine.store.job_location(j.id).await?.and_then(|(_, r)| r);
        let attempts: u32 = effects
            .iter()
            .filter(|e| effect_job(e) == Some(j.id))
            .map(|e| e.attempts)
            .sum();
        let mut body = job_json(j, record.as_ref());
        body["attempts"] = json!(attempts);
        jobs.push(body);
    }
    let open: Vec<Value> = effects
        .iter()
        .filter(|e| e.state != "done")
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

fn effect_job(e: &OutboxEntry) -> Option<JobId> {
    use crate::machine::Effect::*;
    match &e.effect {
        CreateJob { job, .. }
        | UpdateJob { job, .. }
        | CreateGoapiTask { job, .. }
        | SubmitNcaMix { job, .. }
        | CheckTrack { job, .. } => Some(*job),
        RecordWebhookOutcome { job, .. } => *job,
        UpdateVideo(_) => None,
    }
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
        .filter(|e| effect_job(e) == Some(job))
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
        "error": j.error,
        "created_at": j.created_at,
        "ended_at": j.ended_at,
    })
}

pub(super) const OUTCOMES: [&str; 7] = [
    "applied",
    "recorded",
    "duplicate",
    "stale",
    "unmatched",
    "rejected",
    "failed",
];

pub async fn events(engine: &Arc<Engine>, req: &Request) -> Result<Response, ApiError> {
    let outcome = req.param("outcome");
    if let Some(o) = outcome.as_deref().filter(|o| !OUTCOMES.contains(o)) {
        return Err(ApiError::bad_request(
            "invalid_outcome",
            format!("outcome {o:?} is not one of {}", OUTCOMES.join(", ")),
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

/// Runs a stored webhook through the machine again, as a new entry. Safe: the machine
/// sees a duplicate for what was already applied.
pub async fn replay(engine: &Arc<Engine>, id: &str) -> Result<Response, ApiError> {
    let id = uuid(id, "invalid_event_id")?;
    let Some(e) = engine.store.entry(id).await? else {
        return Err(ApiError::not_found(format!("no event {id}")));
    };
    let crate::store::Payload::Event { event } = e.payload.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_replayable",
            "only events that went through the machine can be replayed",
        ));
    };
    let (event_id, answer) = engine
        .command(
            e.video_id.clone(),
            event,
            &format!("/events/{id}/replay"),
            e.raw_body.clone(),
        )
        .await?;
    Ok(command_reply(event_id, answer))
}

pub async fn retry_effect(engine: &Arc<Engine>, id: &str) -> Result<Response, ApiError> {
    use crate::machine::Effect;
    let Some(failed) = engine
        .store
        .outbox_entry(id)
        .await?
        .filter(|e| e.state == "failed")
    else {
        return Err(ApiError::not_found(format!("no failed effect {id}")));
    };
    let conflict = |message: String| ApiError::new(StatusCode::CONFLICT, "not_replayable", message);
    if matches!(
        failed.effect,
        Effect::CreateGoapiTask { .. } | Effect::SubmitNcaMix { .. }
    ) {
        // Its job already failed through the machine; a new attempt is a new job.
        return Err(conflict(format!(
            "this effect started a job that has failed; redrive the stage with POST /videos/{}/retry",
            failed.video_id
        )));
    }
    // A later write of the same record has been applied: replaying this older one would
    // put stale values back.
    let later = engine.store.effects_of(&failed.video_id).await?;
    let same_record = |e: &Effect| match (&failed.effect, e) {
        (Effect::UpdateVideo(_), Effect::UpdateVideo(_)) => true,
        (
            Effect::CreateJob { job: a, .. } | Effect::UpdateJob { job: a, .. },
            Effect::CreateJob { job: b, .. } | Effect::UpdateJob { job: b, .. },
        ) => a == b,
        _ => false,
    };
    if later
        .iter()
        .any(|e| e.seq > failed.seq && e.state == "done" && same_record(&e.effect))
    {
        return Err(conflict(
            "a later write of the same record has been applied since; nothing to replay".into(),
        ));
    }
    if engine.store.requeue_effect(id).await? {
        engine.wake_executor.notify_one();
        Ok(json(
            StatusCode::ACCEPTED,
            &json!({"status": "requeued", "effect_id": id}),
        ))
    } else {
        Err(ApiError::not_found(format!("no failed effect {id}")))
    }
}

pub async fn music(engine: &Arc<Engine>, id: &str, req: &Request) -> Result<Response, ApiError> {
    let video = record_id(id)?;
    let prompt = if req.body.is_empty() {
        None
    } else {
        let v: Value = serde_json::from_slice(&req.body)
            .map_err(|_| ApiError::bad_request("invalid_json", "body must be JSON"))?;
        match v.get("prompt") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.len() <= 2000 => Some(s.clone()),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_prompt",
                    "prompt must be a string of at most 2000 characters",
                ));
            }
        }
    };
    let body = String::from_utf8_lossy(&req.body).into_owned();
    let (event_id, answer) = engine
        .command(
            video,
            Event::MusicRequested { prompt },
            "/videos/music",
            body,
        )
        .await?;
    Ok(command_reply(event_id, answer))
}

pub async fn retry(engine: &Arc<Engine>, id: &str, req: &Request) -> Result<Response, ApiError> {
    let video = record_id(id)?;
    let from = retry_from(&req.body)?;
    let body = String::from_utf8_lossy(&req.body).into_owned();
    let (event_id, answer) = engine
        .command(video, Event::RetryRequested { from }, "/videos/retry", body)
        .await?;
    Ok(command_reply(event_id, answer))
}

/// A retry's body: none, or `{"from": "music" | "mix"}` (`null` is none). Anything else is
/// refused rather than read as a plain retry: a misspelt key must not decide what is paid
/// for.
fn retry_from(body: &[u8]) -> Result<Option<RetryFrom>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request("invalid_json", "body must be JSON"))?;
    let Value::Object(fields) = v else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "body must be a JSON object such as {\"from\": \"music\"}",
        ));
    };
    if let Some(other) = fields.keys().find(|k| k.as_str() != "from") {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("unknown key {other:?}: a retry takes only \"from\""),
        ));
    }
    match fields.get("from") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "music" => Ok(Some(RetryFrom::Music)),
        Some(Value::String(s)) if s == "mix" => Ok(Some(RetryFrom::Mix)),
        Some(_) => Err(ApiError::bad_request(
            "invalid_from",
            "from must be \"music\" (new music) or \"mix\" (mix the video's music again)",
        )),
    }
}

fn command_reply(event_id: Uuid, answer: Option<CommandOutcome>) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_body_names_where_to_start_or_nothing() {
        for (body, want) in [
            ("", None),
            ("  \n", None),
            ("{}", None),
            (r#"{"from": null}"#, None),
            (r#"{"from": "music"}"#, Some(RetryFrom::Music)),
            (r#"{"from": "mix"}"#, Some(RetryFrom::Mix)),
        ] {
            assert_eq!(retry_from(body.as_bytes()).ok(), Some(want), "{body:?}");
        }
    }

    #[test]
    fn a_retry_body_that_says_anything_else_is_refused() {
        for (body, code) in [
            (r#"{"from": "lyrics"}"#, "invalid_from"),
            (r#"{"from": "Music"}"#, "invalid_from"),
            (r#"{"from": 1}"#, "invalid_from"),
            (r#"{"from": ["music"]}"#, "invalid_from"),
            (r#"{"form": "music"}"#, "invalid_body"),
            (r#"{"from": "music", "prompt": "x"}"#, "invalid_body"),
            (r#"["music"]"#, "invalid_body"),
            (r#""music""#, "invalid_body"),
            ("from=music", "invalid_json"),
            (r#"{"from": "music""#, "invalid_json"),
        ] {
            let e = retry_from(body.as_bytes()).expect_err(body);
            assert_eq!((e.status.as_u16(), e.code), (400, code), "{body:?}");
        }
    }
}
