//! Soak benchmark: a steady stream of webhooks against the real binary (built by
//! `cargo bench`, so release), for `SOAK_SECONDS` (default 1800), sampling the server's
//! resident memory (VmRSS) and open file descriptors every `SOAK_SAMPLE_SECS` (default 30).
//!
//! Traffic, per second, at `SOAK_RATE` (default 50) ticks: mixed GoAPI payload shapes for
//! videos the base does not hold (10% repeated deliveries), and every 25th tick a whole
//! lifecycle instead: a video is seeded in the embedded records, its music requested, and
//! the GoAPI and NCA doubles drive it to `completed` over the real HTTP paths.
//!
//! `SOAK_KEYLESS=1` runs it on a base with no writable key field, where every job and
//! Webhook Events record is created through a claim in the store (`record_creations`).
//!
//! Verdict: mean RSS and fds of the last half of the samples against the first half (the
//! sample at t = 0, before any traffic, left out). Each sample also shows the inbox depth
//! (entries waiting for the worker), so a backlog shows as it builds.
//!
//! Run: `SOAK_SECONDS=1800 cargo bench --bench soak`.

#[path = "../tests/it/support/goapi_double.rs"]
// The bench drives only part of what the tests use of it.
#[allow(dead_code)]
mod goapi_double;
#[path = "../tests/it/support/nca_double.rs"]
// The bench drives only part of what the tests use of it.
#[allow(dead_code)]
mod nca_double;
#[path = "../tests/it/support/serve.rs"]
// The bench drives only part of what the tests use of it.
#[allow(dead_code)]
mod serve;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use goapi_double::GoapiDouble;
use nca_double::NcaDouble;
use reelstate::domain::{MediaUrl, RecordId, VideoStatus};
use reelstate::records::embedded::sqlite::SqliteRecords;
use reelstate::records::{Mapping, Records, VideoFields};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const SECRET: &str = "soak-secret";
const SHAPES: [&str; 6] = [
    "udio_pending.json",
    "udio_processing.json",
    "udio_completed.json",
    "suno_clips_completed.json",
    "suno_array_completed.json",
    "ace_step_completed.json",
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/goapi/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn proc_field_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Entries waiting for the worker (`reelstate_inbox_depth` of /metrics): a backlog that
/// keeps growing means processing falls behind intake.
async fn inbox_depth(client: &reqwest::Client, url: &str) -> Option<u64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("reelstate_inbox_depth "))
        .and_then(|v| v.trim().parse().ok())
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    errors: AtomicU64,
    lifecycles: AtomicU64,
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

const ADMIN_TOKEN: &str = "soak-admin-token-0123456789";

/// The operator's token, sent with every request (webhooks ignore it).
fn admin_headers() -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {ADMIN_TOKEN}").parse().expect("header"),
    );
    h
}

/// The whole database file with its WAL, in MiB (the embedded records live in it too,
/// and they are the system of record: they are never pruned).
fn file_mib(db: &std::path::Path) -> f64 {
    let len = |p: std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    (len(db.to_path_buf()) + len(wal.into())) as f64 / (1024.0 * 1024.0)
}

/// The engine store's tables that retention prunes: each grows with traffic until its
/// rows are old enough to go.
const PRUNED: [&str; 6] = [
    "inbox",
    "history",
    "outbox",
    "record_creations",
    "active_jobs",
    "paid_calls",
];

/// The engine store's share of the file: the pages of the tables retention prunes (and
/// their indexes), from SQLite's `dbstat`, and the row count of each.
fn store_size(db: &std::path::Path) -> (f64, Vec<i64>) {
    let Ok(c) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return (0.0, Vec::new());
    };
    let _ = c.busy_timeout(Duration::from_secs(5));
    let names = PRUNED.map(|t| format!("'{t}'")).join(", ");
    let bytes: i64 = c
        .query_row(
            &format!(
                "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat
                 WHERE name IN ({names})
                    OR name IN (SELECT name FROM sqlite_master
                                WHERE type = 'index' AND tbl_name IN ({names}))"
            ),
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    let rows = PRUNED
        .iter()
        .map(|t| {
            c.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
                .unwrap_or(-1)
        })
        .collect();
    (bytes as f64 / (1024.0 * 1024.0), rows)
}

/// `SOAK_KEYLESS=1`: a base with no writable Job ID or Event ID (as real bases often are),
/// so every job and Webhook Events record is a keyless create with a claim in the store.
fn mapping() -> (Mapping, Option<String>) {
    if std::env::var("SOAK_KEYLESS").is_ok_and(|v| v == "1") {
        let toml = "[jobs]\njob_id = \"\"\n\n[webhook_events]\nevent_id = \"\"\n";
        let mapping = Mapping::from_toml(toml).expect("the keyless mapping parses");
        (mapping, Some(toml.to_owned()))
    } else {
        (Mapping::default(), None)
    }
}

#[tokio::main]
async fn main() {
    let secs = env_u64("SOAK_SECONDS", 1800);
    let rate = env_u64("SOAK_RATE", 50).max(1);
    let sample_every = env_u64("SOAK_SAMPLE_SECS", 30).max(1);

    let nca = NcaDouble::start().await;
    let goapi = GoapiDouble::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("soak.db");
    let (mapping, keyless) = mapping();
    let mapping_file = dir.path().join("mapping.toml");
    if let Some(toml) = &keyless {
        std::fs::write(&mapping_file, toml).expect("write the mapping");
    }
    let records = Records::new(
        Arc::new(SqliteRecords::open(&db, &mapping).expect("records")),
        mapping,
    );
    // Outside --dev the service needs its public URL (and an admin token): a port chosen
    // now, so the URL can name it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_reelstate"));
    if keyless.is_some() {
        command.env("REELSTATE_AIRTABLE_MAPPING", &mapping_file);
    }
    let mut child = command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("PUBLIC_BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("REELSTATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("REELSTATE_DB", &db)
        .env("GOAPI_WEBHOOK_SECRET", SECRET)
        .env("REELSTATE_SIGNING_SECRET", "soak-signing-secret-0123456789")
        .env("NCA_API_URL", nca.url())
        .env("NCA_API_KEY", nca.api_key())
        .env("GOAPI_API_URL", goapi.url())
        .env("GOAPI_API_KEY", goapi.api_key())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(
            std::fs::File::create(std::env::temp_dir().join("reelstate-soak-server.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .kill_on_drop(true)
        .spawn()
        .expect("start reelstate");
    let pid = child.id().expect("pid");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = lines
        .next_line()
        .await
        .expect("read")
        .expect("a line")
        .strip_prefix("reelstate listening on ")
        .expect("listening line")
        .to_owned();
    // Keep reading stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    println!(
        "soak: {secs} s at {rate} ticks/s (every 25th a whole lifecycle), sampling every {sample_every} s, server pid {pid}, {} base",
        if keyless.is_some() {
            "keyless"
        } else {
            "keyed"
        }
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(admin_headers())
        .build()
        .expect("client");
    let shapes: Arc<Vec<Value>> = Arc::new(SHAPES.iter().map(|s| fixture(s)).collect());
    let counters = Arc::new(Counters::default());
    let videos: Arc<std::sync::Mutex<Vec<RecordId>>> = Arc::default();
    let records = Arc::new(records);
    let start = Instant::now();
    let duration = Duration::from_secs(secs);

    // The sampler.
    let sampler = {
        let counters = counters.clone();
        let (client, url) = (client.clone(), url.clone());
        let db = db.clone();
        tokio::spawn(async move {
            let mut samples: Vec<(f64, u64, usize, f64)> = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(sample_every));
            loop {
                tick.tick().await;
                let t = start.elapsed().as_secs_f64();
                let rss = proc_field_kib(pid, "VmRSS:");
                let fds = open_fds(pid);
                let inbox = inbox_depth(&client, &url)
                    .await
                    .map_or_else(|| "?".to_owned(), |d| d.to_string());
                let (store_mib, rows) = store_size(&db);
                let rows = PRUNED
                    .iter()
                    .zip(&rows)
                    .map(|(t, n)| format!("{t} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                println!(
                    "  t={t:>6.0}s  VmRSS {:>7.1} MiB  fds {fds:>4}  store {store_mib:>6.2} MiB ({rows})  file {:>6.1} MiB  inbox {inbox:>6}  sent {:>7}  accepted {:>7}  duplicates {:>6}  errors {:>3}  lifecycles {:>5}",
                    rss as f64 / 1024.0,
                    file_mib(&db),
                    counters.sent.load(Ordering::Relaxed),
                    counters.accepted.load(Ordering::Relaxed),
                    counters.duplicates.load(Ordering::Relaxed),
                    counters.errors.load(Ordering::Relaxed),
                    counters.lifecycles.load(Ordering::Relaxed),
                );
                samples.push((t, rss, fds, store_mib));
                if start.elapsed() >= duration {
                    return samples;
                }
            }
        })
    };

    // The load: one tick every 1/rate s, each handled on its own task.
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    while start.elapsed() < duration {
        tick.tick().await;
        n += 1;
        let (client, url, shapes, counters, videos, records, nca_url) = (
            client.clone(),
            url.clone(),
            shapes.clone(),
            counters.clone(),
            videos.clone(),
            records.clone(),
            nca.url(),
        );
        tokio::spawn(async move {
            counters.sent.fetch_add(1, Ordering::Relaxed);
            let r = if n.is_multiple_of(25) {
                let video = records
                    .create_video(&VideoFields {
                        status: Some(VideoStatus::SegmentsCombined),
                        combined_segments_video: Some(
                            MediaUrl::parse(&format!("{nca_url}/videos/soak-{n}.mp4"))
                                .expect("url"),
                        ),
                        music_prompt: Some(format!("calm piano #{n}")),
                        ..VideoFields::default()
                    })
                    .await
                    .expect("seed video");
                let r = client
                    .post(format!("{url}/videos/{video}/music"))
                    .json(&json!({}))
                    .send()
                    .await;
                videos.lock().expect("videos").push(video);
                counters.lifecycles.fetch_add(1, Ordering::Relaxed);
                r
            } else {
                // Every tenth delivery repeats an earlier one (same task, status, timestamp).
                let key = if n % 10 == 9 && n > 5 { n - 5 } else { n };
                let mut body = shapes[(key % shapes.len() as u64) as usize].clone();
                body["timestamp"] = json!(1_700_000_000 + key);
                body["data"]["task_id"] = json!(format!("soak-task-{key}"));
                client
                    .post(format!(
                        "{url}/webhooks/goapi?video_id=recSoak{:010}",
                        key % 100_000
                    ))
                    .header("x-webhook-secret", SECRET)
                    .json(&body)
                    .send()
                    .await
            };
            match r.map(|r| r.status().as_u16()) {
                Ok(200) if !n.is_multiple_of(25) => {
                    counters.duplicates.fetch_add(1, Ordering::Relaxed)
                }
                Ok(200..=299) => counters.accepted.fetch_add(1, Ordering::Relaxed),
                _ => counters.errors.fetch_add(1, Ordering::Relaxed),
            };
        });
    }
    let samples = sampler.await.expect("sampler");

    // Every lifecycle must have completed (bounded wait).
    let videos = videos.lock().expect("videos").clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut incomplete = videos.clone();
    while !incomplete.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for v in incomplete {
            let done = match client.get(format!("{url}/videos/{v}")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|j| j["status"] == "completed"),
                Err(_) => false,
            };
            if !done {
                still.push(v);
            }
        }
        incomplete = still;
        if !incomplete.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    // The first sample (t = 0, before any traffic) is warm-up, not part of the verdict.
    let samples = &samples[1.min(samples.len())..];
    let half = samples.len() / 2;
    let (first, last) = samples.split_at(half);
    type Sample = (f64, u64, usize, f64);
    let rss = |s: &[Sample]| mean(&s.iter().map(|x| x.1 as f64).collect::<Vec<_>>());
    let fds = |s: &[Sample]| mean(&s.iter().map(|x| x.2 as f64).collect::<Vec<_>>());
    let store = |s: &[Sample]| mean(&s.iter().map(|x| x.3).collect::<Vec<_>>());
    let rss_growth = (rss(last) / rss(first).max(1.0) - 1.0) * 100.0;
    let fd_growth = fds(last) - fds(first);
    println!(
        "soak done after {:.0} s: sent {}, accepted {}, duplicates {}, errors {}",
        start.elapsed().as_secs_f64(),
        counters.sent.load(Ordering::Relaxed),
        counters.accepted.load(Ordering::Relaxed),
        counters.duplicates.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
    );
    println!(
        "inbox entries still waiting: {}",
        inbox_depth(&client, &url)
            .await
            .map_or_else(|| "?".to_owned(), |d| d.to_string())
    );
    println!(
        "lifecycles completed {} / {}; NCA submissions {} (ids submitted twice: {})",
        videos.len() - incomplete.len(),
        videos.len(),
        nca.submissions().len(),
        nca.submissions_by_id().values().filter(|&&c| c > 1).count(),
    );
    println!(
        "VmRSS mean first half {:.1} MiB, last half {:.1} MiB ({rss_growth:+.1}%); peak (VmHWM) {:.1} MiB",
        rss(first) / 1024.0,
        rss(last) / 1024.0,
        proc_field_kib(pid, "VmHWM:") as f64 / 1024.0
    );
    println!(
        "open fds mean first half {:.1}, last half {:.1} ({fd_growth:+.1})",
        fds(first),
        fds(last)
    );
    println!(
        "engine store (the pruned tables and their indexes) mean first half {:.2} MiB, last half {:.2} MiB; retention {}",
        store(first),
        store(last),
        std::env::var("REELSTATE_RETENTION_DAYS")
            .map_or_else(|_| "30 days (default)".to_owned(), |d| format!("{d} days")),
    );
    let stable = rss_growth < 10.0 && fd_growth < 5.0 && incomplete.is_empty();
    println!(
        "verdict: {}",
        if stable {
            "STABLE (RSS growth under 10% and fds flat over the second half; every lifecycle completed)"
        } else {
            "GROWTH OR INCOMPLETE LIFECYCLES: see the samples"
        }
    );
    let _ = child.kill().await;
    if !incomplete.is_empty() {
        for v in incomplete.iter().take(10) {
            eprintln!("not completed: {v}");
        }
        std::process::exit(1);
    }
}
