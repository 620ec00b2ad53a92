//! The embedded store: one SQLite file in WAL mode. rusqlite is blocking, so every call
//! runs on the blocking pool behind one connection; SQLite serialises writers anyway, and
//! one connection keeps "check then insert" steps (duplicate detection) atomic.
//!
//! By concern: `schema` (tables, migrations), `group_commit` (intake), `inbox`, `outbox`,
//! `snapshots` (commit, job index, history, record creations), `maintenance` (quarantine,
//! depths, overview, retention); this file opens the store and runs calls on its
//! connections.

pub mod backup;
mod checkpoint;
mod disk_space;
mod group_commit;
mod inbox;
mod maintenance;
mod outbox;
mod overview;
mod schema;
mod size_limit;
mod snapshots;
#[cfg(test)]
mod tests;
mod wal_sync;

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, Row};

use super::{Lane, Lease, Leases, LocalLeases, StoreError};
use crate::domain::RecordId;
use group_commit::{ACCEPT_BATCH, AcceptJob, group_commit};
use schema::migrate;
pub use schema::{STORE_SCHEMA, migrate_file};

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

/// What every connection on the engine's file is set up with, for CPU's sake: the same
/// few dozen statements run all day, so each is prepared once and kept.
/// - A statement cache that holds them all (rusqlite's default keeps 16).
/// - Stable query plans (QPSG): otherwise a statement whose plan may depend on a bound
///   value (`LIMIT ?1` is one) is planned again each time that value is bound.
/// - Statement journals in memory: a multi-row write that spills its statement journal
///   would otherwise create and delete a temporary file inside its transaction.
pub fn tune(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.pragma_update(None, "temp_store", "MEMORY")
}

/// More than the statements any one connection runs.
const STATEMENT_CACHE: usize = 128;

/// `execute` and `query_row` through the connection's statement cache (`Connection`'s
/// own parse and plan their statement again on every call).
pub trait Cached {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
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

/// The file's one write lock, taken in-process: the store's writer, the checkpointer's
/// catch-up and the embedded records' connection (which writes the same file) hold it for
/// the length of their write transactions. Without it they take turns at SQLite's lock by
/// polling (`busy_wait`), each wait rounded up to a step; with it the next in line goes
/// as soon as the lock is free. Holds no data, so a panic while it is held leaves nothing
/// to distrust: it is taken whatever the poisoning.
#[derive(Clone, Default)]
pub struct WriteGate(Arc<Mutex<()>>);

impl WriteGate {
    /// Waits for the lock; it is held until the guard is dropped.
    pub(crate) fn hold(&self) -> std::sync::MutexGuard<'_, ()> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Clone)]
pub struct SqliteStore {
    /// All writes go through this connection (SQLite has one writer anyway).
    conn: Arc<Mutex<Connection>>,
    /// Held around every use of `conn` (see [`WriteGate`]).
    gate: WriteGate,
    /// Reads use their own connection: in WAL mode they never wait for the writer.
    reader: Arc<Mutex<Connection>>,
    /// Intake's group commit: concurrent accepts share one transaction.
    /// None only in the intake writer's own copy, which must not hold its channel open.
    accepts: Option<tokio::sync::mpsc::Sender<AcceptJob>>,
    /// Webhooks waiting to be committed; background work defers to them.
    intake_waiting: Arc<std::sync::atomic::AtomicUsize>,
    /// Flushes the WAL after the commits that promise something, off the writer
    /// connection (None in memory, where `durably` stands in).
    wal: Option<wal_sync::WalSync>,
    /// Checkpoints the WAL off the commits (None in memory, where there is no WAL).
    checkpoints: Option<checkpoint::Checkpointer>,
    /// One process owns an embedded store, so its leases live in memory.
    leases: LocalLeases,
    /// Every call runs on the calling thread and accepts commit there, one by one: the
    /// deterministic simulation's mode ([`Self::open_simulated`]).
    inline: bool,
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
        Self::assemble(conn, Some((reader, wal, path)), Some(owner))
    }

    /// The writer connection's `synchronous` level (1 = NORMAL: the commits that promise
    /// are flushed after they return, see `wal_sync`; in memory they run at 2 = FULL, see
    /// `durably`).
    #[cfg(test)]
    pub(crate) fn synchronous_level(&self) -> Result<i64, StoreError> {
        let c = self
            .conn
            .lock()
            .map_err(|_| StoreError::Join("store connection poisoned".into()))?;
        Ok(c.pragma_query_value(None, "synchronous", |r| r.get(0))?)
    }

    /// The gate that another connection writing this file (the embedded records) takes
    /// around its write transactions.
    pub(crate) fn write_gate(&self) -> WriteGate {
        self.gate.clone()
    }

    /// One connection for everything (a second in-memory connection would be another
    /// database).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let mut conn = Self::configure(Connection::open_in_memory()?)?;
        migrate(&mut conn)?;
        Self::assemble(conn, None, None)
    }

    /// In memory, with no thread of its own: every call runs on the calling thread, so
    /// that a simulation of the whole engine on one thread is one fixed order of events
    /// (`crate::clock::simulate`). Its commits are as atomic as ever; nothing is on disk.
    pub fn open_simulated() -> Result<Self, StoreError> {
        let mut conn = Self::configure(Connection::open_in_memory()?)?;
        migrate(&mut conn)?;
        let conn = Arc::new(Mutex::new(conn));
        Ok(Self {
            reader: conn.clone(),
            conn,
            gate: WriteGate::default(),
            accepts: None,
            intake_waiting: Arc::default(),
            wal: None,
            checkpoints: None,
            leases: LocalLeases::default(),
            inline: true,
            _owner: None,
        })
    }

    /// The same database as a process starting afresh on it would see it: the leases a
    /// killed process held are gone with it (the simulation's crash and restart).
    pub fn restarted(&self) -> Self {
        Self {
            leases: LocalLeases::default(),
            ..self.clone()
        }
    }

    /// Whether calls run on the calling thread ([`Self::open_simulated`]).
    pub(super) fn is_inline(&self) -> bool {
        self.inline
    }

    fn configure(conn: Connection) -> Result<Connection, StoreError> {
        conn.busy_handler(Some(busy_wait))?;
        tune(&conn)?;
        // WAL at NORMAL; the commits that promise something (what was answered 202, or
        // marked started before an external call) are answered only after a flush of the
        // WAL (`wal_sync`), so they survive a power loss, not only a process kill. A flush
        // covers every commit before it; a NORMAL commit that a power loss takes back was
        // never promised to anyone and is redone from the inbox and outbox as after a
        // kill -9 (docs/operations.md).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints are the checkpointer's (`checkpoint`), never a commit's.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(conn)
    }

    /// The store around its writer `conn`; on a file, with its reader connection, its WAL
    /// flusher and a checkpointer (in memory the writer is the only connection), and the
    /// intake writer's thread, which keeps the file's `owner` lock as long as it runs.
    fn assemble(
        conn: Connection,
        file: Option<(Connection, wal_sync::WalSync, &Path)>,
        owner: Option<std::fs::File>,
    ) -> Result<Self, StoreError> {
        let conn = Arc::new(Mutex::new(conn));
        let gate = WriteGate::default();
        let intake_waiting = Arc::<std::sync::atomic::AtomicUsize>::default();
        let (reader, wal, checkpoints) = match file {
            Some((reader, wal, path)) => {
                let checkpoints = checkpoint::Checkpointer::start(
                    path,
                    gate.clone(),
                    intake_waiting.clone(),
                    checkpoint::Thresholds::default(),
                )
                .map_err(|e| StoreError::Join(format!("starting the checkpointer: {e}")))?;
                (Arc::new(Mutex::new(reader)), Some(wal), Some(checkpoints))
            }
            None => (conn.clone(), None, None),
        };
        let mut store = Self {
            conn,
            gate,
            reader,
            accepts: None,
            intake_waiting,
            wal,
            checkpoints,
            leases: LocalLeases::default(),
            inline: false,
            _owner: owner.map(Arc::new),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(ACCEPT_BATCH * 4);
        let writer = store.clone();
        std::thread::Builder::new()
            .name("reelstate-intake".into())
            .spawn(move || group_commit(&writer, rx))
            .map_err(|e| StoreError::Join(format!("starting the intake writer: {e}")))?;
        store.accepts = Some(tx);
        Ok(store)
    }

    /// Runs `f` on the reader connection, on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.inline {
            return on_this_thread(&self.reader, None, f);
        }
        on(self.reader.clone(), None, f).await
    }

    /// Runs `f` on the writer connection, on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.inline {
            return self.with_here(f);
        }
        let out = on(self.conn.clone(), Some(self.gate.clone()), f).await;
        if let Some(c) = &self.checkpoints {
            c.ring();
        }
        out
    }

    /// [`Self::with`] on the calling thread, which may block (the intake writer's own).
    fn with_here<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let out = on_this_thread(&self.conn, Some(&self.gate), f);
        if let Some(c) = &self.checkpoints {
            c.ring();
        }
        out
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
}

/// One process owns the file, so its leases live in memory and are never lost (`holds`
/// and `release_leases` keep the trait's defaults).
#[async_trait::async_trait]
impl Leases for SqliteStore {
    async fn claim(&self, lane: Lane, videos: Vec<RecordId>) -> Result<Vec<Lease>, StoreError> {
        Ok(self.leases.claim(lane, videos))
    }
}

/// rusqlite blocks: every call runs on the blocking pool, holding its connection (and,
/// for the writer, the file's write gate).
async fn on<T, F>(
    conn: Arc<Mutex<Connection>>,
    gate: Option<WriteGate>,
    f: F,
) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || on_this_thread(&conn, gate.as_ref(), f))
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
}

/// [`on`] for a thread that may block: holds the connection (and the gate) for `f`.
fn on_this_thread<T>(
    conn: &Mutex<Connection>,
    gate: Option<&WriteGate>,
    f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let _held = gate.map(WriteGate::hold);
    let mut guard = conn
        .lock()
        .map_err(|_| StoreError::Join("store connection poisoned".into()))?;
    f(&mut guard)
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

/// A row reader that also returns the row's key (column 0, `seq`), so that a row that
/// cannot be read can still be named and set aside.
fn keyed<T>(
    read: fn(&Row<'_>) -> rusqlite::Result<Result<T, StoreError>>,
) -> impl FnMut(&Row<'_>) -> rusqlite::Result<(i64, Result<T, StoreError>)> {
    move |r| Ok((r.get(0)?, read(r)?))
}
