//! Intake's group commit: concurrent accepts share one SQLite transaction, whose answers
//! are given once the WAL is flushed (`wal_sync`). Background work defers to the webhooks
//! waiting here (`yield_to_intake`).

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

/// The intake writer: takes every accept waiting, commits them in one transaction, and
/// hands the answers to the WAL flusher, which gives them once the commit is on disk.
/// Under load one commit serves many webhooks, and while one group is being flushed the
/// next one commits; alone, one commit and one flush serve one webhook, without waiting.
///
/// It runs on a thread of its own, which ends when the last sender is dropped: a webhook
/// then wakes this thread directly, where a task would wake a runtime worker that hands
/// the commit to a blocking-pool thread and is woken again by its end (two more context
/// switches a group, on cores the HTTP side needs; measured in docs/bench-log.md).
pub(super) fn group_commit(store: &SqliteStore, mut rx: tokio::sync::mpsc::Receiver<AcceptJob>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < ACCEPT_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (entries, replies): (Vec<NewEntry>, Vec<_>) = batch.into_iter().unzip();
        let flushed_later = store.wal.is_some();
        let result = store.with_here(move |c| {
            let commit = |c: &mut Connection| -> Result<Vec<Accepted>, StoreError> {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
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
        });
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use uuid::Uuid;

    use super::*;
    use crate::domain::RecordId;
    use crate::machine::Event;
    use crate::store::sqlite::wal_sync;
    use crate::store::{Inbox, Payload, Snapshots, Source};

    fn entry(key: Option<&str>) -> NewEntry {
        NewEntry {
            event_id: Uuid::new_v4(),
            video_id: RecordId::parse("recA1b2C3d4E5f6G7").unwrap(),
            source: Source::Goapi,
            endpoint: "/webhooks/goapi".into(),
            dedupe_key: key.map(str::to_owned),
            raw_body: "{}".into(),
            headers: "{}".into(),
            received_at: crate::clock::now(),
            payload: Payload::Event {
                event: Event::RetryRequested { from: None },
            },
        }
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
        let intent = tokio::spawn(async move {
            s.record_intent(&crate::store::Owner::Job(crate::machine::JobId(
                uuid::Uuid::nil(),
            )))
            .await
        });
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
        let r = rt
            .block_on(
                store.record_intent(&crate::store::Owner::Job(crate::machine::JobId(
                    uuid::Uuid::nil(),
                ))),
            )
            .unwrap();
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
