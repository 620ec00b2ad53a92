//! Looking after the embedded store: the rows set aside (quarantine), depths, the
//! operator page's overview, the heartbeat, and retention.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{Cached, SqliteStore, overview, parse_ts, ts};
use crate::domain::RecordId;
use crate::store::Owner;
use crate::store::{
    Depths, EffectState, EntryState, Maintenance, Overview, PaidCalls, PaidDay, Pruned,
    Quarantined, StoreError, VideoQuery, VideoRow, add_day,
};

impl SqliteStore {
    /// Sets unreadable rows aside (`table` is `inbox` or `outbox`, keyed by `seq`) with
    /// the reason, so that the scans that found them go on without them.
    pub(super) async fn quarantine(
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
            let (sql, quarantined, pending) = match table {
                "inbox" => (
                    "UPDATE inbox SET state = ?4, note = ?2, processed_at = ?3
                     WHERE seq = ?1 AND state = ?5",
                    EntryState::Quarantined.as_ref(),
                    EntryState::Pending.as_ref(),
                ),
                _ => (
                    "UPDATE outbox SET state = ?4, last_error = ?2, updated_at = ?3
                     WHERE seq = ?1 AND state = ?5",
                    EffectState::Quarantined.as_ref(),
                    EffectState::Pending.as_ref(),
                ),
            };
            for (seq, why) in &rows {
                tx.execute_cached(
                    sql,
                    params![seq, why, ts(crate::clock::now()), quarantined, pending],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

#[async_trait::async_trait]
impl Maintenance for SqliteStore {
    async fn depths(&self) -> Result<Depths, StoreError> {
        self.read(|c| {
            let count =
                |sql: &str, state: &str| c.query_row_cached(sql, [state], |r| r.get::<_, i64>(0));
            let oldest: Option<String> = c
                .query_row_cached(
                    "SELECT received_at FROM inbox WHERE state = ?1 ORDER BY seq LIMIT 1",
                    [EntryState::Pending.as_ref()],
                    |r| r.get(0),
                )
                .optional()?;
            let (inbox, outbox) = (
                "SELECT COUNT(*) FROM inbox WHERE state = ?1",
                "SELECT COUNT(*) FROM outbox WHERE state = ?1",
            );
            Ok(Depths {
                inbox_pending: count(inbox, EntryState::Pending.as_ref())?,
                outbox_pending: count(outbox, EffectState::Pending.as_ref())?,
                outbox_failed: count(outbox, EffectState::Failed.as_ref())?,
                quarantined: c.query_row_cached(
                    "SELECT (SELECT COUNT(*) FROM inbox WHERE state = ?1)
                          + (SELECT COUNT(*) FROM outbox WHERE state = ?2)",
                    [
                        EntryState::Quarantined.as_ref(),
                        EffectState::Quarantined.as_ref(),
                    ],
                    |r| r.get::<_, i64>(0),
                )?,
                oldest_pending: oldest.map(|t| parse_ts(&t)).transpose()?,
            })
        })
        .await
    }

    async fn overview(&self, limit: u32) -> Result<Overview, StoreError> {
        self.read(move |c| overview::overview(c, limit)).await
    }

    async fn videos(&self, q: VideoQuery) -> Result<Vec<VideoRow>, StoreError> {
        self.read(move |c| overview::videos(c, &q)).await
    }

    async fn paid_calls(&self, video: Option<&RecordId>) -> Result<PaidCalls, StoreError> {
        let video = video.map(RecordId::to_string);
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT service, COUNT(*) FROM paid_calls
                 WHERE ?1 IS NULL OR video_id = ?1 GROUP BY service
                 UNION ALL
                 SELECT service, SUM(calls) FROM paid_call_totals
                 WHERE ?1 IS NULL OR video_id = ?1 GROUP BY service",
            )?;
            let mut calls = PaidCalls::default();
            for row in st.query_map([video], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))? {
                let (service, n) = row?;
                calls.add(&service, n);
            }
            Ok(calls)
        })
        .await
    }

    async fn paid_calls_by_day(&self, since: DateTime<Utc>) -> Result<Vec<PaidDay>, StoreError> {
        self.read(move |c| {
            // Times are stored as RFC 3339 in UTC: the day is their first ten characters.
            let mut st = c.prepare_cached(
                "SELECT day, service, SUM(n) FROM (
                     SELECT substr(at, 1, 10) AS day, service, COUNT(*) AS n FROM paid_calls
                     WHERE at >= ?1 GROUP BY day, service
                     UNION ALL
                     SELECT day, service, SUM(calls) FROM paid_call_totals
                     WHERE day >= substr(?1, 1, 10) GROUP BY day, service
                 ) GROUP BY day, service ORDER BY day",
            )?;
            let rows = st.query_map([ts(since)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
            })?;
            let mut days: Vec<PaidDay> = Vec::new();
            for row in rows {
                let (day, service, n) = row?;
                let day = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                    .map_err(|e| StoreError::Corrupt(format!("paid call day {day:?}: {e}")))?;
                add_day(&mut days, day, &service, n);
            }
            Ok(days)
        })
        .await
    }

    /// A cheap write that proves the store is writable, and room for more (/readyz).
    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS heartbeat (id INTEGER PRIMARY KEY, at TEXT);
                 INSERT INTO heartbeat (id, at) VALUES (1, datetime('now'))
                 ON CONFLICT(id) DO UPDATE SET at = excluded.at;",
            )?;
            // That update fits in its page even when the file is at its page limit
            // (`REELSTATE_DB_MAX_MB`), where new rows no longer do: not ready then.
            let page = |name: &str| c.pragma_query_value(None, name, |r| r.get::<_, i64>(0));
            let (pages, max) = (page("page_count")?, page("max_page_count")?);
            if pages >= max && page("freelist_count")? == 0 {
                return Err(full(format!(
                    "the store's file is at its limit of {max} pages (REELSTATE_DB_MAX_MB)"
                )));
            }
            // A full disk does not fail that update either (the WAL takes it into frames
            // it already has), while commits that need new pages fail: ask the disk.
            if let Some(file) = c.path().filter(|p| !p.is_empty()) {
                let file = std::path::Path::new(file);
                if let Ok(free) = super::disk_space::free_bytes(file)
                    && free < super::disk_space::MIN_FREE_BYTES
                {
                    return Err(full(format!(
                        "the store's disk is full: {free} bytes free on the filesystem of {}",
                        file.display()
                    )));
                }
            }
            Ok(())
        })
        .await
    }

    async fn quarantined(&self, limit: u32) -> Result<Vec<Quarantined>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT * FROM (
                     SELECT 'inbox', event_id, video_id, COALESCE(note, ''), processed_at
                     FROM inbox WHERE state = ?2
                     UNION ALL
                     SELECT 'outbox', effect_id, video_id, COALESCE(last_error, ''), updated_at
                     FROM outbox WHERE state = ?3
                 ) ORDER BY 5 DESC LIMIT ?1",
            )?;
            let states = (
                EntryState::Quarantined.as_ref(),
                EffectState::Quarantined.as_ref(),
            );
            let rows = st.query_map(params![limit, states.0, states.1], |r| {
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
        let parked_after = ts(crate::store::parked_beyond(crate::clock::now()));
        self.with(move |c| {
            let inbox = c.execute_cached(
                "DELETE FROM inbox WHERE seq IN (
                     SELECT seq FROM inbox i WHERE state = ?3 AND processed_at < ?1
                       AND NOT EXISTS (SELECT 1 FROM outbox o
                                       WHERE o.event_id = i.event_id AND o.state <> ?4)
                     LIMIT ?2)",
                params![
                    cutoff,
                    batch,
                    EntryState::Done.as_ref(),
                    EffectState::Done.as_ref()
                ],
            )?;
            let history = c.execute_cached(
                "DELETE FROM history WHERE id IN (SELECT id FROM history WHERE at < ?1 LIMIT ?2)",
                params![cutoff, batch],
            )?;
            let outbox = c.execute_cached(
                "DELETE FROM outbox WHERE seq IN (
                     SELECT seq FROM outbox WHERE state = ?3 AND updated_at < ?1 LIMIT ?2)",
                params![cutoff, batch, EffectState::Done.as_ref()],
            )?;
            let creations = c.execute_cached(
                PRUNE_CREATIONS,
                params![
                    cutoff,
                    batch,
                    Owner::JOB_PREFIX,
                    Owner::EVENT_PREFIX,
                    EffectState::Done.as_ref()
                ],
            )?;
            let (completed, failed_a, failed_b) = crate::store::overview::final_statuses();
            let parked_jobs = c.execute_cached(
                "DELETE FROM active_jobs WHERE job_id IN (
                     SELECT a.job_id FROM active_jobs a JOIN video_state v USING (video_id)
                     WHERE a.since < ?1 AND a.next_check_at > ?3
                       AND json_extract(v.snapshot, '$.video.status') IN (?4, ?5, ?6)
                     LIMIT ?2)",
                params![cutoff, batch, parked_after, completed, failed_a, failed_b],
            )?;
            let tx = c.transaction()?;
            tx.execute_cached(FOLD_PAID_CALLS, params![cutoff, batch])?;
            let paid_calls = tx.execute_cached(
                "DELETE FROM paid_calls WHERE id IN (
                     SELECT id FROM paid_calls WHERE at < ?1 ORDER BY id LIMIT ?2)",
                params![cutoff, batch],
            )?;
            tx.commit()?;
            Ok(Pruned {
                inbox: inbox as u64,
                history: history as u64,
                outbox: outbox as u64,
                creations: creations as u64,
                parked_jobs: parked_jobs as u64,
                paid_calls: paid_calls as u64,
            })
        })
        .await
    }
}

/// A keyless create's claim is needed until nothing can write its owner's record again
/// through [`crate::store::Snapshots::record_intent`]: a job's record is then in the job
/// index (later writes update it by id), an event's Webhook Events record has no effect of
/// the event left to run or to be requeued. Unclaimed intents stay: they are what finds
/// an interrupted create's record.
const PRUNE_CREATIONS: &str = "DELETE FROM record_creations WHERE owner IN (
     SELECT owner FROM record_creations rc
     WHERE rc.started_at < ?1 AND rc.record_id IS NOT NULL
       AND ((substr(rc.owner, 1, length(?3)) = ?3
             AND EXISTS (SELECT 1 FROM job_index j
                         WHERE j.job_id = substr(rc.owner, length(?3) + 1)
                           AND j.record_id IS NOT NULL))
         OR (substr(rc.owner, 1, length(?4)) = ?4
             AND NOT EXISTS (SELECT 1 FROM outbox o
                             WHERE o.event_id = substr(rc.owner, length(?4) + 1)
                               AND o.state <> ?5)))
     LIMIT ?2)";

/// Adds the batch of paid calls [`Maintenance::prune`] is about to delete (the same
/// oldest-first batch, in the same transaction) to the totals.
const FOLD_PAID_CALLS: &str = "INSERT INTO paid_call_totals (day, video_id, service, calls)
     SELECT substr(at, 1, 10), video_id, service, COUNT(*) FROM paid_calls
     WHERE id IN (SELECT id FROM paid_calls WHERE at < ?1 ORDER BY id LIMIT ?2)
     GROUP BY 1, 2, 3
     ON CONFLICT (day, video_id, service) DO UPDATE SET calls = calls + excluded.calls";

/// SQLite's own error for a full database, with what filled it.
fn full(why: String) -> StoreError {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
        Some(why),
    )
    .into()
}
