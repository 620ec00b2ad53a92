//! Fault benchmark ("proof under fire"): GoAPI completions for `FAULTS_VIDEOS` (default
//! 200) videos, sent in bursts of 20 a few milliseconds before each kill, so that kills land
//! in the middle of intake, each seeded in the Airtable double in `generating_music` with a
//! processing music_generation job bound to a GoAPI task, while:
//!
//! - the real service is SIGKILLed every `FAULTS_KILL_EVERY_SECS` (default 3) during the
//!   first `FAULTS_CHAOS_SECS` (default 40) and restarted on the same port and database;
//! - the Airtable double answers 20% of requests with 503 and forces a 429 lockout (1 s;
//!   the service runs with `AIRTABLE_LOCKOUT_SECS=1`) every 5 s of the chaos phase;
//! - the NCA double is down (503) from t = 5 s to t = 15 s, and its mixes take 2 s
//!   (`REELSTATE_INTERRUPTED_GRACE_SECS=3`); its callbacks are sent once, never retried;
//! - GoAPI redelivers every delivery that was not acknowledged (non-2xx or no answer).
//!
//! A callback that lands while the service is down is lost, as it would be in production:
//! the engine's reconciliation finds the job finished at NCA (`REELSTATE_NCA_DEADLINE_SECS`
//! is 15 here so that it happens within the run).
//!
//! Then it waits (at most `FAULTS_WAIT_SECS`, default 600) for every video to be
//! `completed` in the base, and prints completions, NCA submissions per id, lost videos,
//! Webhook Events records against acknowledged deliveries, kills, the most Airtable
//! requests in any second and the wall time. Exit status 1 if a video is lost or an NCA
//! submission was sent twice.
//!
//! Run: `cargo bench --bench faults`.

#[path = "../tests/it/support/airtable_double.rs"]
// The bench drives only part of what the tests use of it.
#[allow(dead_code)]
mod airtable_double;
#[path = "../tests/it/support/nca_double.rs"]
// The bench drives only part of what the tests use of it.
#[allow(dead_code)]
mod nca_double;
#[path = "../tests/it/support/seed.rs"]
// The bench drives only part of what the tests use of it.
#[allow(dead_code)]
mod seed;
#[path = "../tests/it/support/serve.rs"]
// The bench drives only part of what the tests use of it.
#[allow(dead_code)]
mod serve;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airtable_double::{AirtableDouble, DoubleConfig};
use futures::future::join_all;
use nca_double::NcaDouble;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const SECRET: &str = "faults-secret";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn completed_fixture(task_id: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/goapi/udio_completed.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    v["data"]["task_id"] = json!(task_id);
    v["timestamp"] = json!(1_765_248_943);
    v
}

struct Service {
    env: Vec<(String, String)>,
    port: u16,
    log: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Service {
    async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reelstate"))
            .arg("serve")
            .env("REELSTATE_LISTEN", format!("127.0.0.1:{}", self.port))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("start reelstate");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("service starts")
            .expect("read")
            .expect("a line");
        assert!(first.starts_with("reelstate listening on "), "{first}");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }

    /// SIGKILL, then the same binary on the same port and database.
    async fn kill_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
        self.start().await;
    }
}

fn is_goapi(r: &airtable_double::DoubleRecord) -> bool {
    r.fields
        .get("Service")
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("goapi"))
}

fn max_in_any_second(times: &[Duration]) -> usize {
    let (mut best, mut start) = (0, 0);
    for end in 0..times.len() {
        while times[end] - times[start] >= Duration::from_secs(1) {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[tokio::main]
async fn main() {
    let n = env_u64("FAULTS_VIDEOS", 200) as usize;
    let kill_every = Duration::from_secs(env_u64("FAULTS_KILL_EVERY_SECS", 3));
    let chaos = Duration::from_secs(env_u64("FAULTS_CHAOS_SECS", 40));
    let wait = Duration::from_secs(env_u64("FAULTS_WAIT_SECS", 600));

    let airtable = AirtableDouble::start(DoubleConfig::default()).await;
    let nca = NcaDouble::start().await;
    nca.set_callback_delay(Duration::from_secs(2));

    // The pipeline's earlier stages: each video generating music, its job bound to a task.
    let mut videos = Vec::new();
    for i in 0..n {
        let task = format!("20000000-0000-4000-8000-{i:012}");
        let combined = format!("{}/videos/combined-{i}.mp4", nca.url());
        let prompt = format!("calm piano #{i}");
        let video = seed::generating_video(&airtable, i, &combined, &prompt, &task);
        videos.push((video, task));
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let env: Vec<(String, String)> = [
        (
            "REELSTATE_DB",
            dir.path().join("faults.db").display().to_string(),
        ),
        ("GOAPI_WEBHOOK_SECRET", SECRET.into()),
        (
            "REELSTATE_ADMIN_TOKEN",
            "faults-admin-token-0123456789".into(),
        ),
        ("PUBLIC_BASE_URL", format!("http://127.0.0.1:{port}")),
        (
            "REELSTATE_SIGNING_SECRET",
            "faults-signing-secret-0123456789".into(),
        ),
        ("AIRTABLE_TOKEN", airtable.token()),
        ("AIRTABLE_BASE_ID", airtable.base_id()),
        ("AIRTABLE_API_URL", airtable.url()),
        ("AIRTABLE_LOCKOUT_SECS", "1".into()),
        ("NCA_API_URL", nca.url()),
        ("NCA_API_KEY", nca.api_key()),
        ("GOAPI_API_URL", "http://127.0.0.1:9".into()),
        ("REELSTATE_INTERRUPTED_GRACE_SECS", "3".into()),
        ("REELSTATE_NCA_DEADLINE_SECS", "15".into()),
        ("REELSTATE_RECONCILE_INTERVAL_SECS", "5".into()),
        ("REELSTATE_RECONCILE_CHECKS", "20".into()),
        ("REELSTATE_EFFECT_BACKOFF_MS", "200".into()),
        ("RUST_LOG", "info".into()),
        ("REELSTATE_LOG_FORMAT", "json".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let log = std::env::var("FAULTS_LOG")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join(format!("reelstate-faults-{port}.log")));
    let _ = std::fs::remove_file(&log);
    let mut service = Service {
        env,
        port,
        log: log.clone(),
        child: None,
    };
    service.start().await;
    let url = format!("http://127.0.0.1:{port}");
    println!(
        "faults: {n} videos (bursts of 20, 3 ms before each kill), kill -9 every {} s for {} s, Airtable 503 20% + 429 lockouts, NCA down 5..15 s, callbacks after 2 s; server log {}",
        kill_every.as_secs(),
        chaos.as_secs(),
        log.display()
    );

    let start = Instant::now();
    airtable.set_fail_rate(0.2);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let attempts = Arc::new(AtomicU64::new(0));
    let acked_ids: Arc<Mutex<Vec<String>>> = Arc::default();

    // GoAPI: every completion delivered, and redelivered until acknowledged.
    let deliveries = videos.iter().enumerate().map(|(i, (video, task))| {
        let (client, url, attempts, acked_ids) = (
            client.clone(),
            url.clone(),
            attempts.clone(),
            acked_ids.clone(),
        );
        let (video, body) = (video.clone(), completed_fixture(task));
        async move {
            let burst = (i / 20) as u32 + 1;
            tokio::time::sleep((kill_every * burst).saturating_sub(Duration::from_millis(3))).await;
            loop {
                attempts.fetch_add(1, Ordering::Relaxed);
                let r = client
                    .post(format!("{url}/webhooks/goapi?video_id={video}"))
                    .header("x-webhook-secret", SECRET)
                    .json(&body)
                    .send()
                    .await;
                if let Ok(r) = r
                    && r.status().is_success()
                {
                    let j: Value = r.json().await.unwrap_or(Value::Null);
                    if let Some(id) = j["event_id"].as_str() {
                        acked_ids.lock().expect("ids").push(id.to_owned());
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    let sender = tokio::spawn(join_all(deliveries));

    // The chaos: kills, lockouts, NCA down.
    let mut kills = 0;
    let mut next_kill = start + kill_every;
    let mut next_lockout = start + Duration::from_secs(5);
    let (mut nca_down, mut nca_was_down) = (false, false);
    while start.elapsed() < chaos {
        let now = Instant::now();
        if now >= next_kill {
            service.kill_and_restart().await;
            kills += 1;
            next_kill += kill_every;
        }
        if now >= next_lockout {
            airtable.rate_limit_at_request(1);
            next_lockout += Duration::from_secs(5);
        }
        let t = start.elapsed();
        if !nca_down && !nca_was_down && t >= Duration::from_secs(5) {
            nca.set_down(true);
            (nca_down, nca_was_down) = (true, true);
        }
        if nca_down && t >= Duration::from_secs(15) {
            nca.set_down(false);
            nca_down = false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nca.set_down(false);
    airtable.set_fail_rate(0.0);
    // The double's clock (its log's `at`) at the end of the chaos phase.
    let chaos_end = airtable.requests().last().map_or(Duration::ZERO, |r| r.at);
    println!(
        "chaos over after {:.0} s ({kills} kills); waiting for the base to settle",
        start.elapsed().as_secs_f64()
    );
    sender.await.expect("sender");

    // Bounded wait: every video completed in the base.
    let status_of = |airtable: &AirtableDouble| -> HashMap<String, String> {
        airtable
            .records("Videos")
            .into_iter()
            .map(|r| {
                let s = r.fields.get("Status").and_then(Value::as_str).unwrap_or("");
                (r.id, s.to_owned())
            })
            .collect()
    };
    let deadline = start + chaos + wait;
    loop {
        let statuses = status_of(&airtable);
        let done = videos
            .iter()
            .filter(|(v, _)| statuses.get(v).map(String::as_str) == Some("completed"))
            .count();
        if done == n || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // And every acknowledged delivery on record (its write may trail the completion):
    // GoAPI's by event id, NCA's by count.
    let acked: HashSet<String> = acked_ids.lock().expect("ids").iter().cloned().collect();
    let mut missing: Vec<String>;
    let mut nca_missing: usize;
    loop {
        let events = airtable.records("Webhook Events");
        let recorded: HashSet<String> = events
            .iter()
            .filter_map(|r| {
                r.fields
                    .get("Event ID")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        missing = acked.difference(&recorded).cloned().collect();
        nca_missing = nca
            .callbacks_acknowledged()
            .saturating_sub(events.iter().filter(|r| !is_goapi(r)).count());
        if (missing.is_empty() && nca_missing == 0) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let wall = start.elapsed().as_secs_f64();

    let statuses = status_of(&airtable);
    let lost: Vec<&(String, String)> = videos
        .iter()
        .filter(|(v, _)| statuses.get(v).map(String::as_str) != Some("completed"))
        .collect();
    let by_id = nca.submissions_by_id();
    let duplicates: Vec<(&String, &usize)> = by_id.iter().filter(|(_, c)| **c > 1).collect();
    let mut mixes_per_video: HashMap<String, usize> = HashMap::new();
    for id in by_id.keys() {
        if let Some(video) = id.split(':').nth(1) {
            *mixes_per_video.entry(video.to_owned()).or_default() += 1;
        }
    }
    let redriven = mixes_per_video.values().filter(|c| **c > 1).count();
    let callbacks = nca.callbacks_sent();
    let events = airtable.records("Webhook Events");
    let goapi_events = events.iter().filter(|r| is_goapi(r)).count();

    println!("videos completed: {} / {n}", n - lost.len());
    println!(
        "NCA submissions: {} for {} ids; ids submitted more than once: {}; videos mixed under more than one id: {redriven}",
        by_id.values().sum::<usize>(),
        by_id.len(),
        duplicates.len()
    );
    println!(
        "NCA callbacks sent once each: {}; answered 2xx: {}; lost while the service was down: {}",
        callbacks.len(),
        nca.callbacks_acknowledged(),
        callbacks.iter().filter(|c| c.answered.is_none()).count()
    );
    println!("lost (videos not completed): {}", lost.len());
    println!(
        "GoAPI delivery attempts: {}; acknowledged: {}; Webhook Events records: {} ({} goapi); acknowledged GoAPI deliveries without a record: {}; acknowledged NCA callbacks without a record: {nca_missing}",
        attempts.load(Ordering::Relaxed),
        acked.len(),
        events.len(),
        goapi_events,
        missing.len()
    );
    println!("kills (SIGKILL + restart): {kills}");
    let requests = airtable.requests();
    let calm: Vec<Duration> = requests
        .iter()
        .map(|r| r.at)
        .filter(|at| *at >= chaos_end)
        .collect();
    println!(
        "Airtable: {} requests ({} answered 429, {} answered 503), most in any one second: {} overall, {} after the chaos phase (one process)",
        requests.len(),
        requests.iter().filter(|r| r.status == 429).count(),
        requests.iter().filter(|r| r.status == 503).count(),
        airtable.max_requests_in_any_second(),
        max_in_any_second(&calm)
    );
    println!("wall time: {wall:.1} s");

    if let Some(mut c) = service.child.take() {
        let _ = c.kill().await;
    }
    for (video, task) in lost.iter().take(20) {
        println!(
            "LOST {video} (task {task}): status {:?}",
            statuses.get(video.as_str())
        );
    }
    for (id, c) in &duplicates {
        println!("DUPLICATE NCA submission {id}: {c} times");
    }
    for id in missing.iter().take(20) {
        println!("MISSING Webhook Events record for acknowledged event {id}");
    }
    if !lost.is_empty() || !duplicates.is_empty() || !missing.is_empty() || nca_missing > 0 {
        println!("FAILED: see the server log {}", log.display());
        std::process::exit(1);
    }
    println!("OK: nothing lost, nothing submitted twice, every acknowledged delivery on record");
}
