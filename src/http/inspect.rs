//! State inspection: a video, its jobs and its events as the admin API and the operator
//! page read them (the commands that change them are `commands.rs`).

use std::sync::Arc;

use serde_json::{Value, json};
use uuid::Uuid;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{ApiError, Request, json};
use crate::domain::RecordId;
use crate::engine::Engine;
use crate::machine::{JobId, Snapshot, next_events};
use crate::store::{
    EffectState, EventFilter, EventQuery, HistoryRow, InboxEntry, OutboxEntry, StuckCutoffs,
    VideoCursor, VideoQuery, VideoRow,
};

/// A video id from a path; every route answers one that is not a record id the same way.
pub(super) fn record_id(id: &str) -> Result<RecordId, ApiError> {
    RecordId::parse(id).map_err(|_| {
        ApiError::bad_request(
            "invalid_video_id",
            "expected an Airtable record id (rec followed by 14 letters or digits)",
        )
    })
}

pub(super) fn uuid(id: &str, what: &'static str) -> Result<Uuid, ApiError> {
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

pub(crate) async fn video(engine: &Arc<Engine>, id: &str) -> Result<Response, ApiError> {
    let (video, s, history, effects) = handled(engine, id).await?;
    let attempts = service_attempts(&effects);
    let paid = engine.store.paid_calls(Some(&video)).await?;
    let mut jobs = Vec::new();
    for j in &s.jobs {
        let record = engine.store.job_location(j.id).await?.and_then(|(_, r)| r);
        let mut body = job_json(j, record.as_ref());
        body["attempts"] = json!(attempts.get(&j.id).copied().unwrap_or(0));
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
            "paid_calls": paid,
            "jobs": jobs,
            "history": history,
            "effects": open,
            "accepts_next": next_events(&s, engine.policy()),
        }),
    ))
}

/// The videos list's filters from a query string, shared by `GET /videos` and its page.
/// Empty parameters count as absent (a page's form sends every field). `default_limit`
/// applies when `limit` is absent.
pub(super) fn video_query(
    engine: &Engine,
    req: &Request,
    default_limit: u32,
) -> Result<VideoQuery, ApiError> {
    let param = |name: &str| {
        req.param(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let flag = |name: &str| -> Result<bool, ApiError> {
        match param(name).as_deref() {
            None | Some("0") | Some("false") => Ok(false),
            Some("1") | Some("true") => Ok(true),
            Some(other) => Err(ApiError::bad_request(
                "invalid_flag",
                format!("{name} must be 1 or 0, not {other:?}"),
            )),
        }
    };
    let now = crate::clock::now();
    let status = param("status");
    if let Some(s) = status.as_deref().filter(|s| s.len() > 100) {
        return Err(ApiError::bad_request(
            "invalid_status",
            format!(
                "a status of {} characters is longer than any",
                s.chars().count()
            ),
        ));
    }
    let attention = flag("attention")?;
    let stuck = (attention || flag("stuck")?).then(|| {
        // A deadline too long to count back from now makes nothing stuck.
        let cutoff = |d: std::time::Duration| {
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
        };
        StuckCutoffs {
            goapi: cutoff(engine.settings.goapi_deadline),
            nca: cutoff(engine.settings.nca_deadline),
        }
    });
    let limit = param("limit")
        .map(|l| l.parse::<u32>())
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid_limit", "limit must be an integer"))?
        .unwrap_or(default_limit)
        .clamp(1, 500);
    let after = param("before")
        .map(|b| {
            VideoCursor::decode(&b).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_cursor",
                    "before must be a next_before value from an earlier page",
                )
            })
        })
        .transpose()?;
    let job_type = param("job_type");
    let job_status = param("job_status");
    for (name, value) in [("job_type", &job_type), ("job_status", &job_status)] {
        if value.as_deref().is_some_and(|v| v.len() > 100) {
            return Err(ApiError::bad_request(
                "invalid_job_filter",
                format!("{name} is longer than any job type or status"),
            ));
        }
    }
    Ok(VideoQuery {
        status,
        job_type,
        job_status,
        failed: attention,
        stuck,
        changed_before: param("older_than")
            .map(|v| age_limit("older_than", &v, now))
            .transpose()?,
        changed_since: param("newer_than")
            .map(|v| age_limit("newer_than", &v, now))
            .transpose()?,
        search: param("q"),
        after,
        limit,
    })
}

/// `older_than` / `newer_than`: an age (`90s`, `15m`, `2h`, `7d`), counted back from
/// `now`, or an RFC 3339 time.
fn age_limit(
    name: &str,
    value: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let invalid = || {
        ApiError::bad_request(
            "invalid_age",
            format!(
                "{name} must be an age such as 90s, 15m, 2h or 7d, or an RFC 3339 time, not {value:?}"
            ),
        )
    };
    let (n, secs) = [('s', 1), ('m', 60), ('h', 3600), ('d', 86_400)]
        .into_iter()
        .find_map(|(unit, secs)| value.strip_suffix(unit).map(|n| (n, secs)))
        .ok_or_else(invalid)?;
    // Digits only: no sign, so no age in the future.
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let n: i64 = n.parse().map_err(|_| invalid())?;
    n.checked_mul(secs)
        .and_then(chrono::Duration::try_seconds)
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(invalid)
}

pub(super) fn video_row_json(v: &VideoRow) -> Value {
    json!({
        "video_id": v.video_id,
        "status": v.status,
        "error_details": v.error_details,
        "retries": v.retries,
        "updated_at": v.updated_at,
        "external_ids": v.external_ids,
        "waiting_since": v.waiting_since,
    })
}

pub(crate) async fn videos(engine: &Arc<Engine>, req: &Request) -> Result<Response, ApiError> {
    let q = video_query(engine, req, 50)?;
    let limit = q.limit;
    let rows = engine.store.videos(q).await?;
    let next = (rows.len() as u32 == limit)
        .then(|| rows.last().map(|v| v.cursor().encode()))
        .flatten();
    Ok(json(
        StatusCode::OK,
        &json!({
            "videos": rows.iter().map(video_row_json).collect::<Vec<_>>(),
            "next_before": next,
        }),
    ))
}

/// A job's attempts are its calls to its service (creating the GoAPI task, submitting the
/// NCA mix, checking that its track is still there), re-submissions included. Its Airtable
/// writes are the engine's own bookkeeping: counted in, a job that never failed would show
/// seven or eight.
pub(super) fn service_attempts(effects: &[OutboxEntry]) -> std::collections::HashMap<JobId, u32> {
    let mut attempts = std::collections::HashMap::new();
    for e in effects {
        if let crate::machine::Effect::CreateGoapiTask { job, .. }
        | crate::machine::Effect::SubmitNcaMix { job, .. }
        | crate::machine::Effect::CheckTrack { job, .. } = &e.effect
        {
            *attempts.entry(*job).or_default() += e.attempts;
        }
    }
    attempts
}

pub(crate) async fn job(engine: &Arc<Engine>, id: &str) -> Result<Response, ApiError> {
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

/// The event log's filter of a query string's `outcome`; a value no filter spells is the
/// client's mistake.
pub(super) fn event_filter(outcome: Option<&str>) -> Result<Option<EventFilter>, ApiError> {
    outcome
        .map(|o| {
            o.parse::<EventFilter>()
                .map_err(|e| ApiError::bad_request("invalid_outcome", e.to_string()))
        })
        .transpose()
}

pub(crate) async fn events(engine: &Arc<Engine>, req: &Request) -> Result<Response, ApiError> {
    let filter = event_filter(req.param("outcome").as_deref())?;
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
            filter,
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

pub(crate) async fn event(engine: &Arc<Engine>, id: &str) -> Result<Response, ApiError> {
    let id = uuid(id, "invalid_event_id")?;
    let Some(e) = engine.store.entry(id).await? else {
        return Err(ApiError::not_found(format!("no event {id}")));
    };
    let mut body = entry_json(&e);
    body["raw_payload"] = json!(e.raw_body);
    Ok(json(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::age_limit;

    #[test]
    fn ages_count_back_from_now_and_times_are_taken_as_given() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
            .unwrap()
            .to_utc();
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        assert_eq!(
            age_limit("a", "90s", now).unwrap(),
            at("2026-12-07T11:58:30Z")
        );
        assert_eq!(
            age_limit("a", "15m", now).unwrap(),
            at("2026-12-07T11:45:00Z")
        );
        assert_eq!(
            age_limit("a", "2h", now).unwrap(),
            at("2026-12-07T10:00:00Z")
        );
        assert_eq!(
            age_limit("a", "7d", now).unwrap(),
            at("2026-11-30T12:00:00Z")
        );
        assert_eq!(
            age_limit("a", "2026-12-01T08:00:00+02:00", now).unwrap(),
            at("2026-12-01T06:00:00Z")
        );
        for bad in [
            "",
            "h",
            "5",
            "5w",
            "-5m",
            "+5m",
            "1.5h",
            "5é",
            "é",
            "99999999999999999d",
            "soon",
        ] {
            let e = age_limit("older_than", bad, now).unwrap_err();
            assert_eq!(e.code, "invalid_age", "{bad:?}");
        }
    }
}
