//! The world the simulated engine talks to: GoAPI, NCA, the tracks' host and the base, each
//! playing what the real service does (docs/goapi-and-nca.md, docs/airtable.md, the
//! recorded payloads in tests/fixtures) and, while the fault plan is on, the unkind cases
//! the real one may play too. Every answer is drawn from the world's own seeded generator,
//! so one seed is one world.
//!
//! What a service has taken (a task, a render) is kept here across the engine's crashes:
//! the services do not restart with the engine.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reelstate::clients::nca::{MixRequest, NcaAccepted};
use reelstate::clients::track::TrackAnswer;
use reelstate::clients::{ClientError, CreateTask, Goapi, Nca, TrackHost};
use reelstate::domain::{MediaUrl, RecordId};
use reelstate::records::{Fields, Filter, Record, RecordBackend, RecordsError, Write};
use serde_json::{Value, json};

/// A GoAPI task webhook as GoAPI sends it (tests/fixtures/goapi/udio_completed.json).
const GOAPI_COMPLETED: &str = include_str!("../../fixtures/goapi/udio_completed.json");
/// NCA's callback of a finished mix (tests/fixtures/nca/compose_success_webhook.json).
pub const NCA_SUCCESS: &str = include_str!("../../fixtures/nca/compose_success_webhook.json");

/// How likely each unkind answer is while the fault plan is on.
#[derive(Debug, Clone)]
pub struct Faults {
    /// A call refused before it was taken (connection refused, NCA's queue-full 429).
    pub refused: f64,
    /// A call taken whose answer proves nothing (a gateway's 504, a timeout, GoAPI's
    /// `code: 500` envelope, NCA's 202 without a job id).
    pub ambiguous: f64,
    /// The engine dies while a call it sent is in flight.
    pub crash_in_call: f64,
    /// A webhook or callback never delivered.
    pub lost: f64,
    /// A webhook delivered twice.
    pub duplicated: f64,
    /// A webhook delivered late (past the job's deadline at the extreme).
    pub late: f64,
    /// A GoAPI task or NCA render that fails.
    pub service_fails: f64,
    /// A write to the base refused for now (5xx, 429).
    pub base_refuses: f64,
    /// A create the base applied whose answer was lost (a proxy's 504).
    pub base_loses_answer: f64,
    /// A track whose host says it is gone.
    pub track_gone: f64,
}

impl Faults {
    pub fn drawn(rng: &mut StdRng) -> Self {
        // Real faults come in spells (a queue that stays full, a base that keeps
        // answering 503): a fifth of the plans play one fault much more than usual.
        let mut p = |max: f64| match rng.random_range(0..10) {
            0..3 => 0.0,
            3..8 => rng.random_range(0.0..max),
            _ => rng.random_range(max..(max * 2.5).min(0.8)),
        };
        Faults {
            refused: p(0.3),
            ambiguous: p(0.3),
            crash_in_call: p(0.05),
            lost: p(0.3),
            duplicated: p(0.3),
            late: p(0.2),
            service_fails: p(0.15),
            base_refuses: p(0.2),
            base_loses_answer: p(0.2),
            track_gone: p(0.3),
        }
    }
}

/// A webhook or callback the world will send, and when.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub due: DateTime<Utc>,
    pub service: &'static str,
    /// Path and query of the URL the engine handed out.
    pub target: String,
    pub secret: Option<String>,
    pub body: String,
    /// GoAPI retries a delivery that was not answered 2xx; NCA posts once.
    pub attempts_left: u32,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub video: String,
    /// The engine's job the webhook URL names.
    pub job: String,
    pub status: &'static str,
    pub track: String,
    /// Paid for by an older handler before the engine met the video, not by the engine.
    pub left_over: bool,
}

#[derive(Debug, Clone)]
pub struct Render {
    pub nca_job: String,
    pub video: String,
    pub job: String,
    pub music: String,
    pub done: Option<Value>,
    pub output: String,
    /// Paid for by an older handler before the engine met the video, not by the engine.
    pub left_over: bool,
}

pub struct State {
    rng: StdRng,
    pub faults: Faults,
    /// False once the fault plan is over: every service then answers as it should.
    pub faulty: bool,
    pub now: DateTime<Utc>,
    /// How far the engine's wall clock was stepped from the world's (NTP): the services
    /// keep true time, the engine reads `now + skew`.
    pub skew: chrono::Duration,
    pub tasks: Vec<Task>,
    pub renders: Vec<Render>,
    pub deliveries: Vec<Delivery>,
    /// Set by a call that the engine is to die in; the driver crashes it.
    pub crash_now: bool,
    /// Which replica is calling a service now (several share one world on PostgreSQL),
    /// and the one a call killed.
    pub caller: Option<usize>,
    pub crash_of: Option<usize>,
    pub trace: Vec<String>,
    started: DateTime<Utc>,
}

/// What the services did, for the checks at the end of a run.
pub struct Done {
    pub tasks: Vec<Task>,
    pub renders: Vec<Render>,
}

impl State {
    pub fn clone_for_checks(&self) -> Done {
        Done {
            tasks: self.tasks.clone(),
            renders: self.renders.clone(),
        }
    }

    fn chance_of(&mut self, pick: fn(&Faults) -> f64) -> bool {
        let p = pick(&self.faults);
        self.chance(p)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.faulty && p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    pub fn note(&mut self, what: impl std::fmt::Display) {
        let t = (self.now - self.started).num_milliseconds();
        self.trace
            .push(format!("{:>8}.{:03} {what}", t / 1000, t % 1000));
    }

    pub fn deliver(
        &mut self,
        service: &'static str,
        url: &str,
        secret: Option<String>,
        body: Value,
        after: Duration,
    ) {
        if self.chance(self.faults.lost) {
            self.note(format_args!("{service} loses a delivery"));
            return;
        }
        let late = if self.chance(self.faults.late) {
            Duration::from_secs(self.rng.random_range(60..1800))
        } else {
            Duration::ZERO
        };
        let target = url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
            .unwrap_or_else(|| url.to_owned());
        let copies = if self.chance(self.faults.duplicated) {
            2
        } else {
            1
        };
        for n in 0..copies {
            let due = self.now
                + chrono::Duration::from_std(after + late + Duration::from_millis(700 * n))
                    .unwrap_or_default();
            self.deliveries.push(Delivery {
                due,
                service,
                target: target.clone(),
                secret: secret.clone(),
                body: body.to_string(),
                attempts_left: if service == "goapi" { 3 } else { 1 },
            });
        }
    }
}

/// The world, shared by the simulated services and the driver.
#[derive(Clone)]
pub struct World(Arc<Mutex<State>>);

impl World {
    pub fn new(seed: u64, started: DateTime<Utc>) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5151_5151_5151_5151);
        let faults = Faults::drawn(&mut rng);
        World(Arc::new(Mutex::new(State {
            rng,
            faults,
            faulty: true,
            now: started,
            skew: chrono::Duration::zero(),
            tasks: Vec::new(),
            renders: Vec::new(),
            deliveries: Vec::new(),
            crash_now: false,
            caller: None,
            crash_of: None,
            trace: Vec::new(),
            started,
        })))
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Draws from the world's generator (the driver's choices).
    pub fn draw(&self, below: u64) -> u64 {
        self.state().rng.random_range(0..below.max(1))
    }

    /// The engine's clock, read on the simulated thread; the world keeps it for its notes.
    fn tick(&self) -> MutexGuard<'_, State> {
        let mut s = self.state();
        s.now = reelstate::clock::now() - s.skew;
        s
    }

    /// A call that may be the one the engine dies in: the driver is told, and the call
    /// never answers (the process is gone before it could).
    async fn maybe_crash(&self, what: &str) {
        let crash = {
            let mut s = self.tick();
            let p = s.faults.crash_in_call;
            let crash = s.chance(p);
            if crash {
                s.crash_now = true;
                s.crash_of = s.caller;
                s.note(format_args!("the engine dies during {what}"));
            }
            crash
        };
        if crash {
            std::future::pending::<()>().await;
        }
    }
}

pub struct SimNca(pub World);
pub struct SimGoapi(pub World);
pub struct SimTracks(pub World);

#[async_trait]
impl Nca for SimNca {
    async fn submit_mix(&self, req: &MixRequest) -> Result<NcaAccepted, ClientError> {
        let w = &self.0;
        let answer = {
            let mut s = w.tick();
            let p = s.faults.refused;
            if s.chance(p) {
                s.note(format_args!("nca refuses {} (queue full)", req.id));
                return Err(ClientError::Transient(
                    "NCA: 429 MAX_QUEUE_LENGTH reached".into(),
                ));
            }
            let nca_job = format!("nca-{}", s.renders.len() + 1);
            let fails = s.chance_of(|f| f.service_fails);
            let mut payload: Value = serde_json::from_str(NCA_SUCCESS).expect("fixture");
            let output = format!("https://storage.sim/{nca_job}_output_0.mp4");
            payload["id"] = json!(req.id);
            payload["job_id"] = json!(nca_job);
            if fails {
                payload["code"] = json!(500);
                payload["message"] = json!("ffmpeg failed: simulated render failure");
                payload["response"] = Value::Null;
            } else {
                payload["response"][0]["file_url"] = json!(output);
            }
            let job = query_param(&req.webhook_url, "job");
            let video = query_param(&req.webhook_url, "video_id");
            s.note(format_args!(
                "nca takes render {nca_job} of {} for job {job} ({})",
                req.id,
                if fails {
                    "it will fail"
                } else {
                    "it will succeed"
                }
            ));
            s.renders.push(Render {
                nca_job: nca_job.clone(),
                video,
                job,
                music: req.music_url.to_string(),
                done: None,
                output,
                left_over: false,
            });
            let after = Duration::from_secs(10 + s.rng.random_range(0..170));
            s.deliver("nca", &req.webhook_url, None, payload.clone(), after);
            // The render itself is done by then, whether the callback arrives or not.
            let at = s.renders.len() - 1;
            s.renders[at].done = Some(payload);
            let ambiguous = s.chance_of(|f| f.ambiguous);
            if ambiguous {
                s.note(format_args!("nca's gateway answers 504 for {}", req.id));
            }
            (nca_job, ambiguous)
        };
        w.maybe_crash("an NCA submission").await;
        match answer {
            (_, true) => Err(ClientError::Ambiguous(
                "NCA: 504 Gateway Time-out (HTML page)".into(),
            )),
            (job_id, false) => Ok(NcaAccepted {
                job_id,
                finished: None,
            }),
        }
    }

    async fn recent_jobs(&self, _since_seconds: u64) -> Result<Value, ClientError> {
        let mut s = self.0.tick();
        if s.chance_of(|f| f.refused) {
            return Err(ClientError::Transient("NCA: connection refused".into()));
        }
        let listed: serde_json::Map<String, Value> = s
            .renders
            .iter()
            .map(|r| (r.nca_job.clone(), json!("done")))
            .collect();
        s.note("nca lists its recent jobs");
        Ok(toolkit_envelope(200, Value::Object(listed)))
    }

    async fn job_status(&self, job_id: &str) -> Result<Value, ClientError> {
        let mut s = self.0.tick();
        if s.chance_of(|f| f.refused) {
            return Err(ClientError::Transient("NCA: connection refused".into()));
        }
        s.note(format_args!("nca is asked about {job_id}"));
        Ok(match s.renders.iter().find(|r| r.nca_job == job_id) {
            None => toolkit_envelope(404, json!({"error": "Job not found", "job_id": job_id})),
            Some(r) => toolkit_envelope(
                200,
                json!({"job_status": "done", "job_id": job_id, "queue_id": 1,
                       "process_id": 6953, "response": r.done}),
            ),
        })
    }
}

/// The envelope of NCA's own endpoints (docs/goapi-and-nca.md, "Finding out").
fn toolkit_envelope(code: u16, response: Value) -> Value {
    json!({"code": code, "id": null, "job_id": "status-request", "response": response,
           "message": "success", "pid": 6953, "queue_id": 1, "run_time": 0.001,
           "queue_time": 0, "total_time": 0.001, "queue_length": 0, "build_number": 209})
}

fn query_param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_default()
}

/// A task object (`data` of GoAPI's envelope) in `status`.
pub fn task_object(t: &Task) -> Value {
    let mut v: Value = serde_json::from_str(GOAPI_COMPLETED).expect("fixture");
    v["data"]["task_id"] = json!(t.id);
    v["data"]["status"] = json!(t.status);
    if t.status == "completed" {
        if let Some(songs) = v["data"]["output"]["songs"].as_array_mut() {
            for song in songs {
                song["song_path"] = json!(t.track);
            }
        }
    } else {
        v["data"]["output"] = Value::Null;
    }
    if t.status == "failed" {
        v["data"]["error"] = json!({"code": 10000, "message": "simulated generation failure"});
    }
    v
}

#[async_trait]
impl Goapi for SimGoapi {
    async fn create_task(&self, req: &CreateTask) -> Result<String, ClientError> {
        let w = &self.0;
        let (id, ambiguous) = {
            let mut s = w.tick();
            if s.chance_of(|f| f.refused) {
                s.note("goapi refuses a task (connection refused)");
                return Err(ClientError::Transient("GoAPI: connection refused".into()));
            }
            let id = format!("task-{}", s.tasks.len() + 1);
            let fails = s.chance_of(|f| f.service_fails);
            let task = Task {
                id: id.clone(),
                video: query_param(&req.webhook_url, "video_id"),
                job: query_param(&req.webhook_url, "job"),
                status: if fails { "failed" } else { "completed" },
                track: format!("https://tracks.sim/{id}.mp3"),
                left_over: false,
            };
            s.note(format_args!(
                "goapi takes {id} for job {} ({})",
                task.job, task.status
            ));
            let processing = Task {
                status: "processing",
                ..task.clone()
            };
            let secret = Some(req.webhook_secret.clone());
            let mut hook = task_object(&processing);
            hook["timestamp"] = json!(1_765_000_000 + s.tasks.len() as i64 * 10);
            s.deliver(
                "goapi",
                &req.webhook_url,
                secret.clone(),
                hook,
                Duration::from_secs(2),
            );
            let mut last = task_object(&task);
            last["timestamp"] = json!(1_765_000_001 + s.tasks.len() as i64 * 10);
            let after = Duration::from_secs(20 + s.rng.random_range(0..180));
            s.deliver("goapi", &req.webhook_url, secret, last, after);
            s.tasks.push(task);
            let ambiguous = s.chance_of(|f| f.ambiguous);
            if ambiguous {
                s.note(format_args!("goapi answers code 500 after creating {id}"));
            }
            (id, ambiguous)
        };
        w.maybe_crash("a GoAPI task creation").await;
        if ambiguous {
            return Err(ClientError::Ambiguous(
                "GoAPI: code 500 in a 200 envelope".into(),
            ));
        }
        Ok(id)
    }

    async fn get_task(&self, task_id: &str) -> Result<Value, ClientError> {
        let mut s = self.0.tick();
        if s.chance_of(|f| f.refused) {
            return Err(ClientError::Transient("GoAPI: connection refused".into()));
        }
        s.note(format_args!("goapi is asked about {task_id}"));
        match s.tasks.iter().find(|t| t.id == task_id) {
            Some(t) => Ok(task_object(t)["data"].clone()),
            None => Err(ClientError::Permanent {
                status: Some(404),
                message: "GoAPI: task not found".into(),
            }),
        }
    }
}

#[async_trait]
impl TrackHost for SimTracks {
    async fn check(&self, url: &MediaUrl) -> TrackAnswer {
        let mut s = self.0.tick();
        let gone = s.chance_of(|f| f.track_gone);
        s.note(format_args!(
            "the track host is asked about {url}: {}",
            if gone { "gone" } else { "there" }
        ));
        if gone {
            TrackAnswer::Gone("410 Gone".into())
        } else {
            TrackAnswer::Reachable("206 Partial Content".into())
        }
    }
}

/// The base (the embedded records, as Airtable would keep them) behind the faults a base
/// plays: writes refused for now, and creates applied whose answer is lost.
pub struct SimBase {
    pub inner: Arc<dyn RecordBackend>,
    pub world: World,
}

#[async_trait]
impl RecordBackend for SimBase {
    async fn get(&self, table: &str, id: &RecordId) -> Result<Option<Record>, RecordsError> {
        self.inner.get(table, id).await
    }

    async fn find(&self, table: &str, filter: &Filter) -> Result<Vec<Record>, RecordsError> {
        self.inner.find(table, filter).await
    }

    async fn write(&self, table: &str, op: Write, fields: Fields) -> Result<Record, RecordsError> {
        let (refuse, lose) = {
            let mut s = self.world.tick();
            let refuse = s.chance_of(|f| f.base_refuses);
            let lose = matches!(op, Write::Create) && s.chance_of(|f| f.base_loses_answer);
            if refuse {
                s.note(format_args!("the base refuses a write to {table} (503)"));
            }
            (refuse, lose)
        };
        if refuse {
            return Err(RecordsError::Transient(
                "Airtable 503: service unavailable".into(),
            ));
        }
        let written = self.inner.write(table, op, fields).await?;
        if lose {
            self.world.state().note(format_args!(
                "the base applies a create in {table} and its answer is lost (504)"
            ));
            return Err(RecordsError::Transient(
                "Airtable 504 (the request may have been applied; not repeated)".into(),
            ));
        }
        Ok(written)
    }
}
