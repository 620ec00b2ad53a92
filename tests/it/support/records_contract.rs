//! The contract every [`RecordBackend`] must meet: Airtable's semantics as the engine relies
//! on them (docs/airtable.md). One suite, run against every backend and
//! every double, so that passing here means the engine cannot tell them apart.
//!
//! It uses the default [`Mapping`]'s tables and field names and only values a real base with
//! the default schema accepts (statuses the engine writes, `music_generation` jobs). Every
//! check makes its own uniquely named data, so the suite can run against a shared store,
//! repeatedly, and never depends on what else is in it.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use reelstate::domain::{JobStatus, JobType, MediaUrl, RecordId, VideoStatus};
use reelstate::records::{
    Filter, JobFields, Mapping, MediaKind, Record, RecordBackend, Records, RecordsError,
    VideoFields, VideoRecord, WebhookEventRecord,
};
use serde_json::{Value, json};

use super::fields;

pub type Backend = Arc<dyn RecordBackend>;

const VIDEOS: &str = "Videos";
const JOBS: &str = "Jobs";
const EVENTS: &str = "Webhook Events";

/// Runs every check in turn; the first broken contract fails with a message naming it.
pub async fn run_all(backend: Backend) {
    run_core(backend.clone()).await;
    typed_attachment_media_round_trips(&backend).await;
}

/// Every check but the attachment one, which on Airtable needs a base whose media fields
/// are attachment fields (a URL field refuses an attachment list, as it should).
pub async fn run_core(backend: Backend) {
    create_then_get_round_trips(&backend).await;
    empty_values_are_omitted(&backend).await;
    partial_update_leaves_other_fields(&backend).await;
    null_or_empty_clears_a_field(&backend).await;
    get_of_unknown_id_is_none(&backend).await;
    get_of_an_id_from_another_table_is_none(&backend).await;
    unknown_table_is_permanent_403(&backend).await;
    find_equals_matches_exactly_whatever_the_characters(&backend).await;
    find_record_ids_returns_only_that_tables_records(&backend).await;
    upsert_creates_then_updates_one_record(&backend).await;
    concurrent_upserts_of_one_key_make_one_record(&backend).await;
    job_video_links_are_two_way(&backend).await;
    webhook_event_job_links_are_two_way(&backend).await;
    link_to_a_missing_record_fails_and_writes_nothing(&backend).await;
    typed_video_round_trips(&backend).await;
    typed_jobs_of_video_follows_the_videos_links(&backend).await;
    typed_batched_reads_answer_as_the_single_ones(&backend).await;
    typed_find_job_by_external_id(&backend).await;
    typed_webhook_event_is_recorded_once_per_event_id(&backend).await;
}

/// A value no other run (or other check) uses.
fn unique(label: &str) -> String {
    format!("contract-{label}-{}", uuid::Uuid::new_v4().simple())
}

fn url(s: &str) -> MediaUrl {
    MediaUrl::parse(s).expect("test URLs are valid")
}

/// The ids in a link field, as a set: Airtable promises no order.
pub fn links(r: &Record, field: &str) -> BTreeSet<String> {
    match r.fields.get(field) {
        None => BTreeSet::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .unwrap_or_else(|| panic!("link field {field:?} holds a non-string {v}"))
                    .to_owned()
            })
            .collect(),
        Some(other) => panic!("link field {field:?} must be an array of record ids, got {other}"),
    }
}

fn set(ids: &[&RecordId]) -> BTreeSet<String> {
    ids.iter().map(|i| i.as_str().to_owned()).collect()
}

async fn must_get(b: &Backend, table: &str, id: &RecordId) -> Record {
    b.get(table, id)
        .await
        .unwrap_or_else(|e| panic!("get {table}/{id} failed: {e}"))
        .unwrap_or_else(|| panic!("get {table}/{id}: a record that was written must be found"))
}

async fn must_create(b: &Backend, table: &str, f: Value) -> Record {
    b.create(table, fields(f))
        .await
        .unwrap_or_else(|e| panic!("create in {table} failed: {e}"))
}

async fn new_video(b: &Backend, label: &str) -> Record {
    must_create(
        b,
        VIDEOS,
        json!({"Name": unique(label), "Status": "segments_combined"}),
    )
    .await
}

async fn new_job(b: &Backend, extra: Value) -> Record {
    let mut f = fields(json!({
        "Job ID": unique("job"),
        "Type": "music_generation",
        "Status": "pending",
    }));
    f.extend(fields(extra));
    b.create(JOBS, f)
        .await
        .unwrap_or_else(|e| panic!("create in Jobs failed: {e}"))
}

pub async fn find_by(b: &dyn RecordBackend, table: &str, field: &str, value: &str) -> Vec<Record> {
    b.find(
        table,
        &Filter::Equals {
            field: field.into(),
            value: value.into(),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("find {table} where {field:?} = {value:?} failed: {e}"))
}

/// `rec` + 14 letters or digits that no backend has handed out (they are random).
fn unknown_id() -> RecordId {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    RecordId::parse(&format!("rec{}", &hex[..14])).expect("a well-formed record id")
}

fn assert_403<T: std::fmt::Debug>(result: Result<T, RecordsError>, op: &str) {
    match result {
        Err(RecordsError::Permanent { status, kind, .. }) => {
            assert_eq!(status, 403, "{op} on an unknown table must be a 403");
            assert_eq!(
                kind, "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND",
                "{op} on an unknown table must be Airtable's model-not-found error"
            );
        }
        other => panic!("{op} on an unknown table must fail with Permanent 403, got {other:?}"),
    }
}

/// Create returns the record as stored: an Airtable id, a millisecond `createdTime` in UTC,
/// and the fields written; get returns the same record.
pub async fn create_then_get_round_trips(b: &Backend) {
    let written = json!({
        "Name": unique("round-trip"),
        "Status": "segments_combined",
        "Combined Segments Video": "https://media.example/combined.mp4",
        "Music Prompt": "calm piano, 90 bpm",
    });
    let created = must_create(b, VIDEOS, written.clone()).await;
    let id = created.id.as_str();
    assert!(
        id.len() == 17
            && id.starts_with("rec")
            && id[3..].bytes().all(|c| c.is_ascii_alphanumeric()),
        "record id {id:?} must be `rec` + 14 letters or digits"
    );
    let t = &created.created_time;
    assert!(
        DateTime::parse_from_rfc3339(t).is_ok(),
        "createdTime {t:?} must be RFC 3339"
    );
    let millis = t.len() == 24 && t.ends_with('Z') && t.as_bytes()[19] == b'.';
    assert!(
        millis,
        "createdTime {t:?} must be like 2026-11-28T10:00:00.000Z (milliseconds, Z)"
    );
    assert_eq!(
        Value::Object(created.fields.clone()),
        written,
        "create must return exactly the fields written"
    );
    let got = must_get(b, VIDEOS, &created.id).await;
    assert_eq!(
        got, created,
        "get must return the record that create returned"
    );
}

/// `""`, `[]`, `false` and null are never stored: an unchecked checkbox is absent.
pub async fn empty_values_are_omitted(b: &Backend) {
    let created = must_create(
        b,
        EVENTS,
        json!({
            "Event ID": unique("empties"),
            "Service": "goapi",
            "Endpoint": "/webhooks/goapi",
            "Raw Payload": "{}",
            "Processed": false,
            "Success": true,
            "Timestamp": "2026-11-28T10:00:00.000Z",
            "Error Details": "",
            "Related Job": [],
        }),
    )
    .await;
    let got = must_get(b, EVENTS, &created.id).await;
    for r in [&created, &got] {
        for absent in ["Processed", "Error Details", "Related Job"] {
            assert!(
                !r.fields.contains_key(absent),
                "empty field {absent:?} must be omitted, got {:?}",
                r.fields.get(absent)
            );
        }
        assert_eq!(
            r.fields.get("Success"),
            Some(&json!(true)),
            "a checked checkbox must read back true"
        );
    }
}

/// An update names only the fields it changes; the others stay.
pub async fn partial_update_leaves_other_fields(b: &Backend) {
    let name = unique("partial");
    let created = must_create(
        b,
        VIDEOS,
        json!({"Name": name, "Status": "segments_combined", "Music Prompt": "upbeat synth"}),
    )
    .await;
    let updated = b
        .update(
            VIDEOS,
            &created.id,
            fields(json!({"Status": "generating_music"})),
        )
        .await
        .unwrap_or_else(|e| panic!("update failed: {e}"));
    let got = must_get(b, VIDEOS, &created.id).await;
    assert_eq!(updated, got, "update must return the record as now stored");
    assert_eq!(
        Value::Object(got.fields),
        json!({"Name": name, "Status": "generating_music", "Music Prompt": "upbeat synth"}),
        "a partial update must change the named field and leave the others"
    );
    assert_eq!(
        got.created_time, created.created_time,
        "an update must not change createdTime"
    );
}

/// Writing null or an empty value clears the field.
pub async fn null_or_empty_clears_a_field(b: &Backend) {
    let name = unique("clear");
    let created = must_create(
        b,
        VIDEOS,
        json!({"Name": name, "Error Details": "ffmpeg exploded", "Music Prompt": "strings"}),
    )
    .await;
    b.update(VIDEOS, &created.id, fields(json!({"Error Details": null})))
        .await
        .unwrap_or_else(|e| panic!("update with null failed: {e}"));
    let got = must_get(b, VIDEOS, &created.id).await;
    assert!(
        !got.fields.contains_key("Error Details"),
        "writing null must clear the field"
    );
    b.update(VIDEOS, &created.id, fields(json!({"Music Prompt": ""})))
        .await
        .unwrap_or_else(|e| panic!("update with \"\" failed: {e}"));
    let got = must_get(b, VIDEOS, &created.id).await;
    assert_eq!(
        Value::Object(got.fields),
        json!({"Name": name}),
        "writing \"\" must clear the field and leave the others"
    );
}

pub async fn get_of_unknown_id_is_none(b: &Backend) {
    for table in [VIDEOS, JOBS, EVENTS] {
        let got = b
            .get(table, &unknown_id())
            .await
            .unwrap_or_else(|e| panic!("get of an unknown id in {table} must not fail: {e}"));
        assert_eq!(got, None, "get of an unknown id in {table} must be None");
    }
}

/// Ids are unique per base, and Airtable's GET ignores the table: the backend must not
/// hand back a Videos record to someone who asked for a job.
pub async fn get_of_an_id_from_another_table_is_none(b: &Backend) {
    let video = new_video(b, "other-table").await;
    let got = b
        .get(JOBS, &video.id)
        .await
        .unwrap_or_else(|e| panic!("get of another table's id must not fail: {e}"));
    assert_eq!(got, None, "get in Jobs of a Videos id must be None");
}

pub async fn unknown_table_is_permanent_403(b: &Backend) {
    let table = format!("No Such Table {}", unique("t"));
    let id = unknown_id();
    let f = || fields(json!({"Name": "x"}));
    assert_403(b.get(&table, &id).await, "get");
    assert_403(
        b.find(&table, &Filter::RecordIds(vec![id.clone()])).await,
        "find",
    );
    assert_403(b.create(&table, f()).await, "create");
    assert_403(b.update(&table, &id, f()).await, "update");
    assert_403(b.upsert(&table, "Name", f()).await, "upsert");
}

/// Equals is an exact match, however hostile the value: quotes, backslashes and braces
/// are what break a hand-built formula.
pub async fn find_equals_matches_exactly_whatever_the_characters(b: &Backend) {
    let base = unique("ext");
    let values = [
        base.clone(),
        format!("{base}-longer"),
        format!("{base}'quote"),
        format!("{base}\\back\\slash"),
        format!("{base}}}brace{{"),
        format!("{base}\"double"),
        format!("{base}') OR TRUE() OR ('"),
        format!("{base}\\'"),
    ];
    let mut ids = Vec::new();
    for v in &values {
        ids.push(new_job(b, json!({"External Job ID": v})).await.id);
    }
    for (v, id) in values.iter().zip(&ids) {
        let found = find_by(&**b, JOBS, "External Job ID", v).await;
        let found: Vec<&str> = found.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            found,
            vec![id.as_str()],
            "find Equals {v:?} must return exactly the one record with that value"
        );
    }
    assert!(
        find_by(&**b, JOBS, "Job ID", &values[2]).await.is_empty(),
        "find Equals must look only in the named field"
    );
    assert!(
        find_by(&**b, VIDEOS, "Name", &values[0]).await.is_empty(),
        "find Equals must look only in the named table"
    );
}

pub async fn find_record_ids_returns_only_that_tables_records(b: &Backend) {
    let j1 = new_job(b, json!({})).await;
    let _j2 = new_job(b, json!({})).await;
    let j3 = new_job(b, json!({})).await;
    let video = new_video(b, "record-ids").await;
    let found = b
        .find(
            JOBS,
            &Filter::RecordIds(vec![
                j3.id.clone(),
                video.id.clone(),
                unknown_id(),
                j1.id.clone(),
            ]),
        )
        .await
        .unwrap_or_else(|e| panic!("find RecordIds failed: {e}"));
    let got: BTreeSet<String> = found.iter().map(|r| r.id.as_str().to_owned()).collect();
    assert_eq!(
        got,
        set(&[&j1.id, &j3.id]),
        "find RecordIds must return the named records of the table, skipping other tables' and unknown ids"
    );
    assert_eq!(found.len(), 2, "find RecordIds must not repeat a record");
    let j1_found = found.iter().find(|r| r.id == j1.id);
    assert_eq!(
        j1_found,
        Some(&j1),
        "find must return whole records, as get does"
    );
    let none = b
        .find(JOBS, &Filter::RecordIds(Vec::new()))
        .await
        .unwrap_or_else(|e| panic!("find with no record ids must not fail: {e}"));
    assert!(none.is_empty(), "find with no record ids must find nothing");
}

pub async fn upsert_creates_then_updates_one_record(b: &Backend) {
    let key = unique("upsert");
    let first = b
        .upsert(
            JOBS,
            "Job ID",
            fields(json!({"Job ID": key, "Type": "music_generation", "Status": "pending"})),
        )
        .await
        .unwrap_or_else(|e| panic!("upsert of a new key failed: {e}"));
    let second = b
        .upsert(
            JOBS,
            "Job ID",
            fields(json!({"Job ID": key, "Status": "processing", "External Job ID": unique("x")})),
        )
        .await
        .unwrap_or_else(|e| panic!("upsert of an existing key failed: {e}"));
    assert_eq!(
        second.id, first.id,
        "an upsert of an existing key must update that record"
    );
    assert_eq!(
        second.fields.get("Type"),
        Some(&json!("music_generation")),
        "an upsert must leave the fields it does not name"
    );
    assert_eq!(second.fields.get("Status"), Some(&json!("processing")));
    let all = find_by(&**b, JOBS, "Job ID", &key).await;
    assert_eq!(all.len(), 1, "two upserts of one key must leave one record");
    assert_eq!(
        all[0], second,
        "the stored record must be what upsert returned"
    );
}

/// Retried deliveries race; an upsert must still never make a second record.
pub async fn concurrent_upserts_of_one_key_make_one_record(b: &Backend) {
    let key = unique("race");
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let b = Arc::clone(b);
            let key = key.clone();
            tokio::spawn(async move {
                b.upsert(
                    JOBS,
                    "Job ID",
                    fields(json!({
                        "Job ID": key,
                        "Type": "music_generation",
                        "Status": "processing",
                        "Timestamps": format!("attempt {i}"),
                    })),
                )
                .await
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for t in futures::future::join_all(tasks).await {
        let r = t
            .expect("upsert task panicked")
            .unwrap_or_else(|e| panic!("a concurrent upsert failed: {e}"));
        ids.insert(r.id.as_str().to_owned());
    }
    assert_eq!(
        ids.len(),
        1,
        "concurrent upserts of one key must all land on one record"
    );
    let all = find_by(&**b, JOBS, "Job ID", &key).await;
    assert_eq!(
        all.len(),
        1,
        "concurrent upserts of one key must make exactly one record"
    );
}

/// Jobs."Related Video" and Videos."Jobs" are one two-way link: writing either side (by
/// create, update or upsert) updates the other, and a changed link leaves the old side.
pub async fn job_video_links_are_two_way(b: &Backend) {
    let v1 = new_video(b, "link-1").await;
    let v2 = new_video(b, "link-2").await;
    let j1 = new_job(b, json!({"Related Video": [v1.id.as_str()]})).await;
    assert_eq!(
        links(&j1, "Related Video"),
        set(&[&v1.id]),
        "a link field must read back as the ids written"
    );
    assert_eq!(
        links(&must_get(b, VIDEOS, &v1.id).await, "Jobs"),
        set(&[&j1.id]),
        "creating a job linked to a video must add it to the video's Jobs"
    );

    let j2_key = unique("link-job");
    let j2 = b
        .upsert(
            JOBS,
            "Job ID",
            fields(json!({"Job ID": j2_key, "Type": "music_generation", "Related Video": [v1.id.as_str()]})),
        )
        .await
        .unwrap_or_else(|e| panic!("upsert with a link failed: {e}"));
    assert_eq!(
        links(&must_get(b, VIDEOS, &v1.id).await, "Jobs"),
        set(&[&j1.id, &j2.id]),
        "an upsert that links a job must add it to the video's Jobs"
    );

    b.update(
        JOBS,
        &j1.id,
        fields(json!({"Related Video": [v2.id.as_str()]})),
    )
    .await
    .unwrap_or_else(|e| panic!("update of a link failed: {e}"));
    assert_eq!(
        links(&must_get(b, VIDEOS, &v1.id).await, "Jobs"),
        set(&[&j2.id]),
        "moving a job to another video must remove it from the old video's Jobs"
    );
    assert_eq!(
        links(&must_get(b, VIDEOS, &v2.id).await, "Jobs"),
        set(&[&j1.id]),
        "moving a job to another video must add it to the new video's Jobs"
    );

    b.upsert(
        JOBS,
        "Job ID",
        fields(json!({"Job ID": j2_key, "Related Video": [v2.id.as_str()]})),
    )
    .await
    .unwrap_or_else(|e| panic!("upsert moving a link failed: {e}"));
    let v1_now = must_get(b, VIDEOS, &v1.id).await;
    assert!(
        !v1_now.fields.contains_key("Jobs"),
        "a video whose last job moved away must have no Jobs field (empties omitted), got {:?}",
        v1_now.fields.get("Jobs")
    );
    assert_eq!(
        links(&must_get(b, VIDEOS, &v2.id).await, "Jobs"),
        set(&[&j1.id, &j2.id]),
        "an upsert moving a job must add it to the new video's Jobs"
    );

    b.update(JOBS, &j1.id, fields(json!({"Related Video": null})))
        .await
        .unwrap_or_else(|e| panic!("clearing a link failed: {e}"));
    assert_eq!(
        links(&must_get(b, VIDEOS, &v2.id).await, "Jobs"),
        set(&[&j2.id]),
        "clearing a job's Related Video must remove it from the video's Jobs"
    );

    b.update(VIDEOS, &v1.id, fields(json!({"Jobs": [j1.id.as_str()]})))
        .await
        .unwrap_or_else(|e| panic!("writing a video's Jobs failed: {e}"));
    assert_eq!(
        links(&must_get(b, JOBS, &j1.id).await, "Related Video"),
        set(&[&v1.id]),
        "writing a video's Jobs must set the job's Related Video"
    );
}

/// Webhook Events."Related Job" is a two-way link with a "Webhook Events" field on Jobs.
pub async fn webhook_event_job_links_are_two_way(b: &Backend) {
    let job = new_job(b, json!({})).await;
    let event = |id: String| {
        fields(json!({
            "Event ID": id,
            "Service": "goapi",
            "Endpoint": "/webhooks/goapi",
            "Raw Payload": "{\"timestamp\": 1764324000}",
            "Processed": true,
            "Success": true,
            "Timestamp": "2026-11-28T10:00:00.000Z",
            "Related Job": [job.id.as_str()],
        }))
    };
    let e1 = b
        .create(EVENTS, event(unique("event")))
        .await
        .unwrap_or_else(|e| panic!("create of a linked event failed: {e}"));
    let e2 = b
        .upsert(EVENTS, "Event ID", event(unique("event")))
        .await
        .unwrap_or_else(|e| panic!("upsert of a linked event failed: {e}"));
    assert_eq!(
        links(&must_get(b, JOBS, &job.id).await, "Webhook Events"),
        set(&[&e1.id, &e2.id]),
        "events linked to a job must appear in the job's Webhook Events"
    );
    b.update(EVENTS, &e1.id, fields(json!({"Related Job": []})))
        .await
        .unwrap_or_else(|e| panic!("clearing an event's link failed: {e}"));
    assert_eq!(
        links(&must_get(b, JOBS, &job.id).await, "Webhook Events"),
        set(&[&e2.id]),
        "unlinking an event must remove it from the job's Webhook Events"
    );
}

/// A write is all or nothing: a link to a record that does not exist (or is in the wrong
/// table) fails the whole request, as on Airtable.
pub async fn link_to_a_missing_record_fails_and_writes_nothing(b: &Backend) {
    let key = unique("bad-link");
    let result = b
        .create(
            JOBS,
            fields(json!({"Job ID": key, "Related Video": [unknown_id().as_str()]})),
        )
        .await;
    assert!(
        matches!(result, Err(RecordsError::Permanent { .. })),
        "a link to a missing record must fail permanently, got {result:?}"
    );
    let other_table = new_job(b, json!({})).await;
    let result = b
        .create(
            JOBS,
            fields(json!({"Job ID": key, "Related Video": [other_table.id.as_str()]})),
        )
        .await;
    assert!(
        matches!(result, Err(RecordsError::Permanent { .. })),
        "a link to a record of the wrong table must fail permanently, got {result:?}"
    );
    assert!(
        find_by(&**b, JOBS, "Job ID", &key).await.is_empty(),
        "a failed create must leave no record behind"
    );
}

pub async fn typed_video_round_trips(b: &Backend) {
    let records = Records::new(Arc::clone(b), Mapping::default());
    let combined = url("https://media.example/combined-typed.mp4");
    let id = records
        .create_video(&VideoFields {
            status: Some(VideoStatus::SegmentsCombined),
            combined_segments_video: Some(combined.clone()),
            music_prompt: Some("lofi, rainy night".into()),
            ..VideoFields::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create_video failed: {e}"));
    let v = records
        .get_video(&id)
        .await
        .unwrap_or_else(|e| panic!("get_video failed: {e}"))
        .expect("get_video must find the video create_video made");
    assert_eq!(v.id, id);
    assert_eq!(v.status, Some(VideoStatus::SegmentsCombined));
    assert_eq!(v.combined_segments_video, Some(combined));
    assert_eq!(v.music_prompt.as_deref(), Some("lofi, rainy night"));
    assert_eq!(
        (v.music, v.final_video, v.error_details),
        (None, None, None),
        "fields never written must read back as None"
    );
    assert!(v.jobs.is_empty(), "a new video has no jobs");

    let set_error = VideoFields {
        status: Some(VideoStatus::MusicGenerationFailed),
        error_details: Some(Some("GoAPI said no".into())),
        ..VideoFields::default()
    };
    records
        .update_video(&id, &set_error)
        .await
        .unwrap_or_else(|e| panic!("update_video failed: {e}"));
    let clear_error = VideoFields {
        status: Some(VideoStatus::GeneratingMusic),
        error_details: Some(None),
        ..VideoFields::default()
    };
    records
        .update_video(&id, &clear_error)
        .await
        .unwrap_or_else(|e| panic!("update_video failed: {e}"));
    let v = records
        .get_video(&id)
        .await
        .unwrap_or_else(|e| panic!("get_video failed: {e}"))
        .expect("the video still exists");
    assert_eq!(v.status, Some(VideoStatus::GeneratingMusic));
    assert_eq!(
        v.error_details, None,
        "error_details Some(None) must clear the field"
    );
    assert_eq!(
        v.music_prompt.as_deref(),
        Some("lofi, rainy night"),
        "update_video must leave fields it does not set"
    );
}

/// A job written with a related video is found from the video through the video's own
/// link array (the only way that also works on real Airtable).
pub async fn typed_jobs_of_video_follows_the_videos_links(b: &Backend) {
    let records = Records::new(Arc::clone(b), Mapping::default());
    let video = records
        .create_video(&VideoFields {
            status: Some(VideoStatus::GeneratingMusic),
            ..VideoFields::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create_video failed: {e}"));
    let job_id = unique("typed-job");
    let mut job = JobFields {
        job_id: job_id.clone(),
        job_type: Some(JobType::MusicGeneration),
        status: Some(JobStatus::Pending),
        related_video: Some(video.clone()),
        external_job_id: None,
        webhook_url: Some("https://hooks.example/webhooks/goapi".into()),
        error_details: None,
        timestamps: Some("created 2026-11-28T10:00:00Z".into()),
    };
    let rid = records
        .write_job(&job)
        .await
        .unwrap_or_else(|e| panic!("write_job failed: {e}"));
    let v = records
        .get_video(&video)
        .await
        .unwrap_or_else(|e| panic!("get_video failed: {e}"))
        .expect("the video exists");
    assert_eq!(
        v.jobs,
        vec![rid.clone()],
        "write_job with a related video must appear in the video's Jobs link"
    );
    let jobs = records
        .jobs_of_video(&v)
        .await
        .unwrap_or_else(|e| panic!("jobs_of_video failed: {e}"));
    assert_eq!(jobs.len(), 1, "jobs_of_video must find the one job");
    assert_eq!(jobs[0].id, rid);
    assert_eq!(jobs[0].job_id.as_deref(), Some(job_id.as_str()));
    assert_eq!(jobs[0].job_type, JobType::MusicGeneration);
    assert_eq!(jobs[0].status, Some(JobStatus::Pending));
    assert_eq!(jobs[0].related_video, vec![video.clone()]);

    job.status = Some(JobStatus::Processing);
    job.external_job_id = Some(unique("goapi-task"));
    let again = records
        .write_job(&job)
        .await
        .unwrap_or_else(|e| panic!("second write_job failed: {e}"));
    assert_eq!(
        again, rid,
        "write_job of the same Job ID must update the same record"
    );
    let v = records
        .get_video(&video)
        .await
        .unwrap_or_else(|e| panic!("get_video failed: {e}"))
        .expect("the video exists");
    let jobs = records
        .jobs_of_video(&v)
        .await
        .unwrap_or_else(|e| panic!("jobs_of_video failed: {e}"));
    assert_eq!(
        jobs.len(),
        1,
        "rewriting a job must not add a second link or record"
    );
    assert_eq!(jobs[0].status, Some(JobStatus::Processing));
    assert_eq!(jobs[0].external_job_id, job.external_job_id);
}

/// First contact reads a scan's videos, and then all their jobs, together: what comes back
/// must be what reading each video and its jobs alone gives, for videos with several jobs,
/// with none, ids of no record and ids of another table's records.
pub async fn typed_batched_reads_answer_as_the_single_ones(b: &Backend) {
    let records = Records::new(Arc::clone(b), Mapping::default());
    let (two, none, one) = (
        new_video(b, "batch-two").await.id,
        new_video(b, "batch-none").await.id,
        new_video(b, "batch-one").await.id,
    );
    let mut jobs = Vec::new();
    for video in [&two, &two, &one] {
        jobs.push(
            new_job(b, json!({"Related Video": [video.as_str()]}))
                .await
                .id,
        );
    }
    let asked = vec![
        two.clone(),
        unknown_id(),
        none.clone(),
        jobs[0].clone(),
        one.clone(),
    ];
    let batch = records
        .get_videos(&asked)
        .await
        .unwrap_or_else(|e| panic!("get_videos failed: {e}"));
    let mut single = Vec::new();
    for id in &asked {
        if let Some(v) = records
            .get_video(id)
            .await
            .unwrap_or_else(|e| panic!("get_video failed: {e}"))
        {
            single.push(v);
        }
    }
    let by_id = |list: &[VideoRecord]| -> Vec<(String, VideoRecord)> {
        let mut l: Vec<_> = list.iter().map(|v| (v.id.to_string(), v.clone())).collect();
        l.sort_by(|a, b| a.0.cmp(&b.0));
        l
    };
    assert_eq!(
        by_id(&batch),
        by_id(&single),
        "get_videos must answer the existing videos among the ids, as get_video reads them"
    );
    assert_eq!(batch.len(), 3, "an unknown id and a job's id are no videos");

    let together = records
        .jobs_of_videos(&batch)
        .await
        .unwrap_or_else(|e| panic!("jobs_of_videos failed: {e}"));
    assert_eq!(together.len(), 3, "every video is in the answer");
    for v in &batch {
        let alone = records
            .jobs_of_video(v)
            .await
            .unwrap_or_else(|e| panic!("jobs_of_video failed: {e}"));
        assert_eq!(together[&v.id], alone, "the jobs of {} read together", v.id);
    }
    let ids = |v: &RecordId| -> BTreeSet<String> {
        together[v].iter().map(|j| j.id.to_string()).collect()
    };
    assert_eq!(ids(&two), set(&[&jobs[0], &jobs[1]]));
    assert_eq!(ids(&one), set(&[&jobs[2]]));
    assert!(together[&none].is_empty());
}

pub async fn typed_find_job_by_external_id(b: &Backend) {
    let records = Records::new(Arc::clone(b), Mapping::default());
    let external = format!("{}'}}\\", unique("task"));
    let rid = records
        .write_job(&JobFields {
            job_id: unique("typed-ext"),
            job_type: Some(JobType::MusicGeneration),
            status: Some(JobStatus::Processing),
            related_video: None,
            external_job_id: Some(external.clone()),
            webhook_url: None,
            error_details: None,
            timestamps: None,
        })
        .await
        .unwrap_or_else(|e| panic!("write_job failed: {e}"));
    let found = records
        .find_job_by_external_id(&external)
        .await
        .unwrap_or_else(|e| panic!("find_job_by_external_id failed: {e}"))
        .expect("find_job_by_external_id must find the job with that External Job ID");
    assert_eq!(found.id, rid);
    assert_eq!(found.external_job_id.as_deref(), Some(external.as_str()));
    let missing = records
        .find_job_by_external_id(&unique("no-such-task"))
        .await
        .unwrap_or_else(|e| panic!("find_job_by_external_id failed: {e}"));
    assert_eq!(missing, None, "an unknown external id must find no job");
}

/// A retried write of the same event never makes a second Webhook Events record.
pub async fn typed_webhook_event_is_recorded_once_per_event_id(b: &Backend) {
    let records = Records::new(Arc::clone(b), Mapping::default());
    let job = records
        .write_job(&JobFields {
            job_id: unique("typed-event-job"),
            job_type: Some(JobType::MusicGeneration),
            status: Some(JobStatus::Processing),
            related_video: None,
            external_job_id: None,
            webhook_url: None,
            error_details: None,
            timestamps: None,
        })
        .await
        .unwrap_or_else(|e| panic!("write_job failed: {e}"));
    let mut event = WebhookEventRecord {
        event_id: unique("typed-event"),
        service: "goapi".into(),
        endpoint: "/webhooks/goapi".into(),
        raw_payload: "{\"timestamp\": 1764324000, \"data\": {}}".into(),
        processed: false,
        success: false,
        timestamp: Utc
            .with_ymd_and_hms(2026, 11, 28, 10, 0, 0)
            .single()
            .expect("a valid date"),
        related_job: Some(job.clone()),
        error_details: Some("not processed yet".into()),
    };
    let first = records
        .record_webhook_event(&event)
        .await
        .unwrap_or_else(|e| panic!("record_webhook_event failed: {e}"));
    event.processed = true;
    event.success = true;
    let second = records
        .record_webhook_event(&event)
        .await
        .unwrap_or_else(|e| panic!("second record_webhook_event failed: {e}"));
    assert_eq!(
        second, first,
        "recording the same Event ID twice must update one record"
    );
    let all = find_by(&**b, EVENTS, "Event ID", &event.event_id).await;
    assert_eq!(
        all.len(),
        1,
        "one Event ID must have exactly one Webhook Events record"
    );
    assert_eq!(all[0].fields.get("Processed"), Some(&json!(true)));
    assert_eq!(
        all[0].fields.get("Timestamp"),
        Some(&json!("2026-11-28T10:00:00.000Z"))
    );
    let found = records
        .find_webhook_event(&event.event_id)
        .await
        .unwrap_or_else(|e| panic!("find_webhook_event failed: {e}"))
        .expect("find_webhook_event must find the recorded event");
    assert_eq!(found.id, first);
    assert_eq!(
        links(&must_get(b, JOBS, &job).await, "Webhook Events"),
        set(&[&first]),
        "the event must appear once in its job's Webhook Events"
    );
}

/// With media fields mapped as attachments the typed layer writes `[{"url", "filename"}]`
/// and reads a URL back, which on Airtable is its own expiring copy, never the URL written
/// (docs/airtable.md, "Attachments"): so nothing here compares the two. An update keeps the
/// attachments already there (by their `{"id"}` on Airtable) and replaces only a file of
/// the same name, so a retried write does not add the file twice.
pub async fn typed_attachment_media_round_trips(b: &Backend) {
    let mut mapping = Mapping::default();
    mapping.videos.music_kind = MediaKind::Attachment;
    mapping.videos.final_video_kind = MediaKind::Attachment;
    let records = Records::new(Arc::clone(b), mapping);
    let music = url("https://cdn.example/tracks/song.mp3?sig=a%2Bb");
    let id = records
        .create_video(&VideoFields {
            status: Some(VideoStatus::AddingMusic),
            music: Some(music.clone()),
            ..VideoFields::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create_video with attachments failed: {e}"));
    let final_video = url("https://nca.example/out/final.mp4");
    let final_fields = VideoFields {
        final_video: Some(final_video.clone()),
        ..VideoFields::default()
    };
    let write_final = || records.update_video(&id, &final_fields);
    write_final()
        .await
        .unwrap_or_else(|e| panic!("update_video with attachments failed: {e}"));
    let second = url("https://cdn.example/tracks/second.mp3");
    for _ in 0..2 {
        // Twice: a retried write must not add the file twice.
        records
            .update_video(
                &id,
                &VideoFields {
                    music: Some(second.clone()),
                    ..VideoFields::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("second music write failed: {e}"));
    }
    let raw = must_get(b, VIDEOS, &id).await;
    let names = |field: &str| -> Vec<String> {
        let cell = raw.fields.get(field);
        let items = cell
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("attachment field {field:?} must hold a list, got {cell:?}"));
        items
            .iter()
            .map(|x| {
                assert!(
                    x.get("url").and_then(Value::as_str).is_some(),
                    "every attachment of {field:?} must have a url, got {x}"
                );
                x["filename"].as_str().unwrap_or_default().to_owned()
            })
            .collect()
    };
    assert_eq!(
        names("Music"),
        ["song.mp3", "second.mp3"],
        "an update keeps the attachment already there and adds the new file once"
    );
    assert_eq!(names("Final Video"), ["final.mp4"]);
    let v = records
        .get_video(&id)
        .await
        .unwrap_or_else(|e| panic!("get_video failed: {e}"))
        .expect("the video exists");
    assert!(
        v.music.is_some() && v.final_video.is_some(),
        "attachment media fields must read back as URLs: {v:?}"
    );
    write_final()
        .await
        .unwrap_or_else(|e| panic!("rewriting the final video failed: {e}"));
    let raw = must_get(b, VIDEOS, &id).await;
    assert_eq!(
        raw.fields["Final Video"].as_array().map(Vec::len),
        Some(1),
        "the same file written again replaces itself"
    );
}

/// A mapping for a base shaped like the production base of the pipeline's earlier build
/// (docs/airtable.md, "Real bases"), with its code's spellings: no Status on Videos, media in
/// attachment fields, the final video in `Video + Music`; a formula `Job ID` and an
/// autonumber `Event ID` (so no key fields: switched off), no Timestamps, no Timestamp, no
/// Error Details on Webhook Events; Type and Service options spelled their own way.
pub const PRODUCTION_MAPPING: &str = r#"
[videos]
status = ""
combined_segments_video_kind = "attachment"
music_kind = "attachment"
final_video = "Video + Music"
final_video_kind = "attachment"
error_details = ""

[jobs]
job_id = ""
timestamps = ""

[webhook_events]
event_id = ""
timestamp = ""
error_details = ""

[job_type_values]
music_generation = "music"
music_addition = "final"

[service_values]
goapi = "goapi"
nca = "nca"
"#;

/// The typed layer on a base with no key field: jobs and events are plain creates whose
/// ids the caller keeps, nothing is written to a computed field, select values are spelled
/// as the mapping says, the Jobs ↔ Videos link is kept in step on both sides, and records
/// can be listed by creation time (how an interrupted create finds what it made).
pub async fn run_production(b: Backend) {
    let mapping = Mapping::from_toml(PRODUCTION_MAPPING).expect("the production mapping parses");
    let records = Records::new(Arc::clone(&b), mapping.clone());
    assert!(!records.jobs_have_key() && !records.events_have_key());

    let video = must_create(
        &b,
        VIDEOS,
        json!({"Description": unique("production video"), "Music Prompt": "calm piano"}),
    )
    .await;
    let job_fields = JobFields {
        job_id: uuid::Uuid::new_v4().to_string(),
        job_type: Some(JobType::MusicAddition),
        status: Some(JobStatus::Pending),
        related_video: Some(video.id.clone()),
        external_job_id: None,
        webhook_url: Some("https://reelstate.example/webhooks/nca-toolkit?job=1".into()),
        error_details: None,
        timestamps: Some("{}".into()),
    };
    let f = records.job_fields_with_id(&job_fields);
    assert!(
        !f.contains_key("Job ID") && !f.contains_key("Timestamps"),
        "fields switched off are never written: {f:?}"
    );
    assert_eq!(f["Type"], json!("final"), "the Type is spelled as mapped");
    let job = records
        .create(JOBS, f)
        .await
        .unwrap_or_else(|e| panic!("creating a job on a base without Job ID failed: {e}"));
    let read = records
        .get_job(&job.id)
        .await
        .unwrap_or_else(|e| panic!("get_job failed: {e}"))
        .expect("the job exists");
    assert_eq!(
        read.job_type,
        JobType::MusicAddition,
        "Type read back as mapped"
    );
    assert_eq!(read.status, Some(JobStatus::Pending));
    let v = records
        .get_video(&video.id)
        .await
        .unwrap_or_else(|e| panic!("get_video failed: {e}"))
        .expect("the video exists");
    assert_eq!(
        v.jobs,
        vec![job.id.clone()],
        "Videos.Jobs lists the job back"
    );
    assert_eq!(
        v.status, None,
        "a base without Status has no status to read"
    );
    records
        .update_job(
            &job.id,
            &JobFields {
                status: Some(JobStatus::Completed),
                external_job_id: Some("nca-1".into()),
                ..job_fields.clone()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("update_job by record id failed: {e}"));

    let event = WebhookEventRecord {
        event_id: uuid::Uuid::new_v4().to_string(),
        service: "goapi".into(),
        endpoint: "/webhooks/goapi".into(),
        raw_payload: "{\"status\":\"completed\"}".into(),
        processed: true,
        success: true,
        timestamp: Utc::now(),
        related_job: Some(job.id.clone()),
        error_details: Some("never written: switched off".into()),
    };
    let f = records.webhook_event_fields(&event);
    assert_eq!(f["Service"], json!("goapi"));
    for off in ["Event ID", "Timestamp", "Error Details"] {
        assert!(!f.contains_key(off), "{off} is switched off: {f:?}");
    }
    let first = records
        .create(EVENTS, f.clone())
        .await
        .unwrap_or_else(|e| panic!("creating an event on a base without Event ID failed: {e}"));
    let created = DateTime::parse_from_rfc3339(&first.created_time)
        .expect("createdTime is RFC 3339")
        .with_timezone(&Utc);
    // A record made after `since` is listed, one made before it is not: `createdTime` has
    // millisecond steps, so the second record is made a few of them later.
    let since = created + chrono::Duration::milliseconds(1);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = records
        .create(EVENTS, f)
        .await
        .unwrap_or_else(|e| panic!("second event create failed: {e}"));
    let listed: Vec<RecordId> = records
        .created_since(EVENTS, since)
        .await
        .unwrap_or_else(|e| panic!("created_since failed: {e}"))
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert!(
        listed.contains(&second.id),
        "{listed:?} lacks the newer record"
    );
    assert!(
        !listed.contains(&first.id),
        "{listed:?} has the older record"
    );
}

/// What Airtable refuses an upsert (422) and an update of an unknown record (404), the
/// backend refuses too: an upsert without its merge value, one whose merge value matches two
/// records (plain creates may make such twins), an update of a record that does not exist.
pub async fn upsert_refusals(b: &dyn RecordBackend) {
    let missing = b
        .upsert(JOBS, "Job ID", fields(json!({"Status": "pending"})))
        .await;
    assert!(
        matches!(missing, Err(RecordsError::Permanent { status: 422, .. })),
        "an upsert without its merge value must be refused, got {missing:?}"
    );
    let twice = unique("twice");
    for _ in 0..2 {
        b.create(JOBS, fields(json!({"Job ID": twice})))
            .await
            .expect("plain creates may duplicate a value");
    }
    let ambiguous = b
        .upsert(JOBS, "Job ID", fields(json!({"Job ID": twice})))
        .await;
    assert!(
        matches!(ambiguous, Err(RecordsError::Permanent { status: 422, .. })),
        "an upsert matching two records must be refused, got {ambiguous:?}"
    );
    let not_found = b
        .update(JOBS, &unknown_id(), fields(json!({"Status": "failed"})))
        .await;
    assert!(
        matches!(not_found, Err(RecordsError::NotFound(..))),
        "updating an unknown record must be NotFound, got {not_found:?}"
    );
}
