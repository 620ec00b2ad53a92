//! Three replicas of the real binary on one PostgreSQL database, with Airtable as the
//! system of record: a burst of GoAPI completions spread over all three (20% delivered
//! twice, to different replicas), one replica SIGKILLed in the middle. Every video ends
//! completed with exactly one NCA submission, every acknowledged delivery is on record,
//! and the base never sees more than 5 requests in any second: the budget is the
//! cluster's. Runs when `REELSTATE_TEST_DATABASE_URL` is set (`.ci/run` sets it).

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};
use support::airtable_double::{AirtableDouble, DoubleConfig};
use support::app::{AppBuilder, GOAPI_SECRET, TestApp};
use support::nca_double::NcaDouble;

const VIDEOS: usize = 100;

fn completed(task_id: &str) -> Value {
    support::world::goapi_fixture("udio_completed.json", task_id, 1_765_248_943)
}

/// Sends to replica `first`, then to the next ones if it cannot be reached (as a load
/// balancer does when a replica dies). Returns the status of the first answer, whatever it
/// is: a 5xx from a live replica is a failure of the test, not a reason to go elsewhere.
async fn deliver(apps: &[String], first: usize, video: &str, body: &Value) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    for i in 0..apps.len() {
        let url = &apps[(first + i) % apps.len()];
        let sent = client
            .post(format!("{url}/webhooks/goapi?video_id={video}"))
            .header("x-webhook-secret", GOAPI_SECRET)
            .json(body)
            .send()
            .await;
        match sent {
            Ok(r) => return Some(r.status().as_u16()),
            Err(_) => continue,
        }
    }
    None
}

/// Waits until replica 1 or 2 holds a live lease, kills it with SIGKILL, and returns
/// which one and how many leases it held.
async fn kill_a_lease_holder(url: &str, apps: &mut [TestApp]) -> (usize, i64) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    for _ in 0..400 {
        for i in [1, 2] {
            let pid = apps[i].pid().expect("running");
            let held: i64 = client
                .query_one(
                    "SELECT COUNT(*) FROM leases WHERE owner LIKE $1 AND expires_at > now()",
                    &[&format!("{pid}-%")],
                )
                .await
                .expect("count leases")
                .get(0);
            if held > 0 {
                apps[i].kill().await;
                return (i, held);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("neither replica 1 nor 2 ever held a lease during the burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_complete_a_burst_through_a_kill_within_one_airtable_budget() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    let airtable = AirtableDouble::start(DoubleConfig::default()).await;
    let nca = NcaDouble::start().await;
    let videos: Vec<String> = (0..VIDEOS)
        .map(|i| {
            let video = airtable.insert_record(
                "Videos",
                json!({
                    "Name": format!("video {i}"),
                    "Status": "generating_music",
                    "Combined Segments Video": format!("{}/videos/combined-{i}.mp4", nca.url()),
                }),
            );
            airtable.insert_record(
                "Jobs",
                json!({
                    "Job ID": format!("pipeline-{i}"),
                    "Type": "music_generation",
                    "Status": "processing",
                    "Related Video": [video],
                    "External Job ID": format!("task-{i}"),
                }),
            );
            video
        })
        .collect();

    // Callbacks go to the address every replica advertises: in production a load
    // balancer; here the first replica, which is not killed, plays it.
    let mut apps: Vec<TestApp> = Vec::new();
    for i in 0..3 {
        let mut app = AppBuilder::new()
            .env("REELSTATE_DB", &db.url)
            .env("REELSTATE_LEASE_SECS", "2")
            .env("REELSTATE_INTERRUPTED_GRACE_SECS", "3")
            .airtable(&airtable)
            .env("AIRTABLE_LOCKOUT_SECS", "2")
            .nca(&nca);
        if i > 0 {
            app = app.env("PUBLIC_BASE_URL", &apps[0].url);
        }
        apps.push(app.spawn().await);
    }
    let urls: Vec<String> = apps.iter().map(|a| a.url.clone()).collect();

    // 100 completions; those of every fifth video delivered twice at the same moment, to
    // two replicas; 10 at a time. Halfway, the replica (of the two that do not receive the
    // callbacks) that holds leases is killed with SIGKILL: its work must be taken over.
    let mut deliveries: Vec<(usize, usize)> = Vec::new();
    for i in 0..VIDEOS {
        deliveries.push((i, i % 3));
        if i % 5 == 0 {
            deliveries.push((i, (i + 1) % 3));
        }
    }
    let mut acknowledged = 0;
    let started = std::time::Instant::now();
    let mut killed = None;
    for (n, chunk) in deliveries.chunks(10).enumerate() {
        if n == deliveries.len() / 20 {
            killed = Some(kill_a_lease_holder(&db.url, &mut apps).await);
        }
        let sends = chunk.iter().map(|&(i, replica)| {
            let (urls, video) = (urls.clone(), videos[i].clone());
            async move { deliver(&urls, replica, &video, &completed(&format!("task-{i}"))).await }
        });
        for status in futures::future::join_all(sends).await {
            let status = status.expect("some replica answers");
            assert!(matches!(status, 200 | 202), "status {status}");
            acknowledged += 1;
        }
    }
    let (killed, leases_held) = killed.expect("a replica was killed");
    eprintln!("replicas: killed replica {killed} while it held {leases_held} leases");
    assert_eq!(acknowledged, deliveries.len());

    for v in &videos {
        apps[0]
            .wait_settled(v, "completed", Duration::from_secs(240))
            .await;
    }

    // Exactly one mix per video, whichever replica submitted it.
    let by_id = nca.submissions_by_id();
    assert_eq!(by_id.len(), VIDEOS, "one submission id per video");
    for (id, count) in &by_id {
        assert_eq!(*count, 1, "{id} submitted {count} times");
    }
    // The base agrees, and every acknowledged delivery has its Webhook Events record.
    let records = airtable.records_by_id("Videos");
    for v in &videos {
        assert_eq!(records[v].fields["Status"], "completed", "{:?}", records[v]);
    }
    let events = airtable.records("Webhook Events");
    let mut ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e.fields["Event ID"].as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "one record per event");
    let goapi_events = events
        .iter()
        .filter(|e| e.fields["Service"] == "GoAPI")
        .count();
    assert_eq!(goapi_events, deliveries.len(), "every delivery on record");
    eprintln!(
        "replicas: {} deliveries, {} Airtable requests in {:.1} s, at most {} in any second, {} NCA submissions",
        deliveries.len(),
        airtable.requests().len(),
        started.elapsed().as_secs_f64(),
        airtable.max_requests_in_any_second(),
        nca.submissions().len()
    );
    // Where the requests went: reads and writes per table, and records per write.
    let mut kinds: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for r in airtable.requests() {
        let read = r.method == "GET" || r.path.ends_with("/listRecords");
        let kind = format!(
            "{} {}",
            if read { "read" } else { "write" },
            r.table.as_deref().unwrap_or("-")
        );
        let entry = kinds.entry(kind).or_default();
        entry.0 += 1;
        entry.1 += r.records;
    }
    eprintln!(
        "replicas: requests (records) by kind: {}",
        kinds
            .iter()
            .map(|(k, (n, records))| format!("{k} {n} ({records})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        airtable.max_requests_in_any_second() <= 5,
        "the base saw {} requests in one second",
        airtable.max_requests_in_any_second()
    );
}

/// Without Airtable the records live in the same PostgreSQL database: a video seeded
/// there goes the whole way through two replicas, a command sent to one and the state read
/// from the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_airtable_the_records_live_in_postgres_too() {
    use reelstate::domain::VideoStatus;
    use reelstate::records::embedded::postgres::PgRecords;
    use reelstate::records::{Mapping, Records, VideoFields};
    use support::goapi_double::GoapiDouble;

    let Some(db) = support::pg::database().await else {
        return;
    };
    let nca = NcaDouble::start().await;
    let goapi = GoapiDouble::start().await;
    let start = |public: Option<String>| {
        let mut app = AppBuilder::new()
            .env("REELSTATE_DB", &db.url)
            .nca(&nca)
            .goapi(&goapi);
        if let Some(p) = public {
            app = app.env("PUBLIC_BASE_URL", &p);
        }
        app.spawn()
    };
    let a = start(None).await;
    let b = start(Some(a.url.clone())).await;
    // The replicas migrated the schema; the test writes the video as the pipeline would.
    let pool = reelstate::pg::pool(&db.url, 2).expect("pool");
    let records = Records::new(
        std::sync::Arc::new(PgRecords::new(pool, &Mapping::default()).expect("records")),
        Mapping::default(),
    );
    let video = records
        .create_video(&VideoFields {
            status: Some(VideoStatus::SegmentsCombined),
            combined_segments_video: Some(support::world::url(&format!(
                "{}/videos/combined-1.mp4",
                nca.url()
            ))),
            music_prompt: Some("calm piano".into()),
            ..VideoFields::default()
        })
        .await
        .expect("seed the video");
    let r = b
        .client
        .post(format!("{}/videos/{video}/music", b.url))
        .json(&json!({}))
        .send()
        .await
        .expect("request music");
    assert_eq!(
        r.status().as_u16(),
        202,
        "{}",
        r.text().await.unwrap_or_default()
    );
    a.wait_settled(video.as_str(), "completed", Duration::from_secs(60))
        .await;
    let stored = records
        .get_video(&video)
        .await
        .expect("read")
        .expect("the video is still there");
    assert_eq!(stored.status, Some(VideoStatus::Completed));
    assert!(stored.final_video.is_some(), "{stored:?}");
    assert_eq!(nca.submissions().len(), 1);
}
