//! The embedded outbox: the executor's due effects and their results, and the operator's
//! requeue.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};

use super::inbox::insert_entry;
use super::{Cached, SqliteStore, keyed, parse_ts, ts};
use crate::domain::RecordId;
use crate::machine::EffectKind;
use crate::store::decode::OutboxColumns;
use crate::store::{
    EffectState, Lane, Lease, NewEntry, Outbox, OutboxEntry, Source, StoreError, projection_sql,
    split_readable,
};

#[async_trait::async_trait]
impl Outbox for SqliteStore {
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
            let changed = tx.execute_cached(
                "UPDATE outbox SET state = ?2, attempts = attempts + 1, last_error = ?3, updated_at = ?4,
                        started_at = NULL
                 WHERE effect_id = ?1 AND state = ?5",
                params![id, state.as_ref(), error, ts(crate::clock::now()), EffectState::Pending.as_ref()],
            )?;
            // A late result of an effect already finished stores nothing.
            if changed == 1
                && let Some(entry) = &follow_up
            {
                let seen: Option<i64> = match &entry.dedupe_key {
                    Some(k) => tx
                        .query_row_cached("SELECT seq FROM inbox WHERE dedupe_key = ?1", [k], |r| {
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
                 WHERE o.state = ?3 AND o.next_attempt_at <= ?1
                   AND o.seq = (SELECT MIN(seq) FROM outbox p
                                WHERE p.video_id = o.video_id AND p.state = ?3
                                  AND {p_lane} = {o_lane})
                 ORDER BY o.seq LIMIT ?2"
                ))?;
                let rows = st.query_map(
                    params![ts(now), limit, EffectState::Pending.as_ref()],
                    keyed(outbox_row),
                )?;
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
            let s: Option<String> = c.query_row_cached(
                &format!(
                    "SELECT MIN(o.next_attempt_at) FROM outbox o
                 WHERE o.state = ?1
                   AND o.seq = (SELECT MIN(seq) FROM outbox p
                                WHERE p.video_id = o.video_id AND p.state = ?1
                                  AND {p_lane} = {o_lane})"
                ),
                [EffectState::Pending.as_ref()],
                |r| r.get(0),
            )?;
            s.map(|s| parse_ts(&s)).transpose()
        })
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
            c.execute_cached(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3, updated_at = ?4,
                        started_at = NULL
                 WHERE effect_id = ?1 AND state = ?5",
                params![id, ts(at), error, ts(crate::clock::now()), EffectState::Pending.as_ref()],
            )?;
            Ok(())
        })
        .await
    }

    /// One effect as stored now.
    async fn outbox_entry(&self, effect_id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        let id = effect_id.to_owned();
        self.read(move |c| {
            c.query_row_cached(
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
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now = ts(crate::clock::now());
            let n = tx.execute_cached(
                "UPDATE outbox SET started_at = ?2, updated_at = ?2
                 WHERE effect_id = ?1 AND state = ?5 AND video_id = ?3
                   AND started_at IS ?4",
                params![id, now, video, seen.map(ts), EffectState::Pending.as_ref()],
            )?;
            // In the same transaction: a start is counted exactly when it is recorded.
            if n == 1 {
                tx.execute_cached(
                    PAID_CALL,
                    params![
                        id,
                        now,
                        EffectKind::CreateGoapiTask.as_ref(),
                        EffectKind::SubmitNcaMix.as_ref(),
                        Source::Goapi.to_string(),
                        Source::Nca.to_string(),
                    ],
                )?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    /// Records an ambiguous failure of an external call: one attempt more, `started_at`
    /// kept, so the next attempt first waits out the grace period for the callback.
    async fn effect_ambiguous(&self, effect_id: &str, error: &str) -> Result<(), StoreError> {
        let (id, error) = (effect_id.to_owned(), error.to_owned());
        self.with(move |c| {
            c.execute_cached(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, updated_at = ?3
                 WHERE effect_id = ?1 AND state = ?4",
                params![
                    id,
                    error,
                    ts(crate::clock::now()),
                    EffectState::Pending.as_ref()
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Postpones an effect without counting an attempt.
    async fn effect_defer(&self, effect_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let id = effect_id.to_owned();
        self.with(move |c| {
            c.execute_cached(
                "UPDATE outbox SET next_attempt_at = ?2, updated_at = ?3
                 WHERE effect_id = ?1 AND state = ?4",
                params![
                    id,
                    ts(at),
                    ts(crate::clock::now()),
                    EffectState::Pending.as_ref()
                ],
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
            let n = c.execute_cached(
                "UPDATE outbox SET state = ?3, next_attempt_at = ?2, updated_at = ?2,
                        attempts = 0, last_error = NULL, started_at = NULL
                 WHERE effect_id = ?1 AND state = ?4",
                params![
                    id,
                    ts(crate::clock::now()),
                    EffectState::Pending.as_ref(),
                    EffectState::Failed.as_ref()
                ],
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
                "SELECT {OUTBOX_COLS} FROM outbox o WHERE video_id = ?1 AND state = ?3
                 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = st.query_map(
                params![video, limit, EffectState::Pending.as_ref()],
                keyed(outbox_row),
            )?;
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
}

/// Notes the start of effect `?1` at `?2` when it is a paid call: one of kind `?3` (to
/// service `?5`) or `?4` (to service `?6`).
const PAID_CALL: &str = "INSERT INTO paid_calls (video_id, job_id, effect_id, service, at)
     SELECT video_id, json_extract(effect, '$.job'), effect_id,
            CASE kind WHEN ?3 THEN ?5 ELSE ?6 END, ?2
     FROM outbox WHERE effect_id = ?1 AND kind IN (?3, ?4)";

pub(super) const OUTBOX_COLS: &str = "o.seq, o.effect_id, o.video_id, o.event_id, o.effect, o.state, o.attempts, o.next_attempt_at, o.last_error, o.started_at";

pub(super) fn outbox_row(r: &Row<'_>) -> rusqlite::Result<Result<OutboxEntry, StoreError>> {
    let columns = OutboxColumns {
        seq: r.get(0)?,
        effect_id: r.get(1)?,
        video: r.get(2)?,
        event_id: r.get(3)?,
        effect: r.get(4)?,
        state: r.get(5)?,
        attempts: r.get(6)?,
        next_attempt_at: r.get::<_, String>(7)?,
        last_error: r.get(8)?,
        started_at: r.get::<_, Option<String>>(9)?,
    };
    Ok(columns.decode(|t| parse_ts(&t)))
}
