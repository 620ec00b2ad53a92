//! SANDBOX stand-ins for GoAPI and the NCA Toolkit, for a first run on a machine with no
//! account anywhere (`serve --sandbox`). They answer through the real HTTP paths: the
//! engine's real clients call them, and they call the engine's real webhook endpoints
//! back, authenticated as the real services would. They generate no music and mix no
//! video: the "files" they hand out are tiny placeholders they serve themselves.
//! Production configuration never falls back to them: only `--sandbox` starts them.
//!
//! A demo video may be made to fail at one point (`Failure`), so that a newcomer sees a
//! failure, the reconciler, and Retry work without restarting anything. The plan is kept
//! by the stand-ins themselves (they alone see the requests it applies to) and holds for
//! one request: the Retry that follows succeeds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tracing::{info, warn};
use uuid::Uuid;
use warp::Filter;
use warp::http::StatusCode;

use crate::configuration::Settings;
use crate::domain::{RecordId, VideoStatus};
use crate::engine::Engine;
use crate::records::{Records, RecordsError};

pub(crate) const SANDBOX_KEY: &str = "sandbox-key";

/// How long each stand-in takes per step, so a person can watch the statuses change.
const STEP: Duration = Duration::from_millis(1500);

/// Where a demo video is made to fail (`POST /sandbox/videos {"fail": …}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Failure {
    /// GoAPI's task fails.
    Music,
    /// NCA's render fails.
    Mix,
    /// NCA renders, but its callback never arrives: the reconciler finds the result.
    CallbackLost,
}

impl Failure {
    pub(crate) const NAMES: &'static str = "\"music\", \"mix\" or \"callback_lost\"";

    /// The state the video reaches, and what shows it.
    pub(crate) fn promise(self) -> (&'static str, &'static str) {
        match self {
            Failure::Music => (
                "music_generation_failed",
                "GoAPI reports the task failed; Retry generates the music again",
            ),
            Failure::Mix => (
                "music_addition_failed",
                "NCA reports the render failed; Retry submits the mix again",
            ),
            Failure::CallbackLost => (
                "completed",
                "NCA's callback never comes; past the sandbox's short NCA deadline the reconciler asks NCA and finds the render (within 30 s)",
            ),
        }
    }
}

/// The body of `POST /sandbox/videos`: empty, `{}`, or `{"fail": "<kind>"}`.
pub(crate) fn parse_request(body: &[u8]) -> Result<Option<Failure>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Some(obj) = v.as_object() else {
        return Err("the body must be a JSON object".into());
    };
    if let Some(k) = obj.keys().find(|k| k.as_str() != "fail") {
        return Err(format!("unknown field {k:?}; the only one is \"fail\""));
    }
    match obj.get("fail") {
        None | Some(Value::Null) => Ok(None),
        Some(f) => serde_json::from_value(f.clone())
            .map(Some)
            .map_err(|_| format!("\"fail\" is {f}; it must be {}", Failure::NAMES)),
    }
}

/// The sandbox answers quickly: deadlines shortened so that a lost callback is found by
/// the reconciler within half a minute (a shorter setting is kept).
pub(crate) fn shorten_deadlines(settings: &mut Settings) {
    settings.goapi_deadline = settings.goapi_deadline.min(Duration::from_secs(20));
    settings.nca_deadline = settings.nca_deadline.min(Duration::from_secs(10));
    settings.reconcile_interval = settings.reconcile_interval.min(Duration::from_secs(5));
}

/// Sandbox only: a Videos record whose segments are combined, with a placeholder source
/// video the sandbox serves, planned to fail at `fail`. `None` outside the sandbox.
pub(crate) async fn create_demo_video(
    settings: &Settings,
    records: &Records,
    fail: Option<Failure>,
) -> Result<Option<RecordId>, RecordsError> {
    let (Some(stand_in), true) = (&settings.goapi, settings.sandbox) else {
        return Ok(None);
    };
    let sandbox_error = |message: String| RecordsError::Permanent {
        status: 0,
        kind: "SANDBOX".into(),
        message,
    };
    let source = crate::domain::MediaUrl::parse(&format!(
        "{}/media/demo_combined_{}.mp4",
        stand_in.url,
        Uuid::new_v4().simple()
    ))
    .map_err(|e| sandbox_error(e.to_string()))?;
    let video = records
        .create_video(&crate::records::VideoFields {
            status: Some(VideoStatus::SegmentsCombined),
            combined_segments_video: Some(source),
            music_prompt: Some("gentle lo-fi piano for a product demo".into()),
            ..Default::default()
        })
        .await?;
    if let Some(fail) = fail {
        let planned = reqwest::Client::new()
            .post(format!("{}/sandbox/plan", stand_in.url))
            .header("x-api-key", &stand_in.key)
            .json(&json!({"video_id": video, "fail": fail}))
            .send()
            .await
            .and_then(|r| r.error_for_status());
        if let Err(e) = planned {
            return Err(sandbox_error(format!(
                "the stand-ins did not take the plan: {e}"
            )));
        }
    }
    Ok(Some(video))
}

/// Requests a demo video's music, as `POST /videos/{id}/music` does, without waiting for
/// the worker's answer.
pub(crate) async fn request_music(
    engine: &Engine,
    video: &RecordId,
) -> Result<(), crate::store::StoreError> {
    engine
        .enqueue(crate::store::NewEntry {
            event_id: crate::store::new_event_id(),
            video_id: video.clone(),
            source: crate::store::Source::Api,
            endpoint: "/videos/music".into(),
            dedupe_key: None,
            raw_body: String::new(),
            headers: "{}".into(),
            received_at: crate::clock::now(),
            payload: crate::store::Payload::Event {
                event: crate::machine::Event::MusicRequested { prompt: None },
            },
        })
        .await
        .map(|_| ())
}

/// What the stand-ins share: the failures planned per video, and NCA's finished jobs
/// (its status endpoint answers from them, as the toolkit's does: docs/goapi-and-nca.md,
/// "NCA, one job").
#[derive(Default)]
struct State {
    plans: HashMap<String, Failure>,
    nca_jobs: HashMap<String, Value>,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes the failure planned for `video`, if any: it applies once.
fn take_plan(s: &Shared, video: &str, which: &[Failure]) -> Option<Failure> {
    let mut g = lock(s);
    let planned = g.plans.get(video).copied().filter(|f| which.contains(f))?;
    g.plans.remove(video);
    Some(planned)
}

pub(crate) struct Sandbox {
    pub(crate) addr: SocketAddr,
}

impl Sandbox {
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) async fn start(goapi_secret: Option<String>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();
        let secret = Arc::new(goapi_secret.unwrap_or_default());
        let state = Shared::default();

        let goapi = {
            let (base, http, secret, state) = (base.clone(), http.clone(), secret, state.clone());
            warp::path!("api" / "v1" / "task").and(keyed(move |body: Value| {
                let task_id = Uuid::new_v4().to_string();
                let endpoint = body["config"]["webhook_config"]["endpoint"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let fails = video_of_endpoint(&endpoint)
                    .and_then(|v| take_plan(&state, &v, &[Failure::Music]))
                    .is_some();
                let track = format!("{base}/media/{task_id}.mp3");
                tokio::spawn(goapi_run(
                    http.clone(),
                    endpoint,
                    secret.to_string(),
                    task_id.clone(),
                    (!fails).then_some(track),
                ));
                reply(
                    StatusCode::OK,
                    json!({"code": 200, "message": "success",
                           "data": {"task_id": task_id, "model": "music-u", "status": "pending"}}),
                )
            }))
        };
        let nca = {
            let (base, http, state) = (base.clone(), http.clone(), state.clone());
            warp::path!("v1" / "ffmpeg" / "compose").and(keyed(move |body: Value| {
                let job_id = Uuid::new_v4().to_string();
                let id = body["id"].clone();
                let hook = body["webhook_url"].as_str().unwrap_or_default().to_owned();
                // The submission id is `add_music:<video>:<n>`.
                let video = id.as_str().and_then(|i| i.split(':').nth(1)).unwrap_or("");
                let planned = take_plan(&state, video, &[Failure::Mix, Failure::CallbackLost]);
                let output = format!("{base}/media/{job_id}_output_0.mp4");
                let result = nca_result(&id, &job_id, &output, planned == Some(Failure::Mix));
                lock(&state).nca_jobs.insert(job_id.clone(), result.clone());
                if planned != Some(Failure::CallbackLost) {
                    tokio::spawn(nca_run(http.clone(), hook, result));
                }
                reply(
                    StatusCode::ACCEPTED,
                    json!({"code": 202, "id": id, "job_id": job_id, "message": "processing",
                           "max_queue_length": "unlimited", "queue_length": 0}),
                )
            }))
        };
        let nca_status = {
            let state = state.clone();
            warp::path!("v1" / "toolkit" / "job" / "status").and(keyed(move |body: Value| {
                let job_id = body["job_id"].as_str().unwrap_or_default().to_owned();
                match lock(&state).nca_jobs.get(&job_id) {
                    Some(result) => reply(
                        StatusCode::OK,
                        json!({"code": 200, "id": null, "message": "success",
                               "response": {"job_status": "done", "job_id": job_id,
                                            "queue_id": 1, "process_id": 1, "response": result}}),
                    ),
                    None => reply(
                        StatusCode::NOT_FOUND,
                        json!({"code": 404, "message": "Job not found"}),
                    ),
                }
            }))
        };
        let plan = {
            let state = state.clone();
            warp::path!("sandbox" / "plan").and(keyed(move |body: Value| {
                let video = body["video_id"].as_str().map(str::to_owned);
                match (
                    video,
                    serde_json::from_value::<Failure>(body["fail"].clone()),
                ) {
                    (Some(video), Ok(fail)) => {
                        lock(&state).plans.insert(video, fail);
                        reply(StatusCode::OK, json!({"planned": fail}))
                    }
                    _ => reply(
                        StatusCode::BAD_REQUEST,
                        json!({"message": "needs video_id and fail"}),
                    ),
                }
            }))
        };
        let media = warp::path!("media" / String)
            .map(|_name: String| reply(StatusCode::OK, json!({"sandbox": "placeholder media"})));
        let routes = goapi
            .or(nca)
            .unify()
            .or(nca_status)
            .unify()
            .or(plan)
            .unify()
            .or(media)
            .unify();
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        info!(url = %base, "SANDBOX stand-ins for GoAPI and NCA are running (no real music, no real mixing)");
        Ok(Self { addr })
    }
}

/// The video a GoAPI webhook endpoint names (`…/webhooks/goapi?video_id=rec…`).
fn video_of_endpoint(endpoint: &str) -> Option<String> {
    let url = url::Url::parse(endpoint).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "video_id")
        .map(|(_, v)| v.into_owned())
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

/// GoAPI's three webhooks for a task: the last one `completed` with `track`, or, without
/// one, `failed` as GoAPI reports a generation it gave up on.
async fn goapi_run(
    http: reqwest::Client,
    endpoint: String,
    secret: String,
    task_id: String,
    track: Option<String>,
) {
    let last = if track.is_some() {
        "completed"
    } else {
        "failed"
    };
    for status in ["pending", "processing", last] {
        tokio::time::sleep(STEP).await;
        let songs = (status == "completed").then(|| {
            json!([{"id": "sandbox-song", "title": "Sandbox tune", "song_path": track, "duration": 30.0, "finished": true}])
        });
        let error = if status == "failed" {
            json!({"code": 10000, "raw_message": "sandbox: failure planned for this demo video",
                   "message": "failed to generate music", "detail": null})
        } else {
            json!({"code": 0, "raw_message": "", "message": "", "detail": null})
        };
        let body = json!({
            "timestamp": crate::clock::now().timestamp(),
            "data": {
                "task_id": task_id, "model": "music-u", "task_type": "generate_music", "status": status,
                "config": {"service_mode": "public", "webhook_config": {"endpoint": endpoint, "secret": "********"}},
                "input": {}, "output": {"generation_id": "sandbox", "songs": songs},
                "meta": {}, "detail": null, "logs": [], "error": error
            }
        });
        post(&http, &endpoint, Some(&secret), &body).await;
    }
}

/// NCA's final payload for a render: its callback's body, and what its status endpoint
/// holds for the job once done.
fn nca_result(id: &Value, job_id: &str, output: &str, failed: bool) -> Value {
    let (code, response, message) = if failed {
        (
            500,
            Value::Null,
            "FFmpeg command failed: sandbox: failure planned for this demo video",
        )
    } else {
        (
            200,
            json!([{"file_url": output, "filesize": 1024, "duration": 30.0}]),
            "success",
        )
    };
    json!({
        "endpoint": "/v1/ffmpeg/compose", "code": code, "id": id, "job_id": job_id,
        "response": response, "message": message, "pid": 1, "queue_id": 1, "run_time": 1.5,
        "queue_time": 0.0, "total_time": 1.5, "queue_length": 0, "build_number": 0
    })
}

async fn nca_run(http: reqwest::Client, hook: String, result: Value) {
    tokio::time::sleep(STEP).await;
    post(&http, &hook, None, &result).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_one_failure_or_none() {
        assert_eq!(parse_request(b""), Ok(None));
        assert_eq!(parse_request(b"{}"), Ok(None));
        assert_eq!(
            parse_request(br#"{"fail": "callback_lost"}"#),
            Ok(Some(Failure::CallbackLost))
        );
        assert_eq!(parse_request(br#"{"fail": "mix"}"#), Ok(Some(Failure::Mix)));
        for bad in [
            &br#"{"fail": "airtable"}"#[..],
            br#"{"fail": 1}"#,
            br#"{"fial": "mix"}"#,
            b"[]",
            b"fail=mix",
        ] {
            assert!(
                parse_request(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_webhook_endpoint_names_its_video() {
        assert_eq!(
            video_of_endpoint("http://127.0.0.1:1/webhooks/goapi?video_id=recA1b2C3d4E5f6G7"),
            Some("recA1b2C3d4E5f6G7".into())
        );
        assert_eq!(video_of_endpoint("not a url"), None);
    }
}
