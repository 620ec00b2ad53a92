//! The engine on a base shaped like the production base of the pipeline's earlier build
//! (docs/airtable.md, "Real bases"), configured only by the mapping file that
//! `reelstate mapping --from-base` wrote for it: no Status on Videos, attachments for the
//! source, the music and `Video + Music`, a formula `Job ID`, an autonumber `Event ID`, a
//! created-time `Created At`, select options spelled `music`/`final` and `goapi`/`nca`.
//! The real binary, the Airtable double, the GoAPI and NCA doubles; a kill -9 while
//! creates have been applied by Airtable but not yet answered.

use crate::support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::airtable_double::{AirtableDouble, DoubleConfig, DoubleSchema, Spelling};
use support::app::{AppBuilder, TestApp};
use support::goapi_double::GoapiDouble;
use support::nca_double::NcaDouble;

/// Runs the binary with `args` and the double's credentials; (success, stdout, stderr).
async fn reelstate(
    args: &[&str],
    airtable: &AirtableDouble,
    mapping: Option<&Path>,
) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_reelstate"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AIRTABLE_TOKEN", airtable.token())
        .env("AIRTABLE_BASE_ID", airtable.base_id())
        .env("AIRTABLE_API_URL", airtable.url());
    if let Some(m) = mapping {
        cmd.env("REELSTATE_AIRTABLE_MAPPING", m);
    }
    let out = cmd.output().await.expect("run the reelstate binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn double(schema: DoubleSchema) -> AirtableDouble {
    AirtableDouble::start(DoubleConfig {
        schema,
        ..DoubleConfig::default()
    })
    .await
}

fn links(fields: &serde_json::Map<String, Value>, name: &str) -> BTreeSet<String> {
    fields
        .get(name)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_lifecycle_on_the_production_base_by_a_generated_mapping_loses_no_record() {
    let airtable = double(DoubleSchema::production_base(Spelling::Code)).await;
    let nca = NcaDouble::start().await;
    let goapi = GoapiDouble::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mapping = dir.path().join("mapping.toml");

    // The mapping, as a new user makes it: generated, saved, checked.
    let (ok, toml, err) = reelstate(&["mapping", "--from-base"], &airtable, None).await;
    assert!(ok, "mapping --from-base failed: {err}");
    std::fs::write(&mapping, &toml).expect("write the mapping");
    let (ok, out, err) = reelstate(&["check-airtable"], &airtable, Some(&mapping)).await;
    assert!(
        ok && out.starts_with("ok:"),
        "check-airtable must pass with the generated mapping:\n{out}{err}\n{toml}"
    );

    let n = 4;
    let videos: Vec<String> = (0..n)
        .map(|i| {
            airtable.insert_record(
                "Videos",
                json!({
                    "Description": format!("video {i}"),
                    "Combined Segments Video": [{"url": format!("{}/videos/combined-{i}.mp4", nca.url())}],
                    "Music Prompt": "calm piano",
                }),
            )
        })
        .collect();
    let mut app = AppBuilder::new()
        .fixed_port()
        .airtable(&airtable)
        .env("AIRTABLE_LOCKOUT_SECS", "1")
        .env(
            "REELSTATE_AIRTABLE_MAPPING",
            mapping.to_str().expect("utf-8 path"),
        )
        .nca(&nca)
        .goapi(&goapi)
        .env("REELSTATE_INTERRUPTED_GRACE_SECS", "2")
        // The deadline counts from the job's creation, which here comes before the kill,
        // the 2 s grace and the re-submission: 5 s left a busy machine too little room for
        // the re-submitted task's webhooks (seen failing at load 12).
        .env("REELSTATE_GOAPI_DEADLINE_SECS", "15")
        .env("REELSTATE_NCA_DEADLINE_SECS", "15")
        .env("REELSTATE_RECONCILE_INTERVAL_SECS", "1")
        .spawn()
        .await;
    let (status, ready) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "/readyz on the generated mapping: {ready:#}");

    // Airtable applies every write at once but answers late; the process is killed while
    // a create it sent has been applied and not answered: on a base without a key field,
    // only the store's record of the intent keeps the restarted process from creating the
    // record a second time.
    airtable.set_write_delay(Some(Duration::from_secs(2)));
    for v in &videos {
        let (status, body) = app.post(&format!("/videos/{v}/music")).await;
        assert_eq!(status, 202, "{body}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !airtable
        .requests()
        .iter()
        .any(|r| r.method == "POST" && r.table.as_deref() == Some("Jobs") && r.status == 200)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Jobs record was ever created"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.kill().await;
    airtable.set_write_delay(None);
    app.restart().await;

    for v in &videos {
        app.wait_settled(v, "completed", Duration::from_secs(120))
            .await;
    }
    // Every job has exactly its one Jobs record, linked both ways, spelled as the base does.
    let jobs = airtable.records("Jobs");
    assert_eq!(
        jobs.len(),
        2 * n,
        "one Jobs record per job, none twice: {jobs:#?}"
    );
    assert!(
        app.log_text()
            .contains("an interrupted create had made the record; claimed it"),
        "the restarted process must have found the record the killed one created:\n{}",
        support::app::tail(&app.log_text(), 40)
    );

    let by_id = airtable.records_by_id("Videos");
    for v in &videos {
        let video = &by_id[v];
        let (_, state) = app.get_json(&format!("/videos/{v}")).await;
        let engine_jobs = state["jobs"].as_array().map(Vec::len).unwrap_or_default();
        let linked = links(&video.fields, "Jobs");
        assert_eq!(
            linked.len(),
            engine_jobs,
            "every job of {v} has its record: {video:?}"
        );
        let mut types: Vec<String> = jobs
            .iter()
            .filter(|j| linked.contains(&j.id))
            .map(|j| {
                assert_eq!(j.fields["Status"], "completed", "{j:?}");
                assert_eq!(
                    links(&j.fields, "Related Video"),
                    BTreeSet::from([v.clone()])
                );
                assert!(
                    j.fields["Job ID"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("JOB-")),
                    "the formula Job ID is Airtable's: {j:?}"
                );
                j.fields["Type"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        types.sort();
        assert_eq!(types, ["final", "music"]);
        for (field, count) in [
            ("Music", 1),
            ("Video + Music", 1),
            ("Combined Segments Video", 1),
        ] {
            assert_eq!(
                video.fields[field].as_array().map(Vec::len),
                Some(count),
                "{field} of {v}: {video:?}"
            );
        }
        assert!(!video.fields.contains_key("Status"));
    }

    // Every acknowledged delivery has its Webhook Events record, once. A delivery whose
    // connection died with the killed process (no answer) may have been stored before the
    // kill, and is then on record too (its retry is a second delivery, recorded as a
    // duplicate): such deliveries may add a record each, never more.
    let events = airtable.records("Webhook Events");
    let acknowledged = goapi.deliveries_acknowledged() + nca.callbacks_acknowledged();
    let in_doubt = goapi
        .deliveries()
        .iter()
        .filter(|d| d.answered.is_none())
        .count()
        + nca
            .callbacks_sent()
            .iter()
            .filter(|c| c.answered.is_none())
            .count();
    assert!(
        acknowledged <= events.len() && events.len() <= acknowledged + in_doubt,
        "one Webhook Events record per delivery ({acknowledged} acknowledged, {in_doubt} unanswered; GoAPI deliveries not acknowledged: {:?}): {events:#?}",
        goapi
            .deliveries()
            .iter()
            .filter(|d| d.answered.is_none_or(|s| s >= 300))
            .map(|d| (&d.task_id, &d.status, d.attempt, d.answered))
            .collect::<Vec<_>>()
    );
    for d in goapi
        .deliveries()
        .iter()
        .filter(|d| d.answered.is_some_and(|s| s < 300))
    {
        assert!(
            events.iter().any(|e| e.fields["Raw Payload"]
                .as_str()
                .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
                .is_some_and(|raw| raw["data"]["task_id"] == d.task_id.as_str()
                    && raw["data"]["status"] == d.status.as_str())),
            "the acknowledged delivery of {} ({}) is on record: {events:#?}",
            d.task_id,
            d.status
        );
    }
    let numbers: BTreeSet<u64> = events
        .iter()
        .filter_map(|e| e.fields["Event ID"].as_u64())
        .collect();
    assert_eq!(numbers.len(), events.len(), "autonumbered by Airtable");
    assert!(
        events
            .iter()
            .all(|e| matches!(e.fields["Service"].as_str(), Some("goapi" | "nca"))),
        "Service spelled as the base's options"
    );

    // The mix got an attachment URL read after the music existed, never the URL written:
    // Airtable's copies expire, so the engine reads the current one just before submitting.
    let tasks = goapi.tasks();
    for s in nca.submissions() {
        let video_url = s.body["inputs"][0]["file_url"].as_str().expect("video url");
        assert!(
            !video_url.contains("/videos/combined-"),
            "the mix must use Airtable's copy, read afresh: {video_url}"
        );
        let minted = airtable
            .minted_at(video_url)
            .unwrap_or_else(|| panic!("{video_url} was not handed out by the base"));
        let callback = s.body["webhook_url"].as_str().expect("webhook url");
        let video = videos
            .iter()
            .find(|v| callback.contains(v.as_str()))
            .expect("the mix names its video");
        let task = tasks
            .iter()
            .find(|t| t.body.to_string().contains(video.as_str()))
            .expect("the video's music task");
        assert!(
            task.at <= minted,
            "the URL was read after the music task existed, not at first contact"
        );
    }
    for (id, count) in nca.submissions_by_id() {
        assert_eq!(count, 1, "{id} submitted once");
    }
}

/// A base that truly lacks something is named field by field, each with the mapping line
/// that fixes it; the same base with the default mapping is refused for every line a user
/// must write, and `/readyz` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_base_lacks_is_named_field_by_field() {
    let airtable = double(
        DoubleSchema::production_base(Spelling::Docs)
            .without_field("Jobs", "External Job ID")
            .without_field("Webhook Events", "Raw Payload"),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mapping = dir.path().join("mapping.toml");
    let (ok, toml, err) = reelstate(&["mapping", "--from-base"], &airtable, None).await;
    assert!(ok, "{err}");
    assert!(
        toml.contains("external_job_id = \"External Job ID\"  # CHECK"),
        "a field the engine needs and the base lacks is marked CHECK:\n{toml}"
    );
    std::fs::write(&mapping, &toml).expect("write the mapping");
    let (ok, out, _) = reelstate(&["check-airtable"], &airtable, Some(&mapping)).await;
    assert!(!ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "exactly what is missing:\n{out}");
    assert!(
        lines[0].contains("Jobs.\"External Job ID\" is missing")
            && lines[0].contains("`[jobs] external_job_id = \"<its name>\"`"),
        "{out}"
    );
    assert!(
        lines[1].contains("Webhook Events.\"Raw Payload\" is missing")
            && lines[1].contains("`[webhook_events] raw_payload"),
        "{out}"
    );

    // The default mapping on this base: every computed key field and every spelling named.
    let (ok, out, _) = reelstate(&["check-airtable"], &airtable, None).await;
    assert!(!ok);
    for needle in [
        "`[jobs] job_id = \"\"`",
        "`[webhook_events] event_id = \"\"`",
        "`[webhook_events] timestamp = \"\"`",
        "`[videos] status = \"\"`",
        "`[videos] final_video = \"<its name>\"`",
        "`[videos] combined_segments_video_kind = \"attachment\"`",
        "`[videos] music_kind = \"attachment\"`",
    ] {
        assert!(out.contains(needle), "{needle} not named in:\n{out}");
    }

    let app = AppBuilder::new()
        .env("REELSTATE_DEV_MODE", "true")
        .airtable(&airtable)
        .env(
            "REELSTATE_AIRTABLE_MAPPING",
            mapping.to_str().expect("utf-8 path"),
        )
        .spawn()
        .await;
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 503, "{body:#}");
    let problems = body["airtable"]["problems"]
        .as_array()
        .expect("problems listed");
    assert_eq!(problems.len(), 2, "{body:#}");
}

/// The README's complete example mapping fits the base it describes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_fits_the_production_base() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("### A complete example")
        .nth(1)
        .expect("the README has a complete example");
    let toml = section
        .split("```toml")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block");
    let mapping = reelstate::records::Mapping::from_toml(toml).expect("the example parses");
    let airtable = double(DoubleSchema::production_base(Spelling::Code)).await;
    let problems = reelstate::records::airtable::schema::check_schema(
        &support::airtable_double::config_for(&airtable),
        &mapping,
    )
    .await
    .expect("schema read");
    assert_eq!(
        problems,
        vec![],
        "the README example must fit the base it describes"
    );
}

/// The production base with a `Timestamps` field on Jobs (the seed base has one, and the
/// generated mapping maps it): a Jobs create that Airtable applied and whose answer a
/// proxy lost (504) is found again by its content on the next attempt, because every
/// attempt of one create sends the same fields (the job's creation time, never the
/// attempt's). One Jobs record per job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_answer_makes_no_second_jobs_record_when_the_base_keeps_timestamps() {
    use support::airtable_double::FieldType;
    let airtable = double(DoubleSchema::production_base(Spelling::Code).with_field(
        "Jobs",
        "Timestamps",
        FieldType::MultilineText,
    ))
    .await;
    let (app, video, toml, _services) = one_video_by_a_generated_mapping(&airtable).await;
    assert!(
        toml.lines()
            .any(|l| l.trim_start().starts_with("timestamps") && l.contains("\"Timestamps\"")),
        "the generated mapping maps Timestamps:\n{toml}"
    );
    airtable.gateway_timeout_after_apply_to("Jobs", 1);
    let (status, body) = app.post(&format!("/videos/{video}/music")).await;
    assert_eq!(status, 202, "{body}");
    app.wait_settled(&video, "completed", Duration::from_secs(60))
        .await;
    let jobs = airtable.records("Jobs");
    assert_eq!(jobs.len(), 2, "one Jobs record per job: {jobs:#?}");
    assert!(
        jobs.iter().all(|j| j.fields["Timestamps"].is_string()),
        "{jobs:#?}"
    );
    assert!(
        app.log_text()
            .contains("an interrupted create had made the record; claimed it"),
        "the 504'd create was found again:\n{}",
        support::app::tail(&app.log_text(), 40)
    );
}

/// A gateway's 503 after Airtable applied a Jobs create (Airtable documents 503 as safe to
/// retry; a gateway answering it after forwarding makes that unsafe for a create): the
/// client does not resend it, and the next attempt finds the record by its content. One
/// Jobs record per job, and the video completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_answered_503_after_it_was_applied_makes_one_jobs_record() {
    let airtable = double(DoubleSchema::production_base(Spelling::Code)).await;
    let (app, video, _toml, _services) = one_video_by_a_generated_mapping(&airtable).await;
    airtable.answer_after_apply(Some("Jobs"), 503, 1);
    let (status, body) = app.post(&format!("/videos/{video}/music")).await;
    assert_eq!(status, 202, "{body}");
    app.wait_settled(&video, "completed", Duration::from_secs(60))
        .await;
    let jobs = airtable.records("Jobs");
    assert_eq!(jobs.len(), 2, "one Jobs record per job: {jobs:#?}");
    assert!(
        app.log_text()
            .contains("an interrupted create had made the record; claimed it"),
        "the 503'd create was found again:\n{}",
        support::app::tail(&app.log_text(), 40)
    );
}

/// The services a one-video app talks to, and the folder of its mapping: kept alive as
/// long as the app runs.
type Services = (NcaDouble, GoapiDouble, tempfile::TempDir);

/// The app on `airtable` by the mapping `mapping --from-base` writes for it (returned as
/// written), with one video ready for music and effects retried after 50 ms.
async fn one_video_by_a_generated_mapping(
    airtable: &AirtableDouble,
) -> (TestApp, String, String, Services) {
    let nca = NcaDouble::start().await;
    let goapi = GoapiDouble::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mapping = dir.path().join("mapping.toml");
    let (ok, toml, err) = reelstate(&["mapping", "--from-base"], airtable, None).await;
    assert!(ok, "mapping --from-base failed: {err}");
    std::fs::write(&mapping, &toml).expect("write the mapping");
    let video = airtable.insert_record(
        "Videos",
        json!({
            "Description": "video",
            "Combined Segments Video": [{"url": format!("{}/videos/combined-1.mp4", nca.url())}],
            "Music Prompt": "calm piano",
        }),
    );
    let app = AppBuilder::new()
        .airtable(airtable)
        .env(
            "REELSTATE_AIRTABLE_MAPPING",
            mapping.to_str().expect("utf-8 path"),
        )
        .env("REELSTATE_EFFECT_BACKOFF_MS", "50")
        .nca(&nca)
        .goapi(&goapi)
        .spawn()
        .await;
    (app, video, toml, (nca, goapi, dir))
}
