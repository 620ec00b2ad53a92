//! SIGTERM hands a replica's videos over at once, binary against binary: two replicas of
//! the real `reelstate` on one PostgreSQL database with a long lease (60 s). The replica
//! whose executor is in the middle of a video's Airtable write (the double applies it and
//! holds the answer back) is stopped with SIGTERM; it waits for its work as long as it
//! may, gives its leases back and exits, and the other replica finishes the video.
//!
//! "At once" is measured on PostgreSQL's clock, from the lease rows themselves, with no
//! timer in the test: the moment the other replica is seen holding the video's lease is
//! compared with the latest expiry the stopping replica had renewed its lease to. Without
//! `release_leases` at shutdown the other replica can only take the video once that
//! expiry has passed, and this test fails. Runs when `REELSTATE_TEST_DATABASE_URL` is set.
//!
//! NCA's callback comes while the stopping replica drains: NCA posts it once, to the URL it
//! was given, and does not retry (docs/goapi-and-nca.md, "The callback"). The stopping replica still
//! acknowledges it (and says `stopping` on `/readyz`); a replica that refused it left the
//! video waiting for the reconciler's next check, minutes later.

use crate::support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use support::airtable_double::{AirtableDouble, DoubleConfig};
use support::app::{AppBuilder, GOAPI_SECRET, TestApp};
use support::nca_double::NcaDouble;

/// Long enough that waiting it out cannot pass for a hand-over.
const LEASE_SECS: f64 = 60.0;

/// The projection-lane lease row of `video` (its Airtable writes): (owner, expires_at, PostgreSQL's now()); a lease
/// given back expires at `-infinity`, read as `None`.
async fn executor_lease(
    client: &tokio_postgres::Client,
    video: &str,
) -> Option<(String, Option<DateTime<Utc>>, DateTime<Utc>)> {
    client
        .query_opt(
            "SELECT owner, NULLIF(expires_at, '-infinity'), now() FROM leases
             WHERE lane = 'projection' AND video_id = $1",
            &[&video],
        )
        .await
        .expect("read the lease row")
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

fn owned_by(owner: &str, app: &TestApp) -> bool {
    app.pid()
        .is_some_and(|pid| owner.starts_with(&format!("{pid}-")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_hands_a_video_in_mid_work_to_the_other_replica_well_before_its_lease_expires() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    let airtable = AirtableDouble::start(DoubleConfig::default()).await;
    let nca = NcaDouble::start().await;
    // Long enough that the mix's callback reaches the replica that submitted it only after
    // SIGTERM, whichever replica that is; short of the stopping replica's drain (its held
    // Airtable write keeps it draining until the request times out).
    nca.set_callback_delay(Duration::from_secs(3));
    let video = airtable.insert_record(
        "Videos",
        json!({
            "Name": "handed over",
            "Status": "generating_music",
            "Combined Segments Video": format!("{}/videos/combined-1.mp4", nca.url()),
        }),
    );
    airtable.insert_record(
        "Jobs",
        json!({
            "Job ID": "pipeline-1",
            "Type": "music_generation",
            "Status": "processing",
            "Related Video": [video],
            "External Job ID": "task-1",
        }),
    );
    let mut apps: Vec<TestApp> = Vec::new();
    for _ in 0..2 {
        let app = AppBuilder::new()
            .env("REELSTATE_DB", &db.url)
            .env("REELSTATE_LEASE_SECS", &LEASE_SECS.to_string())
            .airtable(&airtable)
            .nca(&nca)
            .spawn()
            .await;
        apps.push(app);
    }
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);

    // Every Airtable write is applied at once and answered only much later (longer than
    // the request timeout, so its retry is held too): the executor that takes the video
    // stays in the middle of its first write for as long as it lives.
    let writes_before = airtable.requests().len();
    airtable.set_write_delay(Some(Duration::from_secs(600)));
    let body = support::world::goapi_fixture("udio_completed.json", "task-1", 1_765_248_943);
    let r = reqwest::Client::new()
        .post(format!("{}/webhooks/goapi?video_id={video}", apps[0].url))
        .header("x-webhook-secret", GOAPI_SECRET)
        .json(&body)
        .send()
        .await
        .expect("deliver");
    assert_eq!(r.status().as_u16(), 202);

    // Wait (without a deadline of its own: the test harness has one) until a write is in
    // flight and a replica holds the video's executor lease.
    let (stopping, mut expiry) = loop {
        let writing = airtable.requests()[writes_before..]
            .iter()
            .any(|q| q.method != "GET" && !q.path.ends_with("/listRecords"));
        if writing
            && let Some((owner, Some(expires), now)) = executor_lease(&client, &video).await
            && expires > now
        {
            let holder = (0..2)
                .find(|&i| owned_by(&owner, &apps[i]))
                .unwrap_or_else(|| panic!("lease owner {owner} is neither replica"));
            break (holder, expires);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let other = 1 - stopping;

    // SIGTERM. While the stopping replica waits for its write, it keeps renewing its lease:
    // the latest expiry seen is when the other replica could have taken the video without a
    // hand-over (a lower bound: a renewal not seen only pushes it later).
    let pid = apps[stopping].pid().expect("running");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    // Still serving while it drains, and telling load balancers it is on its way out.
    let http = reqwest::Client::new();
    loop {
        let r = http
            .get(format!("{}/readyz", apps[stopping].url))
            .send()
            .await
            .expect("the stopping replica still answers while its work drains");
        if r.status().as_u16() == 503 {
            let body: serde_json::Value = r.json().await.expect("json");
            assert_eq!(body["status"], "stopping", "{body}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let taken_at = loop {
        let (owner, expires, now) = executor_lease(&client, &video)
            .await
            .expect("the lease row stays");
        if owner.starts_with(&format!("{pid}-")) {
            if let Some(expires) = expires
                && expires > expiry
            {
                expiry = expires;
            }
        } else if owned_by(&owner, &apps[other]) {
            break now;
        }
        // Bounded wait (twice the lease, as the harness's deadline): without a hand-over
        // the other replica takes the video only after `expiry`, and the assertion below
        // says by how much.
        assert!(
            now < expiry + chrono::Duration::seconds(LEASE_SECS as i64),
            "nobody took the video over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let status = apps[stopping].terminate().await;
    assert!(
        status.success(),
        "the stopping replica exits cleanly: {status:?}"
    );
    let margin = expiry - taken_at;
    eprintln!(
        "handover: the other replica held the video {:.1} s before the stopping replica's lease \
         would have expired (lease {LEASE_SECS} s)",
        margin.num_milliseconds() as f64 / 1000.0
    );
    assert!(
        margin > chrono::Duration::seconds((LEASE_SECS / 4.0) as i64),
        "taken over only {:.1} s before the stopping replica's lease would have expired: \
         waited out, not handed over",
        margin.num_milliseconds() as f64 / 1000.0
    );

    let log = apps[stopping].log_text();
    assert!(
        log.contains("gave this replica's leases back"),
        "the stopping replica gave its leases back:\n{}",
        support::app::tail(&log, 30)
    );

    // The other replica finishes the video: the held write again, then the mix.
    airtable.set_write_delay(None);
    apps[other]
        .wait_settled(&video, "completed", Duration::from_secs(120))
        .await;
    let videos = airtable.records("Videos");
    let stored = videos.iter().find(|r| r.id == video).expect("the video");
    assert_eq!(stored.fields["Status"], "completed", "{stored:?}");
    assert_eq!(nca.submissions().len(), 1, "one mix");
}
