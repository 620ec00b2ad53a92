//! Upgrades of the SQLite file (docs/upgrade.md): files of every earlier store version, built
//! from the SQL each version wrote (`tests/fixtures/store/`), opened by today's binary;
//! and a file of a newer version, which today's binary refuses.

use crate::support;

use std::path::Path;
use std::time::Duration;

use reelstate::records::embedded::sqlite::RECORDS_SCHEMA;
use reelstate::store::{ROW_FORMAT, STORE_SCHEMA};
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use support::app::AppBuilder;

const VIDEO: &str = "recFixture0000001";

fn sql(name: &str) -> String {
    String::from_utf8(support::fixture(&format!("store/{name}"))).expect("UTF-8")
}

/// A store file as a binary of store version `version` left it (None: from before the
/// versions were recorded), with the embedded records as they were before theirs were.
fn build(path: &Path, version: Option<i64>) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(&sql("store-v1.sql")).unwrap();
    if let Some(version) = version {
        c.execute_batch(
            "CREATE TABLE store_migrations (
                 version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
        )
        .unwrap();
        for v in 1..=version {
            if v > 1 {
                c.execute_batch(&sql(&format!("store-v{v}.sql"))).unwrap();
            }
            c.execute(
                "INSERT INTO store_migrations VALUES (?1, ?2, '2026-11-20T09:00:00.000000Z')",
                rusqlite::params![v, format!("version {v}")],
            )
            .unwrap();
        }
    }
    c.execute_batch(&sql("records-v1.sql")).unwrap();
    c.execute_batch(&sql("data.sql")).unwrap();
    // As a stopped service leaves its file: WAL mode, everything checkpointed.
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
}

fn read_only(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

fn one<T: rusqlite::types::FromSql>(c: &Connection, q: &str) -> T {
    c.query_row(q, [], |r| r.get(0)).unwrap()
}

async fn events(app: &support::app::TestApp) -> Vec<Value> {
    let (status, body) = app.get_json(&format!("/events?video_id={VIDEO}")).await;
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().cloned().unwrap_or_default()
}

/// Waits until the video's every entry is done (read back through today's decoder), and
/// returns them.
async fn all_done(app: &support::app::TestApp, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let e = events(app).await;
        if e.len() == n && e.iter().all(|e| e["state"] == "done") {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{e:#?}\n{}",
            support::app::tail(&app.log_text(), 40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What every migrated file must show: current versions, the old rows all there and all
/// readable (nothing quarantined), the pending effect run.
fn check_file(db: &Path, what: &str) {
    let c = read_only(db);
    let versions: Vec<i64> = c
        .prepare("SELECT version FROM store_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(versions, (1..=STORE_SCHEMA).collect::<Vec<_>>(), "{what}");
    let records: i64 = one(&c, "SELECT MAX(version) FROM records_migrations");
    assert_eq!(records, RECORDS_SCHEMA, "{what}");
    let quarantined: i64 = one(
        &c,
        "SELECT (SELECT COUNT(*) FROM inbox WHERE state = 'quarantined')
              + (SELECT COUNT(*) FROM outbox WHERE state = 'quarantined')",
    );
    assert_eq!(quarantined, 0, "{what}");
    let effect: String = one(
        &c,
        "SELECT state FROM outbox WHERE effect_id = 'outcome:01900000-0000-7000-8000-000000000001'",
    );
    assert_eq!(effect, "done", "{what}: the old effect ran");
    let history: i64 = one(
        &c,
        "SELECT COUNT(*) FROM history WHERE event_id = '01900000-0000-7000-8000-000000000001'",
    );
    assert_eq!(history, 1, "{what}");
    let prompt: String = one(
        &c,
        "SELECT text FROM records_cells WHERE record_id = 'recFixture0000001' AND field = 'Music Prompt'",
    );
    assert_eq!(prompt, "calm piano", "{what}: the embedded records kept");
}

#[tokio::test]
async fn every_earlier_store_file_is_migrated_in_place_and_keeps_its_data() {
    for version in [
        None,
        Some(1),
        Some(2),
        Some(3),
        Some(4),
        Some(5),
        Some(STORE_SCHEMA),
    ] {
        let what = format!("store version {version:?}");
        let builder = AppBuilder::new().env("REELSTATE_DEV_MODE", "true");
        let db = builder.db_path();
        build(&db, version);
        let mut app = builder.spawn().await;
        let v = app
            .wait_settled(VIDEO, "completed", Duration::from_secs(30))
            .await;
        assert_eq!(
            v["final_video"], "https://media.example/final-1.mp4",
            "{what}"
        );
        let e = all_done(&app, 2).await;
        assert!(
            e.iter().all(|e| e["event"] == "retry_requested"),
            "{what}: {e:#?}"
        );
        check_file(&db, &what);
        if version != Some(STORE_SCHEMA) {
            continue;
        }
        // Today's file: rows today's binary wrote carry the row format, and the next
        // start reads them and the old ones alike.
        let report = support::world::goapi_fixture("udio_processing.json", "task-later", 1);
        let answer = app
            .client
            .post(format!("{}/webhooks/goapi?video_id={VIDEO}", app.url))
            .header("x-webhook-secret", support::app::GOAPI_SECRET)
            .json(&report)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 202);
        all_done(&app, 3).await;
        let written: String = one(
            &read_only(&db),
            "SELECT payload FROM inbox ORDER BY seq DESC LIMIT 1",
        );
        assert!(
            written.starts_with(&format!("{{\"v\":{ROW_FORMAT},")),
            "{written}"
        );
        app.restart().await;
        let e = all_done(&app, 3).await;
        assert_eq!(e.len(), 3);
        app.wait_settled(VIDEO, "completed", Duration::from_secs(30))
            .await;
        check_file(&db, "today's file");
    }
}

#[tokio::test]
async fn a_file_of_a_newer_store_version_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("newer.db");
    build(&db, Some(STORE_SCHEMA));
    let newer = STORE_SCHEMA + 1;
    Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO store_migrations VALUES (?1, 'from a newer binary', '2027-01-01T00:00:00.000000Z')",
            [newer],
        )
        .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_reelstate"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("REELSTATE_DEV_MODE", "true")
            .env("REELSTATE_LISTEN", "127.0.0.1:0")
            .env("REELSTATE_DB", &db)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("exits instead of serving")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("version {newer}"))
            && stderr.contains(&format!("up to version {STORE_SCHEMA}"))
            && stderr.contains("newer reelstate")
            && stderr.contains("docs/upgrade.md"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "never listened"
    );
    let rows: i64 = one(&read_only(&db), "SELECT COUNT(*) FROM store_migrations");
    assert_eq!(rows, STORE_SCHEMA + 1, "the file is left as it was");
}
