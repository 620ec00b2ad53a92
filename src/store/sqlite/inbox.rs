//! The embedded inbox: accepts (through the group commit), and the worker's and the
//! API's reads of the entries.

use rusqlite::{OptionalExtension, Row, params};
use uuid::Uuid;

use super::{Cached, SqliteStore, keyed, parse_ts, ts};
use crate::domain::RecordId;
use crate::store::decode::{EntryColumns, to_row, uuid};
use crate::store::{
    Accepted, EffectState, EntryState, EventFilter, EventQuery, Inbox, InboxEntry, NewEntry,
    Payload, StoreError, split_readable,
};

/// One webhook waiting for its commit, for as long as this value lives.
struct Waiting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Inbox for SqliteStore {
    /// One process owns the file and every entry comes in through its intake, which wakes
    /// the worker: the scan is only a safety net, so an idle service (or a simulated hour)
    /// does not read the inbox four times a second for nothing.
    fn rescan_every(&self) -> std::time::Duration {
        std::time::Duration::from_secs(5)
    }

    /// Stores an entry durably. A repeat (same dedupe key) is stored too, as a duplicate
    /// entry pointing at the first, so that the event log shows every delivery. Returns
    /// only once the entry is committed; concurrent calls share one transaction.
    async fn accept(&self, entry: NewEntry) -> Result<Accepted, StoreError> {
        use std::sync::atomic::Ordering;
        if self.is_inline() {
            return self
                .with_durably(move |c| {
                    let tx =
                        c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let accepted = accept_in(&tx, entry)?;
                    tx.commit()?;
                    Ok(accepted)
                })
                .await;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.intake_waiting.fetch_add(1, Ordering::SeqCst);
        // Decremented however this future ends, a dropped request included.
        let _waiting = Waiting(self.intake_waiting.clone());
        let stopped = || StoreError::Join("intake writer stopped".into());
        let tx = self.accepts.as_ref().ok_or_else(stopped)?;
        tx.send((entry, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
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
                let mut st = c.prepare_cached(&format!(
                    "SELECT {LIGHT_ENTRY_COLS} FROM inbox WHERE seq IN ({PENDING_SEQS}) ORDER BY seq"
                ))?;
                let rows = st.query_map(
                    params![limit, EntryState::Pending.as_ref()],
                    keyed(entry_row),
                )?;
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
            Ok(state.as_deref() == Some(EntryState::Pending.as_ref()))
        })
        .await
    }

    /// Whether some entry of this video still waits for the worker (a callback, say).
    async fn has_pending_entries(&self, video: &RecordId) -> Result<bool, StoreError> {
        let video = video.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM inbox WHERE video_id = ?1 AND state = ?2)",
            )?
            .query_row([video.as_str(), EntryState::Pending.as_ref()], |r| r.get(0))?)
        })
        .await
    }

    async fn entry(&self, event_id: Uuid) -> Result<Option<InboxEntry>, StoreError> {
        self.read(move |c| {
            c.query_row_cached(
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
            match q.filter {
                Some(EventFilter::EffectFailed) => {
                    args.push(EffectState::Failed.to_string());
                    sql.push_str(&format!(
                        " AND event_id IN (SELECT event_id FROM outbox WHERE state = ?{})",
                        args.len()
                    ));
                }
                Some(EventFilter::Outcome(o)) => {
                    args.push(o.to_string());
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
}

/// Inserts one entry inside an open transaction, detecting repeats by dedupe key (also
/// among entries earlier in the same transaction).
pub(super) fn accept_in(
    tx: &rusqlite::Transaction<'_>,
    entry: NewEntry,
) -> Result<Accepted, StoreError> {
    if let Some(key) = &entry.dedupe_key {
        let first: Option<String> = tx
            .prepare_cached("SELECT event_id FROM inbox WHERE dedupe_key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        if let Some(first) = first {
            let of = uuid(&first, "event id")?;
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

pub(super) const ENTRY_COLS: &str = "seq, event_id, video_id, source, endpoint, raw_body, received_at, payload, state, outcome, note, job_id";
/// Which pending entries the worker's scan takes, by `seq` (`?1`: how many; `?2`: the
/// pending state). At most a
/// few entries per video, so that one chatty video cannot fill the window and hide every
/// other video's events (looking at the oldest 4096). Chosen on the pending index alone
/// (it holds the video): under a backlog, carrying whole rows (raw bodies, headers)
/// through the window's sort made every scan cost tens of milliseconds of CPU.
pub(super) const PENDING_SEQS: &str = "SELECT seq FROM (
         SELECT seq, ROW_NUMBER() OVER (PARTITION BY video_id ORDER BY seq) AS nth
         FROM (SELECT seq, video_id FROM inbox WHERE state = ?2 ORDER BY seq LIMIT 4096)
     ) WHERE nth <= 16 ORDER BY seq LIMIT ?1";
/// The same without the raw body, for lists (a body can be a megabyte).
pub(super) const LIGHT_ENTRY_COLS: &str = "seq, event_id, video_id, source, endpoint, '', received_at, payload, state, outcome, note, job_id";

pub(super) fn insert_entry(tx: &rusqlite::Transaction<'_>, e: &NewEntry) -> Result<(), StoreError> {
    let payload = to_row(&e.payload, "payload")?;
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

pub(super) fn entry_row(r: &Row<'_>) -> rusqlite::Result<Result<InboxEntry, StoreError>> {
    let columns = EntryColumns {
        seq: r.get(0)?,
        event_id: r.get(1)?,
        video: r.get(2)?,
        source: r.get(3)?,
        endpoint: r.get(4)?,
        raw_body: r.get(5)?,
        received_at: r.get::<_, String>(6)?,
        payload: r.get(7)?,
        state: r.get(8)?,
        outcome: r.get(9)?,
        note: r.get(10)?,
        job: r.get(11)?,
    };
    Ok(columns.decode(|t| parse_ts(&t)))
}
