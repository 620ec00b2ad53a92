//! The sandbox's own endpoints, routed only under `--sandbox`: demo videos (which may be
//! planned to fail at one point) and the throwaway secrets `reelstate trigger` needs.

use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{ApiError, Request, json};
use crate::domain::VideoStatus;
use crate::engine::Engine;
use crate::sandbox::Failure;

/// `POST /sandbox/videos` (body empty, `{}` or `{"fail": "music" | "mix" | "callback_lost"}`).
/// Without `fail` the video waits for `POST /videos/{id}/music`; with it, its music is
/// requested at once, since the failure is what it is for.
pub(crate) async fn create_video(
    engine: &Arc<Engine>,
    req: &Request,
) -> Result<Response, ApiError> {
    let fail = crate::sandbox::parse_request(&req.body)
        .map_err(|m| ApiError::bad_request("bad_sandbox_request", m))?;
    let video =
        match crate::sandbox::create_demo_video(&engine.settings, &engine.records, fail).await {
            Ok(Some(video)) => video,
            Ok(None) => return Err(ApiError::not_found("the sandbox is off")),
            Err(e) => return Err(ApiError::unavailable(e.to_string())),
        };
    let base = format!("http://{}", req.header("host").unwrap_or("127.0.0.1:8080"));
    let Some(fail) = fail else {
        return Ok(json(
            StatusCode::CREATED,
            &json!({"video_id": video, "status": VideoStatus::SegmentsCombined.name(),
                "next": format!("POST /videos/{video}/music"),
                "commands": [format!("curl -s -X POST {base}/videos/{video}/music")]}),
        ));
    };
    crate::sandbox::request_music(engine, &video)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let (reaches, how) = fail.promise();
    let mut commands = vec![format!("curl -s {base}/videos/{video}")];
    if fail != Failure::CallbackLost {
        commands.push(format!("curl -s -X POST {base}/videos/{video}/retry"));
    }
    Ok(json(
        StatusCode::CREATED,
        &json!({"video_id": video, "status": VideoStatus::GeneratingMusic.name(), "fail": fail,
            "reaches": reaches, "how": how,
            "page": format!("{base}/ui/videos/{video}"),
            "commands": commands}),
    ))
}

/// `GET /sandbox/secrets`: the secrets this sandbox run made up for itself (null for one
/// the operator set: that one is never handed out).
pub(crate) fn secrets(engine: &Engine) -> Response {
    let s = &engine.settings;
    let generated = s.generated;
    json(
        StatusCode::OK,
        &json!({
            "goapi_webhook_secret": s.goapi_webhook_secret.as_ref().filter(|_| generated.goapi_webhook_secret),
            "signing_secret": generated.signing_secret.then_some(&s.signing_secret),
        }),
    )
}
