//! The records contract suite against the embedded SQLite backend (in memory and on a
//! file), and what only a file-backed store must also do: survive a reopen, share the
//! file with the engine's tables, and stay consistent with several connections writing.

use crate::support;

use std::path::Path;
use std::sync::Arc;

use reelstate::records::embedded::sqlite::SqliteRecords;
use reelstate::records::{Filter, Mapping, RecordBackend};
use serde_json::json;
use support::fields;
use support::records_contract::{run_all, upsert_refusals};

fn open(path: &Path) -> SqliteRecords {
    SqliteRecords::open(path, &Mapping::default())
        .unwrap_or_else(|e| panic!("opening {} failed: {e}", path.display()))
}

// Several worker threads, so that the suite's concurrent upserts really overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_meets_the_records_contract() {
    let backend =
        SqliteRecords::open_in_memory(&Mapping::default()).expect("in-memory database opens");
    run_all(Arc::new(backend)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_meets_the_records_contract() {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = open(&dir.path().join("reelstate.db"));
    run_all(Arc::new(backend.clone())).await;
    // Twice on the same file: the suite makes its own data, so it must not trip over a
    // previous run's records.
    run_all(Arc::new(backend)).await;
}

/// The production base's mapping (no key fields, attachments, mapped spellings).
#[tokio::test]
async fn sqlite_meets_the_records_contract_of_a_base_without_keys() {
    let mapping = Mapping::from_toml(support::records_contract::PRODUCTION_MAPPING)
        .expect("the production mapping parses");
    let backend = SqliteRecords::open_in_memory(&mapping).expect("in-memory database opens");
    support::records_contract::run_production(Arc::new(backend)).await;
}

#[tokio::test]
async fn reopening_the_file_keeps_records_and_links() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("reelstate.db");
    let (video, job) = {
        let b = open(&path);
        let video = b
            .create(
                "Videos",
                fields(json!({"Name": "kept", "Status": "completed"})),
            )
            .await
            .expect("create video");
        let job = b
            .create(
                "Jobs",
                fields(json!({"Job ID": "kept-job", "Related Video": [video.id.as_str()]})),
            )
            .await
            .expect("create job");
        (video.id, job)
    };
    let b = open(&path);
    let got_job = b
        .get("Jobs", &job.id)
        .await
        .expect("get after reopen")
        .expect("a record written before closing must still be there after reopening");
    assert_eq!(got_job, job, "reopening must give back the same record");
    let got_video = b
        .get("Videos", &video)
        .await
        .expect("get after reopen")
        .expect("the video is still there");
    assert_eq!(
        got_video.fields.get("Jobs"),
        Some(&json!([job.id.as_str()])),
        "the inverse link must survive a reopen"
    );
}

#[tokio::test]
async fn shares_its_file_with_the_engines_tables() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("reelstate.db");
    {
        // Another module owns tables like these in the same file; ours must not collide.
        let conn = rusqlite::Connection::open(&path).expect("open with rusqlite");
        conn.execute_batch(
            "CREATE TABLE inbox (id INTEGER PRIMARY KEY, body TEXT);
             CREATE TABLE history (id INTEGER PRIMARY KEY, note TEXT);
             INSERT INTO inbox (body) VALUES ('untouched');",
        )
        .expect("engine tables");
    }
    let b = open(&path);
    b.create("Videos", fields(json!({"Name": "beside the inbox"})))
        .await
        .expect("create beside other tables");
    // Opening again runs the idempotent schema creation a second time.
    let again = open(&path);
    let found = again
        .find(
            "Videos",
            &Filter::Equals {
                field: "Name".into(),
                value: "beside the inbox".into(),
            },
        )
        .await
        .expect("find");
    assert_eq!(found.len(), 1);
    let conn = rusqlite::Connection::open(&path).expect("open with rusqlite");
    let body: String = conn
        .query_row("SELECT body FROM inbox", [], |r| r.get(0))
        .expect("the engine's table is still there");
    assert_eq!(body, "untouched");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal", "the records database must be in WAL mode");
}

/// Two connections on one file (two processes, or two handles in one): upserts of one key
/// still make one record, and every create lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_one_file_stay_consistent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("reelstate.db");
    let writers: Vec<Arc<dyn RecordBackend>> = vec![Arc::new(open(&path)), Arc::new(open(&path))];
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let b = Arc::clone(&writers[i % 2]);
            tokio::spawn(async move {
                b.upsert(
                    "Jobs",
                    "Job ID",
                    fields(json!({"Job ID": "shared-key", "Timestamps": format!("writer {i}")})),
                )
                .await?;
                b.create(
                    "Webhook Events",
                    fields(json!({"Event ID": format!("event-{i}"), "Service": "nca"})),
                )
                .await
            })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        t.expect("writer task panicked")
            .unwrap_or_else(|e| panic!("a concurrent write failed: {e}"));
    }
    let jobs = writers[0]
        .find(
            "Jobs",
            &Filter::Equals {
                field: "Job ID".into(),
                value: "shared-key".into(),
            },
        )
        .await
        .expect("find");
    assert_eq!(
        jobs.len(),
        1,
        "upserts of one key from two connections must make one record"
    );
    for i in 0..20 {
        let found = writers[1]
            .find(
                "Webhook Events",
                &Filter::Equals {
                    field: "Event ID".into(),
                    value: format!("event-{i}"),
                },
            )
            .await
            .expect("find");
        assert_eq!(found.len(), 1, "create {i} must have landed exactly once");
    }
}

#[tokio::test]
async fn upsert_refuses_what_airtable_refuses() {
    let b = SqliteRecords::open_in_memory(&Mapping::default()).expect("in-memory database opens");
    upsert_refusals(&b).await;
}
