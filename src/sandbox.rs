//! SANDBOX stand-ins for GoAPI and the NCA Toolkit, for a first run on a machine with no
//! account anywhere (`serve --sandbox`). They answer through the real HTTP paths: the
//! engine's real clients call them, and they call the engine's real webhook endpoints
//! back, authenticated as the real services would. They generate no music and mix no
//! video: the "files" they hand out are tiny placeholders they serve themselves.
//! Production configuration never falls back to them: only `--sandbox` starts them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tracing::{info, warn};
use uuid::Uuid;
use warp::Filter;
use warp::http::StatusCode;

use crate::configuration::Settings;
use crate::domain::{RecordId, VideoStatus};
use crate::records::{Records, RecordsError};

pub const SANDBOX_KEY: &str = "sandbox-key";

/// How long each stand-in takes per step, so a person can watch the statuses change.
const STEP: Duration = Duration::from_millis(1500);

/// Sandbox only: a Videos record whose segments are combined, with a placeholder source
/// video the sandbox serves. `None` outside the sandbox.
pub async fn create_demo_video(
    settings: &Settings,
    records: &Records,
) -> Result<Option<RecordId>, RecordsError> {
    let (Some(stand_in), true) = (&settings.goapi, settings.sandbox) else {
        return Ok(None);
    };
    let source = crate::domain::MediaUrl::parse(&format!(
        "{}/media/demo_combined_{}.mp4",
        stand_in.url,
        Uuid::new_v4().simple()
    ))
    .map_err(|e| RecordsError::Permanent {
        status: 0,
        kind: "SANDBOX".into(),
        message: e.to_string(),
    })?;
    let video = records
        .create_video(&crate::records::VideoFields {
            status: Some(VideoStatus::SegmentsCombined),
            combined_segments_video: Some(source),
            music_prompt: Some("gentle lo-fi piano for a product demo".into()),
            ..Default::default()
        })
        .await?;
    Ok(Some(video))
}

pub struct Sandbox {
    pub addr: SocketAddr,
}

impl Sandbox {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn start(goapi_secret: Option<String>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();
        let secret = Arc::new(goapi_secret.unwrap_or_default());

        let goapi = {
            let (base, http, secret) = (base.clone(), http.clone(), secret.clone());
            warp::path!("api" / "v1" / "task")
                .and(keyed(move |body: Value| {
                    let task_id = Uuid::new_v4().to_string();
                    let endpoint = body["config"]["webhook_config"]["endpoint"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let track = format!("{base}/media/{task_id}.mp3");
                    tokio::spawn(goapi_run(http.clone(), endpoint, secret.to_string(), task_id.clone(), track));
                    reply(
                        StatusCode::OK,
                        json!({"code": 200, "message": "success",
                               "data": {"task_id": task_id, "model": "music-u", "status": "pending"}}),
                    )
                }))
        };
        let nca = {
            let (base, http) = (base.clone(), http.clone());
            warp::path!("v1" / "ffmpeg" / "compose").and(keyed(move |body: Value| {
                let job_id = Uuid::new_v4().to_string();
                let id = body["id"].clone();
                let hook = body["webhook_url"].as_str().unwrap_or_default().to_owned();
                let output = format!("{base}/media/{job_id}_output_0.mp4");
                tokio::spawn(nca_run(
                    http.clone(),
                    hook,
                    id.clone(),
                    job_id.clone(),
                    output,
                ));
                reply(
                    StatusCode::ACCEPTED,
                    json!({"code": 202, "id": id, "job_id": job_id, "message": "processing",
                               "max_queue_length": "unlimited", "queue_length": 0}),
                )
            }))
        };
        let media = warp::path!("media" / String)
            .map(|_name: String| reply(StatusCode::OK, json!({"sandbox": "placeholder media"})));
        let routes = goapi.or(nca).unify().or(media).unify();
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        info!(url = %base, "SANDBOX stand-ins for GoAPI and NCA are running (no real music, no real mixing)");
        Ok(Self { addr })
    }
}

/// A stand-in's POST endpoint: the JSON body goes to `handle` when the request carries the
/// sandbox's key; without it, the 401 the real services answer.
fn keyed<F>(
    handle: F,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone
where
    F: Fn(Value) -> warp::reply::Response + Clone + Send + Sync + 'static,
{
    warp::post()
        .and(warp::header::optional::<String>("x-api-key"))
        .and(warp::body::json())
        .map(move |key: Option<String>, body: Value| {
            if key.as_deref() != Some(SANDBOX_KEY) {
                return reply(StatusCode::UNAUTHORIZED, json!({"message": "Unauthorized"}));
            }
            handle(body)
        })
}

fn reply(status: StatusCode, body: Value) -> warp::reply::Response {
    warp::reply::Reply::into_response(warp::reply::with_status(warp::reply::json(&body), status))
}

async fn post(http: &reqwest::Client, url: &str, secret: Option<&str>, body: &Value) {
    let mut req = http.post(url).json(body);
    if let Some(s) = secret.filter(|s| !s.is_empty()) {
        req = req.header("x-webhook-secret", s);
    }
    if let Err(e) = req.send().await {
        warn!(error = %e, "sandbox could not deliver a callback");
    }
}

async fn goapi_run(
    http: reqwest::Client,
    endpoint: String,
    secret: String,
    task_id: String,
    track: String,
) {
    for status in ["pending", "processing", "completed"] {
        tokio::time::sleep(STEP).await;
        let songs = (status == "completed").then(|| {
            json!([{"id": "sandbox-song", "title": "Sandbox tune", "song_path": track, "duration": 30.0, "finished": true}])
        });
        let body = json!({
            "timestamp": crate::clock::now().timestamp(),
            "data": {
                "task_id": task_id, "model": "music-u", "task_type": "generate_music", "status": status,
                "config": {"service_mode": "public", "webhook_config": {"endpoint": endpoint, "secret": "********"}},
                "input": {}, "output": {"generation_id": "sandbox", "songs": songs},
                "meta": {}, "detail": null, "logs": [],
                "error": {"code": 0, "raw_message": "", "message": "", "detail": null}
            }
        });
        post(&http, &endpoint, Some(&secret), &body).await;
    }
}

async fn nca_run(http: reqwest::Client, hook: String, id: Value, job_id: String, output: String) {
    tokio::time::sleep(STEP).await;
    let body = json!({
        "endpoint": "/v1/ffmpeg/compose", "code": 200, "id": id, "job_id": job_id,
        "response": [{"file_url": output, "filesize": 1024, "duration": 30.0}],
        "message": "success", "pid": 1, "queue_id": 1, "run_time": 1.5, "queue_time": 0.0,
        "total_time": 1.5, "queue_length": 0, "build_number": 0
    });
    post(&http, &hook, None, &body).await;
}
