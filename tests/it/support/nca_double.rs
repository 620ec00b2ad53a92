//! In-process NCA Toolkit double, faithful to docs/goapi-and-nca.md: X-API-Key auth, a strict
//! compose schema, 202 + one unsigned callback per accepted job (no retry), 429 when the
//! queue is full, job status with 404 for unknown jobs. Like NCA it does NOT deduplicate
//! submissions by `id`: tests count submissions per id to prove the caller does.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Reply;

use super::serve::{Double, acknowledged, unavailable};

pub const NCA_TEST_KEY: &str = "nca-test-key";

const SUCCESS_TEMPLATE: &str = include_str!("../../fixtures/nca/compose_success_webhook.json");
const FAILURE_TEMPLATE: &str = include_str!("../../fixtures/nca/compose_failure_webhook.json");
const ACCEPTED_TEMPLATE: &str = include_str!("../../fixtures/nca/compose_accepted.json");
const QUEUE_FULL_TEMPLATE: &str = include_str!("../../fixtures/nca/queue_full.json");

/// The keys NCA's `/v1/ffmpeg/compose` JSON schema declares (`additionalProperties: false`).
const COMPOSE_KEYS: [&str; 7] = [
    "id",
    "inputs",
    "filters",
    "outputs",
    "global_options",
    "metadata",
    "webhook_url",
];

#[derive(Debug, Clone)]
pub struct NcaDoubleConfig {
    pub api_key: String,
    /// Time from acceptance to the end of the job (and its callback).
    pub callback_delay: Duration,
    /// Jobs end with the failure payload instead of success.
    pub fail_mix: bool,
    /// The failure `message` (NCA sends ffmpeg's stderr: make it huge to test truncation).
    pub failure_message: String,
    /// Jobs end but their callback is never sent ("lost webhook"); status still says done.
    pub drop_callbacks: bool,
    /// Everything answers 503, as NCA behind a proxy while it restarts.
    pub down: bool,
}

impl Default for NcaDoubleConfig {
    fn default() -> Self {
        let failure: Value = serde_json::from_str(FAILURE_TEMPLATE).expect("fixture");
        Self {
            api_key: NCA_TEST_KEY.to_owned(),
            callback_delay: Duration::from_millis(50),
            fail_mix: false,
            failure_message: failure["message"].as_str().unwrap_or_default().to_owned(),
            drop_callbacks: false,
            down: false,
        }
    }
}

/// One accepted compose request.
#[derive(Debug, Clone)]
// Recorded so a failing test's message (`{:?}`) shows the whole attempt; not every
// field is asserted on.
#[allow(dead_code)]
pub struct NcaSubmission {
    pub job_id: String,
    /// The request's `id`, if it had one.
    pub id: Option<String>,
    pub body: Value,
    pub at: SystemTime,
}

/// One callback POST the double made (at most one per job).
#[derive(Debug, Clone)]
// Recorded so a failing test's message (`{:?}`) shows the whole attempt; not every
// field is asserted on.
#[allow(dead_code)]
pub struct NcaCallback {
    pub job_id: String,
    pub id: Option<String>,
    pub url: String,
    pub payload: Value,
    /// The HTTP status the receiver answered; `None` if it could not be reached.
    pub answered: Option<u16>,
}

#[derive(Debug, Clone)]
enum JobState {
    Queued,
    Running,
    Done(Value),
}

#[derive(Debug, Clone)]
struct Job {
    state: JobState,
    queue_id: u64,
    /// When its status last changed: the jobs listing reports jobs by this (the toolkit
    /// lists the jobs whose status file changed in the window asked for, build 209).
    changed: Instant,
}

#[derive(Default)]
struct Inner {
    cfg: NcaDoubleConfig,
    queue_full_next: usize,
    /// Compose submissions still to be queued and then answered with a gateway's 504.
    gateway_timeout_next: usize,
    videos_without_audio: bool,
    /// Compose submissions still to be run in the request, whatever their webhook_url.
    synchronous_next: usize,
    canned: Vec<(u16, Value)>,
    attempts: usize,
    submissions: Vec<NcaSubmission>,
    callbacks: Vec<NcaCallback>,
    dropped_callbacks: usize,
    listings: usize,
    jobs: HashMap<String, Job>,
    next_queue_id: u64,
}

type Shared = super::serve::Shared<Inner>;

pub struct NcaDouble(Double<Inner>);

impl NcaDouble {
    pub async fn start() -> Self {
        Self::start_with(NcaDoubleConfig::default()).await
    }

    pub async fn start_with(cfg: NcaDoubleConfig) -> Self {
        let inner = Inner {
            cfg,
            next_queue_id: 139_652_379_057_488,
            ..Inner::default()
        };
        Self(Double::start("the NCA double", inner, handle).await)
    }

    /// Base URL, e.g. `http://127.0.0.1:12345` (what `NcaConfig::api_url` takes).
    pub fn url(&self) -> String {
        self.0.url()
    }

    /// The `file_url` a successful job reports (served by the double).
    pub fn output_url(&self, job_id: &str) -> String {
        format!("{}/output/{job_id}.mp4", self.0.shared.base)
    }

    pub fn api_key(&self) -> String {
        self.0.lock().cfg.api_key.clone()
    }

    pub fn set_down(&self, down: bool) {
        self.0.lock().cfg.down = down;
    }

    /// The next `n` compose submissions answer 429 (queue_full.json).
    /// The next `n` compose submissions are queued as usual (their callback follows), but
    /// the caller gets a reverse proxy's `504 Gateway Timeout` HTML page instead of the
    /// 202: a gateway can time out after forwarding, and the toolkit behind it still runs
    /// the job and calls back (docs/goapi-and-nca.md, "Gateways in front of NCA").
    pub fn gateway_timeout_after_queueing_next(&self, n: usize) {
        self.0.lock().gateway_timeout_next = n;
    }

    /// The next `n` compose submissions run in the request and answer the final envelope
    /// (200 with `response`), as NCA does without a `webhook_url`: no callback follows
    /// (docs/goapi-and-nca.md, "NCA's synchronous answer"). Plays a toolkit or a proxy
    /// that drops the key.
    pub fn answer_synchronously_next(&self, n: usize) {
        self.0.lock().synchronous_next = n;
    }

    /// How many times the recent-jobs listing was asked.
    pub fn listings(&self) -> usize {
        self.0.lock().listings
    }

    pub fn queue_full_next(&self, n: usize) {
        self.0.lock().queue_full_next = n;
    }

    /// The next compose submission (after auth) answers `status` with `body` verbatim and
    /// is not recorded: for replies the double never produces itself (a 400 on a valid
    /// body, a synchronous 200). Queued: call several times for several replies.
    pub fn respond_next(&self, status: u16, body: Value) {
        self.0.lock().canned.push((status, body));
    }

    /// Applies to jobs accepted from now on.
    /// The videos given have no audio track: a graph that names the first input's audio
    /// (`[0:a]`) fails with ffmpeg's message, as on the real toolkit (build 209; the
    /// recorded failure fixture, docs/goapi-and-nca.md "A video without an audio track").
    pub fn set_videos_without_audio(&self, without: bool) {
        self.0.lock().videos_without_audio = without;
    }

    pub fn set_fail_mix(&self, fail: bool) {
        self.0.lock().cfg.fail_mix = fail;
    }

    pub fn set_failure_message(&self, message: impl Into<String>) {
        self.0.lock().cfg.failure_message = message.into();
    }

    /// Applies to jobs accepted from now on.
    pub fn set_drop_callbacks(&self, drop: bool) {
        self.0.lock().cfg.drop_callbacks = drop;
    }

    pub fn set_callback_delay(&self, delay: Duration) {
        self.0.lock().cfg.callback_delay = delay;
    }

    /// NCA restarted: its in-memory queue is gone, status answers 404 for every old job.
    pub fn forget_jobs(&self) {
        self.0.lock().jobs.clear();
    }

    /// Every accepted compose request, in order.
    pub fn submissions(&self) -> Vec<NcaSubmission> {
        self.0.log(|d| &d.submissions)
    }

    /// Accepted submissions counted per request `id` (requests without one are not counted).
    pub fn submissions_by_id(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for s in &self.0.lock().submissions {
            if let Some(id) = &s.id {
                *out.entry(id.clone()).or_insert(0) += 1;
            }
        }
        out
    }

    /// Every compose POST that reached the double (accepted, rejected, 429, 401, down).
    pub fn attempts(&self) -> usize {
        self.0.lock().attempts
    }

    pub fn callbacks_sent(&self) -> Vec<NcaCallback> {
        self.0.log(|d| &d.callbacks)
    }

    /// Callbacks the receiver acknowledged (2xx): each is a webhook it took in.
    pub fn callbacks_acknowledged(&self) -> usize {
        self.0
            .lock()
            .callbacks
            .iter()
            .filter(|c| c.answered.is_some_and(acknowledged))
            .count()
    }

    /// Callbacks withheld because of `set_drop_callbacks(true)`.
    pub fn callbacks_dropped(&self) -> usize {
        self.0.lock().dropped_callbacks
    }

    /// Waits until every accepted job has ended and its callback (if any) was attempted.
    pub async fn wait_idle(&self, within: Duration) -> bool {
        self.0.wait_idle(within).await
    }
}

/// A required array property, as NCA's JSON schema check words its refusals.
fn non_empty_array<'a>(
    obj: &'a serde_json::Map<String, Value>,
    key: &str,
) -> Result<&'a Vec<Value>, String> {
    let items = obj[key]
        .as_array()
        .ok_or_else(|| format!("'{key}' is not of type 'array'"))?;
    if items.is_empty() {
        return Err("[] should be non-empty".into());
    }
    Ok(items)
}

fn json_reply(status: u16, body: &Value) -> warp::reply::Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

fn invalid(message: String) -> warp::reply::Response {
    json_reply(
        400,
        &json!({ "message": format!("Invalid payload: {message}") }),
    )
}

fn handle(
    s: Arc<Shared>,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> warp::reply::Response {
    let (down, key) = {
        let mut g = s.lock();
        if path == "/v1/ffmpeg/compose" {
            g.attempts += 1;
        }
        (g.cfg.down, g.cfg.api_key.clone())
    };
    if down {
        return unavailable();
    }
    // Produced files are public, as on NCA's storage: no key needed.
    if (method == Method::GET || method == Method::HEAD)
        && path
            .strip_prefix("/output/")
            .is_some_and(|f| f.ends_with(".mp4"))
    {
        return warp::reply::with_header(
            b"\x00\x00\x00\x18ftypmp42".to_vec(),
            "content-type",
            "video/mp4",
        )
        .into_response();
    }
    let authorized = headers
        .get("x-api-key")
        .is_some_and(|v| v.as_bytes() == key.as_bytes());
    if !authorized {
        return json_reply(401, &json!({ "message": "Unauthorized" }));
    }
    match (method, path) {
        (Method::POST, "/v1/ffmpeg/compose") => compose(s, body),
        (Method::POST, "/v1/toolkit/job/status") => status(&s, body),
        (Method::POST, "/v1/toolkit/jobs/status") => list(&s, body),
        _ => json_reply(404, &json!({ "message": "Not Found" })),
    }
}

/// The checks NCA's jsonschema makes, with its wording for the ones tests rely on.
fn validate_compose(body: &Value) -> Result<(), String> {
    let obj = body
        .as_object()
        .ok_or_else(|| format!("{body} is not of type 'object'"))?;
    let mut unexpected: Vec<String> = obj
        .keys()
        .filter(|k| !COMPOSE_KEYS.contains(&k.as_str()))
        .map(|k| format!("'{k}'"))
        .collect();
    unexpected.sort();
    match unexpected.len() {
        0 => {}
        1 => {
            return Err(format!(
                "Additional properties are not allowed ({} was unexpected)",
                unexpected[0]
            ));
        }
        _ => {
            return Err(format!(
                "Additional properties are not allowed ({} were unexpected)",
                unexpected.join(", ")
            ));
        }
    }
    for required in ["inputs", "outputs"] {
        if !obj.contains_key(required) {
            return Err(format!("'{required}' is a required property"));
        }
    }
    let inputs = non_empty_array(obj, "inputs")?;
    for input in inputs {
        if !input.get("file_url").is_some_and(Value::is_string) {
            return Err("'file_url' is a required property".into());
        }
        validate_options(input.get("options"))?;
    }
    let outputs = non_empty_array(obj, "outputs")?;
    for output in outputs {
        match output.get("options") {
            Some(o) => validate_options(Some(o))?,
            None => return Err("'options' is a required property".into()),
        }
    }
    if let Some(filters) = obj.get("filters") {
        let ok = filters.as_array().is_some_and(|f| {
            f.iter()
                .all(|x| x.get("filter").is_some_and(Value::is_string))
        });
        if !ok {
            return Err("'filter' is a required property".into());
        }
    }
    for key in ["id", "webhook_url"] {
        if obj.get(key).is_some_and(|v| !v.is_string()) {
            return Err(format!("{} is not of type 'string'", obj[key]));
        }
    }
    if let Some(meta) = obj.get("metadata") {
        let ok = meta
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_boolean));
        if !ok {
            return Err(format!("{meta} is not valid under the metadata schema"));
        }
    }
    Ok(())
}

fn validate_options(options: Option<&Value>) -> Result<(), String> {
    let Some(options) = options else {
        return Ok(());
    };
    let list = options
        .as_array()
        .ok_or_else(|| format!("{options} is not of type 'array'"))?;
    for o in list {
        if !o.get("option").is_some_and(Value::is_string) {
            return Err("'option' is a required property".into());
        }
        if o.get("argument")
            .is_some_and(|a| !(a.is_string() || a.is_number()))
        {
            return Err(format!(
                "{} is not of type 'string', 'number'",
                o["argument"]
            ));
        }
    }
    Ok(())
}

fn compose(s: Arc<Shared>, body: &[u8]) -> warp::reply::Response {
    let canned = {
        let mut g = s.lock();
        if g.canned.is_empty() {
            None
        } else {
            Some(g.canned.remove(0))
        }
    };
    if let Some((status, reply)) = canned {
        return json_reply(status, &reply);
    }
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return invalid("request body is not JSON".into());
    };
    if let Err(message) = validate_compose(&body) {
        return invalid(message);
    }
    let id = body.get("id").and_then(Value::as_str).map(str::to_owned);
    let webhook_url = body
        .get("webhook_url")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let job_id = uuid::Uuid::new_v4().to_string();
    let mut g = s.lock();
    if g.queue_full_next > 0 {
        g.queue_full_next -= 1;
        let mut reply: Value = serde_json::from_str(QUEUE_FULL_TEMPLATE).expect("fixture");
        reply["id"] = json!(id);
        reply["job_id"] = json!(job_id);
        return json_reply(429, &reply);
    }
    let queue_id = g.next_queue_id;
    g.next_queue_id += 1;
    g.submissions.push(NcaSubmission {
        job_id: job_id.clone(),
        id: id.clone(),
        body: body.clone(),
        at: SystemTime::now(),
    });
    let names_video_audio = body["filters"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|f| f["filter"].as_str().is_some_and(|f| f.contains("[0:a]")));
    let no_audio = g.videos_without_audio && names_video_audio;
    let fail = g.cfg.fail_mix || no_audio;
    let mut final_payload = end_payload(&s.base, &g.cfg, &job_id, id.as_deref(), queue_id, fail);
    if no_audio {
        let recorded: Value = serde_json::from_str(FAILURE_TEMPLATE).expect("fixture");
        final_payload["message"] = recorded["message"].clone();
    }
    let synchronous = g.synchronous_next > 0;
    g.synchronous_next = g.synchronous_next.saturating_sub(1);
    let Some(webhook_url) = webhook_url.filter(|_| !synchronous) else {
        // No webhook_url: NCA runs the job in the request and answers the final envelope.
        g.jobs.insert(
            job_id,
            Job {
                state: JobState::Done(final_payload.clone()),
                queue_id,
                changed: Instant::now(),
            },
        );
        let status = if fail { 500 } else { 200 };
        return json_reply(status, &final_payload);
    };
    g.jobs.insert(
        job_id.clone(),
        Job {
            state: JobState::Queued,
            queue_id,
            changed: Instant::now(),
        },
    );
    let gateway_timeout = g.gateway_timeout_next > 0;
    g.gateway_timeout_next = g.gateway_timeout_next.saturating_sub(1);
    let delay = g.cfg.callback_delay;
    let drop_callback = g.cfg.drop_callbacks;
    let queue_length = g
        .jobs
        .values()
        .filter(|j| !matches!(j.state, JobState::Done(_)))
        .count()
        .saturating_sub(1);
    drop(g);

    s.in_flight.fetch_add(1, Ordering::SeqCst);
    let s2 = s.clone();
    let job = job_id.clone();
    let cb_id = id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay / 2).await;
        set_state(&s2, &job, JobState::Running);
        tokio::time::sleep(delay - delay / 2).await;
        set_state(&s2, &job, JobState::Done(final_payload.clone()));
        if drop_callback {
            s2.lock().dropped_callbacks += 1;
        } else {
            // Once, no retry, no signature, errors ignored: NCA's behaviour.
            let answered = s2
                .http
                .post(&webhook_url)
                .json(&final_payload)
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16());
            s2.lock().callbacks.push(NcaCallback {
                job_id: job,
                id: cb_id,
                url: webhook_url,
                payload: final_payload,
                answered,
            });
        }
        s2.in_flight.fetch_sub(1, Ordering::SeqCst);
    });

    if gateway_timeout {
        return warp::reply::with_status(
            warp::reply::html("<html><head><title>504 Gateway Time-out</title></head><body><center><h1>504 Gateway Time-out</h1></center><hr><center>nginx</center></body></html>"),
            StatusCode::GATEWAY_TIMEOUT,
        )
        .into_response();
    }
    let mut reply: Value = serde_json::from_str(ACCEPTED_TEMPLATE).expect("fixture");
    reply["id"] = json!(id);
    reply["job_id"] = json!(job_id);
    reply["queue_id"] = json!(queue_id);
    reply["queue_length"] = json!(queue_length);
    json_reply(202, &reply)
}

fn set_state(s: &Shared, job_id: &str, state: JobState) {
    // A job forgotten by a simulated restart stays forgotten.
    if let Some(job) = s.lock().jobs.get_mut(job_id) {
        job.state = state;
        job.changed = Instant::now();
    }
}

/// The payload NCA posts when the job ends (and returns in synchronous mode).
fn end_payload(
    base: &str,
    cfg: &NcaDoubleConfig,
    job_id: &str,
    id: Option<&str>,
    queue_id: u64,
    fail: bool,
) -> Value {
    let template = if fail {
        FAILURE_TEMPLATE
    } else {
        SUCCESS_TEMPLATE
    };
    let mut p: Value = serde_json::from_str(template).expect("fixture");
    p["id"] = json!(id);
    p["job_id"] = json!(job_id);
    p["queue_id"] = json!(queue_id);
    if fail {
        p["message"] = json!(cfg.failure_message);
    } else {
        p["response"][0]["file_url"] = json!(format!("{base}/output/{job_id}.mp4"));
    }
    p
}

fn status(s: &Shared, body: &[u8]) -> warp::reply::Response {
    let Some(asked) = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| b.get("job_id").and_then(Value::as_str).map(str::to_owned))
    else {
        return invalid("'job_id' is a required property".into());
    };
    // Like NCA, the status request is itself a job: the envelope's job_id is a fresh one,
    // the asked job's id is inside `response`.
    let job = s.lock().jobs.get(&asked).cloned();
    match job {
        None => json_reply(
            404,
            &toolkit_envelope(
                404,
                Value::Null,
                json!({ "error": "Job not found", "job_id": asked }),
            ),
        ),
        Some(job) => {
            let (job_status, result) = match job.state {
                JobState::Queued => ("queued", Value::Null),
                JobState::Running => ("running", Value::Null),
                JobState::Done(payload) => ("done", payload),
            };
            json_reply(
                200,
                &toolkit_envelope(
                    200,
                    json!({
                        "job_status": job_status,
                        "job_id": asked,
                        "queue_id": job.queue_id,
                        "process_id": 6953,
                        "response": result,
                    }),
                    json!("success"),
                ),
            )
        }
    }
}

/// `POST /v1/toolkit/jobs/status` `{"since_seconds": N}` (default 600): the usual envelope
/// whose `response` maps each job whose status changed in the last N seconds to its
/// `job_status` (read in the toolkit's source, build 209; docs/goapi-and-nca.md). Nothing
/// in the listing names the request's `id`: only a done job's status holds it.
fn list(s: &Shared, body: &[u8]) -> warp::reply::Response {
    let since = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| b.get("since_seconds").and_then(Value::as_u64))
        .unwrap_or(600);
    let mut g = s.lock();
    g.listings += 1;
    let window = Duration::from_secs(since);
    let response: serde_json::Map<String, Value> = g
        .jobs
        .iter()
        .filter(|(_, j)| j.changed.elapsed() <= window)
        .map(|(id, j)| {
            let status = match j.state {
                JobState::Queued => "queued",
                JobState::Running => "running",
                JobState::Done(_) => "done",
            };
            (id.clone(), json!(status))
        })
        .collect();
    json_reply(
        200,
        &toolkit_envelope(200, json!(response), json!("success")),
    )
}

/// The envelope the toolkit's own endpoints (job status, recent jobs) answer in: each such
/// request is itself a job, so `job_id` is a fresh one.
fn toolkit_envelope(code: u16, response: Value, message: Value) -> Value {
    json!({
        "code": code,
        "id": null,
        "job_id": uuid::Uuid::new_v4().to_string(),
        "response": response,
        "message": message,
        "pid": 6953,
        "queue_id": 139_652_379_057_488_u64,
        "run_time": 0.001,
        "queue_time": 0,
        "total_time": 0.001,
        "queue_length": 0,
        "build_number": 209,
    })
}
