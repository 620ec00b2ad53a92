//! Airtable economy benchmark: Airtable's 5 requests per second per base, not CPU, is
//! this service's ceiling, so this counts requests, on the Airtable double, through the
//! real binary:
//!
//! 1. typical writes of the typed layer alone (and 30 concurrent job updates, batched);
//! 2. requests per completed GoAPI webhook of a job the engine started: one alone, then
//!    30 at once, with the time to drain them next to the floor (requests / 5 per second);
//! 3. the same for jobs another part of the pipeline created (the common case: the engine
//!    meets the video for the first time when GoAPI calls back): one alone, then bursts of
//!    30 and of 100.
//!
//! Each measurement also prints how long after each webhook's 202 the NCA double received
//! its video's mix (the render latency: a mix must not wait on the video's Airtable writes),
//! split into the wait for the worker's decision and the rest, and when the base saw the
//! burst's reads (the first-contact reads a decision waits on) with how many writes went
//! before them. `AIRTABLE_BENCH_TIMELINE=1` lists every request of each burst. Each
//! measurement starts one window after the previous one settled, on a budget at rest.
//!
//! Run: `cargo bench --bench airtable`.

#[path = "../tests/it/support/airtable_double.rs"]
// The bench drives only part of what the tests use of it.
#[allow(dead_code)]
mod airtable_double;
#[path = "../tests/it/support/goapi_double.rs"]
// The bench drives only part of what the tests use of it.
#[allow(dead_code)]
mod goapi_double;
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

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use airtable_double::{AirtableDouble, DoubleConfig};
use futures::future::join_all;
use goapi_double::GoapiDouble;
use nca_double::NcaDouble;
use reelstate::domain::{JobStatus, JobType, RecordId};
use reelstate::records::airtable::{AirtableBackend, AirtableConfig};
use reelstate::records::{JobFields, Mapping, Records, VideoFields};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
/// More than Airtable's window: after it, no earlier request holds a slot of the budget.
const REST: Duration = Duration::from_millis(1100);
const SECRET: &str = "bench-secret";

fn client_for(d: &AirtableDouble) -> Records {
    let backend = AirtableBackend::new(AirtableConfig {
        api_url: d.url(),
        token: d.token(),
        base_id: d.base_id(),
        lockout: Duration::from_secs(1),
        ..AirtableConfig::default()
    })
    .expect("backend");
    Records::new(Arc::new(backend), Mapping::default())
}

async fn typical_writes() {
    let d = AirtableDouble::start(DoubleConfig::default()).await;
    let r = client_for(&d);
    let video = RecordId::parse(&d.insert_record("Videos", json!({"Name": "v"}))).unwrap();
    let count = |d: &AirtableDouble| d.requests().len();
    let row = |label: &str, n: usize| println!("  {label:<52} {n:>3} request(s)");

    let before = count(&d);
    r.get_video(&video).await.unwrap();
    row("read a video", count(&d) - before);

    let before = count(&d);
    let job = |i: usize| JobFields {
        job_id: format!("job-{i}"),
        job_type: Some(JobType::MusicGeneration),
        status: Some(JobStatus::Processing),
        related_video: Some(video.clone()),
        external_job_id: None,
        webhook_url: None,
        error_details: None,
        timestamps: None,
    };
    r.write_job(&job(0)).await.unwrap();
    row("create (upsert) a job", count(&d) - before);

    let before = count(&d);
    r.update_video(
        &video,
        &VideoFields {
            status: Some(reelstate::domain::VideoStatus::GeneratingMusic),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    row("update a video", count(&d) - before);

    let v = r.get_video(&video).await.unwrap().unwrap();
    let before = count(&d);
    r.jobs_of_video(&v).await.unwrap();
    row(
        "find a video's jobs (by its link array)",
        count(&d) - before,
    );

    let new_jobs: Vec<JobFields> = (1..=30).map(job).collect();
    let jobs: Vec<RecordId> = join_all(new_jobs.iter().map(|j| r.write_job(j)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let done = JobFields {
        status: Some(JobStatus::Completed),
        related_video: None,
        job_type: None,
        ..job(0)
    };
    let before = count(&d);
    join_all(jobs.iter().map(|id| r.update_job(id, &done))).await;
    row(
        "30 concurrent job updates (batched by 10)",
        count(&d) - before,
    );
}

fn fixture(task_id: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/goapi/udio_completed.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["data"]["task_id"] = json!(task_id);
    v
}

struct Server {
    url: String,
    /// When the Airtable double began (its request log's times count from it).
    airtable_epoch: SystemTime,
    client: reqwest::Client,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn video(&self, id: &str) -> Value {
        self.client
            .get(format!("{}/videos/{id}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until every video is in `status` with no effect left to run.
    async fn settle(&self, ids: &[String], status: &str) {
        for id in ids {
            loop {
                let v = self.video(id).await;
                if v["status"] == status && v["effects"].as_array().is_some_and(|e| e.is_empty()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn start_server(
    (airtable, airtable_epoch): (&AirtableDouble, SystemTime),
    nca: &NcaDouble,
    goapi: &GoapiDouble,
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    // Outside --dev the service needs its public URL (and an admin token): a port chosen
    // now, so the URL can name it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reelstate"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("PUBLIC_BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("REELSTATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("REELSTATE_DB", dir.path().join("bench.db"))
        .env("GOAPI_WEBHOOK_SECRET", SECRET)
        .env(
            "REELSTATE_SIGNING_SECRET",
            "bench-signing-secret-0123456789",
        )
        .env("AIRTABLE_TOKEN", airtable.token())
        .env("AIRTABLE_BASE_ID", airtable.base_id())
        .env("AIRTABLE_API_URL", airtable.url())
        .env("AIRTABLE_LOCKOUT_SECS", "1")
        .env("NCA_API_URL", nca.url())
        .env("NCA_API_KEY", nca.api_key())
        .env("GOAPI_API_URL", goapi.url())
        .env("GOAPI_API_KEY", goapi.api_key())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start reelstate");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .next_line()
        .await
        .unwrap()
        .unwrap()
        .strip_prefix("reelstate listening on ")
        .unwrap()
        .to_owned();
    Server {
        url,
        airtable_epoch,
        // The operator's token with every request (webhooks ignore it).
        client: reqwest::Client::builder()
            .default_headers(
                [(
                    reqwest::header::AUTHORIZATION,
                    format!("Bearer {ADMIN_TOKEN}").parse().expect("header"),
                )]
                .into_iter()
                .collect(),
            )
            .build()
            .expect("client"),
        _child: child,
        _dir: dir,
    }
}

impl Server {
    /// Sends GoAPI's completed webhook of `task` for `video`; it must be acknowledged.
    /// Returns when it was.
    async fn complete(&self, video: &str, task: &str) -> SystemTime {
        let r = self
            .client
            .post(format!("{}/webhooks/goapi?video_id={video}", self.url))
            .header("x-webhook-secret", SECRET)
            .json(&fixture(task))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        SystemTime::now()
    }

    /// Sends the completed webhooks of `batch` (video, task) at once, waits until every
    /// video is `adding_music` with nothing left to run, and prints what it cost: Airtable
    /// requests, the drain time against their floor, and how long after each webhook's
    /// acknowledgement NCA received the video's mix.
    async fn measure(
        &self,
        airtable: &AirtableDouble,
        nca: &NcaDouble,
        label: &str,
        batch: &[(String, String)],
    ) {
        // The previous measurement's requests keep their slots one window after their
        // responses: a burst sent at once would first wait for them. Each measurement
        // starts on a budget at rest, so that it shows its own requests and waits.
        tokio::time::sleep(REST).await;
        let before = airtable.requests().len();
        let start = Instant::now();
        let acked = join_all(batch.iter().map(|(v, t)| self.complete(v, t))).await;
        let videos: Vec<String> = batch.iter().map(|(v, _)| v.clone()).collect();
        self.settle(&videos, "adding_music").await;
        let drain = start.elapsed().as_secs_f64();
        let made = airtable.requests().len() - before;
        let floor = made as f64 / 5.0;
        println!(
            "  {label:<44} {made:>4} request(s), {:.2} per webhook; drained in {drain:.1} s, floor {floor:.1} s ({:.2}x)",
            made as f64 / batch.len() as f64,
            drain / floor.max(f64::MIN_POSITIVE),
        );
        let submissions = nca.submissions();
        let mut latency: Vec<f64> = videos
            .iter()
            .zip(&acked)
            .map(|(v, acked)| {
                let prefix = format!("add_music:{v}:");
                let sent = submissions
                    .iter()
                    .find(|s| s.id.as_deref().is_some_and(|id| id.starts_with(&prefix)))
                    .expect("the video's mix reached NCA")
                    .at;
                sent.duration_since(*acked)
                    .unwrap_or_default()
                    .as_secs_f64()
            })
            .collect();
        latency.sort_by(f64::total_cmp);
        println!(
            "  {:<44} mix at NCA after the webhook's 202: median {:.2} s, slowest {:.2} s",
            "",
            latency[latency.len() / 2],
            latency[latency.len() - 1],
        );
        self.where_the_time_went(airtable, before, &videos, &acked)
            .await;
    }

    /// Splits the render latency in two: from the webhook's 202 to the worker's decision
    /// (history), then from the decision to the mix at NCA; and shows where the base's
    /// reads (the first-contact reads a decision waits on) fell among the burst's writes.
    async fn where_the_time_went(
        &self,
        airtable: &AirtableDouble,
        before: usize,
        videos: &[String],
        acked: &[SystemTime],
    ) {
        let mut decided = Vec::new();
        for (v, acked) in videos.iter().zip(acked) {
            let snapshot = self.video(v).await;
            let Some(at) = snapshot["history"]
                .as_array()
                .and_then(|h| h.iter().find(|r| r["to"] == "adding_music"))
                .and_then(|r| r["at"].as_str())
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            else {
                continue;
            };
            let at = SystemTime::from(at);
            decided.push(at.duration_since(*acked).unwrap_or_default().as_secs_f64());
        }
        decided.sort_by(f64::total_cmp);
        if let (Some(median), Some(slowest)) = (decided.get(decided.len() / 2), decided.last()) {
            println!(
                "  {:<44} decided after the webhook's 202: median {median:.2} s, slowest {slowest:.2} s",
                ""
            );
        }
        let first_ack = acked.iter().min().copied().unwrap_or_else(SystemTime::now);
        let since_ack = |at: Duration| {
            (self.airtable_epoch + at)
                .duration_since(first_ack)
                .map(|d| d.as_secs_f64())
                .unwrap_or_else(|e| -e.duration().as_secs_f64())
        };
        let requests = airtable.requests();
        let burst = &requests[before.min(requests.len())..];
        let is_read = |r: &airtable_double::LoggedRequest| {
            r.method == "GET" || r.path.ends_with("/listRecords")
        };
        let reads: Vec<f64> = burst
            .iter()
            .filter(|r| is_read(r))
            .map(|r| since_ack(r.at))
            .collect();
        if let Some(last_read) = reads.last() {
            let writes_ahead = burst
                .iter()
                .filter(|r| !is_read(r) && since_ack(r.at) < *last_read)
                .count();
            println!(
                "  {:<44} reads at the base after the first 202: {}; writes before the last read: {writes_ahead}",
                "",
                reads
                    .iter()
                    .map(|t| format!("{t:.2} s"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        if std::env::var_os("AIRTABLE_BENCH_TIMELINE").is_some() {
            for r in burst {
                println!(
                    "    {:>7.3} s {:<6} {:<4} {:<16} {} record(s)",
                    since_ack(r.at),
                    r.method,
                    r.status,
                    r.table.as_deref().unwrap_or("-"),
                    r.records
                );
            }
        }
    }
}

async fn engine_started() {
    // The double logs its requests' times from its start: this is that start, to within
    // the few milliseconds the double takes to begin.
    let epoch = SystemTime::now();
    let airtable = AirtableDouble::start(DoubleConfig::default()).await;
    let nca = NcaDouble::start().await;
    let goapi = GoapiDouble::start().await;
    // Only the webhooks this benchmark sends: the doubles stay silent.
    goapi.set_drop_webhooks(true);
    nca.set_drop_callbacks(true);
    let n = 31;
    let videos: Vec<String> = (0..n)
        .map(|i| {
            airtable.insert_record(
                "Videos",
                json!({"Name": format!("v{i}"), "Status": "segments_combined",
                       "Combined Segments Video": format!("{}/v{i}.mp4", nca.url())}),
            )
        })
        .collect();
    let server = start_server((&airtable, epoch), &nca, &goapi).await;
    // The engine starts every video's music job (GoAPI task created, job recorded).
    for v in &videos {
        server
            .client
            .post(format!("{}/videos/{v}/music", server.url))
            .send()
            .await
            .unwrap();
    }
    server.settle(&videos, "generating_music").await;
    let mut batch = Vec::new();
    for v in &videos {
        let snapshot = server.video(v).await;
        let task = snapshot["jobs"][0]["external_id"].as_str().unwrap();
        batch.push((v.clone(), task.to_owned()));
    }
    server
        .measure(&airtable, &nca, "one completed webhook, alone", &batch[..1])
        .await;
    server
        .measure(
            &airtable,
            &nca,
            "30 completed webhooks at once",
            &batch[1..],
        )
        .await;
    println!(
        "  most requests the base saw in any one second: {}",
        airtable.max_requests_in_any_second()
    );
    assert_eq!(nca.submissions().len(), n, "one mix per video");
}

/// Jobs another part of the pipeline created: each video is `generating_music` in the base
/// with a processing music_generation job bound to its GoAPI task, and the engine has never
/// seen it.
async fn external_jobs() {
    // The double logs its requests' times from its start: this is that start, to within
    // the few milliseconds the double takes to begin.
    let epoch = SystemTime::now();
    let airtable = AirtableDouble::start(DoubleConfig::default()).await;
    let nca = NcaDouble::start().await;
    let goapi = GoapiDouble::start().await;
    goapi.set_drop_webhooks(true);
    nca.set_drop_callbacks(true);
    let n = 1 + 30 + 100;
    let batch: Vec<(String, String)> = (0..n)
        .map(|i| {
            let task = format!("30000000-0000-4000-8000-{i:012}");
            let combined = format!("{}/v{i}.mp4", nca.url());
            let prompt = format!("calm piano #{i}");
            let video = seed::generating_video(&airtable, i, &combined, &prompt, &task);
            (video, task)
        })
        .collect();
    let server = start_server((&airtable, epoch), &nca, &goapi).await;
    server
        .measure(&airtable, &nca, "one completed webhook, alone", &batch[..1])
        .await;
    server
        .measure(
            &airtable,
            &nca,
            "30 completed webhooks at once",
            &batch[1..31],
        )
        .await;
    server
        .measure(
            &airtable,
            &nca,
            "100 completed webhooks at once",
            &batch[31..],
        )
        .await;
    println!(
        "  most requests the base saw in any one second: {}",
        airtable.max_requests_in_any_second()
    );
    assert_eq!(nca.submissions().len(), n, "one mix per video");
}

#[tokio::main]
async fn main() {
    println!("Airtable requests per operation (typed layer on the Airtable double):");
    typical_writes().await;
    println!(
        "Airtable requests per completed GoAPI webhook, job started by the engine (real binary, Airtable double at 5 req/s):"
    );
    engine_started().await;
    println!(
        "Airtable requests per completed GoAPI webhook, job created elsewhere in the pipeline (first contact):"
    );
    external_jobs().await;
}
