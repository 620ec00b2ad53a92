//! The embedded store's tables and their versioned migrations (`store_migrations`).

use rusqlite::{Connection, OptionalExtension, params};

use super::ts;
use crate::store::StoreError;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS inbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL UNIQUE,
    video_id     TEXT NOT NULL,
    source       TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    dedupe_key   TEXT UNIQUE,
    raw_body     TEXT NOT NULL,
    headers      TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    payload      TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending',
    outcome      TEXT,
    note         TEXT,
    job_id       TEXT,
    processed_at TEXT
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox(state, seq);
CREATE INDEX IF NOT EXISTS inbox_video ON inbox(video_id, seq);
CREATE INDEX IF NOT EXISTS inbox_outcome ON inbox(outcome, seq);
CREATE TABLE IF NOT EXISTS video_state (
    video_id   TEXT PRIMARY KEY,
    snapshot   TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS job_index (
    job_id    TEXT PRIMARY KEY,
    video_id  TEXT NOT NULL,
    record_id TEXT
);
CREATE TABLE IF NOT EXISTS history (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id  TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    event     TEXT NOT NULL,
    from_status TEXT NOT NULL,
    to_status TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    at        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_video ON history(video_id, id);
CREATE TABLE IF NOT EXISTS outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    effect_id       TEXT NOT NULL UNIQUE,
    video_id        TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    effect          TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    -- Set just before an external call, cleared when its result is stored: still set
    -- at start-up means the process died with the call in flight.
    started_at      TEXT,
    updated_at      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS active_jobs (
    job_id        TEXT PRIMARY KEY,
    video_id      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    external_id   TEXT,
    since         TEXT NOT NULL,
    checks        INTEGER NOT NULL DEFAULT 0,
    next_check_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_video ON outbox(video_id, state, seq);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_at);
"#;

/// The embedded store's migrations, in order. Append only. The first one's statements are
/// all `IF NOT EXISTS`, so files written before migrations were versioned take it as a
/// no-op. (Versions live in a table of their own, not `user_version`: the file is shared
/// with the embedded records.)
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "engine store", SCHEMA),
    (2, "record creations", RECORD_CREATIONS),
    (3, "retention and quarantine", RETENTION),
    (4, "pending index holds the video", PENDING_COVERS_VIDEO),
    (5, "videos list and external id search", VIDEOS_LIST),
    (6, "paid calls", PAID_CALLS),
    (
        7,
        "paid call totals and creation claims by age",
        RETAINED_TOTALS,
    ),
    (8, "waiting jobs by video", ACTIVE_JOBS_BY_VIDEO),
];

/// Retention folds paid calls older than it into one row per day, video and service, so
/// that the per-video and per-day counts survive it while the table of single calls stays
/// as long as the retention. Keyless-create claims are pruned by age, found by it here.
const RETAINED_TOTALS: &str = "
CREATE TABLE paid_call_totals (
    day      TEXT NOT NULL,
    video_id TEXT NOT NULL,
    service  TEXT NOT NULL,
    calls    INTEGER NOT NULL,
    PRIMARY KEY (day, video_id, service)
);
CREATE INDEX paid_call_totals_video ON paid_call_totals(video_id);
CREATE INDEX record_creations_started ON record_creations(started_at);
";

/// The videos list asks, for every row it reads, whether the video has a job waiting for
/// its service (and since when): without this it scanned every waiting job per row, and
/// the stuck and needs-attention filters, which read many rows to fill a page, took
/// 80-190 ms over 10,000 videos (`cargo bench --bench console`).
const ACTIVE_JOBS_BY_VIDEO: &str = "
CREATE INDEX IF NOT EXISTS active_jobs_video ON active_jobs(video_id, since);
";

/// Every start of a paid external call (a GoAPI task, an NCA render), re-submissions
/// included: the outbox keeps only an effect's last start, and retention deletes done
/// effects, so the counts per video and per day live here (and, past the retention, in
/// `paid_call_totals`). Calls started before this migration are not known.
const PAID_CALLS: &str = "
CREATE TABLE paid_calls (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id  TEXT NOT NULL,
    job_id    TEXT,
    effect_id TEXT NOT NULL,
    service   TEXT NOT NULL,
    at        TEXT NOT NULL
);
CREATE INDEX paid_calls_video ON paid_calls(video_id);
CREATE INDEX paid_calls_at ON paid_calls(at, service);
";

/// The videos list pages by last change, and its search finds a video from a job's external
/// id (GoAPI task id, NCA job id) in the job index instead of reading every snapshot. Jobs
/// committed before this take their external id from their snapshot here.
const VIDEOS_LIST: &str = "
ALTER TABLE job_index ADD COLUMN external_id TEXT;
UPDATE job_index SET external_id = (
    SELECT json_extract(j.value, '$.external_id')
    FROM video_state v, json_each(v.snapshot, '$.jobs') AS j
    WHERE v.video_id = job_index.video_id AND json_extract(j.value, '$.id') = job_index.job_id
);
CREATE INDEX job_index_external ON job_index(external_id) WHERE external_id IS NOT NULL;
CREATE INDEX video_state_updated ON video_state(updated_at, video_id);
";

/// The worker's scan chooses its entries on the pending index alone (`inbox::PENDING_SEQS`):
/// with the video in the index, it reads no table row until it has chosen.
const PENDING_COVERS_VIDEO: &str = "
DROP INDEX IF EXISTS inbox_pending;
CREATE INDEX inbox_pending ON inbox(state, seq, video_id);
";

/// Records the engine created on a base with no key field, each claimed by one owner.
const RECORD_CREATIONS: &str = "
CREATE TABLE IF NOT EXISTS record_creations (
    owner      TEXT PRIMARY KEY NOT NULL,
    started_at TEXT NOT NULL,
    record_id  TEXT UNIQUE
);
";

/// Indexes the background pruner and the quarantine list read by: a pass finds its batch
/// from the index instead of scanning the tables while holding the writer.
const RETENTION: &str = r#"
CREATE INDEX IF NOT EXISTS inbox_processed ON inbox(state, processed_at);
CREATE INDEX IF NOT EXISTS history_at ON history(at);
CREATE INDEX IF NOT EXISTS outbox_updated ON outbox(state, updated_at);
CREATE INDEX IF NOT EXISTS outbox_event ON outbox(event_id);
"#;

/// The newest store schema this binary knows (the last of [`MIGRATIONS`]).
pub const STORE_SCHEMA: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Applies the store's migrations the file lacks (see [`migrate_file`]).
pub(super) fn migrate(conn: &mut Connection) -> Result<Vec<i64>, StoreError> {
    migrate_file(conn, "store_migrations", "store schema", MIGRATIONS)
}

/// Applies the migrations in `migrations` that the file's `table` does not list, in one
/// immediate transaction: a second process opening the file at the same moment waits,
/// then finds them applied. A file that lists a version beyond the last one given was
/// written by a newer binary, whose tables this one would misread: it is refused
/// ([`StoreError::Newer`]) before anything is written to it. One table per owner of the
/// file's tables (the store, the embedded records), each with its own versions.
pub fn migrate_file(
    conn: &mut Connection,
    table: &str,
    what: &'static str,
    migrations: &[(i64, &str, &str)],
) -> Result<Vec<i64>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TEXT NOT NULL
         )"
    ))?;
    let known = migrations.last().map_or(0, |m| m.0);
    let newest: Option<i64> =
        tx.query_row(&format!("SELECT MAX(version) FROM {table}"), [], |r| {
            r.get(0)
        })?;
    if let Some(file) = newest.filter(|v| *v > known) {
        return Err(StoreError::Newer {
            what,
            file,
            binary: known,
        });
    }
    let mut applied = Vec::new();
    for (version, name, sql) in migrations {
        let done: Option<i64> = tx
            .query_row(
                &format!("SELECT version FROM {table} WHERE version = ?1"),
                [version],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_none() {
            tx.execute_batch(sql)?;
            tx.execute(
                &format!("INSERT INTO {table} (version, name, applied_at) VALUES (?1, ?2, ?3)"),
                params![version, name, ts(crate::clock::now())],
            )?;
            applied.push(*version);
        }
    }
    tx.commit()?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_applied_once_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut first = Connection::open(&path).unwrap();
        assert_eq!(
            migrate(&mut first).unwrap(),
            (1..=STORE_SCHEMA).collect::<Vec<_>>()
        );
        assert!(migrate(&mut first).unwrap().is_empty());
        // A file from before versioning (tables, no record of them) takes it as a no-op.
        let old = dir.path().join("old.db");
        let mut conn = Connection::open(&old).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(
            r#"INSERT INTO video_state VALUES ('recA', '{}', 'now');
               INSERT INTO video_state VALUES ('recB', '{"jobs": [{"id": "j1", "external_id": null},
                   {"id": "j2", "external_id": "task-7"}]}', 'now');
               INSERT INTO job_index (job_id, video_id) VALUES ('j1', 'recB'), ('j2', 'recB');"#,
        )
        .unwrap();
        assert_eq!(
            migrate(&mut conn).unwrap(),
            (1..=STORE_SCHEMA).collect::<Vec<_>>()
        );
        let kept: i64 = conn
            .query_row("SELECT COUNT(*) FROM video_state", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 2);
        // Jobs from before the videos list are found by their external id too.
        let found: Vec<String> = conn
            .prepare("SELECT job_id FROM job_index WHERE external_id = 'task-7'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(found, vec!["j2".to_owned()]);
    }

    /// A file from a newer binary is refused before anything is written to it: this
    /// binary's migrations would be applied over tables it does not know.
    #[test]
    fn a_file_of_a_newer_schema_is_refused_and_left_as_it_was() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO store_migrations VALUES (?1, 'later', 'then')",
            [STORE_SCHEMA + 3],
        )
        .unwrap();
        // Left for this binary to apply, were the file not refused.
        conn.execute(
            "DELETE FROM store_migrations WHERE version = ?1",
            [STORE_SCHEMA],
        )
        .unwrap();
        match migrate(&mut conn) {
            Err(StoreError::Newer { what, file, binary }) => {
                assert_eq!(
                    (what, file, binary),
                    ("store schema", STORE_SCHEMA + 3, STORE_SCHEMA)
                );
            }
            other => panic!("{other:?}"),
        }
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM store_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, STORE_SCHEMA, "nothing applied");
        let msg = StoreError::Newer {
            what: "store schema",
            file: 7,
            binary: 4,
        }
        .to_string();
        assert!(
            msg.contains("version 7") && msg.contains("up to version 4"),
            "{msg}"
        );
    }

    /// The worker's scan chooses its entries from the pending index without reading a
    /// table row (a backlog's raw bodies stay on disk); only the chosen rows are read.
    #[test]
    fn the_pending_scan_chooses_on_the_index_alone() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let sql = format!("EXPLAIN QUERY PLAN {}", super::super::inbox::PENDING_SEQS);
        let mut st = conn.prepare(&sql).unwrap();
        let plan: Vec<String> = st
            .query_map(
                rusqlite::params![256, crate::store::EntryState::Pending.as_ref()],
                |r| r.get::<_, String>(3),
            )
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("USING COVERING INDEX inbox_pending")),
            "{plan:#?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN inbox")),
            "{plan:#?}"
        );
    }
}
