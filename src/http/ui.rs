//! The operator page: `GET /` (overview), `/ui/videos` (the list), `/ui/videos/{id}`,
//! `/ui/events` (the event log)
//! and `/ui/events/{id}` (one event and its raw payload).
//!
//! A page is a static shell with no data in it, so it needs no token; its script fetches
//! the page's HTML fragment from `/ui/fragments/…` with the admin token the operator typed
//! (kept in the tab's sessionStorage) and swaps it in, every 2 s on live pages. Fragments
//! are rendered here, every value escaped, and pass the admin API's own check
//! (`ops::authorize`), so tightening that tightens the page too. Actions are the admin
//! API's endpoints, called by the script after a confirmation. Everything is read from the
//! engine's store: the page never causes a request to Airtable. The Content-Security-Policy
//! allows scripts and styles from this origin only, so even markup that slipped through
//! escaping could not run.

pub(crate) mod escape;
mod fragments;
mod render;

use std::sync::Arc;

use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

use self::escape::text as esc;
use super::{ApiError, Request};
use crate::engine::Engine;

const APP_JS: &str = include_str!("ui/assets/app.js");
const APP_CSS: &str = include_str!("ui/assets/app.css");
const FAVICON: &str = include_str!("ui/assets/favicon.svg");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Routes the page paths; `None` for paths that are not the page's.
pub(crate) async fn route(
    engine: &Arc<Engine>,
    req: &Request,
    seg: &[&str],
) -> Option<Result<Response, ApiError>> {
    let page = |title: &str| Some(get_only(req).map(|()| shell(title)));
    match seg {
        [""] => page("Overview"),
        ["ui", "events"] => page("Event log"),
        ["ui", "videos"] => page("Videos"),
        ["ui", "events", id] => Some(
            get_only(req)
                .and_then(|()| {
                    uuid::Uuid::parse_str(id)
                        .map(|id| shell(&format!("Event {id}")))
                        .map_err(|_| ApiError::bad_request("invalid_event_id", "expected a UUID"))
                })
                .or_else(|e| Ok(error_page(&e))),
        ),
        ["ui", "videos", id] => Some(
            get_only(req)
                .and_then(|()| super::inspect::record_id(id).map(|v| shell(&format!("Video {v}"))))
                .or_else(|e| Ok(error_page(&e))),
        ),
        ["ui", "assets", "app.js"] => {
            Some(get_only(req).map(|()| asset(APP_JS, "text/javascript; charset=utf-8")))
        }
        ["ui", "assets", "app.css"] => {
            Some(get_only(req).map(|()| asset(APP_CSS, "text/css; charset=utf-8")))
        }
        ["ui", "assets", "favicon.svg"] => {
            Some(get_only(req).map(|()| asset(FAVICON, "image/svg+xml")))
        }
        ["ui", "fragments", rest @ ..] => Some(match get_only(req) {
            Err(e) => Err(e),
            Ok(()) => Ok(match super::ops::authorize(engine, req) {
                Err(e) => fragment_error(&e),
                Ok(()) => match fragments::render(engine, req, rest).await {
                    Ok(html) => html_response(StatusCode::OK, html),
                    Err(e) => fragment_error(&e),
                },
            }),
        }),
        // Anything else under /ui/ is a page address a person typed or followed: a page
        // says it does not exist (the admin API's own paths keep answering JSON).
        ["ui", ..] => Some(Ok(error_page(&ApiError::not_found(format!(
            "no page at {}",
            req.path
        ))))),
        _ => None,
    }
}

fn get_only(req: &Request) -> Result<(), ApiError> {
    if req.method == Method::GET {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed(&[Method::GET]))
    }
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut r = warp::reply::Reply::into_response(warp::reply::with_status(
        warp::reply::html(body),
        status,
    ));
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = warp::reply::Reply::into_response(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// An error inside a page: the status and the API's code and message, escaped.
fn fragment_error(e: &ApiError) -> Response {
    let hint = if e.status == StatusCode::UNAUTHORIZED {
        "<p>Enter the admin token (REELSTATE_ADMIN_TOKEN) when asked; it is kept in this tab only.</p>"
    } else {
        ""
    };
    let mut r = html_response(
        e.status,
        format!(
            r#"<div class="error-box" data-code="{code}"><strong>{status}</strong> {msg}{hint}</div>"#,
            code = esc(e.code),
            status = esc(&e.status.to_string()),
            msg = esc(&e.message),
        ),
    );
    if e.status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// A page that cannot be shown (a malformed id in its address).
fn error_page(e: &ApiError) -> Response {
    html_response(
        e.status,
        document(
            e.status.canonical_reason().unwrap_or("Error"),
            &format!(
                r#"<main><h1>{status}</h1><div class="error-box" data-code="{code}">{msg}</div><p><a href="/">Back to the overview</a></p></main>"#,
                status = esc(&e.status.to_string()),
                code = esc(e.code),
                msg = esc(&e.message),
            ),
        ),
    )
}

fn shell(title: &str) -> Response {
    html_response(
        StatusCode::OK,
        document(
            title,
            r#"<div class="bar"><span class="stamp" id="stamp" data-refreshes="0" data-skipped="0">loading…</span><button type="button" id="pause" class="small" aria-pressed="false">Pause updates</button></div>
<main id="view" aria-live="polite"><p class="muted">Loading…</p></main>
<div id="result" class="result" hidden role="status"><button type="button" id="result-close" class="small">close</button><div class="title" id="result-title"></div><p id="result-text"></p><p id="result-link-line" hidden><a id="result-link"></a></p><details id="result-raw"><summary>the API's answer as sent</summary><pre id="result-body"></pre></details></div>
<dialog id="token-dialog"><form method="dialog" id="token-form"><h2>Admin token</h2>
<p class="muted">This server requires its admin token (REELSTATE_ADMIN_TOKEN). It is kept in this browser tab's sessionStorage only, and sent to this server alone.</p>
<p id="token-error" class="token-error" role="alert" hidden></p>
<input type="password" id="token-input" autocomplete="off" placeholder="token" aria-label="admin token">
<div class="row"><button type="submit" class="primary" id="token-save">Use token</button></div></form></dialog>
<dialog id="confirm-dialog"><h2>Are you sure?</h2><p id="confirm-text"></p><p><code id="confirm-call"></code></p>
<div class="row"><button type="button" id="confirm-cancel">Cancel</button><button type="button" class="primary" id="confirm-ok">Confirm</button></div></dialog>
<script src="/ui/assets/app.js"></script>"#,
        ),
    )
}

fn document(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · reelstate</title><link rel="icon" type="image/svg+xml" href="/ui/assets/favicon.svg"><link rel="stylesheet" href="/ui/assets/app.css"></head>
<body><header class="top"><a class="brand" href="/">reelstate</a><nav><a href="/">Overview</a><a href="/ui/videos">Videos</a><a href="/ui/events">Event log</a></nav>
<form id="goto-video"><input id="goto-input" placeholder="video id (rec…)" aria-label="video id"></form>
<div class="auth"><span id="token-state"></span><button type="button" id="forget-token">forget token</button></div></header>
{body}
</body></html>
"#,
        title = esc(title),
    )
}
