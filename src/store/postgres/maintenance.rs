//! Looking after the shared store: the rows set aside (quarantine), depths, the operator
//! page's overview, the heartbeat, and retention.

use chrono::{DateTime, Utc};

use super::{PgStore, overview, row_one, rows, run};
use crate::domain::RecordId;
use crate::store::Owner;
use crate::store::{
    Depths, EffectState, EntryState, Maintenance, Overview, PaidCalls, PaidDay, Pruned,
    Quarantined, StoreError, VideoQuery, VideoRow, add_day,
};

impl PgStore {
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
        let (sql, quarantined, pending) = match table {
            "inbox" => (
                "UPDATE inbox SET state = $4, note = $2, processed_at = COALESCE($3::timestamptz, now())
                 WHERE seq = $1 AND state = $5",
                EntryState::Quarantined.as_ref(),
                EntryState::Pending.as_ref(),
            ),
            _ => (
                "UPDATE outbox SET state = $4, last_error = $2, updated_at = COALESCE($3::timestamptz, now())
                 WHERE seq = $1 AND state = $5",
                EffectState::Quarantined.as_ref(),
                EffectState::Pending.as_ref(),
            ),
        };
        let client = self.pool.get().await?;
        for (seq, why) in &rows {
            tracing::error!(table, seq, reason = %why, "unreadable row quarantined");
            run(
                &client,
                sql,
                &[seq, why, &self.at(), &quarantined, &pending],
            )
            .await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Maintenance for PgStore {
    async fn depths(&self) -> Result<Depths, StoreError> {
        let client = self.pool.get().await?;
        let r = row_one(
            &client,
            "SELECT (SELECT COUNT(*) FROM inbox WHERE state = 'pending'),
                        (SELECT COUNT(*) FROM outbox WHERE state = 'pending'),
                        (SELECT COUNT(*) FROM outbox WHERE state = 'failed'),
                        (SELECT COUNT(*) FROM inbox WHERE state = 'quarantined')
                          + (SELECT COUNT(*) FROM outbox WHERE state = 'quarantined'),
                        (SELECT received_at FROM inbox WHERE state = 'pending'
                         ORDER BY seq LIMIT 1)",
            &[],
        )
        .await?;
        Ok(Depths {
            inbox_pending: r.try_get(0)?,
            outbox_pending: r.try_get(1)?,
            outbox_failed: r.try_get(2)?,
            quarantined: r.try_get(3)?,
            oldest_pending: r.try_get(4)?,
        })
    }

    async fn overview(&self, limit: u32) -> Result<Overview, StoreError> {
        let client = self.pool.get().await?;
        overview::overview(&client, limit).await
    }

    async fn videos(&self, q: VideoQuery) -> Result<Vec<VideoRow>, StoreError> {
        let client = self.pool.get().await?;
        overview::videos(&client, &q).await
    }

    async fn paid_calls(&self, video: Option<&RecordId>) -> Result<PaidCalls, StoreError> {
        let client = self.pool.get().await?;
        let video = video.map(RecordId::to_string);
        let mut calls = PaidCalls::default();
        for r in rows(
            &client,
            "SELECT service, COUNT(*) FROM paid_calls
             WHERE $1::text IS NULL OR video_id = $1 GROUP BY service
             UNION ALL
             SELECT service, SUM(calls)::bigint FROM paid_call_totals
             WHERE $1::text IS NULL OR video_id = $1 GROUP BY service",
            &[&video],
        )
        .await?
        {
            calls.add(&r.try_get::<_, String>(0)?, r.try_get(1)?);
        }
        Ok(calls)
    }

    async fn paid_calls_by_day(&self, since: DateTime<Utc>) -> Result<Vec<PaidDay>, StoreError> {
        let client = self.pool.get().await?;
        let mut days: Vec<PaidDay> = Vec::new();
        for r in rows(
            &client,
            "SELECT day, service, SUM(n)::bigint FROM (
                 SELECT (at AT TIME ZONE 'UTC')::date AS day, service, COUNT(*) AS n
                 FROM paid_calls WHERE at >= $1 GROUP BY 1, 2
                 UNION ALL
                 SELECT day, service, SUM(calls) FROM paid_call_totals
                 WHERE day >= ($1 AT TIME ZONE 'UTC')::date GROUP BY 1, 2
             ) t GROUP BY day, service ORDER BY day",
            &[&since],
        )
        .await?
        {
            add_day(
                &mut days,
                r.try_get(0)?,
                &r.try_get::<_, String>(1)?,
                r.try_get(2)?,
            );
        }
        Ok(days)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        run(
            &client,
            "INSERT INTO heartbeat (id, at) VALUES (1, COALESCE($1::timestamptz, now()))
                 ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at",
            &[&self.at()],
        )
        .await?;
        Ok(())
    }

    async fn quarantined(&self, limit: u32) -> Result<Vec<Quarantined>, StoreError> {
        let client = self.pool.get().await?;
        let rows = rows(
            &client,
            "SELECT * FROM (
                 SELECT 'inbox' AS t, event_id, video_id, COALESCE(note, '') AS why, processed_at AS at
                 FROM inbox WHERE state = 'quarantined'
                 UNION ALL
                 SELECT 'outbox', effect_id, video_id, COALESCE(last_error, ''), updated_at
                 FROM outbox WHERE state = 'quarantined'
             ) q ORDER BY at DESC NULLS LAST LIMIT $1",
            &[&i64::from(limit)],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Quarantined {
                    table: r.try_get(0)?,
                    id: r.try_get(1)?,
                    video_id: r.try_get(2)?,
                    reason: r.try_get(3)?,
                    at: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// One autocommitted statement per table and batch: short transactions, and
    /// `SKIP LOCKED` so a pass never waits on rows a replica is writing.
    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<Pruned, StoreError> {
        let client = self.pool.get().await?;
        let batch = i64::from(batch);
        let inbox = run(
            &client,
            "DELETE FROM inbox WHERE seq IN (
                 SELECT seq FROM inbox i WHERE state = 'done' AND processed_at < $1
                   AND NOT EXISTS (SELECT 1 FROM outbox o
                                   WHERE o.event_id = i.event_id AND o.state <> $3)
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&before, &batch, &EffectState::Done.as_ref()],
        )
        .await?;
        let history = run(
            &client,
            "DELETE FROM history WHERE id IN (
                 SELECT id FROM history WHERE at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&before, &batch],
        )
        .await?;
        let outbox = run(
            &client,
            "DELETE FROM outbox WHERE seq IN (
                 SELECT seq FROM outbox WHERE state = 'done' AND updated_at < $1
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&before, &batch],
        )
        .await?;
        let creations = run(
            &client,
            PRUNE_CREATIONS,
            &[
                &before,
                &batch,
                &Owner::JOB_PREFIX,
                &Owner::EVENT_PREFIX,
                &EffectState::Done.as_ref(),
            ],
        )
        .await?;
        let (completed, failed_a, failed_b) = crate::store::overview::final_statuses();
        let finals = vec![completed, failed_a.to_owned(), failed_b.to_owned()];
        let parked = crate::store::parked_beyond(crate::clock::now());
        let parked_jobs = run(
            &client,
            "DELETE FROM active_jobs WHERE job_id IN (
                 SELECT a.job_id FROM active_jobs a JOIN video_state v USING (video_id)
                 WHERE a.since < $1 AND a.next_check_at > $3
                   AND v.snapshot::jsonb -> 'video' ->> 'status' = ANY($4)
                 LIMIT $2 FOR UPDATE OF a SKIP LOCKED)",
            &[&before, &batch, &parked, &finals],
        )
        .await?;
        let paid_calls = client
            .query_one(FOLD_PAID_CALLS, &[&before, &batch])
            .await
            .map_err(crate::pg::PgError::from)?
            .try_get::<_, i64>(0)?;
        Ok(Pruned {
            inbox,
            history,
            outbox,
            creations,
            parked_jobs,
            paid_calls: paid_calls as u64,
        })
    }
}

/// A keyless create's claim is needed until nothing can write its owner's record again
/// through [`crate::store::Snapshots::record_intent`]: a job's record is then in the job
/// index (later writes update it by id), an event's Webhook Events record has no effect of
/// the event left to run or to be requeued. Unclaimed intents stay: they are what finds
/// an interrupted create's record.
const PRUNE_CREATIONS: &str = "DELETE FROM record_creations WHERE owner IN (
     SELECT owner FROM record_creations rc
     WHERE rc.started_at < $1 AND rc.record_id IS NOT NULL
       AND ((left(rc.owner, length($3)) = $3
             AND EXISTS (SELECT 1 FROM job_index j
                         WHERE j.job_id = substr(rc.owner, length($3) + 1)
                           AND j.record_id IS NOT NULL))
         OR (left(rc.owner, length($4)) = $4
             AND NOT EXISTS (SELECT 1 FROM outbox o
                             WHERE o.event_id = substr(rc.owner, length($4) + 1)
                               AND o.state <> $5)))
     LIMIT $2 FOR UPDATE SKIP LOCKED)";

/// Moves the oldest batch of paid calls past the retention into the totals in one
/// statement, and counts them.
const FOLD_PAID_CALLS: &str = "WITH moved AS (
         DELETE FROM paid_calls WHERE id IN (
             SELECT id FROM paid_calls WHERE at < $1 ORDER BY id LIMIT $2
             FOR UPDATE SKIP LOCKED)
         RETURNING video_id, service, at),
     folded AS (
         INSERT INTO paid_call_totals (day, video_id, service, calls)
         SELECT (at AT TIME ZONE 'UTC')::date, video_id, service, COUNT(*) FROM moved
         GROUP BY 1, 2, 3
         ON CONFLICT (day, video_id, service)
         DO UPDATE SET calls = paid_call_totals.calls + excluded.calls)
     SELECT COUNT(*) FROM moved";
