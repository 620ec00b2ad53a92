//! In-process GoAPI double (unified task API), faithful to docs/goapi-and-nca.md: X-API-Key auth,
//! `{code, data, message}` envelopes, then webhooks `{timestamp, data}` with the secret in
//! `x-webhook-secret`: pending, processing, then completed (in a chosen output shape) or
//! failed. Deliveries can be duplicated, shuffled or lost, and are retried on non-2xx.
//! The tracks of completed tasks are served at the double's own URLs until a test makes
//! them expire (docs/goapi-and-nca.md, "Track URLs expire").

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Reply;

use super::serve::{Double, acknowledged, unavailable};

pub const GOAPI_TEST_KEY: &str = "goapi-test-key";

const UDIO_PENDING: &str = include_str!("../../fixtures/goapi/udio_pending.json");
const UDIO_PROCESSING: &str = include_str!("../../fixtures/goapi/udio_processing.json");
const UDIO_COMPLETED: &str = include_str!("../../fixtures/goapi/udio_completed.json");
const UDIO_FAILED: &str = include_str!("../../fixtures/goapi/udio_failed.json");
const SUNO_CLIPS: &str = include_str!("../../fixtures/goapi/suno_clips_completed.json");
const SUNO_ARRAY: &str = include_str!("../../fixtures/goapi/suno_array_completed.json");
const ACE_STEP: &str = include_str!("../../fixtures/goapi/ace_step_completed.json");
const FLAT_COMPLETED: &str = include_str!("../../fixtures/goapi/flat_completed.json");
const FLAT_FAILED: &str = include_str!("../../fixtures/goapi/flat_failed.json");

/// Where the music URL sits in a completed task (docs/goapi-and-nca.md, "Where the music URL is").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletedShape {
    /// `output.songs[i].song_path` (music-u), two songs.
    Udio,
    /// `output.clips{id}.audio_url` (older suno), two clips.
    SunoClips,
    /// `output[i].audio_url` (suno `music`), two entries.
    SunoArray,
    /// `output.audio_url` (Qubico/ace-step and similar), one track.
    AceStep,
    /// The design document's assumed format: the body is `{task_id, status, output: {url}}`,
    /// no envelope, and it is the only webhook sent (no intermediate statuses).
    Flat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    /// `None`: the shape that matches the requested model.
    Completed(Option<CompletedShape>),
    /// udio_failed.json, in the envelope.
    Failed,
    /// flat_failed.json: the design document's format, the only webhook sent. No test
    /// plays it today; kept with the other documented outcomes.
    #[allow(dead_code)]
    FailedFlat,
}

#[derive(Debug, Clone)]
pub struct GoapiDoubleConfig {
    pub api_key: String,
    pub outcome: TaskOutcome,
    /// Pause before each status change of a task.
    pub step_delay: Duration,
    /// Each webhook is delivered this many times (same timestamp), as GoAPI does.
    pub deliveries_per_webhook: usize,
    /// `Some(seed)`: all of a task's deliveries are sent in a shuffled (seeded) order after
    /// the task reached its final status.
    pub shuffle_seed: Option<u64>,
    /// No webhook at all ("lost"); the task still progresses for `GET /api/v1/task/{id}`.
    pub drop_webhooks: bool,
    /// Attempts per delivery while the receiver answers non-2xx or is unreachable.
    pub webhook_attempts: usize,
    pub retry_delay: Duration,
    /// Everything answers 503.
    pub down: bool,
}

impl Default for GoapiDoubleConfig {
    fn default() -> Self {
        Self {
            api_key: GOAPI_TEST_KEY.to_owned(),
            outcome: TaskOutcome::Completed(None),
            step_delay: Duration::from_millis(10),
            deliveries_per_webhook: 1,
            shuffle_seed: None,
            drop_webhooks: false,
            webhook_attempts: 3,
            retry_delay: Duration::from_millis(20),
            down: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GoapiTask {
    pub task_id: String,
    /// The create request as received.
    pub body: Value,
    pub at: SystemTime,
}

/// One webhook POST attempt.
#[derive(Debug, Clone)]
// Recorded so a failing test's message (`{:?}`) shows the whole attempt; not every
// field is asserted on.
#[allow(dead_code)]
pub struct WebhookDelivery {
    pub task_id: String,
    /// The task status the payload carries (`pending`, `processing`, `completed`, `failed`).
    pub status: String,
    /// 1 for the first attempt of a delivery, 2.. for retries.
    pub attempt: usize,
    pub endpoint: String,
    /// The `x-webhook-secret` header sent, if any.
    pub secret: Option<String>,
    pub body: Value,
    /// The HTTP status the receiver answered; `None` if it could not be reached.
    pub answered: Option<u16>,
}

#[derive(Default)]
struct Inner {
    cfg: GoapiDoubleConfig,
    canned_create: Vec<(u16, i64, String)>,
    fail_after_create: usize,
    tasks: Vec<GoapiTask>,
    current: HashMap<String, Value>,
    deliveries: Vec<WebhookDelivery>,
    /// Per task: the status its track URLs answer instead of serving the track.
    track_answers: HashMap<String, u16>,
    /// Per task: where its track URLs redirect (302) instead of serving the track.
    track_redirects: HashMap<String, String>,
    head_refused: bool,
    track_requests: Vec<TrackRequest>,
}

/// One request for a track URL the double handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRequest {
    pub method: String,
    /// e.g. `/audio/<task id>-1.mp3`
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

type Shared = super::serve::Shared<Inner>;

pub struct GoapiDouble(Double<Inner>);

impl GoapiDouble {
    pub async fn start() -> Self {
        Self::start_with(GoapiDoubleConfig::default()).await
    }

    pub async fn start_with(cfg: GoapiDoubleConfig) -> Self {
        let inner = Inner {
            cfg,
            ..Inner::default()
        };
        Self(Double::start("the GoAPI double", inner, handle).await)
    }

    /// Base URL, e.g. `http://127.0.0.1:12345` (what `GoapiConfig::api_url` takes).
    pub fn url(&self) -> String {
        self.0.url()
    }

    /// The track URLs a completed task of `shape` carries (served by the double).
    pub fn track_urls(&self, task_id: &str, shape: CompletedShape) -> Vec<String> {
        (1..=track_count(shape))
            .map(|n| track_url(&self.0.shared.base, task_id, n))
            .collect()
    }

    pub fn api_key(&self) -> String {
        self.0.lock().cfg.api_key.clone()
    }

    /// Applies to tasks created from now on.
    pub fn set_outcome(&self, outcome: TaskOutcome) {
        self.0.lock().cfg.outcome = outcome;
    }

    /// Each webhook delivered `n` times (n >= 1).
    pub fn set_duplicates(&self, n: usize) {
        self.0.lock().cfg.deliveries_per_webhook = n.max(1);
    }

    pub fn set_shuffle(&self, seed: Option<u64>) {
        self.0.lock().cfg.shuffle_seed = seed;
    }

    pub fn set_drop_webhooks(&self, drop: bool) {
        self.0.lock().cfg.drop_webhooks = drop;
    }

    pub fn set_down(&self, down: bool) {
        self.0.lock().cfg.down = down;
    }

    /// The next create answers HTTP `http_status` with `{"code": code, "data": null,
    /// "message": message}` (queued: call several times for several replies).
    pub fn reject_next_create(&self, http_status: u16, code: i64, message: &str) {
        self.0
            .lock()
            .canned_create
            .push((http_status, code, message.to_owned()));
    }

    /// The next `n` creates make the task (it runs and its webhooks follow) but answer
    /// HTTP 200 with the envelope `{"code": 500, "data": null, ...}`: an error envelope does
    /// not prove the task was not created (docs/goapi-and-nca.md, "What proves a call was
    /// not taken"). The unkind case of an uncertain world.
    pub fn fail_after_creating_next(&self, n: usize) {
        self.0.lock().fail_after_create = n;
    }

    /// The track URLs of `task_id` answer `status` from now on instead of the track: 404 or
    /// 403 once they expired (docs/goapi-and-nca.md, "Track URLs expire": which of the two
    /// is not documented, so tests play both), or a 5xx for a host that is failing.
    pub fn answer_tracks_of(&self, task_id: &str, status: u16) {
        self.0
            .lock()
            .track_answers
            .insert(task_id.to_owned(), status);
    }

    /// The track URLs of `task_id` redirect (302) to `location` from now on, as a CDN
    /// sends its clients to storage.
    pub fn redirect_tracks_of(&self, task_id: &str, location: &str) {
        self.0
            .lock()
            .track_redirects
            .insert(task_id.to_owned(), location.to_owned());
    }

    /// HEAD on a track answers 405, as some storage hosts do (GET still serves it).
    pub fn refuse_head(&self, refuse: bool) {
        self.0.lock().head_refused = refuse;
    }

    /// Every request for a track URL, in order.
    pub fn track_requests(&self) -> Vec<TrackRequest> {
        self.0.log(|d| &d.track_requests)
    }

    pub fn tasks(&self) -> Vec<GoapiTask> {
        self.0.log(|d| &d.tasks)
    }

    pub fn deliveries(&self) -> Vec<WebhookDelivery> {
        self.0.log(|d| &d.deliveries)
    }

    /// Delivery attempts the receiver acknowledged (2xx): each is a webhook it took in.
    pub fn deliveries_acknowledged(&self) -> usize {
        self.0
            .lock()
            .deliveries
            .iter()
            .filter(|d| d.answered.is_some_and(acknowledged))
            .count()
    }

    /// Waits until every task reached its final status and all its deliveries are done.
    pub async fn wait_idle(&self, within: Duration) -> bool {
        self.0.wait_idle(within).await
    }
}

fn track_count(shape: CompletedShape) -> usize {
    match shape {
        CompletedShape::AceStep | CompletedShape::Flat => 1,
        _ => 2,
    }
}

fn track_url(base: &str, task_id: &str, n: usize) -> String {
    format!("{base}/audio/{task_id}-{n}.mp3")
}

fn envelope(status: u16, code: i64, data: Value, message: &str) -> warp::reply::Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({ "code": code, "data": data, "message": message });
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

fn handle(
    s: Arc<Shared>,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> warp::reply::Response {
    let (down, key) = {
        let g = s.lock();
        (g.cfg.down, g.cfg.api_key.clone())
    };
    if down {
        return unavailable();
    }
    // Generated tracks are public URLs, as on GoAPI's CDN, until they expire.
    if (method == Method::GET || method == Method::HEAD)
        && let Some(file) = path.strip_prefix("/audio/")
    {
        return track(&s, &method, path, file, headers);
    }
    let authorized = headers
        .get("x-api-key")
        .is_some_and(|v| v.as_bytes() == key.as_bytes());
    if !authorized {
        return envelope(401, 401, Value::Null, "Unauthorized: invalid API key");
    }
    if method == Method::POST && path == "/api/v1/task" {
        return create(s, body);
    }
    if method == Method::GET
        && let Some(raw) = path.strip_prefix("/api/v1/task/")
    {
        let id = percent_decode(raw);
        return match s.lock().current.get(&id) {
            Some(task) => envelope(200, 200, task.clone(), "success"),
            None => envelope(404, 404, Value::Null, "task not found"),
        };
    }
    envelope(404, 404, Value::Null, "not found")
}

fn track(
    s: &Shared,
    method: &Method,
    path: &str,
    file: &str,
    headers: &HeaderMap,
) -> warp::reply::Response {
    let mut g = s.lock();
    g.track_requests.push(TrackRequest {
        method: method.to_string(),
        path: path.to_owned(),
        range: headers
            .get("range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    // `<task id>-<n>.mp3`: the task id is a UUID, itself made of dashes.
    let task = file.rsplit_once('-').map_or(file, |(task, _)| task);
    if let Some(&status) = g.track_answers.get(task) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::NOT_FOUND);
        return warp::reply::with_status("expired or unavailable", status).into_response();
    }
    if let Some(to) = g.track_redirects.get(task) {
        let redirect = warp::reply::with_status("", StatusCode::FOUND);
        return warp::reply::with_header(redirect, "location", to.as_str()).into_response();
    }
    if g.head_refused && method == Method::HEAD {
        return warp::reply::with_status("", StatusCode::METHOD_NOT_ALLOWED).into_response();
    }
    warp::reply::with_header(b"ID3\x04\x00".to_vec(), "content-type", "audio/mpeg").into_response()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn fixture_data(text: &str) -> Value {
    let v: Value = serde_json::from_str(text).expect("fixture");
    v["data"].clone()
}

/// The shape a real GoAPI would use for the requested model.
fn shape_for(model: &str, task_type: &str) -> CompletedShape {
    match (model, task_type) {
        ("music-u", _) => CompletedShape::Udio,
        ("suno", "music") => CompletedShape::SunoArray,
        ("suno", _) => CompletedShape::SunoClips,
        _ => CompletedShape::AceStep,
    }
}

struct TaskSpec {
    task_id: String,
    model: Value,
    task_type: Value,
    input: Value,
    service_mode: Value,
    endpoint: String,
}

impl TaskSpec {
    /// Stamps the request's identity onto a fixture's task object.
    fn stamp(&self, mut data: Value, status: &str) -> Value {
        data["task_id"] = json!(self.task_id);
        data["model"] = self.model.clone();
        data["task_type"] = self.task_type.clone();
        data["input"] = self.input.clone();
        data["status"] = json!(status);
        // GoAPI echoes the config with the secret masked.
        data["config"] = json!({
            "service_mode": self.service_mode,
            "webhook_config": { "endpoint": self.endpoint, "secret": "********" },
        });
        data
    }

    fn pending(&self, shape: CompletedShape, status: &str) -> Value {
        let template = if status == "pending" {
            UDIO_PENDING
        } else {
            UDIO_PROCESSING
        };
        let mut data = self.stamp(fixture_data(template), status);
        if shape != CompletedShape::Udio {
            data["output"] = Value::Null;
        }
        data
    }

    fn completed(&self, base: &str, shape: CompletedShape) -> Value {
        let track = |n| json!(track_url(base, &self.task_id, n));
        let template = match shape {
            CompletedShape::Udio | CompletedShape::Flat => UDIO_COMPLETED,
            CompletedShape::SunoClips => SUNO_CLIPS,
            CompletedShape::SunoArray => SUNO_ARRAY,
            CompletedShape::AceStep => ACE_STEP,
        };
        let mut data = self.stamp(fixture_data(template), "completed");
        match shape {
            CompletedShape::Udio | CompletedShape::Flat => {
                if let Some(songs) = data["output"]["songs"].as_array_mut() {
                    for (i, song) in songs.iter_mut().enumerate() {
                        song["song_path"] = track(i + 1);
                    }
                }
                if shape == CompletedShape::Flat {
                    // The flat format carries one URL only; keep the task object in step.
                    if let Some(songs) = data["output"]["songs"].as_array_mut() {
                        songs.truncate(1);
                    }
                }
            }
            CompletedShape::SunoClips => {
                if let Some(clips) = data["output"]["clips"].as_object_mut() {
                    for (i, clip) in clips.values_mut().enumerate() {
                        clip["audio_url"] = track(i + 1);
                    }
                }
            }
            CompletedShape::SunoArray => {
                if let Some(items) = data["output"].as_array_mut() {
                    for (i, item) in items.iter_mut().enumerate() {
                        item["audio_url"] = track(i + 1);
                    }
                }
            }
            CompletedShape::AceStep => data["output"]["audio_url"] = track(1),
        }
        data
    }

    fn failed(&self) -> Value {
        let mut data = self.stamp(fixture_data(UDIO_FAILED), "failed");
        if self.model != json!("music-u") {
            data["output"] = Value::Null;
        }
        data
    }
}

fn create(s: Arc<Shared>, body: &[u8]) -> warp::reply::Response {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return envelope(
            400,
            400,
            Value::Null,
            "failed to bind request: invalid JSON",
        );
    };
    let (Some(model), Some(task_type), Some(input)) = (
        req.get("model").and_then(Value::as_str),
        req.get("task_type").and_then(Value::as_str),
        req.get("input").filter(|i| i.is_object()),
    ) else {
        return envelope(
            400,
            400,
            Value::Null,
            "failed to bind request: model, task_type and input are required",
        );
    };
    let canned = {
        let mut g = s.lock();
        if g.canned_create.is_empty() {
            None
        } else {
            Some(g.canned_create.remove(0))
        }
    };
    if let Some((http_status, code, message)) = canned {
        return envelope(http_status, code, Value::Null, &message);
    }
    let webhook = &req["config"]["webhook_config"];
    let spec = TaskSpec {
        task_id: uuid::Uuid::new_v4().to_string(),
        model: json!(model),
        task_type: json!(task_type),
        input: input.clone(),
        service_mode: req["config"]["service_mode"].clone(),
        endpoint: webhook["endpoint"].as_str().unwrap_or_default().to_owned(),
    };
    let secret = webhook["secret"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let cfg = {
        let mut g = s.lock();
        g.tasks.push(GoapiTask {
            task_id: spec.task_id.clone(),
            body: req.clone(),
            at: SystemTime::now(),
        });
        let pending = spec.pending(shape_for(model, task_type), "pending");
        g.current.insert(spec.task_id.clone(), pending);
        g.cfg.clone()
    };
    let shape = match cfg.outcome {
        TaskOutcome::Completed(Some(shape)) => shape,
        TaskOutcome::FailedFlat => CompletedShape::Flat,
        _ => shape_for(model, task_type),
    };
    let pending = spec.pending(shape, "pending");
    let fail_after = {
        let mut g = s.lock();
        let n = g.fail_after_create;
        g.fail_after_create = n.saturating_sub(1);
        n > 0
    };
    s.in_flight.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(run_task(s.clone(), cfg, spec, shape, secret));
    if fail_after {
        return envelope(200, 500, Value::Null, "internal server error");
    }
    envelope(200, 200, pending, "success")
}

/// Advances the task through its statuses and delivers the webhooks.
async fn run_task(
    s: Arc<Shared>,
    cfg: GoapiDoubleConfig,
    spec: TaskSpec,
    shape: CompletedShape,
    secret: Option<String>,
) {
    let failed = matches!(cfg.outcome, TaskOutcome::Failed | TaskOutcome::FailedFlat);
    let final_data = if failed {
        spec.failed()
    } else {
        spec.completed(&s.base, shape)
    };
    let steps = [
        ("pending", spec.pending(shape, "pending")),
        ("processing", spec.pending(shape, "processing")),
        (if failed { "failed" } else { "completed" }, final_data),
    ];
    let flat = shape == CompletedShape::Flat;
    let base_ts = chrono::Utc::now().timestamp();
    let mut queued = Vec::new();
    for (i, (status, data)) in steps.into_iter().enumerate() {
        tokio::time::sleep(cfg.step_delay).await;
        s.lock().current.insert(spec.task_id.clone(), data.clone());
        let body = if flat {
            // The flat format has no intermediate statuses and no envelope.
            if status == "pending" || status == "processing" {
                continue;
            }
            flat_body(&spec.task_id, &s.base, failed)
        } else {
            // Distinct per status, identical across duplicates: GoAPI's duplicate marker.
            json!({ "timestamp": base_ts + i as i64, "data": data })
        };
        for _ in 0..cfg.deliveries_per_webhook.max(1) {
            queued.push((status, body.clone()));
        }
        if cfg.shuffle_seed.is_none() && !cfg.drop_webhooks {
            for (status, body) in queued.drain(..) {
                deliver(&s, &cfg, &spec, secret.as_deref(), status, body).await;
            }
        }
    }
    if let Some(seed) = cfg.shuffle_seed {
        queued.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    }
    if !cfg.drop_webhooks {
        for (status, body) in queued {
            deliver(&s, &cfg, &spec, secret.as_deref(), status, body).await;
        }
    }
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
}

fn flat_body(task_id: &str, base: &str, failed: bool) -> Value {
    let text = if failed { FLAT_FAILED } else { FLAT_COMPLETED };
    let mut body: Value = serde_json::from_str(text).expect("fixture");
    body["task_id"] = json!(task_id);
    if !failed {
        body["output"]["url"] = json!(track_url(base, task_id, 1));
    }
    body
}

async fn deliver(
    s: &Shared,
    cfg: &GoapiDoubleConfig,
    spec: &TaskSpec,
    secret: Option<&str>,
    status: &str,
    body: Value,
) {
    if spec.endpoint.is_empty() {
        return;
    }
    for attempt in 1..=cfg.webhook_attempts.max(1) {
        let mut req = s.http.post(&spec.endpoint).json(&body);
        if let Some(secret) = secret {
            req = req.header("x-webhook-secret", secret);
        }
        let answered = req.send().await.ok().map(|r| r.status().as_u16());
        s.lock().deliveries.push(WebhookDelivery {
            task_id: spec.task_id.clone(),
            status: status.to_owned(),
            attempt,
            endpoint: spec.endpoint.clone(),
            secret: secret.map(str::to_owned),
            body: body.clone(),
            answered,
        });
        if answered.is_some_and(acknowledged) {
            return;
        }
        tokio::time::sleep(cfg.retry_delay).await;
    }
}
