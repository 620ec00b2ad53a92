//! Checkpoints off the commits. SQLite's automatic checkpoint runs inside the commit that
//! crosses `wal_autocheckpoint`, on the committing connection: once the WAL is past the
//! threshold and cannot start over (under steady writes it never can), every commit,
//! intake's group commits included, copies pages into the database and syncs it before
//! it returns, holding the writer meanwhile. So every connection on the file has the
//! automatic checkpoint off, and a thread of its own checkpoints shortly after writes:
//!
//! - PASSIVE, on a connection of its own: it takes no lock a writer or a reader waits
//!   for. It copies what was committed before it began; commits made meanwhile stay in
//!   the WAL, so under steady writes the WAL is never wholly copied and never starts over.
//! - The catch-up: once the WAL is past `restart` pages, a second PASSIVE runs with the
//!   file's write gate held (no writer can start): it copies only what came since the
//!   first (a few milliseconds' worth), and the next write transaction finds the WAL
//!   wholly in the database and starts it over from its beginning. Held back while
//!   webhooks wait for their commit, unless the WAL is past `valve` pages: the file stays
//!   bounded whatever the load. The held pass ends with a sync of the database, which
//!   would also write out every page the unheld passes copied since the last sync
//!   (SQLite syncs the database only after a pass that copied the whole WAL, which under
//!   steady writes only the held one does): so the database is synced first, off the
//!   gate, and the held pass syncs little more than its own pages. A WAL reused from its beginning also flushes faster: its size does not
//!   change, so `fdatasync` has no file metadata to write.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::Connection;

use super::WriteGate;

/// When the checkpointer acts, in WAL pages (4 KiB).
#[derive(Debug, Clone, Copy)]
pub(super) struct Thresholds {
    /// Past this, the catch-up lets the WAL start over while no webhook waits.
    pub(super) restart: i64,
    /// Past this, it does so even while webhooks wait.
    pub(super) valve: i64,
}

impl Default for Thresholds {
    /// 16 MiB and 64 MiB: the WAL's pages stay in the page cache, and one catch-up per
    /// few thousand commits.
    fn default() -> Self {
        Self {
            restart: 4_096,
            valve: 16_384,
        }
    }
}

/// How long writes gather before a checkpoint: long enough that one checkpoint serves
/// many commits, short enough that the WAL stays small when the writes pause.
const GATHER: Duration = Duration::from_millis(20);

/// Syncs the database file (`fdatasync`); tests watch it.
pub(super) type SyncDatabase = Box<dyn FnMut() -> std::io::Result<()> + Send>;

/// The checkpointing thread's doorbell; the thread ends when the last clone is dropped.
#[derive(Clone)]
pub(super) struct Checkpointer {
    bell: mpsc::SyncSender<()>,
}

impl Checkpointer {
    /// Starts the thread on a connection of its own to `path`. `gate` is the file's write
    /// gate (the catch-up holds it); `intake_waiting` counts the webhooks waiting for
    /// their commit.
    pub(super) fn start(
        path: &Path,
        gate: WriteGate,
        intake_waiting: Arc<AtomicUsize>,
        thresholds: Thresholds,
    ) -> std::io::Result<Self> {
        let db = std::fs::File::open(path)?;
        let sync = Box::new(move || db.sync_data());
        Self::start_syncing(path, gate, intake_waiting, thresholds, sync)
    }

    /// [`Self::start`], the database synced by `sync` before each catch-up.
    pub(super) fn start_syncing(
        path: &Path,
        gate: WriteGate,
        intake_waiting: Arc<AtomicUsize>,
        thresholds: Thresholds,
        mut sync: SyncDatabase,
    ) -> std::io::Result<Self> {
        let conn = Connection::open(path)
            .and_then(|c| {
                c.pragma_update(None, "wal_autocheckpoint", 0)?;
                // A checkpoint syncs the WAL before it copies and the database after, at
                // NORMAL as at FULL: the database is on disk before a WAL that starts over
                // writes over the frames it came from (docs/operations.md).
                c.pragma_update(None, "synchronous", "FULL")?;
                super::tune(&c)?;
                Ok(c)
            })
            .map_err(std::io::Error::other)?;
        let (bell, rings) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("reelstate-checkpoint".into())
            .spawn(move || {
                while rings.recv().is_ok() {
                    std::thread::sleep(GATHER);
                    // This round covers the writes that rang meanwhile.
                    while rings.try_recv().is_ok() {}
                    round(&conn, &mut sync, &gate, &intake_waiting, thresholds);
                }
            })?;
        Ok(Self { bell })
    }

    /// Says that something was written: a checkpoint follows shortly. Never blocks.
    pub(super) fn ring(&self) {
        let _ = self.bell.try_send(());
    }
}

fn round(
    conn: &Connection,
    sync: &mut SyncDatabase,
    gate: &WriteGate,
    intake_waiting: &AtomicUsize,
    at: Thresholds,
) {
    let log = match passive(conn) {
        Ok(log) => log,
        Err(e) => {
            tracing::warn!(error = %e, "WAL checkpoint failed; retried after the next write");
            return;
        }
    };
    if log > at.valve || (log > at.restart && intake_waiting.load(Ordering::SeqCst) == 0) {
        // Twice: the first sync writes what the passes so far copied (up to tens of
        // milliseconds' worth), the second what the pass after it copied of the commits
        // made meanwhile. Measured on the intake bench at a fixed rate: the held pass
        // took 11-12 ms (longest 24-29) with no sync before it, 6-8 ms (longest 13-19)
        // after one, 4.5 ms (longest 6) after two (docs/bench-log.md).
        let synced = sync()
            .and_then(|()| passive(conn).map_err(std::io::Error::other))
            .and_then(|_| sync());
        if let Err(e) = synced {
            // The held pass syncs anyway: it only takes longer.
            tracing::debug!(error = %e, "syncing the database before the catch-up");
        }
        let _held = gate.hold();
        if let Err(e) = passive(conn) {
            tracing::debug!(error = %e, "WAL catch-up skipped");
        }
    }
}

/// A PASSIVE checkpoint; the WAL's size in pages (`PRAGMA wal_checkpoint`'s second column).
fn passive(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA wal_checkpoint(PASSIVE)")?
        .query_row([], |r| r.get(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    /// A writer on `path` that takes `gate` around its commits, as the store's does.
    struct Writer(Mutex<Connection>, WriteGate);

    fn writer(path: &Path) -> Arc<Writer> {
        let c = Connection::open(path).expect("open");
        c.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT);",
        )
        .expect("schema");
        Arc::new(Writer(Mutex::new(c), WriteGate::default()))
    }

    /// One row of about a page.
    fn write(w: &Writer, i: usize) {
        let _held = w.1.hold();
        w.0.lock()
            .expect("writer")
            .execute("INSERT INTO t (body) VALUES (?1)", [format!("{i:0>3000}")])
            .expect("insert");
    }

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    /// How many times the WAL started over: the header's checkpoint sequence number
    /// (bytes 12..16, big-endian), read without taking part in the locking.
    fn restarts(wal: &Path) -> u32 {
        let head = std::fs::read(wal).expect("wal");
        u32::from_be_bytes(head[12..16].try_into().expect("4 bytes"))
    }

    fn wal_of(path: &Path) -> std::path::PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push("-wal");
        p.into()
    }

    /// Commits copy nothing into the database: only the checkpointer does, after them,
    /// and then the WAL starts over.
    #[test]
    fn commits_copy_nothing_the_checkpointer_does_and_the_wal_starts_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ck.db");
        let w = writer(&path);
        let idle = Arc::new(AtomicUsize::new(0));
        let at = Thresholds {
            restart: 50,
            valve: 200,
        };
        let ck = Checkpointer::start(&path, w.1.clone(), idle, at).expect("checkpointer");
        let empty = size(&path);
        for i in 0..300 {
            write(&w, i);
        }
        assert_eq!(
            size(&path),
            empty,
            "a commit copied pages into the database"
        );
        let started_over = restarts(&wal_of(&path));
        let mut copied = false;
        for i in 0..200 {
            ck.ring();
            std::thread::sleep(GATHER * 2);
            copied = size(&path) > empty + 250 * 4096;
            // The next commit after a complete checkpoint starts the WAL over.
            write(&w, i);
            if copied && restarts(&wal_of(&path)) > started_over {
                break;
            }
        }
        assert!(copied, "the checkpointer copied the WAL into the database");
        assert!(
            restarts(&wal_of(&path)) > started_over,
            "the WAL started over"
        );
    }

    /// The held pass syncs the database after it copies (SQLite does, before the WAL may
    /// start over), and that sync writes every page the unheld passes copied since the
    /// last one: it took 15-25 ms with the gate held. The catch-up syncs the database
    /// first, off the gate, so that the held pass has only its own pages to sync.
    #[test]
    fn the_catch_up_syncs_the_database_before_it_holds_the_gate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("presync.db");
        let w = writer(&path);
        let idle = Arc::new(AtomicUsize::new(0));
        let at = Thresholds {
            restart: 50,
            valve: 200,
        };
        // Each sync notes whether the checkpointer left the gate free while it ran. The
        // test's own writes take the gate too, for one insert at a time: a gate that comes
        // free while the checkpointer's thread is inside this sync was not the
        // checkpointer's; one it held would stay held for as long as the sync lasts.
        let syncs = Arc::new(Mutex::new(Vec::<bool>::new()));
        let (seen, gate) = (syncs.clone(), w.1.clone());
        let db = std::fs::File::open(&path).expect("database file");
        let sync: SyncDatabase = Box::new(move || {
            let free = (0..5_000).any(|_| {
                let free = gate.0.try_lock().is_ok();
                if !free {
                    std::thread::sleep(Duration::from_millis(1));
                }
                free
            });
            seen.lock().expect("syncs").push(free);
            db.sync_data()
        });
        let ck =
            Checkpointer::start_syncing(&path, w.1.clone(), idle, at, sync).expect("checkpointer");
        let wal = wal_of(&path);
        for i in 0..100 {
            write(&w, i);
        }
        let before = restarts(&wal);
        for i in 0..200 {
            ck.ring();
            std::thread::sleep(GATHER * 2);
            write(&w, i);
            if restarts(&wal) > before {
                break;
            }
        }
        assert!(restarts(&wal) > before, "the WAL started over");
        let syncs = syncs.lock().expect("syncs").clone();
        assert!(syncs.len() >= 2, "synced before the catch-up: {syncs:?}");
        assert!(
            syncs.iter().all(|free| *free),
            "a sync ran with the gate held: {syncs:?}"
        );
    }

    /// Under writes that never pause, and with webhooks waiting throughout, the WAL still
    /// starts over once past the valve: the file stays bounded.
    #[test]
    fn under_steady_writes_the_valve_bounds_the_wal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("valve.db");
        let w = writer(&path);
        let busy = Arc::new(AtomicUsize::new(1));
        let at = Thresholds {
            restart: 100,
            valve: 400,
        };
        let ck = Checkpointer::start(&path, w.1.clone(), busy, at).expect("checkpointer");
        let wal = wal_of(&path);
        let rows = 20_000;
        let mut largest = 0;
        for i in 0..rows {
            write(&w, i);
            ck.ring();
            largest = largest.max(size(&wal));
        }
        // A commit writes a few pages: without the catch-up the WAL holds every one of
        // them (about 250 MB here); with it, what comes between two rounds.
        let bound = 80 << 20;
        assert!(
            largest < bound,
            "the WAL grew to {largest} bytes for {rows} commits"
        );
        assert!(restarts(&wal) > 0, "the WAL started over");
    }
}
