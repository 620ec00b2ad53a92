//! The embedded store: one SQLite file in WAL mode. rusqlite is blocking, so every call
//! runs on the blocking pool behind one connection; SQLite serialises writers anyway, and
//! one connection keeps "check then insert" steps (duplicate detection) atomic.
//!
//! By concern: `schema` (tables, migrations), `group_commit` (intake), `inbox`, `outbox`,
//! `snapshots` (commit, job index, history, record creations), `maintenance` (quarantine,
//! depths, overview, retention); this file opens the store and runs calls on its
//! connections.

mod group_commit;
mod inbox;
mod maintenance;
mod outbox;
mod overview;
mod schema;
mod snapshots;
mod wal_sync;

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, Row};

use super::{Lane, Lease, Leases, LocalLeases, StoreError};
use crate::domain::RecordId;
use group_commit::{ACCEPT_BATCH, AcceptJob, group_commit};
use schema::migrate;

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
}

/// One process owns the file, so its leases live in memory and are never lost (`holds`
/// and `release_leases` keep the trait's defaults).
#[async_trait::async_trait]
impl Leases for SqliteStore {
    async fn claim(&self, lane: Lane, videos: Vec<RecordId>) -> Result<Vec<Lease>, StoreError> {
        Ok(self.leases.claim(lane, videos))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
