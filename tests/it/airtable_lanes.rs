//! A video's external calls do not queue behind its Airtable projection (issue 17, item 4):
//! with every write to the base stalled, the GoAPI task is created and the NCA mix
//! submitted all the same; once the base answers again, its records end in the video's
//! final state, each written in the order it was decided.

use crate::support;

use std::time::Duration;

use support::airtable_double::{AirtableDouble, DoubleConfig};
use support::app::AppBuilder;
use support::goapi_double::GoapiDouble;
use support::nca_double::NcaDouble;
use support::seed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mix_is_submitted_while_the_base_stalls_and_the_records_catch_up() {
    let airtable = AirtableDouble::start(DoubleConfig::default()).await;
    let nca = NcaDouble::start().await;
    let goapi = GoapiDouble::start().await;
    let combined = format!("{}/videos/combined.mp4", nca.url());
    let video = seed::combined_video(&airtable, "stalled base", &combined);
    let app = AppBuilder::new()
        .airtable(&airtable)
        .nca(&nca)
        .goapi(&goapi)
        .spawn()
        .await;
    // Reads still answer (the engine meets the video by reading it); no write is applied.
    airtable.pause_writes(true);
    let (status, body) = app.post(&format!("/videos/{video}/music")).await;
    assert_eq!(status, 202, "{body}");

    // The whole external side runs: GoAPI's task, its callback, NCA's mix and its callback.
    let state = app
        .wait_for_video(&video, Duration::from_secs(60), |s| {
            s["status"] == "completed"
        })
        .await;
    assert_eq!(nca.submissions().len(), 1, "one mix: {state}");
    assert!(
        airtable.records("Jobs").is_empty(),
        "nothing reached the base while its writes were stalled"
    );
    let before = airtable.records("Videos");
    assert_eq!(before[0].fields["Status"], "segments_combined");
    assert!(
        state["effects"].as_array().is_some_and(|e| !e.is_empty()),
        "the projection still waits: {state}"
    );

    // The base answers again: every record catches up, in the order it was decided.
    airtable.pause_writes(false);
    app.wait_settled(&video, "completed", Duration::from_secs(120))
        .await;
    let videos = airtable.records("Videos");
    let rec = videos.iter().find(|r| r.id == video).unwrap();
    assert_eq!(rec.fields["Status"], "completed", "{rec:?}");
    assert!(
        rec.fields["Final Video"]
            .as_str()
            .is_some_and(|u| u.starts_with(&nca.url())),
        "{rec:?}"
    );
    assert!(rec.fields.get("Error Details").is_none(), "{rec:?}");
    let jobs = airtable.records("Jobs");
    assert_eq!(jobs.len(), 2, "one record per job: {jobs:?}");
    assert!(
        jobs.iter().all(|j| j.fields["Status"] == "completed"),
        "{jobs:?}"
    );
    let events = airtable.records("Webhook Events");
    let deliveries = goapi.deliveries_acknowledged() + nca.callbacks_sent().len();
    assert_eq!(events.len(), deliveries, "every delivery on record");
    assert!(
        events.iter().all(|e| e.fields["Processed"] == true),
        "{events:?}"
    );
    assert_eq!(nca.submissions().len(), 1, "still one mix");
    assert!(airtable.max_requests_in_any_second() <= 5);
}
