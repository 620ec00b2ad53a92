//! Console benchmark: the videos list (`GET /videos`) and its page fragment over a store of
//! 10,000 videos. Fills a SQLite store through the store's own API (the commits the worker
//! makes: a snapshot per video, in varied states, with GoAPI task and NCA job ids, last
//! changed over 30 days), starts the real `reelstate serve` on it, and times each query
//! 100 times, one at a time, printing p50, p99 and max. The target is a p99 under 200 ms.
//!
//! Run: `cargo bench --bench console` (env BENCH_VIDEOS, BENCH_REQUESTS to change).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use reelstate::domain::{JobStatus, JobType, RecordId, VideoStatus};
use reelstate::machine::{Event, Job, JobId, Snapshot, Video};
use reelstate::store::{
    Commit, EntryOutcome, HistoryRow, Lane, NewEntry, Payload, Source, SqliteStore, Store,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Video `i`'s id, GoAPI task id and NCA job id: derived, so the searches can name them.
fn ids(i: usize) -> (RecordId, String, String) {
    let video = RecordId::parse(&format!("rec{i:014}")).expect("record id");
    (
        video,
        format!("task-{i:08}-{}", Uuid::from_u128(i as u128).simple()),
        format!("nca-{i:08}"),
    )
}

fn job(
    kind: JobType,
    status: JobStatus,
    external: &str,
    at: chrono::DateTime<Utc>,
    error: Option<&str>,
) -> Job {
    Job {
        id: JobId(Uuid::new_v4()),
        kind,
        status,
        external_id: Some(external.to_owned()),
        submission_id: None,
        error: error.map(str::to_owned),
        created_at: at,
        ended_at: (!status.is_active()).then_some(at),
        resubmissions: 0,
    }
}

/// Video `i`'s snapshot: four in ten completed, the rest spread over generating, mixing,
/// both failures and waiting for music.
fn snapshot(i: usize, at: chrono::DateTime<Utc>) -> Snapshot {
    use JobStatus::*;
    use JobType::*;
    let (video, task, nca) = ids(i);
    let (status, jobs) = match i % 10 {
        0..=3 => (
            VideoStatus::Completed,
            vec![
                job(MusicGeneration, Completed, &task, at, None),
                job(MusicAddition, Completed, &nca, at, None),
            ],
        ),
        4 => (
            VideoStatus::GeneratingMusic,
            vec![job(MusicGeneration, Processing, &task, at, None)],
        ),
        5 => (
            VideoStatus::AddingMusic,
            vec![
                job(MusicGeneration, Completed, &task, at, None),
                job(MusicAddition, Processing, &nca, at, None),
            ],
        ),
        6 => (
            VideoStatus::MusicGenerationFailed,
            vec![job(
                MusicGeneration,
                Failed,
                &task,
                at,
                Some("failed to generate music"),
            )],
        ),
        7 => (
            VideoStatus::MusicAdditionFailed,
            vec![
                job(MusicGeneration, Completed, &task, at, None),
                job(
                    MusicAddition,
                    Failed,
                    &nca,
                    at,
                    Some("FFmpeg command failed"),
                ),
            ],
        ),
        _ => (VideoStatus::SegmentsCombined, Vec::new()),
    };
    let mut v = Video::new(video, status);
    v.error_details = jobs.iter().find_map(|j| j.error.clone());
    Snapshot { video: v, jobs }
}

async fn fill(path: &std::path::Path, n: usize) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path).expect("open the store"));
    let now = Utc::now();
    let span = chrono::Duration::days(30);
    for i in 0..n {
        let at = now - span * (n - i) as i32 / n as i32;
        let snap = snapshot(i, at);
        let video = snap.video.id.clone();
        let entry = NewEntry {
            event_id: Uuid::new_v4(),
            video_id: video.clone(),
            source: Source::Api,
            endpoint: "/videos/music".into(),
            dedupe_key: None,
            raw_body: String::new(),
            headers: "{}".into(),
            received_at: at,
            payload: Payload::Event {
                event: Event::MusicRequested { prompt: None },
            },
        };
        store.accept(entry.clone()).await.expect("accept");
        let lease = store
            .claim(Lane::Worker, vec![video.clone()])
            .await
            .expect("claim")
            .pop()
            .expect("a free lease");
        let commit = Commit {
            event_id: entry.event_id,
            video_id: video,
            history: Some(HistoryRow {
                event_id: entry.event_id,
                event: "music_requested".into(),
                from: VideoStatus::SegmentsCombined,
                to: snap.video.status.clone(),
                outcome: EntryOutcome::Applied,
                at,
            }),
            snapshot: Some(snap),
            effects: Vec::new(),
            outcome: EntryOutcome::Applied,
            note: None,
            job: None,
            job_records: Vec::new(),
            at,
        };
        store.commit(commit, &lease).await.expect("commit");
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let n = env_or("BENCH_VIDEOS", 10_000);
    let requests = env_or("BENCH_REQUESTS", 100);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("console.db");
    let t = Instant::now();
    fill(&db, n).await;
    println!(
        "filled {n} videos through the store's commits in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reelstate"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .env("REELSTATE_DB", &db)
        .env("REELSTATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start reelstate");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines
        .next_line()
        .await
        .expect("stdout")
        .expect("a first line");
    let url = first
        .strip_prefix("reelstate listening on ")
        .expect("the address")
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let http = reqwest::Client::new();
    let get = |path: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let t = Instant::now();
            let r = http
                .get(format!("{url}{path}"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .expect("request");
            let status = r.status();
            let body = r.text().await.expect("body");
            assert!(status.is_success(), "{path}: {status} {body}");
            (t.elapsed(), body)
        }
    };
    // The reconciler's first pass over the waiting jobs runs at start: let it finish.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Each query's path for its k-th request, and what its answer must contain: the video
    // a search names, or at least one video for a list.
    type Query = Box<dyn Fn(usize) -> (String, String)>;
    let list = |path: &'static str| -> Query { Box::new(move |_| (path.to_owned(), "rec".into())) };
    let search = |prefix: &'static str,
                  pick: fn(usize) -> usize,
                  which: fn(&(RecordId, String, String)) -> String|
     -> Query {
        Box::new(move |k| {
            // `pick` chooses the kind of video by its last digit (`snapshot`): kept modulo n.
            let i = pick(k) % (n / 10 * 10);
            let id = ids(i);
            (format!("{prefix}{}", which(&id)), id.0.to_string())
        })
    };
    let queries: Vec<(&str, Query)> = vec![
        ("all, first page", list("/videos")),
        ("state = completed", list("/videos?status=completed")),
        (
            "state = music_addition_failed",
            list("/videos?status=music_addition_failed"),
        ),
        ("needs attention", list("/videos?attention=1")),
        ("stuck", list("/videos?stuck=1")),
        ("age: older than 7 days", list("/videos?older_than=7d")),
        ("age: newer than 1 day", list("/videos?newer_than=1d")),
        (
            "job: music_addition processing",
            list("/videos?job_type=music_addition&job_status=processing"),
        ),
        (
            "search by task id",
            search("/videos?q=", |k| k * 7_910 + k % 8, |i| i.1.clone()),
        ),
        (
            "search by NCA job id",
            search("/videos?q=", |k| k * 1_030 + 5, |i| i.2.clone()),
        ),
        (
            "search by video id",
            search("/videos?q=", |k| k * 7_727, |i| i.0.to_string()),
        ),
        ("page fragment, all", list("/ui/fragments/videos")),
        (
            "page fragment, needs attention",
            list("/ui/fragments/videos?attention=1"),
        ),
        (
            "page fragment, search by task id",
            search(
                "/ui/fragments/videos?q=",
                |k| k * 7_910 + k % 8,
                |i| i.1.clone(),
            ),
        ),
    ];
    println!(
        "{:<34} {:>9} {:>9} {:>9}  (ms, {requests} requests each, one at a time)",
        "query", "p50", "p99", "max"
    );
    let mut missed = Vec::new();
    for (name, path) in &queries {
        let mut lat = Vec::with_capacity(requests);
        for k in 0..requests {
            let (path, expected) = path(k);
            let (took, body) = get(path.clone()).await;
            assert!(
                body.contains(&expected),
                "{name}: {path} lacks {expected}: {body:.300}"
            );
            lat.push(took);
        }
        lat.sort();
        let (p50, p99, max) = (pct(&lat, 0.5), pct(&lat, 0.99), pct(&lat, 1.0));
        println!("{name:<34} {p50:>9.2} {p99:>9.2} {max:>9.2}");
        if p99 >= 200.0 {
            missed.push(*name);
        }
    }
    if missed.is_empty() {
        println!("every query's p99 is under 200 ms");
    } else {
        println!("p99 at or over 200 ms: {}", missed.join(", "));
    }
    let _ = child.kill().await;
}
