//! Intake's group commit: concurrent accepts share one SQLite transaction, whose answers
//! are given once the WAL is flushed (`wal_sync`). Background work defers to the webhooks
//! waiting here (`yield_to_intake`).

use std::sync::Arc;

use rusqlite::Connection;

use super::inbox::accept_in;
use super::{SqliteStore, durably};
use crate::store::{Accepted, NewEntry, StoreError};

/// A webhook waiting for the group commit, with the reply to its sender.
pub(super) type AcceptJob = (
    NewEntry,
    tokio::sync::oneshot::Sender<Result<Accepted, StoreError>>,
);

/// The most entries one intake transaction commits together.
pub(super) const ACCEPT_BATCH: usize = 256;

/// One webhook waiting for its commit, for as long as this value lives.
pub(super) struct Waiting(pub(super) Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The intake writer: takes every accept waiting, commits them in one transaction, and
/// hands the answers to the WAL flusher, which gives them once the commit is on disk.
/// Under load one commit serves many webhooks, and while one group is being flushed the
/// next one commits; alone, one commit and one flush serve one webhook, without waiting.
pub(super) async fn group_commit(
    store: SqliteStore,
    mut rx: tokio::sync::mpsc::Receiver<AcceptJob>,
) {
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
