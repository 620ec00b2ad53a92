//! Looking after the shared store: the rows set aside (quarantine), depths, the operator
//! page's overview, the heartbeat, and retention.

use chrono::{DateTime, Utc};

use super::{PgStore, overview, row_one, rows, run};
use crate::domain::RecordId;
use crate::store::{
    Depths, Maintenance, Overview, PaidCalls, PaidDay, Pruned, Quarantined, StoreError, VideoQuery,
    VideoRow, add_day,
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
        let sql = match table {
            "inbox" => {
                "UPDATE inbox SET state = 'quarantined', note = $2, processed_at = COALESCE($3::timestamptz, now())
                 WHERE seq = $1 AND state = 'pending'"
            }
            _ => {
                "UPDATE outbox SET state = 'quarantined', last_error = $2, updated_at = COALESCE($3::timestamptz, now())
                 WHERE seq = $1 AND state = 'pending'"
            }
        };
        let client = self.pool.get().await?;
        for (seq, why) in &rows {
            tracing::error!(table, seq, reason = %why, "unreadable row quarantined");
            run(&client, sql, &[seq, why, &self.at()]).await?;
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
            "SELECT (at AT TIME ZONE 'UTC')::date AS day, service, COUNT(*) FROM paid_calls
             WHERE at >= $1 GROUP BY day, service ORDER BY day",
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
                                   WHERE o.event_id = i.event_id AND o.state <> 'done')
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&before, &batch],
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
        Ok(Pruned {
            inbox,
            history,
            outbox,
        })
    }
}
