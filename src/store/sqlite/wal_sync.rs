//! Durability without holding the writer. A commit at `synchronous = NORMAL` returns once
//! its WAL frames are written (to the page cache); one `fdatasync(2)` of the WAL file after
//! that puts them on the disk, which is what `synchronous = FULL` does inside the commit.
//! Done here, on a thread of its own, the flush no longer holds the writer connection: the
//! next group of webhooks (or the worker's next decision) commits while the previous group
//! is being flushed, and one flush serves every commit that returned before it started.
//!
//! Nothing is answered before its flush: a caller hands over its answer with
//! [`WalSync::after_commit`] only once its commit has returned, and the answer is given
//! after a flush that began later. The WAL's directory entry is flushed once too (SQLite
//! does that on its own first sync of the file, which at NORMAL comes only at a checkpoint).

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::StoreError;

/// What runs once the commits before it are flushed (or the flush failed).
pub(super) type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

/// How a flush is made: `fdatasync` of the WAL file; tests put a gate in its place.
pub(super) type Flush = Box<dyn FnMut(&Path) -> std::io::Result<()> + Send>;

/// The flushing thread's mailbox. The thread ends when the last clone is dropped.
#[derive(Clone)]
pub(super) struct WalSync {
    tx: mpsc::Sender<Done>,
}

impl WalSync {
    /// Flushes `wal` (the `-wal` file of the database) with `fdatasync`.
    pub(super) fn start(wal: PathBuf) -> std::io::Result<Self> {
        Self::with_flush(wal, Box::new(flush))
    }

    pub(super) fn with_flush(wal: PathBuf, flush: Flush) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Done>();
        std::thread::Builder::new()
            .name("reelstate-wal-sync".into())
            .spawn(move || run(&wal, &rx, flush))?;
        Ok(Self { tx })
    }

    /// Calls `done` after a flush that starts after this call. Call it only once the
    /// commit to be made durable has returned.
    pub(super) fn after_commit(&self, done: Done) {
        if let Err(mpsc::SendError(done)) = self.tx.send(done) {
            done(Err("the WAL flushing thread stopped".into()));
        }
    }

    /// Waits until every commit that returned before this call is flushed.
    pub(super) async fn flushed(&self) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.after_commit(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        rx.await
            .map_err(|_| StoreError::Join("the WAL flushing thread stopped".into()))?
            .map_err(StoreError::Join)
    }
}

/// Takes every answer waiting, flushes once, gives them all the result; again.
fn run(wal: &Path, rx: &mpsc::Receiver<Done>, mut flush: Flush) {
    let mut dir_flushed = false;
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let mut result = flush(wal);
        if result.is_ok() && !dir_flushed {
            result = flush_dir(wal);
            dir_flushed = result.is_ok();
        }
        // After a failed fsync the kernel may have dropped the pages it could not write
        // (and marked them clean): nothing waiting is answered as durable.
        let result = result.map_err(|e| format!("flushing {}: {e}", wal.display()));
        if let Err(e) = &result {
            tracing::error!(error = %e, "the store could not flush its log to disk");
        }
        for done in waiting {
            done(result.clone());
        }
    }
}

/// `fdatasync` of the WAL, through a descriptor of its own: the kernel flushes the file's
/// dirty pages whoever wrote them. Opened each time, so it is always the file SQLite writes.
fn flush(wal: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(wal)?
        .sync_data()
}

/// The directory entry of the WAL file: without it a WAL created since the last checkpoint
/// may be missing after a power loss, frames and all.
fn flush_dir(wal: &Path) -> std::io::Result<()> {
    match wal.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => std::fs::File::open(".")?.sync_all(),
    }
}
