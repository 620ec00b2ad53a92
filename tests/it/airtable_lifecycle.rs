//! The whole lifecycle with Airtable as the system of record: the real binary, the
//! Airtable double injecting 30% 503s and a 429 lockout, and the GoAPI and NCA doubles.
//! Every write lands exactly once and the base never sees more than 5 requests a second.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use support::airtable_double::{AirtableDouble, DoubleConfig};
use support::app::AppBuilder;
use support::goapi_double::GoapiDouble;
use support::nca_double::NcaDouble;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn videos_complete_on_airtable_through_503s_and_a_lockout() {
    let airtable = AirtableDouble::start(DoubleConfig::default()).await;
    let nca = NcaDouble::start().await;
    let goapi = GoapiDouble::start().await;
    let n = 8;
    let videos: Vec<String> = (0..n)
        .map(|i| {
            airtable.insert_record(
                "Videos",
                json!({
                    "Name": format!("video {i}"),
                    "Status": "segments_combined",
                    "Combined Segments Video": format!("{}/videos/combined-{i}.mp4", nca.url()),
                    "Music Prompt": "calm piano",
                }),
            )
        })
        .collect();
    airtable.set_fail_rate(0.3);
    airtable.rate_limit_at_request(12);
    let app = AppBuilder::new()
        .airtable(&airtable)
        .env("AIRTABLE_LOCKOUT_SECS", "1")
        .nca(&nca)
        .goapi(&goapi)
        .spawn()
        .await;
    for v in &videos {
        let r = app
            .client
            .post(format!("{}/videos/{v}/music", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    }
    for v in &videos {
        app.wait_for_video(v, Duration::from_secs(120), |s| {
            s["status"] == "completed" && s["effects"].as_array().is_some_and(|e| e.is_empty())
        })
        .await;
    }

    // Exactly one mix per video.
    for (id, count) in nca.submissions_by_id() {
        assert_eq!(count, 1, "{id}");
    }
    assert_eq!(nca.submissions().len(), n);

    // The base: every video completed with its Final Video; two jobs each, none doubled;
    // one Webhook Events record per delivery.
    let by_id: HashMap<String, _> = airtable
        .records("Videos")
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    for v in &videos {
        let rec = &by_id[v];
        assert_eq!(rec.fields["Status"], "completed", "{rec:?}");
        assert!(
            rec.fields["Final Video"]
                .as_str()
                .is_some_and(|u| u.starts_with(&nca.url()))
        );
        assert_eq!(
            rec.fields["Jobs"].as_array().map(Vec::len),
            Some(2),
            "{rec:?}"
        );
    }
    let jobs = airtable.records("Jobs");
    assert_eq!(jobs.len(), 2 * n, "no job written twice");
    assert!(jobs.iter().all(|j| j.fields["Status"] == "completed"));
    let events = airtable.records("Webhook Events");
    let mut ids: Vec<&str> = events
        .iter()
        .map(|e| e.fields["Event ID"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "one record per event id");
    let deliveries = goapi
        .deliveries()
        .iter()
        .filter(|d| d.answered.is_some_and(|s| s < 300))
        .count()
        + nca.callbacks_sent().len();
    assert_eq!(
        events.len(),
        deliveries,
        "every delivered webhook is on record"
    );

    assert!(
        airtable.max_requests_in_any_second() <= 5,
        "the base saw {} requests in one second",
        airtable.max_requests_in_any_second()
    );
}
