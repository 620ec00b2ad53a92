//! The operator's commands over HTTP: each parsed by its `commands` type, applied through
//! the worker, and its answer shaped as the admin API gives it.

use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;

use super::inspect::{record_id, uuid};
use super::{ApiError, Request, json};
use crate::commands::{self, CommandOutcome, Submitted};
use crate::engine::Engine;

pub(crate) async fn replay(engine: &Arc<Engine>, id: &str) -> Result<Response, ApiError> {
    let id = uuid(id, "invalid_event_id")?;
    let submitted = commands::Replay::apply_to(engine, id).await?;
    Ok(command_reply(submitted))
}

pub(crate) async fn retry_effect(engine: &Arc<Engine>, id: &str) -> Result<Response, ApiError> {
    let requeued = commands::RetryEffect::apply_to(engine, id).await?;
    Ok(json(
        StatusCode::ACCEPTED,
        &json!({"status": "requeued", "effect_id": requeued.effect_id}),
    ))
}

pub(crate) async fn music(
    engine: &Arc<Engine>,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let command = commands::Music::parse(record_id(id)?, &req.body)?;
    Ok(command_reply(command.apply(engine).await?))
}

pub(crate) async fn retry(
    engine: &Arc<Engine>,
    id: &str,
    req: &Request,
) -> Result<Response, ApiError> {
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
            &json!({"status": outcome.map_or("", <&str>::from),
                    "event_id": event_id,
                    "video_status": status.as_ref().map_or("", |s| s.name()),
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
