//! The HTTP surface (warp). One filter collects the request (method, path, query,
//! headers, a size-limited body) and `dispatch` routes it by hand, so that every answer,
//! errors included, comes from one place: a JSON body `{"error": {"code", "message"}}`,
//! 404 for unknown paths, 405 only for a known path with the wrong method.

mod commands;
mod error;
mod inspect;
mod ops;
pub(crate) mod probes;
mod sandbox;
pub(crate) mod ui;
mod webhooks;

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use warp::Filter;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;

pub(crate) use error::ApiError;

use crate::engine::Engine;
use crate::metrics::ServiceLabels;
use crate::store::Source;

/// A request as the handlers see it.
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Request {
    pub(crate) fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut r =
        warp::Reply::into_response(warp::reply::with_status(warp::reply::json(body), status));
    r.headers_mut().insert(
        warp::http::header::CACHE_CONTROL,
        warp::http::HeaderValue::from_static("no-store"),
    );
    r
}

pub fn routes(
    engine: Arc<Engine>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let limit = engine.settings.max_body_bytes;
    let probes = Arc::new(probes::Probes::default());
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |method, path: warp::path::FullPath, query, headers, body| {
                let engine = engine.clone();
                let probes = probes.clone();
                async move {
                    let body = match read_body(body, limit).await {
                        Ok(b) => b,
                        Err(e) => return e.into_response(),
                    };
                    let req = Request {
                        method,
                        path: path.as_str().to_owned(),
                        query,
                        headers,
                        body,
                    };
                    match dispatch(&engine, &probes, req).await {
                        Ok(r) => r,
                        Err(e) => {
                            if e.code == ApiError::UNAVAILABLE {
                                engine.store_outage.note();
                            }
                            e.into_response()
                        }
                    }
                }
            },
        )
}

/// Reads the body up to `limit` bytes; chunked bodies are bounded the same way.
async fn read_body<S, B>(mut body: S, limit: u64) -> Result<Bytes, ApiError>
where
    S: futures::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| ApiError::bad_request("unreadable_body", e.to_string()))?;
        if buf.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("body larger than {limit} bytes"),
            ));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            buf.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

async fn dispatch(
    engine: &Arc<Engine>,
    probes: &probes::Probes,
    req: Request,
) -> Result<Response, ApiError> {
    let segments: Vec<String> = req
        .path
        .trim_matches('/')
        .split('/')
        .map(|s| s.to_owned())
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let m = &req.method;
    let allow = |methods: &[Method]| -> Result<(), ApiError> {
        if methods.contains(m) {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(methods))
        }
    };
    if let Some(page) = ui::route(engine, &req, &seg).await {
        return page;
    }
    match seg.as_slice() {
        ["webhooks", "goapi"] => {
            allow(&[Method::POST])?;
            let started = std::time::Instant::now();
            let answer = webhooks::goapi(engine, &req).await;
            engine
                .metrics
                .webhook_ack
                .get_or_create(&ServiceLabels {
                    service: Source::Goapi,
                })
                .observe(started.elapsed().as_secs_f64());
            answer
        }
        ["webhooks", "nca-toolkit"] => {
            allow(&[Method::POST])?;
            let started = std::time::Instant::now();
            let answer = webhooks::nca(engine, &req).await;
            engine
                .metrics
                .webhook_ack
                .get_or_create(&ServiceLabels {
                    service: Source::Nca,
                })
                .observe(started.elapsed().as_secs_f64());
            answer
        }
        ["healthz"] => {
            allow(&[Method::GET])?;
            Ok(ops::healthz())
        }
        ["readyz"] => {
            allow(&[Method::GET])?;
            ops::readyz(engine, probes).await
        }
        ["metrics"] => {
            allow(&[Method::GET])?;
            ops::metrics(engine, probes).await
        }
        ["videos"] => {
            allow(&[Method::GET])?;
            ops::authorize(engine, &req)?;
            inspect::videos(engine, &req).await
        }
        ["videos", id] => {
            allow(&[Method::GET])?;
            ops::authorize(engine, &req)?;
            inspect::video(engine, id).await
        }
        ["videos", id, "music"] => {
            allow(&[Method::POST])?;
            ops::authorize(engine, &req)?;
            commands::music(engine, id, &req).await
        }
        ["videos", id, "retry"] => {
            allow(&[Method::POST])?;
            ops::authorize(engine, &req)?;
            commands::retry(engine, id, &req).await
        }
        ["jobs", id] => {
            allow(&[Method::GET])?;
            ops::authorize(engine, &req)?;
            inspect::job(engine, id).await
        }
        ["events"] => {
            allow(&[Method::GET])?;
            ops::authorize(engine, &req)?;
            inspect::events(engine, &req).await
        }
        ["events", id] => {
            allow(&[Method::GET])?;
            ops::authorize(engine, &req)?;
            inspect::event(engine, id).await
        }
        ["events", id, "replay"] => {
            allow(&[Method::POST])?;
            ops::authorize(engine, &req)?;
            commands::replay(engine, id).await
        }
        ["sandbox", "videos"] if engine.settings.sandbox => {
            allow(&[Method::POST])?;
            sandbox::create_video(engine, &req).await
        }
        ["sandbox", "secrets"] if engine.settings.sandbox => {
            allow(&[Method::GET])?;
            ops::authorize(engine, &req)?;
            Ok(sandbox::secrets(engine))
        }
        ["quarantine"] => {
            allow(&[Method::GET])?;
            ops::authorize(engine, &req)?;
            ops::quarantine(engine).await
        }
        ["effects", id, "retry"] => {
            allow(&[Method::POST])?;
            ops::authorize(engine, &req)?;
            commands::retry_effect(engine, id).await
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such endpoint: {} {}", req.method, req.path),
        )),
    }
}
