//! First contact, batched: when GoAPI calls back for jobs another part of the pipeline
//! created, the engine meets each video for the first time and must read it and its jobs
//! from the base. The videos met in one scan of the inbox are read together (one request
//! per 100 ids, and one for their jobs), not one pair of requests per video.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::airtable_double::{AirtableDouble, DoubleConfig, LoggedRequest};
use support::app::{AppBuilder, GOAPI_SECRET};
use support::goapi_double::GoapiDouble;
use support::nca_double::NcaDouble;
use support::seed;

fn completed(task_id: &str) -> Value {
    let mut v = support::fixture_json("goapi/udio_completed.json");
    v["data"]["task_id"] = json!(task_id);
    v
}

/// A read of the base: Airtable lists (`GET`, or `POST …/listRecords`) or fetches by id.
fn is_read(r: &LoggedRequest) -> bool {
    r.method == "GET" || r.path.ends_with("/listRecords")
}

fn reads_of(log: &[LoggedRequest], table: &str) -> usize {
    log.iter()
        .filter(|r| r.table.as_deref() == Some(table) && is_read(r))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_contact_reads_a_scans_videos_and_their_jobs_together() {
    let airtable = AirtableDouble::start(DoubleConfig::default()).await;
    let nca = NcaDouble::start().await;
    let goapi = GoapiDouble::start().await;
    goapi.set_drop_webhooks(true);
    nca.set_drop_callbacks(true);
    let n = 30;
    // The pipeline's earlier stages: each video generating music, its job bound to a task.
    let videos: Vec<(String, String)> = (0..n)
        .map(|i| {
            let task = format!("40000000-0000-4000-8000-{i:012}");
            let combined = format!("{}/videos/combined-{i}.mp4", nca.url());
            let video = seed::generating_video(&airtable, i, &combined, "calm piano", &task);
            (video, task)
        })
        .collect();
    let app = |airtable_url: &str, db: &std::path::Path| {
        AppBuilder::new()
            .env("REELSTATE_DB", &db.display().to_string())
            .airtable(&airtable)
            .env("AIRTABLE_API_URL", airtable_url)
            .env("AIRTABLE_LOCKOUT_SECS", "1")
            .nca(&nca)
            .goapi(&goapi)
            .spawn()
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("reelstate.db");

    // Every delivery is stored by a server that cannot reach the base (nobody listens on
    // port 9), so no video is met yet; the server started next on the same database, with
    // the base, finds all of them pending in its first scan.
    let mut intake = app("http://127.0.0.1:9", &db).await;
    for (video, task) in &videos {
        let r = intake
            .client
            .post(format!("{}/webhooks/goapi?video_id={video}", intake.url))
            .header("x-webhook-secret", GOAPI_SECRET)
            .json(&completed(task))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    intake.kill().await;
    assert!(
        airtable.requests().is_empty(),
        "the base was not reached yet"
    );
    let app = app(&airtable.url(), &db).await;
    for (video, _) in &videos {
        app.wait_settled(video, "adding_music", Duration::from_secs(120))
            .await;
    }

    let log = airtable.requests();
    let (video_reads, job_reads) = (reads_of(&log, "Videos"), reads_of(&log, "Jobs"));
    assert!(
        video_reads <= 1 && job_reads <= 1,
        "{n} videos met in one scan cost {video_reads} Videos read(s) and {job_reads} Jobs \
         read(s); one of each would do: {:#?}",
        log.iter().filter(|r| is_read(r)).collect::<Vec<_>>()
    );
    // What was read is what the decisions used: every job was found and completed, one
    // mix per video, one Webhook Events record per delivery.
    assert_eq!(nca.submissions().len(), n, "one mix per video");
    let jobs: HashMap<String, _> = airtable
        .records("Jobs")
        .into_iter()
        .filter_map(|r| {
            Some((
                r.fields.get("External Job ID")?.as_str()?.to_owned(),
                r.fields,
            ))
        })
        .collect();
    for (_, task) in &videos {
        assert_eq!(jobs[task]["Status"], "completed", "{:?}", jobs[task]);
    }
    assert_eq!(airtable.records("Webhook Events").len(), n);
    assert!(airtable.max_requests_in_any_second() <= 5);
}

/// A base that outlived the old handler holds jobs of both spellings of a Type (`music`
/// and `music_generation`, docs/airtable.md): a mapping value listing both reads each as
/// the engine's `music_generation`, so GoAPI's callback for a job of either is matched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_either_spelling_a_mapping_lists_are_matched() {
    use support::airtable_double::{DoubleSchema, FieldType};
    let types = ["music_generation", "music_addition", "music", "final"];
    let schema = DoubleSchema::default().with_field(
        "Jobs",
        "Type",
        FieldType::SingleSelect(types.iter().map(|t| t.to_string()).collect()),
    );
    let airtable = AirtableDouble::start(DoubleConfig {
        schema,
        ..DoubleConfig::default()
    })
    .await;
    let nca = NcaDouble::start().await;
    let goapi = GoapiDouble::start().await;
    goapi.set_drop_webhooks(true);
    let mut videos = Vec::new();
    for (i, spelling) in ["music_generation", "music"].into_iter().enumerate() {
        let task = format!("50000000-0000-4000-8000-{i:012}");
        let combined = format!("{}/videos/combined-{i}.mp4", nca.url());
        let video = airtable.insert_record(
            "Videos",
            json!({
                "Name": format!("v{i}"),
                "Status": "generating_music",
                "Combined Segments Video": combined,
                "Music Prompt": "calm piano",
            }),
        );
        let job = airtable.insert_record(
            "Jobs",
            json!({
                "Job ID": format!("old-handler-job-{i}"),
                "Type": spelling,
                "Status": "processing",
                "Related Video": [video],
                "External Job ID": task,
            }),
        );
        videos.push((video, task, job));
    }
    let dir = tempfile::tempdir().unwrap();
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(
        &mapping,
        "[job_type_values]\nmusic_generation = [\"music_generation\", \"music\"]\n",
    )
    .unwrap();
    let app = AppBuilder::new()
        .airtable(&airtable)
        .env("REELSTATE_AIRTABLE_MAPPING", mapping.to_str().unwrap())
        .nca(&nca)
        .goapi(&goapi)
        .spawn()
        .await;
    for (video, task, _) in &videos {
        let r = app
            .client
            .post(format!("{}/webhooks/goapi?video_id={video}", app.url))
            .header("x-webhook-secret", GOAPI_SECRET)
            .json(&completed(task))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    for (video, _, job) in &videos {
        let v = app
            .wait_settled(video, "completed", Duration::from_secs(60))
            .await;
        let (_, unmatched) = app
            .get_json(&format!("/events?video_id={video}&outcome=unmatched"))
            .await;
        assert_eq!(unmatched["events"], json!([]), "{unmatched:#}");
        // The job the pipeline created is the one completed, its spelling left as it was.
        let record = &airtable.records_by_id("Jobs")[job];
        assert_eq!(record.fields["Status"], "completed", "{v:#}");
    }
    let spellings: Vec<Value> = airtable
        .records("Jobs")
        .iter()
        .map(|r| r.fields["Type"].clone())
        .collect();
    assert!(spellings.contains(&json!("music")), "{spellings:?}");
}
