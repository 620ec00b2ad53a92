//! The whole lifecycle with Airtable as the system of record: the real binary, the
//! Airtable double injecting 30% 503s and a 429 lockout, and the GoAPI and NCA doubles.
//! Every write lands exactly once and the base never sees more than 5 requests a second.

use crate::support;

use std::time::Duration;

use support::airtable_double::{AirtableDouble, DoubleConfig};
use support::app::AppBuilder;
use support::goapi_double::GoapiDouble;
use support::nca_double::NcaDouble;
use support::seed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn videos_complete_on_airtable_through_503s_and_a_lockout() {
    let airtable = AirtableDouble::start(DoubleConfig::default()).await;
    let nca = NcaDouble::start().await;
    let goapi = GoapiDouble::start().await;
    let n = 8;
    let videos: Vec<String> = (0..n)
        .map(|i| {
            let combined = format!("{}/videos/combined-{i}.mp4", nca.url());
            seed::combined_video(&airtable, &format!("video {i}"), &combined)
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
        let (status, body) = app.post(&format!("/videos/{v}/music")).await;
        assert_eq!(status, 202, "{body}");
    }
    for v in &videos {
        app.wait_settled(v, "completed", Duration::from_secs(120))
            .await;
    }

    // Exactly one mix per video.
    for (id, count) in nca.submissions_by_id() {
        assert_eq!(count, 1, "{id}");
    }
    assert_eq!(nca.submissions().len(), n);

    // The base: every video completed with its Final Video; two jobs each, none doubled;
    // one Webhook Events record per delivery.
    let by_id = airtable.records_by_id("Videos");
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
    let deliveries = goapi.deliveries_acknowledged() + nca.callbacks_sent().len();
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

/// GoAPI's webhooks echo the callback URL we gave it, token included; the copy of the
/// payload in Webhook Events has the token masked, so reading the base does not let anyone
/// forge a callback.
#[tokio::test]
async fn webhook_events_keep_the_payload_without_its_callback_token() {
    let airtable = AirtableDouble::start(DoubleConfig::default()).await;
    let nca = NcaDouble::start().await;
    let goapi = GoapiDouble::start().await;
    let combined = format!("{}/videos/combined-0.mp4", nca.url());
    let video = seed::combined_video(&airtable, "video 0", &combined);
    let app = AppBuilder::new()
        .airtable(&airtable)
        .nca(&nca)
        .goapi(&goapi)
        .spawn()
        .await;
    let (status, body) = app.post(&format!("/videos/{video}/music")).await;
    assert_eq!(status, 202, "{body}");
    app.wait_settled(&video, "completed", Duration::from_secs(60))
        .await;

    let endpoint = goapi.tasks()[0].body["config"]["webhook_config"]["endpoint"]
        .as_str()
        .expect("the task names its callback")
        .to_owned();
    let token = url::Url::parse(&endpoint)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .expect("the callback URL is signed");
    // Every GoAPI delivery is on record before the video settles on `completed`.
    let payloads: Vec<String> = airtable
        .records("Webhook Events")
        .iter()
        .filter_map(|e| e.fields["Raw Payload"].as_str().map(str::to_owned))
        .filter(|p| p.contains("webhook_config"))
        .collect();
    assert!(!payloads.is_empty(), "GoAPI's deliveries are on record");
    for p in &payloads {
        assert!(!p.contains(&token), "a token in the base: {p}");
        assert!(p.contains("&token=***"), "the URL is kept, masked: {p}");
    }
}
