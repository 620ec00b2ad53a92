//! The embedded store: one SQLite file in WAL mode. rusqlite is blocking, so every call
//! runs on the blocking pool behind one connection; SQLite serialises writers anyway, and
//! one connection keeps "check then insert" steps (duplicate detection) atomic.

mod overview;
mod wal_sync;

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

use super::{
    Accepted, ActiveJob, Commit, Depths, EffectState, EventQuery, HistoryRow, InboxEntry, Lane,
    Lease, LocalLeases, NewEntry, OutboxEntry, Payload, Pruned, Quarantined, Source, Store,
    StoreError, projection_sql, split_readable,
};
use crate::domain::RecordId;
use crate::machine::{Effect, JobId, Snapshot};

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
];

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

/// Applies the migrations the file lacks, in one immediate transaction: a second process
/// opening the file at the same moment waits, then finds them applied.
fn migrate(conn: &mut Connection) -> Result<Vec<i64>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS store_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TEXT NOT NULL
         )",
    )?;
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        let done: Option<i64> = tx
            .query_row(
                "SELECT version FROM store_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_none() {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO store_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                params![version, name, ts(Utc::now())],
            )?;
            applied.push(*version);
        }
    }
    tx.commit()?;
    Ok(applied)
}

/// Takes the exclusive lock of `<path>.lock` (an OS file lock: released by the kernel
/// when the process dies, kill -9 included) and writes this process's id in it. A lock
/// held elsewhere is waited for briefly: this process's own previous store may be closing.
fn lock_owner(path: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read, Seek, Write};
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let io = |e: std::io::Error| StoreError::Join(format!("{}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&name)
        .map_err(io)?;
    let mut tries = 0;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let who = if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                };
                return Err(StoreError::InUse(path.display().to_string(), who));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

/// Waits for another connection's write lock in short steps. SQLite's own busy timeout
/// sleeps up to 100 ms per retry, which under load turns a sub-millisecond wait into
/// a latency spike; 0.2 ms steps keep the wait close to the lock's real hold time.
/// Gives up after about 10 s.
pub fn busy_wait(attempt: i32) -> bool {
    std::thread::sleep(std::time::Duration::from_micros(200));
    attempt < 50_000
}

/// Fixed-width UTC timestamps, so that text order is time order in SQL.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("timestamp {s:?}: {e}")))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// A webhook waiting for the group commit, with the reply to its sender.
type AcceptJob = (
    NewEntry,
    tokio::sync::oneshot::Sender<Result<Accepted, StoreError>>,
);

/// The most entries one intake transaction commits together.
const ACCEPT_BATCH: usize = 256;

#[derive(Clone)]
pub struct SqliteStore {
    /// All writes go through this connection (SQLite has one writer anyway).
    conn: Arc<Mutex<Connection>>,
    /// Reads use their own connection: in WAL mode they never wait for the writer.
    reader: Arc<Mutex<Connection>>,
    /// Intake's group commit: concurrent accepts share one transaction.
    accepts: Option<tokio::sync::mpsc::Sender<AcceptJob>>,
    /// Webhooks waiting to be committed; background work defers to them.
    intake_waiting: Arc<std::sync::atomic::AtomicUsize>,
    /// Flushes the WAL after the commits that promise something, off the writer
    /// connection (None in memory, where `durably` stands in).
    wal: Option<wal_sync::WalSync>,
    /// One process owns an embedded store, so its leases live in memory.
    leases: LocalLeases,
    /// The exclusive lock that makes this process the file's only owner, held as long as
    /// any clone of the store lives (None in memory).
    _owner: Option<Arc<std::fs::File>>,
}

impl SqliteStore {
    /// Opens (or creates) the store in `path`. Refuses, with [`StoreError::InUse`], a
    /// file another process has open: its leases live in memory, so two processes would
    /// both work on one video and roll each other's snapshots back.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_flushing(path, wal_sync::WalSync::start)
    }

    /// [`Self::open`], the WAL flushed by what `flusher` starts (tests gate the flush).
    fn open_flushing(
        path: &Path,
        flusher: impl FnOnce(std::path::PathBuf) -> std::io::Result<wal_sync::WalSync>,
    ) -> Result<Self, StoreError> {
        let owner = lock_owner(path)?;
        let mut conn = Self::configure(Connection::open(path)?)?;
        migrate(&mut conn)?;
        let reader = Self::configure(Connection::open(path)?)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = flusher(wal.into())
            .map_err(|e| StoreError::Join(format!("starting the WAL flusher: {e}")))?;
        let mut store = Self::assemble(conn, Some(reader), Some(wal));
        store._owner = Some(Arc::new(owner));
        Ok(store)
    }

    /// The writer connection's `synchronous` level (1 = NORMAL: the commits that promise
    /// are flushed after they return, see `wal_sync`; in memory they run at 2 = FULL, see
    /// `durably`).
    pub fn synchronous_level(&self) -> Result<i64, StoreError> {
        let c = self
            .conn
            .lock()
            .map_err(|_| StoreError::Join("store connection poisoned".into()))?;
        Ok(c.pragma_query_value(None, "synchronous", |r| r.get(0))?)
    }

    /// One connection for everything (a second in-memory connection would be another
    /// database).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let mut conn = Self::configure(Connection::open_in_memory()?)?;
        migrate(&mut conn)?;
        Ok(Self::assemble(conn, None, None))
    }

    fn configure(conn: Connection) -> Result<Connection, StoreError> {
        conn.busy_handler(Some(busy_wait))?;
        // WAL at NORMAL; the commits that promise something (what was answered 202, or
        // marked started before an external call) are answered only after a flush of the
        // WAL (`wal_sync`), so they survive a power loss, not only a process kill. A flush
        // covers every commit before it; a NORMAL commit that a power loss takes back was
        // never promised to anyone and is redone from the inbox and outbox as after a
        // kill -9 (docs/operations.md).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", 8000)?;
        Ok(conn)
    }

    fn assemble(
        conn: Connection,
        reader: Option<Connection>,
        wal: Option<wal_sync::WalSync>,
    ) -> Self {
        let conn = Arc::new(Mutex::new(conn));
        let reader = reader.map_or_else(|| conn.clone(), |r| Arc::new(Mutex::new(r)));
        let mut store = Self {
            conn,
            reader,
            accepts: None,
            intake_waiting: Arc::default(),
            wal,
            leases: LocalLeases::default(),
            _owner: None,
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (tx, rx) = tokio::sync::mpsc::channel(ACCEPT_BATCH * 4);
            rt.spawn(group_commit(store.clone(), rx));
            store.accepts = Some(tx);
        }
        store
    }

    /// Runs `f` on the reader connection, on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        on(self.reader.clone(), f).await
    }

    /// Runs `f` on the writer connection, on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        on(self.conn.clone(), f).await
    }

    /// Runs `f` on the writer connection and returns once what it committed is on disk:
    /// committed at NORMAL, then the WAL flushed off the connection, one flush shared by
    /// every commit of the moment (`wal_sync`). In memory, `durably` (there is no disk).
    async fn with_durably<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        match &self.wal {
            Some(wal) => {
                let out = self.with(f).await?;
                wal.flushed().await?;
                Ok(out)
            }
            None => self.with(move |c| durably(c, f)).await,
        }
    }

    /// Sets unreadable rows aside (`table` is `inbox` or `outbox`, keyed by `seq`) with
    /// the reason, so that the scans that found them go on without them.
    async fn quarantine(
        &self,
        table: &'static str,
        rows: Vec<(i64, String)>,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        for (seq, why) in &rows {
            tracing::error!(table, seq, reason = %why, "unreadable row quarantined");
        }
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let sql = match table {
                "inbox" => {
                    "UPDATE inbox SET state = 'quarantined', note = ?2, processed_at = ?3
                     WHERE seq = ?1 AND state = 'pending'"
                }
                _ => {
                    "UPDATE outbox SET state = 'quarantined', last_error = ?2, updated_at = ?3
                     WHERE seq = ?1 AND state = 'pending'"
                }
            };
            for (seq, why) in &rows {
                tx.execute(sql, params![seq, why, ts(Utc::now())])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn finish_effect(
        &self,
        effect_id: &str,
        state: EffectState,
        error: Option<String>,
        follow_up: Option<NewEntry>,
    ) -> Result<(), StoreError> {
        let id = effect_id.to_owned();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let changed = tx.execute(
                "UPDATE outbox SET state = ?2, attempts = attempts + 1, last_error = ?3, updated_at = ?4,
                        started_at = NULL
                 WHERE effect_id = ?1 AND state = 'pending'",
                params![id, state.as_ref(), error, ts(Utc::now())],
            )?;
            // A late result of an effect already finished stores nothing.
            if changed == 1
                && let Some(entry) = &follow_up
            {
                let seen: Option<i64> = match &entry.dedupe_key {
                    Some(k) => tx
                        .query_row("SELECT seq FROM inbox WHERE dedupe_key = ?1", [k], |r| {
                            r.get(0)
                        })
                        .optional()?,
                    None => None,
                };
                if seen.is_none() {
                    insert_entry(&tx, entry)?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    /// Stores an entry durably. A repeat (same dedupe key) is stored too, as a duplicate
    /// entry pointing at the first, so that the event log shows every delivery. Returns
    /// only once the entry is committed; concurrent calls share one transaction.
    async fn accept(&self, entry: NewEntry) -> Result<Accepted, StoreError> {
        if let Some(tx) = &self.accepts {
            use std::sync::atomic::Ordering;
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.intake_waiting.fetch_add(1, Ordering::SeqCst);
            // Decremented however this future ends, a dropped request included.
            let _waiting = Waiting(self.intake_waiting.clone());
            return match tx.send((entry, reply)).await {
                Ok(()) => answer
                    .await
                    .map_err(|_| StoreError::Join("intake writer stopped".into()))
                    .and_then(|r| r),
                Err(_) => Err(StoreError::Join("intake writer stopped".into())),
            };
        }
        self.with_durably(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let accepted = accept_in(&tx, entry)?;
            tx.commit()?;
            Ok(accepted)
        })
        .await
    }

    /// Lets waiting webhooks go first: a sender waits on intake, nobody waits on the
    /// worker or the executor. Bounded, so background work is delayed, never starved.
    async fn yield_to_intake(&self) {
        use std::sync::atomic::Ordering;
        for _ in 0..5 {
            if self.intake_waiting.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Pending entries in arrival order, at most 16 per video.
    async fn pending_entries(&self, limit: u32) -> Result<Vec<InboxEntry>, StoreError> {
        let read = self
            .read(move |c| {
                // At most a few entries per video, so that one chatty video cannot fill the
                // window and hide every other video's events (looking at the oldest 4096).
                let mut st = c.prepare_cached(&format!(
                    "SELECT {LIGHT_ENTRY_COLS} FROM (
                     SELECT *, ROW_NUMBER() OVER (PARTITION BY video_id ORDER BY seq) AS nth
                     FROM (SELECT * FROM inbox WHERE state = 'pending' ORDER BY seq LIMIT 4096)
                 ) WHERE nth <= 16 ORDER BY seq LIMIT ?1"
                ))?;
                let rows = st.query_map([limit], keyed(entry_row))?;
                split_readable(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?;
        let (good, bad) = read;
        self.quarantine("inbox", bad).await?;
        Ok(good)
    }

    /// Whether an entry still waits for the worker (a cheap re-check of a listed entry).
    async fn is_pending(&self, event_id: Uuid) -> Result<bool, StoreError> {
        self.read(move |c| {
            let state: Option<String> = c
                .prepare_cached("SELECT state FROM inbox WHERE event_id = ?1")?
                .query_row([event_id.to_string()], |r| r.get(0))
                .optional()?;
            Ok(state.as_deref() == Some("pending"))
        })
        .await
    }

    /// Whether some entry of this video still waits for the worker (a callback, say).
    async fn has_pending_entries(&self, video: &RecordId) -> Result<bool, StoreError> {
        let video = video.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM inbox WHERE video_id = ?1 AND state = 'pending')",
            )?
            .query_row([video], |r| r.get(0))?)
        })
        .await
    }

    async fn entry(&self, event_id: Uuid) -> Result<Option<InboxEntry>, StoreError> {
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {ENTRY_COLS} FROM inbox WHERE event_id = ?1"),
                [event_id.to_string()],
                entry_row,
            )
            .optional()?
            .transpose()
        })
        .await
    }

    async fn events(&self, q: EventQuery) -> Result<Vec<InboxEntry>, StoreError> {
        self.read(move |c| {
            let mut sql = format!("SELECT {LIGHT_ENTRY_COLS} FROM inbox WHERE 1=1");
            let mut args: Vec<String> = Vec::new();
            match q.outcome.as_deref() {
                // Failed: an effect of the event failed for good (recorded, replayable).
                Some("failed") => sql.push_str(
                    " AND event_id IN (SELECT event_id FROM outbox WHERE state = 'failed')",
                ),
                Some(o) => {
                    args.push(o.to_owned());
                    sql.push_str(&format!(" AND outcome = ?{}", args.len()));
                }
                None => {}
            }
            if let Some(v) = &q.video {
                args.push(v.to_string());
                sql.push_str(&format!(" AND video_id = ?{}", args.len()));
            }
            if let Some(source) = q.source {
                args.push(source.to_string());
                sql.push_str(&format!(" AND source = ?{}", args.len()));
            }
            if let Some(b) = q.before_seq {
                args.push(b.to_string());
                sql.push_str(&format!(" AND seq < CAST(?{} AS INTEGER)", args.len()));
            }
            sql.push_str(&format!(
                " ORDER BY seq DESC LIMIT {}",
                q.limit.clamp(1, 500)
            ));
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(args.iter()), keyed(entry_row))?;
            // An unreadable entry is listed by `quarantined`, not here.
            Ok(split_readable(rows.collect::<Result<Vec<_>, _>>()?)?.0)
        })
        .await
    }

    async fn snapshot(&self, video: &RecordId) -> Result<Option<Snapshot>, StoreError> {
        let video = video.to_string();
        self.read(move |c| {
            let s: Option<String> = c
                .query_row(
                    "SELECT snapshot FROM video_state WHERE video_id = ?1",
                    [&video],
                    |r| r.get(0),
                )
                .optional()?;
            s.map(|s| serde_json::from_str(&s).map_err(|e| corrupt("snapshot", e)))
                .transpose()
        })
        .await
    }

    /// Stores a processed entry's decision: snapshot, history, effects and the entry's
    /// outcome, all or nothing.
    async fn commit(&self, commit: Commit, lease: &Lease) -> Result<(), StoreError> {
        // A local lease is only ever given back by dropping it: holding the video's worker
        // lease is proof enough.
        if lease.lane() != Lane::Worker || lease.video() != &commit.video_id {
            return Err(StoreError::LeaseLost(commit.video_id.to_string()));
        }
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let video = commit.video_id.to_string();
            let at = ts(commit.at);
            if let Some(s) = &commit.snapshot {
                let json = serde_json::to_string(s).map_err(|e| corrupt("snapshot", e))?;
                tx.execute(
                    "INSERT INTO video_state (video_id, snapshot, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(video_id) DO UPDATE SET snapshot = ?2, updated_at = ?3",
                    params![video, json, at],
                )?;
                for j in &s.jobs {
                    tx.execute(
                        "INSERT INTO job_index (job_id, video_id) VALUES (?1, ?2)
                         ON CONFLICT(job_id) DO NOTHING",
                        params![j.id.to_string(), video],
                    )?;
                    // The reconciler's worklist: jobs still waiting for their service.
                    if j.status.is_active() {
                        tx.execute(
                            "INSERT INTO active_jobs (job_id, video_id, kind, external_id, since, next_check_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                             ON CONFLICT(job_id) DO UPDATE SET external_id = excluded.external_id",
                            params![j.id.to_string(), video, j.kind.name(), j.external_id, at],
                        )?;
                    } else {
                        tx.execute("DELETE FROM active_jobs WHERE job_id = ?1", [j.id.to_string()])?;
                    }
                }
            }
            for (job, record) in &commit.job_records {
                tx.execute(
                    "UPDATE job_index SET record_id = ?2 WHERE job_id = ?1",
                    params![job.to_string(), record.to_string()],
                )?;
            }
            if let Some(h) = &commit.history {
                tx.execute(
                    "INSERT INTO history (video_id, event_id, event, from_status, to_status, outcome, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![video, h.event_id.to_string(), h.event, h.from, h.to, h.outcome.as_ref(), ts(h.at)],
                )?;
            }
            for (id, effect) in &commit.effects {
                let json = serde_json::to_string(effect).map_err(|e| corrupt("effect", e))?;
                // An effect id names one effect for ever: storing it again is a no-op.
                tx.execute(
                    "INSERT INTO outbox (effect_id, video_id, event_id, kind, effect, next_attempt_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT(effect_id) DO NOTHING",
                    params![id, video, commit.event_id.to_string(), effect.kind(), json, at],
                )?;
            }
            tx.execute(
                "UPDATE inbox SET state = 'done', outcome = ?2, note = ?3, job_id = ?4, processed_at = ?5
                 WHERE event_id = ?1",
                params![
                    commit.event_id.to_string(),
                    commit.outcome.as_ref(),
                    commit.note,
                    commit.job.map(|j| j.to_string()),
                    at
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The first pending effect of each video whose time has come, oldest first: a
    /// video's effects run one at a time, in the order they were decided.
    async fn due_effects(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let read = self
            .read(move |c| {
                let (p_lane, o_lane) = (projection_sql("p"), projection_sql("o"));
                let mut st = c.prepare_cached(&format!(
                    "SELECT {OUTBOX_COLS} FROM outbox o
                 WHERE o.state = 'pending' AND o.next_attempt_at <= ?1
                   AND o.seq = (SELECT MIN(seq) FROM outbox p
                                WHERE p.video_id = o.video_id AND p.state = 'pending'
                                  AND {p_lane} = {o_lane})
                 ORDER BY o.seq LIMIT ?2"
                ))?;
                let rows = st.query_map(params![ts(now), limit], keyed(outbox_row))?;
                split_readable(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?;
        let (good, bad) = read;
        self.quarantine("outbox", bad).await?;
        Ok(good)
    }

    /// When the next pending effect is due, if any (to sleep until then).
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read(|c| {
            // Only the first pending effect of a video's lane can run; the ones behind it
            // wait for it.
            let (p_lane, o_lane) = (projection_sql("p"), projection_sql("o"));
            let s: Option<String> = c.query_row(
                &format!(
                    "SELECT MIN(o.next_attempt_at) FROM outbox o
                 WHERE o.state = 'pending'
                   AND o.seq = (SELECT MIN(seq) FROM outbox p
                                WHERE p.video_id = o.video_id AND p.state = 'pending'
                                  AND {p_lane} = {o_lane})"
                ),
                [],
                |r| r.get(0),
            )?;
            s.map(|s| parse_ts(&s)).transpose()
        })
        .await
    }

    /// Marks an effect done and stores what it produced, in one transaction: this is
    /// what makes an effect's result count once even if the process dies right after.
    async fn effect_done_with(
        &self,
        effect_id: &str,
        follow_up: Option<NewEntry>,
    ) -> Result<(), StoreError> {
        self.finish_effect(effect_id, EffectState::Done, None, follow_up)
            .await
    }

    /// Records an effect as failed for good (replayable), with its follow-up event.
    async fn effect_failed_with(
        &self,
        effect_id: &str,
        error: &str,
        follow_up: Option<NewEntry>,
    ) -> Result<(), StoreError> {
        self.finish_effect(
            effect_id,
            EffectState::Failed,
            Some(error.to_owned()),
            follow_up,
        )
        .await
    }

    async fn effect_retry_later(
        &self,
        effect_id: &str,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        let (id, error) = (effect_id.to_owned(), error.to_owned());
        self.with(move |c| {
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3, updated_at = ?4,
                        started_at = NULL
                 WHERE effect_id = ?1 AND state = 'pending'",
                params![id, ts(at), error, ts(Utc::now())],
            )?;
            Ok(())
        })
        .await
    }

    /// One effect as stored now.
    async fn outbox_entry(&self, effect_id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        let id = effect_id.to_owned();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {OUTBOX_COLS} FROM outbox o WHERE effect_id = ?1"),
                [id],
                outbox_row,
            )
            .optional()?
            .transpose()
        })
        .await
    }

    async fn effect_started(
        &self,
        effect_id: &str,
        lease: &Lease,
        seen: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        if lease.lane() != Lane::Executor {
            return Ok(false);
        }
        let id = effect_id.to_owned();
        let video = lease.video().to_string();
        self.with_durably(move |c| {
            let n = c.execute(
                "UPDATE outbox SET started_at = ?2, updated_at = ?2
                 WHERE effect_id = ?1 AND state = 'pending' AND video_id = ?3
                   AND started_at IS ?4",
                params![id, ts(Utc::now()), video, seen.map(ts)],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn claim(&self, lane: Lane, videos: Vec<RecordId>) -> Result<Vec<Lease>, StoreError> {
        Ok(self.leases.claim(lane, videos))
    }

    /// Records an ambiguous failure of an external call: one attempt more, `started_at`
    /// kept, so the next attempt first waits out the grace period for the callback.
    async fn effect_ambiguous(&self, effect_id: &str, error: &str) -> Result<(), StoreError> {
        let (id, error) = (effect_id.to_owned(), error.to_owned());
        self.with(move |c| {
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, updated_at = ?3
                 WHERE effect_id = ?1 AND state = 'pending'",
                params![id, error, ts(Utc::now())],
            )?;
            Ok(())
        })
        .await
    }

    /// Postpones an effect without counting an attempt.
    async fn effect_defer(&self, effect_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let id = effect_id.to_owned();
        self.with(move |c| {
            c.execute(
                "UPDATE outbox SET next_attempt_at = ?2, updated_at = ?3
                 WHERE effect_id = ?1 AND state = 'pending'",
                params![id, ts(at), ts(Utc::now())],
            )?;
            Ok(())
        })
        .await
    }

    /// Puts a failed effect back in the queue (operator replay). Returns false if there is
    /// no failed effect of that id.
    async fn requeue_effect(&self, effect_id: &str) -> Result<bool, StoreError> {
        let id = effect_id.to_owned();
        self.with_durably(move |c| {
            let n = c.execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?2, updated_at = ?2,
                        attempts = 0, last_error = NULL, started_at = NULL
                 WHERE effect_id = ?1 AND state = 'failed'",
                params![id, ts(Utc::now())],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// The video's pending effects in order, at most `limit`.
    async fn pending_effects_of(
        &self,
        video: &RecordId,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let video = video.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {OUTBOX_COLS} FROM outbox o WHERE video_id = ?1 AND state = 'pending'
                 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = st.query_map(params![video, limit], keyed(outbox_row))?;
            Ok(split_readable(rows.collect::<Result<Vec<_>, _>>()?)?.0)
        })
        .await
    }

    async fn effects_of(&self, video: &RecordId) -> Result<Vec<OutboxEntry>, StoreError> {
        let video = video.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {OUTBOX_COLS} FROM outbox o WHERE video_id = ?1 ORDER BY seq"
            ))?;
            let rows = st.query_map([video], keyed(outbox_row))?;
            Ok(split_readable(rows.collect::<Result<Vec<_>, _>>()?)?.0)
        })
        .await
    }

    async fn history(&self, video: &RecordId) -> Result<Vec<HistoryRow>, StoreError> {
        let video = video.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT event_id, event, from_status, to_status, outcome, at FROM history
                 WHERE video_id = ?1 ORDER BY id",
            )?;
            let rows = st.query_map([video], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            rows.map(|r| {
                let (id, event, from, to, outcome, at) = r?;
                Ok(HistoryRow {
                    event_id: Uuid::parse_str(&id).map_err(|e| corrupt("event id", e))?,
                    event,
                    from,
                    to,
                    outcome: outcome.parse().map_err(|e| corrupt("outcome", e))?,
                    at: parse_ts(&at)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn record_intent(&self, owner: &str) -> Result<super::RecordIntent, StoreError> {
        let owner = owner.to_owned();
        // Durable: it precedes a create that Airtable cannot deduplicate.
        self.with_durably(move |c| {
            let inserted = c.execute(
                "INSERT OR IGNORE INTO record_creations (owner, started_at) VALUES (?1, ?2)",
                params![owner, ts(Utc::now())],
            )?;
            let (since, record): (String, Option<String>) = c.query_row(
                "SELECT started_at, record_id FROM record_creations WHERE owner = ?1",
                [&owner],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(super::RecordIntent {
                since: parse_ts(&since)?,
                fresh: inserted == 1,
                record: record
                    .map(|r| RecordId::parse(&r).map_err(|e| corrupt("record id", e)))
                    .transpose()?,
            })
        })
        .await
    }

    async fn claim_record(&self, owner: &str, record: &RecordId) -> Result<bool, StoreError> {
        let (owner, record) = (owner.to_owned(), record.to_string());
        self.with(move |c| {
            let taken: Option<String> = c
                .query_row(
                    "SELECT owner FROM record_creations WHERE record_id = ?1",
                    [&record],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(other) = taken {
                return Ok(other == owner);
            }
            let n = c.execute(
                "INSERT INTO record_creations (owner, started_at, record_id) VALUES (?1, ?2, ?3)
                 ON CONFLICT (owner) DO UPDATE SET record_id = excluded.record_id
                 WHERE record_creations.record_id IS NULL",
                params![owner, ts(Utc::now()), record],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn set_job_record(&self, job: JobId, record: &RecordId) -> Result<(), StoreError> {
        let record = record.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE job_index SET record_id = ?2 WHERE job_id = ?1",
                params![job.to_string(), record],
            )?;
            Ok(())
        })
        .await
    }

    /// The job's video and, once written, its Airtable record id.
    async fn job_location(
        &self,
        job: JobId,
    ) -> Result<Option<(RecordId, Option<RecordId>)>, StoreError> {
        self.read(move |c| {
            let row: Option<(String, Option<String>)> = c
                .query_row(
                    "SELECT video_id, record_id FROM job_index WHERE job_id = ?1",
                    [job.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            row.map(|(v, r)| {
                let v = RecordId::parse(&v).map_err(|e| corrupt("video id", e))?;
                let r = r
                    .map(|r| RecordId::parse(&r).map_err(|e| corrupt("record id", e)))
                    .transpose()?;
                Ok((v, r))
            })
            .transpose()
        })
        .await
    }

    async fn depths(&self) -> Result<Depths, StoreError> {
        self.read(|c| {
            let count = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0));
            let oldest: Option<String> = c
                .query_row(
                    "SELECT received_at FROM inbox WHERE state = 'pending' ORDER BY seq LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(Depths {
                inbox_pending: count("SELECT COUNT(*) FROM inbox WHERE state = 'pending'")?,
                outbox_pending: count("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")?,
                outbox_failed: count("SELECT COUNT(*) FROM outbox WHERE state = 'failed'")?,
                quarantined: count(
                    "SELECT (SELECT COUNT(*) FROM inbox WHERE state = 'quarantined')
                          + (SELECT COUNT(*) FROM outbox WHERE state = 'quarantined')",
                )?,
                oldest_pending: oldest.map(|t| parse_ts(&t)).transpose()?,
            })
        })
        .await
    }

    async fn overview(&self, limit: u32) -> Result<super::Overview, StoreError> {
        self.read(move |c| overview::overview(c, limit)).await
    }

    /// Active jobs whose next check is due.
    async fn active_jobs_due(&self, now: DateTime<Utc>) -> Result<Vec<ActiveJob>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ACTIVE_JOB_COLS} FROM active_jobs
                 WHERE next_check_at <= ?1 ORDER BY next_check_at LIMIT 500"
            ))?;
            st.query_map([ts(now)], active_job_row)?
                .map(|row| row?)
                .collect()
        })
        .await
    }

    async fn reschedule_check(
        &self,
        job: JobId,
        checks: u32,
        next: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute(
                "UPDATE active_jobs SET checks = ?2, next_check_at = ?3 WHERE job_id = ?1",
                params![job.to_string(), checks, ts(next)],
            )?;
            Ok(())
        })
        .await
    }

    /// A cheap write that proves the store is writable (/readyz).
    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS heartbeat (id INTEGER PRIMARY KEY, at TEXT);
                 INSERT INTO heartbeat (id, at) VALUES (1, datetime('now'))
                 ON CONFLICT(id) DO UPDATE SET at = excluded.at;",
            )?;
            Ok(())
        })
        .await
    }

    async fn quarantined(&self, limit: u32) -> Result<Vec<Quarantined>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT * FROM (
                     SELECT 'inbox', event_id, video_id, COALESCE(note, ''), processed_at
                     FROM inbox WHERE state = 'quarantined'
                     UNION ALL
                     SELECT 'outbox', effect_id, video_id, COALESCE(last_error, ''), updated_at
                     FROM outbox WHERE state = 'quarantined'
                 ) ORDER BY 5 DESC LIMIT ?1",
            )?;
            let rows = st.query_map([limit], |r| {
                Ok(Quarantined {
                    table: r.get(0)?,
                    id: r.get(1)?,
                    video_id: r.get(2)?,
                    reason: r.get(3)?,
                    at: r
                        .get::<_, Option<String>>(4)?
                        .and_then(|t| parse_ts(&t).ok()),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// One short write transaction per table and batch, so intake waits at most for one
    /// batch's delete.
    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<Pruned, StoreError> {
        let cutoff = ts(before);
        self.with(move |c| {
            let inbox = c.execute(
                "DELETE FROM inbox WHERE seq IN (
                     SELECT seq FROM inbox i WHERE state = 'done' AND processed_at < ?1
                       AND NOT EXISTS (SELECT 1 FROM outbox o
                                       WHERE o.event_id = i.event_id AND o.state <> 'done')
                     LIMIT ?2)",
                params![cutoff, batch],
            )?;
            let history = c.execute(
                "DELETE FROM history WHERE id IN (SELECT id FROM history WHERE at < ?1 LIMIT ?2)",
                params![cutoff, batch],
            )?;
            let outbox = c.execute(
                "DELETE FROM outbox WHERE seq IN (
                     SELECT seq FROM outbox WHERE state = 'done' AND updated_at < ?1 LIMIT ?2)",
                params![cutoff, batch],
            )?;
            Ok(Pruned {
                inbox: inbox as u64,
                history: history as u64,
                outbox: outbox as u64,
            })
        })
        .await
    }
}

/// One webhook waiting for its commit, for as long as this value lives.
struct Waiting(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// rusqlite blocks: every call runs on the blocking pool, holding its connection.
async fn on<T, F>(conn: Arc<Mutex<Connection>>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut guard = conn
            .lock()
            .map_err(|_| StoreError::Join("store connection poisoned".into()))?;
        f(&mut guard)
    })
    .await
    .map_err(|e| StoreError::Join(e.to_string()))?
}

const ACTIVE_JOB_COLS: &str = "job_id, video_id, kind, external_id, since, checks";

/// One `active_jobs` row, selected as [`ACTIVE_JOB_COLS`]. An unreadable id or time is an
/// error of the row (the caller's `collect` stops at it), never a panic.
fn active_job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ActiveJob, StoreError>> {
    let (job, video, kind): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
    let (external_id, since, checks): (Option<String>, String, u32) =
        (r.get(3)?, r.get(4)?, r.get(5)?);
    Ok((|| {
        Ok(ActiveJob {
            job: Uuid::parse_str(&job)
                .map(JobId)
                .map_err(|e| corrupt("job id", e))?,
            video_id: RecordId::parse(&video).map_err(|e| corrupt("video id", e))?,
            kind: crate::domain::JobType::from(kind),
            external_id,
            since: parse_ts(&since)?,
            checks,
        })
    })())
}

/// Runs `f` with `synchronous = FULL`: its commit fsyncs the WAL before it returns. The
/// commits that promise something (a webhook's 202, an operator's answer, the `started_at`
/// written before an external call) use it where there is no WAL file to flush on its own
/// (in memory); a store on a file flushes after the commit instead (`wal_sync`).
fn durably<T>(
    c: &mut Connection,
    f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    c.pragma_update(None, "synchronous", "FULL")?;
    let out = f(c);
    let reset = c.pragma_update(None, "synchronous", "NORMAL");
    let out = out?;
    reset?;
    Ok(out)
}

/// Inserts one entry inside an open transaction, detecting repeats by dedupe key (also
/// among entries earlier in the same transaction).
fn accept_in(tx: &rusqlite::Transaction<'_>, entry: NewEntry) -> Result<Accepted, StoreError> {
    if let Some(key) = &entry.dedupe_key {
        let first: Option<String> = tx
            .prepare_cached("SELECT event_id FROM inbox WHERE dedupe_key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        if let Some(first) = first {
            let of = Uuid::parse_str(&first).map_err(|e| corrupt("event id", e))?;
            let dup = NewEntry {
                dedupe_key: None,
                payload: Payload::Duplicate { of },
                ..entry
            };
            insert_entry(tx, &dup)?;
            return Ok(Accepted::Duplicate {
                of,
                entry: dup.event_id,
            });
        }
    }
    insert_entry(tx, &entry)?;
    Ok(Accepted::New(entry.event_id))
}

/// The intake writer: takes every accept waiting, commits them in one transaction, and
/// hands the answers to the WAL flusher, which gives them once the commit is on disk.
/// Under load one commit serves many webhooks, and while one group is being flushed the
/// next one commits; alone, one commit and one flush serve one webhook, without waiting.
async fn group_commit(store: SqliteStore, mut rx: tokio::sync::mpsc::Receiver<AcceptJob>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < ACCEPT_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (entries, replies): (Vec<NewEntry>, Vec<_>) = batch.into_iter().unzip();
        let flushed_later = store.wal.is_some();
        let result = store
            .with(move |c| {
                let commit = |c: &mut Connection| -> Result<Vec<Accepted>, StoreError> {
                    let tx =
                        c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let mut out = Vec::with_capacity(entries.len());
                    for e in entries {
                        out.push(accept_in(&tx, e)?);
                    }
                    tx.commit()?;
                    Ok(out)
                };
                if flushed_later {
                    commit(c)
                } else {
                    durably(c, commit)
                }
            })
            .await;
        match (result, &store.wal) {
            (Ok(accepted), Some(wal)) => wal.after_commit(Box::new(move |flushed| {
                for (reply, a) in replies.into_iter().zip(accepted) {
                    let _ = reply.send(flushed.clone().map(|()| a).map_err(StoreError::Join));
                }
            })),
            (Ok(accepted), None) => {
                for (reply, a) in replies.into_iter().zip(accepted) {
                    let _ = reply.send(Ok(a));
                }
            }
            (Err(e), _) => {
                let msg = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Join(msg.clone())));
                }
            }
        }
    }
}

const ENTRY_COLS: &str = "seq, event_id, video_id, source, endpoint, raw_body, received_at, payload, state, outcome, note, job_id";
/// The same without the raw body, for lists (a body can be a megabyte).
const LIGHT_ENTRY_COLS: &str = "seq, event_id, video_id, source, endpoint, '', received_at, payload, state, outcome, note, job_id";

fn insert_entry(tx: &rusqlite::Transaction<'_>, e: &NewEntry) -> Result<(), StoreError> {
    let payload = serde_json::to_string(&e.payload).map_err(|err| corrupt("payload", err))?;
    tx.prepare_cached(
        "INSERT INTO inbox (event_id, video_id, source, endpoint, dedupe_key, raw_body, headers, received_at, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
            e.event_id.to_string(),
            e.video_id.to_string(),
            e.source.to_string(),
            e.endpoint,
            e.dedupe_key,
            e.raw_body,
            e.headers,
            ts(e.received_at),
            payload
        ])?;
    Ok(())
}

fn entry_row(r: &Row<'_>) -> rusqlite::Result<Result<InboxEntry, StoreError>> {
    let seq: i64 = r.get(0)?;
    let event_id: String = r.get(1)?;
    let video: String = r.get(2)?;
    let source: String = r.get(3)?;
    let endpoint: String = r.get(4)?;
    let raw_body: String = r.get(5)?;
    let received_at: String = r.get(6)?;
    let payload: String = r.get(7)?;
    let state: String = r.get(8)?;
    let outcome: Option<String> = r.get(9)?;
    let note: Option<String> = r.get(10)?;
    let job: Option<String> = r.get(11)?;
    Ok((|| {
        Ok(InboxEntry {
            seq,
            event_id: Uuid::parse_str(&event_id).map_err(|e| corrupt("event id", e))?,
            video_id: RecordId::parse(&video).map_err(|e| corrupt("video id", e))?,
            source: source.parse::<Source>().map_err(|e| corrupt("source", e))?,
            endpoint,
            raw_body,
            received_at: parse_ts(&received_at)?,
            payload: serde_json::from_str(&payload).map_err(|e| corrupt("payload", e))?,
            state: state.parse().map_err(|e| corrupt("entry state", e))?,
            outcome: outcome
                .map(|o| o.parse().map_err(|e| corrupt("outcome", e)))
                .transpose()?,
            note,
            job: job
                .map(|j| {
                    Uuid::parse_str(&j)
                        .map(JobId)
                        .map_err(|e| corrupt("job id", e))
                })
                .transpose()?,
        })
    })())
}

/// A row reader that also returns the row's key (column 0, `seq`), so that a row that
/// cannot be read can still be named and set aside.
fn keyed<T>(
    read: fn(&Row<'_>) -> rusqlite::Result<Result<T, StoreError>>,
) -> impl FnMut(&Row<'_>) -> rusqlite::Result<(i64, Result<T, StoreError>)> {
    move |r| Ok((r.get(0)?, read(r)?))
}

const OUTBOX_COLS: &str = "o.seq, o.effect_id, o.video_id, o.event_id, o.effect, o.state, o.attempts, o.next_attempt_at, o.last_error, o.started_at";

fn outbox_row(r: &Row<'_>) -> rusqlite::Result<Result<OutboxEntry, StoreError>> {
    let seq: i64 = r.get(0)?;
    let effect_id: String = r.get(1)?;
    let video: String = r.get(2)?;
    let event_id: String = r.get(3)?;
    let effect: String = r.get(4)?;
    let state: String = r.get(5)?;
    let attempts: u32 = r.get(6)?;
    let next: String = r.get(7)?;
    let last_error: Option<String> = r.get(8)?;
    let started_at: Option<String> = r.get(9)?;
    Ok((|| {
        Ok(OutboxEntry {
            seq,
            effect_id,
            video_id: RecordId::parse(&video).map_err(|e| corrupt("video id", e))?,
            event_id: Uuid::parse_str(&event_id).map_err(|e| corrupt("event id", e))?,
            effect: serde_json::from_str::<Effect>(&effect).map_err(|e| corrupt("effect", e))?,
            state: state.parse().map_err(|e| corrupt("effect state", e))?,
            attempts,
            next_attempt_at: parse_ts(&next)?,
            last_error,
            started_at: started_at.map(|s| parse_ts(&s)).transpose()?,
        })
    })())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Event;

    fn entry(key: Option<&str>) -> NewEntry {
        NewEntry {
            event_id: Uuid::new_v4(),
            video_id: RecordId::parse("recA1b2C3d4E5f6G7").unwrap(),
            source: Source::Goapi,
            endpoint: "/webhooks/goapi".into(),
            dedupe_key: key.map(str::to_owned),
            raw_body: "{}".into(),
            headers: "{}".into(),
            received_at: Utc::now(),
            payload: Payload::Event {
                event: Event::RetryRequested { from: None },
            },
        }
    }

    #[test]
    fn migrations_are_applied_once_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut first = Connection::open(&path).unwrap();
        assert_eq!(migrate(&mut first).unwrap(), vec![1, 2, 3]);
        assert!(migrate(&mut first).unwrap().is_empty());
        // A file from before versioning (tables, no record of them) takes it as a no-op.
        let old = dir.path().join("old.db");
        let mut conn = Connection::open(&old).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch("INSERT INTO video_state VALUES ('recA', '{}', 'now')")
            .unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), vec![1, 2, 3]);
        let kept: i64 = conn
            .query_row("SELECT COUNT(*) FROM video_state", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 1);
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

    /// A store whose WAL flushes wait for the test to let each one through.
    fn gated(path: &Path) -> (SqliteStore, std::sync::mpsc::Sender<()>) {
        let (open, gate) = std::sync::mpsc::channel::<()>();
        let store = SqliteStore::open_flushing(path, move |wal| {
            wal_sync::WalSync::with_flush(
                wal,
                Box::new(move |_| {
                    gate.recv()
                        .map_err(|_| std::io::Error::other("gate dropped"))
                }),
            )
        })
        .unwrap();
        (store, open)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_promises_is_answered_only_after_its_commit_is_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, open) = gated(&dir.path().join("gated.db"));
        let s = store.clone();
        let accept = tokio::spawn(async move { s.accept(entry(Some("k"))).await });
        // Committed (the reader sees it), not answered: its flush has not happened.
        while store.pending_entries(10).await.unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!accept.is_finished(), "answered before the WAL was flushed");
        open.send(()).unwrap();
        assert!(matches!(accept.await.unwrap(), Ok(Accepted::New(_))));

        // The same for the intent noted before an Airtable create.
        let s = store.clone();
        let intent = tokio::spawn(async move { s.record_intent("job:1").await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!intent.is_finished(), "answered before the WAL was flushed");
        open.send(()).unwrap();
        assert!(intent.await.unwrap().unwrap().fresh);

        // A flush that fails answers nothing as durable.
        let s = store.clone();
        let failed = tokio::spawn(async move { s.accept(entry(Some("other"))).await });
        while store.pending_entries(10).await.unwrap().len() < 2 {
            tokio::task::yield_now().await;
        }
        drop(open);
        let err = failed.await.unwrap().expect_err("not durable");
        assert!(err.to_string().contains("gate dropped"), "{err}");
    }

    #[test]
    fn the_real_flush_finds_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("real.db");
        let store = SqliteStore::open(&path).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let r = rt.block_on(store.record_intent("job:1")).unwrap();
        assert!(r.fresh);
        assert!(dir.path().join("real.db-wal").exists());
    }

    #[tokio::test]
    async fn a_repeat_is_stored_as_a_duplicate_of_the_first() {
        let s = SqliteStore::open_in_memory().unwrap();
        let first = s.accept(entry(Some("k"))).await.unwrap();
        let Accepted::New(id) = first else {
            panic!("{first:?}")
        };
        let again = s.accept(entry(Some("k"))).await.unwrap();
        assert!(matches!(again, Accepted::Duplicate { of, .. } if of == id));
        let pending = s.pending_entries(10).await.unwrap();
        assert_eq!(pending.len(), 2);
        assert!(matches!(pending[1].payload, Payload::Duplicate { of } if of == id));
    }
}
