//! Health, readiness, metrics and the admin token check.

use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{ApiError, Request, json};
use crate::engine::Engine;

pub fn healthz() -> Response {
    json(StatusCode::OK, &json!({"status": "up"}))
}

pub async fn readyz(engine: &Arc<Engine>) -> Result<Response, ApiError> {
    let store = match engine.store.ping().await {
        Ok(()) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    };
    let airtable = match engine.schema_problems().await {
        None => json!({"configured": false}),
        Some(Ok(problems)) => {
            json!({"configured": true, "ok": problems.is_empty(), "problems": problems})
        }
        Some(Err(e)) => json!({"configured": true, "ok": false, "error": e}),
    };
    let ok = store["ok"] == json!(true) && airtable["ok"] != json!(false);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(json(
        status,
        &json!({"status": if ok {"ready"} else {"not_ready"}, "store": store, "airtable": airtable}),
    ))
}

pub async fn metrics(engine: &Arc<Engine>) -> Result<Response, ApiError> {
    let d = engine.store.depths().await?;
    let a = engine
        .airtable
        .as_ref()
        .map(|a| a.stats())
        .unwrap_or_default();
    let text = engine.metrics.render(&[
        (
            "reelstate_airtable_requests_total",
            "HTTP requests sent to Airtable (every attempt)",
            a.requests as f64,
        ),
        (
            "reelstate_airtable_rate_limited_total",
            "429 answers from Airtable",
            a.rate_limited as f64,
        ),
        (
            "reelstate_airtable_retries_total",
            "Airtable attempts after the first",
            a.retries as f64,
        ),
        (
            "reelstate_inbox_depth",
            "entries waiting for the worker",
            d.inbox_pending as f64,
        ),
        (
            "reelstate_outbox_depth",
            "effects waiting for the executor",
            d.outbox_pending as f64,
        ),
        (
            "reelstate_outbox_failed",
            "effects that failed for good (replayable)",
            d.outbox_failed as f64,
        ),
        (
            "reelstate_quarantined_rows",
            "inbox entries and effects set aside because they could not be read (GET /quarantine)",
            d.quarantined as f64,
        ),
        (
            "reelstate_inbox_oldest_pending_age_seconds",
            "age of the oldest entry waiting for the worker (0 when none)",
            d.oldest_pending
                .map(|t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
        ),
    ]);
    let mut r = warp::reply::Reply::into_response(text);
    r.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(r)
}

/// Inbox entries and effects set aside because they could not be read (newest first):
/// what an operator looks at when `reelstate_quarantined_rows` is above zero.
pub async fn quarantine(engine: &Arc<Engine>) -> Result<Response, ApiError> {
    let rows = engine.store.quarantined(500).await?;
    Ok(json(StatusCode::OK, &json!({"quarantined": rows})))
}

/// The inspection and operations endpoints require the admin token; only --dev may run
/// without one (and then they are open), whatever address the service listens on.
pub fn authorize(engine: &Engine, req: &Request) -> Result<(), ApiError> {
    let Some(expected) = &engine.settings.admin_token else {
        // Settings refuse this outside --dev; should they ever not, stay closed.
        if engine.settings.dev {
            return Ok(());
        }
        return Err(ApiError::unauthorized(
            "no admin token is configured: set REELSTATE_ADMIN_TOKEN",
        ));
    };
    let given = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "));
    // Compared as digests, in constant time: neither content nor length leaks.
    if crate::webhook::auth::verify_shared_secret(given, expected).is_ok() {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "this endpoint needs the admin token: Authorization: Bearer <REELSTATE_ADMIN_TOKEN>",
        ))
    }
}
