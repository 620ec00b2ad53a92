//! Health, readiness, metrics and the admin token check.

use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;

use super::probes::{Probes, READY_WAIT};
use super::{ApiError, Request, json};
use crate::engine::Engine;
use crate::metrics::{NoLabels, Probe, ProbeLabels, ServiceLabels, set_total};
use crate::store::Source;

/// A scrape waits longer than a probe: Prometheus's default scrape timeout is 10 s.
const SCRAPE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn healthz() -> Response {
    json(StatusCode::OK, &json!({"status": "up"}))
}

pub(crate) async fn readyz(engine: &Arc<Engine>, probes: &Probes) -> Result<Response, ApiError> {
    // Still acknowledging webhooks while its work drains, but new traffic belongs elsewhere.
    if engine.is_shutting_down() {
        return Ok(json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "stopping"}),
        ));
    }
    let e = engine.clone();
    let ping = probes
        .ping
        .get(READY_WAIT, move || async move {
            e.metrics
                .probe_store_calls
                .get_or_create(&ProbeLabels {
                    probe: Probe::Readyz,
                })
                .inc();
            e.store.ping().await.map_err(|err| err.to_string())
        })
        .await;
    let store = match ping {
        Some(Ok(())) => json!({"ok": true}),
        Some(Err(e)) => json!({"ok": false, "error": e}),
        None => json!({"ok": false, "error": format!(
            "the store did not answer within {} s", READY_WAIT.as_secs()
        )}),
    };
    // The schema is asked only of a replica whose store answers: such a replica is not
    // ready whatever the base says, and the check's requests would wait on the store's
    // request budget.
    let airtable = match &engine.airtable {
        None => json!({"configured": false}),
        Some(_) if store["ok"] != json!(true) => json!({"configured": true, "checked": false}),
        Some(_) => {
            let e = engine.clone();
            let check = probes
                .schema
                .get(READY_WAIT, move || async move {
                    match &e.airtable {
                        Some(a) => e.schema.problems(a, e.records.mapping()).await,
                        None => Ok(Vec::new()),
                    }
                })
                .await;
            match check {
                Some(Ok(problems)) => {
                    json!({"configured": true, "ok": problems.is_empty(), "problems": problems})
                }
                Some(Err(e)) => json!({"configured": true, "ok": false, "error": e}),
                // A slow answer from the base (its budget busy) says nothing about its
                // schema: readiness follows the store until the check answers.
                None => json!({"configured": true, "checked": false}),
            }
        }
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

pub(crate) async fn metrics(engine: &Arc<Engine>, probes: &Probes) -> Result<Response, ApiError> {
    let e = engine.clone();
    let depths = probes
        .depths
        .get(SCRAPE_WAIT, move || async move {
            e.metrics
                .probe_store_calls
                .get_or_create(&ProbeLabels {
                    probe: Probe::Metrics,
                })
                .inc();
            e.store.depths().await.map_err(|err| err.to_string())
        })
        .await;
    let d = match depths {
        Some(Ok(d)) => d,
        Some(Err(e)) => return Err(ApiError::unavailable(e)),
        None => {
            return Err(ApiError::unavailable(format!(
                "the store did not answer within {} s",
                SCRAPE_WAIT.as_secs()
            )));
        }
    };
    let m = &engine.metrics;
    if let Some(a) = engine.airtable.as_ref().map(|a| a.stats()) {
        set_total(&m.airtable_requests.get_or_create(&NoLabels {}), a.requests);
        set_total(
            &m.airtable_rate_limited.get_or_create(&NoLabels {}),
            a.rate_limited,
        );
        set_total(&m.airtable_retries.get_or_create(&NoLabels {}), a.retries);
    }
    // Counted where each call's start is recorded (the store), and read here: the count
    // survives restarts and retention, and no caller of the store has to remember it.
    let paid = engine.store.paid_calls(None).await?;
    for (service, n) in [
        (Source::Goapi, paid.goapi_tasks),
        (Source::Nca, paid.nca_renders),
    ] {
        set_total(
            &m.paid_calls.get_or_create(&ServiceLabels { service }),
            u64::try_from(n).unwrap_or(0),
        );
    }
    m.inbox_depth.set(d.inbox_pending);
    m.outbox_depth.set(d.outbox_pending);
    m.outbox_failed.set(d.outbox_failed);
    m.quarantined_rows.set(d.quarantined);
    let age = d
        .oldest_pending
        .and_then(|t| (crate::clock::now() - t).to_std().ok())
        .unwrap_or_default();
    m.oldest_pending_age.set(age.as_secs_f64());
    let mut r = warp::reply::Reply::into_response(m.render());
    r.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(r)
}

/// Inbox entries and effects set aside because they could not be read (newest first):
/// what an operator looks at when `reelstate_quarantined_rows` is above zero.
pub(crate) async fn quarantine(engine: &Arc<Engine>) -> Result<Response, ApiError> {
    let rows = engine.store.quarantined(500).await?;
    Ok(json(StatusCode::OK, &json!({"quarantined": rows})))
}

/// The inspection and operations endpoints require the admin token; only --dev may run
/// without one (and then they are open), whatever address the service listens on.
pub(crate) fn authorize(engine: &Engine, req: &Request) -> Result<(), ApiError> {
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
