//! The SQLite store's own checks: statement caching, the file's one owner, checkpoints
//! outside commits, and which commits are fsynced.

use super::*;

/// The store runs the same few dozen statements all day: once a round of work has
/// prepared them, the next rounds find every one in the connections' statement caches.
/// (A statement run with `execute` is parsed and planned again each time; one whose
/// plan may depend on a bound value, `LIMIT ?1` among them, is re-planned on every
/// bind unless the connection promises stable plans.) SQLite consults the authorizer
/// only while it prepares a statement: after the first round it must hear nothing
/// but the transactions' BEGIN and COMMIT.
#[tokio::test]
async fn after_a_first_round_no_statement_is_prepared_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rusqlite::hooks::{AuthAction, Authorization};

    use crate::domain::{JobStatus, JobType, VideoStatus};
    use crate::machine::{Effect, Event, Job, JobId, Outcome, Snapshot, Video};
    use crate::store::{Commit, EntryOutcome, Inbox, NewEntry, Outbox, Payload, Snapshots, Source};

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("cached.db")).unwrap();
    let prepared = Arc::new(AtomicUsize::new(0));
    for conn in [&store.conn, &store.reader] {
        let seen = prepared.clone();
        conn.lock()
            .unwrap()
            .authorizer(Some(move |ctx: rusqlite::hooks::AuthContext<'_>| {
                if !matches!(ctx.action, AuthAction::Transaction { .. }) {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                Authorization::Allow
            }));
    }
    let video = RecordId::parse("recA1b2C3d4E5f6G7").unwrap();
    let mut during = Vec::new();
    for round in 0..3 {
        prepared.store(0, Ordering::SeqCst);
        let entry = NewEntry {
            event_id: uuid::Uuid::now_v7(),
            video_id: video.clone(),
            source: Source::Goapi,
            endpoint: "/webhooks/goapi".into(),
            dedupe_key: Some(format!("round-{round}")),
            raw_body: "{}".into(),
            headers: "{}".into(),
            received_at: crate::clock::now(),
            payload: Payload::Event {
                event: Event::RetryRequested { from: None },
            },
        };
        store.accept(entry.clone()).await.unwrap();
        let pending = store.pending_entries(64).await.unwrap();
        assert_eq!(pending.len(), 1);
        let worker = store
            .claim(Lane::Worker, vec![video.clone()])
            .await
            .unwrap();
        let effect = format!("effect-{round}");
        let mut snapshot = Snapshot::new(Video::new(video.clone(), VideoStatus::GeneratingMusic));
        snapshot.jobs.push(Job {
            id: JobId(uuid::Uuid::new_v4()),
            kind: JobType::MusicGeneration,
            status: JobStatus::Pending,
            external_id: None,
            submission_id: None,
            error: None,
            created_at: crate::clock::now(),
            ended_at: None,
            resubmissions: 0,
        });
        store
            .commit(
                Commit {
                    event_id: entry.event_id,
                    video_id: video.clone(),
                    snapshot: Some(snapshot),
                    history: None,
                    effects: vec![(
                        effect.clone(),
                        Effect::RecordWebhookOutcome {
                            outcome: Outcome::Applied,
                            job: None,
                            detail: None,
                        },
                    )],
                    outcome: EntryOutcome::Applied,
                    note: None,
                    job: None,
                    job_records: Vec::new(),
                    at: crate::clock::now(),
                },
                &worker[0],
            )
            .await
            .unwrap();
        drop(worker);
        let due = store.due_effects(crate::clock::now(), 64).await.unwrap();
        assert_eq!(due.len(), 1);
        let executor = store
            .claim(Lane::Executor, vec![video.clone()])
            .await
            .unwrap();
        assert!(
            store
                .effect_started(&effect, &executor[0], None)
                .await
                .unwrap()
        );
        store.effect_done_with(&effect, None).await.unwrap();
        assert!(store.snapshot(&video).await.unwrap().is_some());
        during.push(prepared.load(Ordering::SeqCst));
    }
    assert!(during[0] > 0, "the first round prepares: {during:?}");
    assert_eq!(
        &during[1..],
        &[0, 0],
        "statements prepared again: {during:?}"
    );
}

#[test]
fn a_second_owner_of_the_file_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.db");
    let first = SqliteStore::open(&path).unwrap();
    let second = SqliteStore::open(&path).err().expect("refused");
    assert!(matches!(second, StoreError::InUse(..)), "{second:?}");
    let msg = second.to_string();
    assert!(msg.contains("another reelstate process"), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    drop(first);
    assert!(SqliteStore::open(&path).is_ok(), "free again once closed");
}

/// Checkpoints are the checkpointer's: a commit that ran one would hold the writer
/// while it copies pages and syncs the database (`checkpoint`).
#[test]
fn no_connection_on_the_file_checkpoints_inside_its_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auto.db");
    let store = SqliteStore::open(&path).unwrap();
    let records = crate::records::embedded::sqlite::SqliteRecords::open_sharing(
        &path,
        &crate::records::Mapping::default(),
        store.write_gate(),
    )
    .unwrap();
    let auto = |c: &Connection| -> i64 {
        c.pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .unwrap()
    };
    assert_eq!(auto(&store.conn.lock().unwrap()), 0, "the writer");
    assert_eq!(auto(&store.reader.lock().unwrap()), 0, "the reader");
    assert_eq!(records.autocheckpoint(), 0, "the embedded records");
}

/// SQLite's Unix layer syncs with `fsync` unless built with `HAVE_FDATASYNC`; the
/// engine's build passes it (`.cargo/config.toml`, docs/operations.md). Cargo hands
/// the same `[env]` to libsqlite3-sys's build script and to this crate's compilation.
#[test]
fn the_bundled_sqlite_is_built_to_sync_with_fdatasync() {
    let flags = option_env!("LIBSQLITE3_FLAGS").unwrap_or_default();
    assert!(
        flags.split_whitespace().any(|f| f == "-DHAVE_FDATASYNC=1"),
        "LIBSQLITE3_FLAGS = {flags:?}"
    );
}

#[test]
fn commits_that_promise_are_fsynced_the_others_ride_along() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("full.db")).unwrap();
    // 1 = NORMAL between commits: the WAL is fsynced at checkpoints and by the next
    // FULL commit (2), which is what `durably` gives the commits that promise.
    assert_eq!(store.synchronous_level().unwrap(), 1);
    let mut c = Connection::open(dir.path().join("other.db")).unwrap();
    c.pragma_update(None, "synchronous", "NORMAL").unwrap();
    let level = |c: &Connection| -> i64 {
        c.pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap()
    };
    assert_eq!(durably(&mut c, |c| Ok(level(c))).unwrap(), 2);
    assert_eq!(level(&c), 1, "back to NORMAL after");
    let failed: Result<(), _> = durably(&mut c, |_| Err(StoreError::Join("boom".into())));
    assert!(failed.is_err());
    assert_eq!(level(&c), 1, "back to NORMAL after a failure too");
}
