//! The shared outbox: the executor's due effects and their results (a start fenced by the
//! executor's lease), and the operator's requeue.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::inbox::insert_entry;
use super::{PgStore, row_one, row_opt, rows, run};
use crate::domain::RecordId;
use crate::machine::EffectKind;
use crate::store::decode::OutboxColumns;
use crate::store::{
    EffectState, Lane, Lease, NewEntry, Outbox, OutboxEntry, Source, StoreError, projection_sql,
    split_readable,
};

#[async_trait::async_trait]
impl Outbox for PgStore {
    async fn finish_effect(
        &self,
        effect_id: &str,
        state: EffectState,
        error: Option<String>,
        follow_up: Option<NewEntry>,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let changed = run(
            &tx,
            "UPDATE outbox SET state = $2, attempts = attempts + 1, last_error = $3,
                    updated_at = COALESCE($4::timestamptz, now()), started_at = NULL
             WHERE effect_id = $1 AND state = $5",
            &[
                &effect_id,
                &state.as_ref(),
                &error,
                &self.at(),
                &EffectState::Pending.as_ref(),
            ],
        )
        .await?;
        // A late result of an effect already finished (by another replica, or by the
        // callback that made the call unneeded) stores nothing.
        if changed == 1
            && let Some(entry) = &follow_up
        {
            // Named after the effect: a retried commit stores the event once.
            insert_entry(&tx, entry, true).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn due_effects(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let client = self.pool.get().await?;
        let rows = rows(
            &client,
            &format!(
                "SELECT {OUTBOX_COLS} FROM (
                         SELECT DISTINCT ON (video_id, {lane}) * FROM outbox
                         WHERE state = 'pending' ORDER BY video_id, {lane}, seq
                     ) o WHERE o.next_attempt_at <= $1 ORDER BY o.seq LIMIT $2",
                lane = projection_sql("outbox")
            ),
            &[&now, &i64::from(limit)],
        )
        .await?;
        let (good, bad) = split_readable(rows.iter().map(|r| (r.get::<_, i64>(0), outbox_row(r))))?;
        self.quarantine("outbox", bad).await?;
        Ok(good)
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let client = self.pool.get().await?;
        // The first pending effect of a video's lane, unless an executor holds that lane
        // of the video (another replica's, or this one's, which wakes itself when done):
        // counting those would wake this executor for nothing.
        let row = row_one(
            &client,
            &format!(
                "SELECT MIN(o.next_attempt_at) FROM (
                 SELECT DISTINCT ON (video_id, {lane}) video_id, next_attempt_at,
                        CASE WHEN {lane} THEN $2::text ELSE $1::text END AS lane
                 FROM outbox
                 WHERE state = 'pending' ORDER BY video_id, {lane}, seq
             ) o
             WHERE NOT EXISTS (SELECT 1 FROM leases l
                               WHERE l.lane = o.lane AND l.video_id = o.video_id
                                 AND l.expires_at > COALESCE($3::timestamptz, now()))",
                lane = projection_sql("outbox")
            ),
            &[
                &Lane::Executor.as_ref(),
                &Lane::Projection.as_ref(),
                &self.at(),
            ],
        )
        .await?;
        Ok(row.try_get(0)?)
    }

    async fn effect_retry_later(
        &self,
        effect_id: &str,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        run(
            &client,
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3,
                        updated_at = COALESCE($4::timestamptz, now()), started_at = NULL
                 WHERE effect_id = $1 AND state = $5",
            &[
                &effect_id,
                &at,
                &error,
                &self.at(),
                &EffectState::Pending.as_ref(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn outbox_entry(&self, effect_id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        let client = self.pool.get().await?;
        row_opt(
            &client,
            &format!("SELECT {OUTBOX_COLS} FROM outbox WHERE effect_id = $1"),
            &[&effect_id],
        )
        .await?
        .as_ref()
        .map(outbox_row)
        .transpose()
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
        let client = self.pool.get().await?;
        // Only under the executor's current lease (a replica that lost it must not start a
        // call the new holder may be starting too), and only if nobody started it since
        // the caller looked: if two race, the second finds `started_at` changed.
        // The paid call is noted in the same statement: a start is counted exactly when it
        // is recorded.
        let n: i64 = row_one(
            &client,
            "WITH started AS (
                 UPDATE outbox SET started_at = COALESCE($7::timestamptz, now()),
                                   updated_at = COALESCE($7::timestamptz, now())
                 WHERE effect_id = $1 AND state = $8 AND video_id = $5
                   AND started_at IS NOT DISTINCT FROM $6
                   AND EXISTS (SELECT 1 FROM leases
                               WHERE lane = $2 AND video_id = outbox.video_id
                                 AND token = $3 AND owner = $4)
                 RETURNING video_id, effect_id, kind, effect
             ), paid AS (
                 INSERT INTO paid_calls (video_id, job_id, effect_id, service, at)
                 SELECT video_id, effect::jsonb ->> 'job', effect_id,
                        CASE kind WHEN $9 THEN $11 ELSE $12 END,
                        COALESCE($7::timestamptz, now())
                 FROM started WHERE kind IN ($9, $10)
             )
             SELECT COUNT(*) FROM started",
            &[
                &effect_id,
                &Lane::Executor.as_ref(),
                &lease.token(),
                &self.owner,
                &lease.video().to_string(),
                &seen,
                &self.at(),
                &EffectState::Pending.as_ref(),
                &EffectKind::CreateGoapiTask.as_ref(),
                &EffectKind::SubmitNcaMix.as_ref(),
                &Source::Goapi.to_string(),
                &Source::Nca.to_string(),
            ],
        )
        .await?
        .try_get(0)?;
        Ok(n == 1)
    }

    async fn effect_ambiguous(&self, effect_id: &str, error: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        run(
            &client,
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                        updated_at = COALESCE($3::timestamptz, now())
                 WHERE effect_id = $1 AND state = $4",
            &[
                &effect_id,
                &error,
                &self.at(),
                &EffectState::Pending.as_ref(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn effect_defer(&self, effect_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        run(
            &client,
            "UPDATE outbox SET next_attempt_at = $2, updated_at = COALESCE($3::timestamptz, now())
                 WHERE effect_id = $1 AND state = $4",
            &[&effect_id, &at, &self.at(), &EffectState::Pending.as_ref()],
        )
        .await?;
        Ok(())
    }

    async fn requeue_effect(&self, effect_id: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let n = run(
            &client,
            "UPDATE outbox SET state = $3, next_attempt_at = COALESCE($2::timestamptz, now()),
                        updated_at = COALESCE($2::timestamptz, now()),
                        attempts = 0, last_error = NULL, started_at = NULL
                 WHERE effect_id = $1 AND state = $4",
            &[
                &effect_id,
                &self.at(),
                &EffectState::Pending.as_ref(),
                &EffectState::Failed.as_ref(),
            ],
        )
        .await?;
        Ok(n == 1)
    }

    async fn pending_effects_of(
        &self,
        video: &RecordId,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let client = self.pool.get().await?;
        let rows = rows(
            &client,
            &format!(
                "SELECT {OUTBOX_COLS} FROM outbox WHERE video_id = $1 AND state = 'pending'
                     ORDER BY seq LIMIT $2"
            ),
            &[&video.to_string(), &i64::from(limit)],
        )
        .await?;
        Ok(split_readable(rows.iter().map(|r| (r.get::<_, i64>(0), outbox_row(r))))?.0)
    }

    async fn effects_of(&self, video: &RecordId) -> Result<Vec<OutboxEntry>, StoreError> {
        let client = self.pool.get().await?;
        let rows = rows(
            &client,
            &format!("SELECT {OUTBOX_COLS} FROM outbox WHERE video_id = $1 ORDER BY seq"),
            &[&video.to_string()],
        )
        .await?;
        Ok(split_readable(rows.iter().map(|r| (r.get::<_, i64>(0), outbox_row(r))))?.0)
    }
}

pub(super) const OUTBOX_COLS: &str = "seq, effect_id, video_id, event_id, effect, state, attempts, next_attempt_at, last_error, started_at";

pub(super) fn outbox_row(r: &Row) -> Result<OutboxEntry, StoreError> {
    let attempts: i32 = r.try_get(6)?;
    OutboxColumns {
        seq: r.try_get(0)?,
        effect_id: r.try_get(1)?,
        video: r.try_get(2)?,
        event_id: r.try_get(3)?,
        effect: r.try_get(4)?,
        state: r.try_get(5)?,
        attempts: attempts.max(0) as u32,
        next_attempt_at: r.try_get(7)?,
        last_error: r.try_get(8)?,
        started_at: r.try_get(9)?,
    }
    .decode(Ok)
}
