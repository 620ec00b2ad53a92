//! The shared snapshots: the worker's commit, fenced by its lease's token (snapshot, job
//! index, active jobs, history, effects and the entry's outcome in one transaction), the
//! reads of them, and the records created on a base with no key field.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{PgStore, row_opt, rows, run};
use crate::domain::RecordId;
use crate::machine::{JobId, Snapshot};
use crate::store::Owner;
use crate::store::decode::{
    ActiveJobColumns, HistoryColumns, from_row, job_location, record_id_opt, to_row,
};
use crate::store::{
    ActiveJob, Commit, EntryState, HistoryRow, Lane, Lease, RecordIntent, Snapshots, StoreError,
};

#[async_trait::async_trait]
impl Snapshots for PgStore {
    async fn snapshot(&self, video: &RecordId) -> Result<Option<Snapshot>, StoreError> {
        let client = self.pool.get().await?;
        let row = row_opt(
            &client,
            "SELECT snapshot FROM video_state WHERE video_id = $1",
            &[&video.to_string()],
        )
        .await?;
        row.map(|r| {
            let s: String = r.get(0);
            from_row(&s, "snapshot")
        })
        .transpose()
    }

    async fn commit(&self, commit: Commit, lease: &Lease) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let video = commit.video_id.to_string();
        // Fencing: FOR SHARE keeps the lease row from being claimed until this commits,
        // and the token proves nobody claimed it since this holder did.
        let token: Option<(i64, String)> = row_opt(
            &tx,
            "SELECT token, owner FROM leases WHERE lane = $1 AND video_id = $2 FOR SHARE",
            &[&Lane::Worker.as_ref(), &video],
        )
        .await?
        .map(|r| (r.get(0), r.get(1)));
        if lease.lane() != Lane::Worker
            || lease.video() != &commit.video_id
            || token != Some((lease.token(), self.owner.clone()))
        {
            return Err(StoreError::LeaseLost(video));
        }
        let at = commit.at;
        if let Some(s) = &commit.snapshot {
            let json = to_row(s, "snapshot")?;
            run(&tx,
                "INSERT INTO video_state (video_id, snapshot, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (video_id) DO UPDATE SET snapshot = EXCLUDED.snapshot, updated_at = EXCLUDED.updated_at",
                &[&video, &json, &at],
            )
            .await?;
            for j in &s.jobs {
                let job = j.id.to_string();
                // Rewritten only when the external id changes (a job gets one once).
                run(
                    &tx,
                    "INSERT INTO job_index (job_id, video_id, external_id) VALUES ($1, $2, $3)
                     ON CONFLICT (job_id) DO UPDATE SET external_id = EXCLUDED.external_id
                     WHERE job_index.external_id IS DISTINCT FROM EXCLUDED.external_id",
                    &[&job, &video, &j.external_id],
                )
                .await?;
                // The reconciler's worklist: jobs still waiting for their service.
                if j.status.is_active() {
                    run(&tx,
                        "INSERT INTO active_jobs (job_id, video_id, kind, external_id, since, next_check_at)
                         VALUES ($1, $2, $3, $4, $5, $5)
                         ON CONFLICT (job_id) DO UPDATE SET external_id = EXCLUDED.external_id",
                        &[&job, &video, &j.kind.name(), &j.external_id, &at],
                    )
                    .await?;
                } else {
                    run(&tx, "DELETE FROM active_jobs WHERE job_id = $1", &[&job]).await?;
                }
            }
        }
        for (job, record) in &commit.job_records {
            run(
                &tx,
                "UPDATE job_index SET record_id = $2 WHERE job_id = $1",
                &[&job.to_string(), &record.to_string()],
            )
            .await?;
        }
        if let Some(h) = &commit.history {
            run(&tx,
                "INSERT INTO history (video_id, event_id, event, from_status, to_status, outcome, at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&video, &h.event_id.to_string(), &h.event, &h.from.name(), &h.to.name(), &h.outcome.as_ref(), &h.at],
            )
            .await?;
        }
        for (id, effect) in &commit.effects {
            let json = to_row(effect, "effect")?;
            // An effect id names one effect for ever: storing it again is a no-op.
            run(&tx,
                "INSERT INTO outbox (effect_id, video_id, event_id, kind, effect, next_attempt_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (effect_id) DO NOTHING",
                &[id, &video, &commit.event_id.to_string(), &effect.kind(), &json, &at],
            )
            .await?;
        }
        run(
            &tx,
            "UPDATE inbox SET state = $6, outcome = $2, note = $3, job_id = $4, processed_at = $5
             WHERE event_id = $1",
            &[
                &commit.event_id.to_string(),
                &commit.outcome.as_ref(),
                &commit.note,
                &commit.job.map(|j| j.to_string()),
                &at,
                &EntryState::Done.as_ref(),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn history(&self, video: &RecordId) -> Result<Vec<HistoryRow>, StoreError> {
        let client = self.pool.get().await?;
        let rows = rows(
            &client,
            "SELECT event_id, event, from_status, to_status, outcome, at FROM history
                 WHERE video_id = $1 ORDER BY id",
            &[&video.to_string()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                HistoryColumns {
                    event_id: r.try_get(0)?,
                    event: r.try_get(1)?,
                    from: r.try_get(2)?,
                    to: r.try_get(3)?,
                    outcome: r.try_get(4)?,
                    at: r.try_get(5)?,
                }
                .decode(Ok)
            })
            .collect()
    }

    async fn set_job_record(&self, job: JobId, record: &RecordId) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        run(
            &client,
            "UPDATE job_index SET record_id = $2 WHERE job_id = $1",
            &[&job.to_string(), &record.to_string()],
        )
        .await?;
        Ok(())
    }

    async fn job_location(
        &self,
        job: JobId,
    ) -> Result<Option<(RecordId, Option<RecordId>)>, StoreError> {
        let client = self.pool.get().await?;
        let row = row_opt(
            &client,
            "SELECT video_id, record_id FROM job_index WHERE job_id = $1",
            &[&job.to_string()],
        )
        .await?;
        row.map(|r| job_location(&r.try_get::<_, String>(0)?, r.try_get(1)?))
            .transpose()
    }

    async fn record_intent(&self, owner: &Owner) -> Result<RecordIntent, StoreError> {
        let owner = owner.to_string();
        let client = self.pool.get().await?;
        let inserted = client
            .execute(
                "INSERT INTO record_creations (owner, started_at)
                 VALUES ($1, COALESCE($2::timestamptz, now())) ON CONFLICT (owner) DO NOTHING",
                &[&owner, &self.at()],
            )
            .await?;
        let row = client
            .query_one(
                "SELECT started_at, record_id FROM record_creations WHERE owner = $1",
                &[&owner],
            )
            .await?;
        let since: DateTime<Utc> = row.try_get(0)?;
        let record: Option<String> = row.try_get(1)?;
        Ok(RecordIntent {
            since,
            fresh: inserted == 1,
            record: record_id_opt(record)?,
        })
    }

    async fn claim_record(&self, owner: &Owner, record: &RecordId) -> Result<bool, StoreError> {
        let owner = owner.to_string();
        let client = self.pool.get().await?;
        let record = record.to_string();
        // One statement: the unique index on record_id settles a race between two owners.
        let claimed = client
            .query_opt(
                "INSERT INTO record_creations (owner, record_id) VALUES ($1, $2)
                 ON CONFLICT (owner) DO UPDATE SET record_id = excluded.record_id
                 WHERE record_creations.record_id IS NULL
                 RETURNING owner",
                &[&owner, &record],
            )
            .await;
        match claimed {
            Ok(Some(_)) => Ok(true),
            Ok(None) => {
                let row = client
                    .query_opt(
                        "SELECT 1 FROM record_creations WHERE owner = $1 AND record_id = $2",
                        &[&owner, &record],
                    )
                    .await?;
                Ok(row.is_some())
            }
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn active_jobs_due(&self, now: DateTime<Utc>) -> Result<Vec<ActiveJob>, StoreError> {
        let client = self.pool.get().await?;
        let rows = rows(
            &client,
            "SELECT job_id, video_id, kind, external_id, since, checks FROM active_jobs
                 WHERE next_check_at <= $1 ORDER BY next_check_at LIMIT 500",
            &[&now],
        )
        .await?;
        rows.iter().map(active_job_row).collect()
    }

    async fn reschedule_check(
        &self,
        job: JobId,
        checks: u32,
        next: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        run(
            &client,
            "UPDATE active_jobs SET checks = $2, next_check_at = $3 WHERE job_id = $1",
            &[
                &job.to_string(),
                &(checks.min(i32::MAX as u32) as i32),
                &next,
            ],
        )
        .await?;
        Ok(())
    }
}

/// One `active_jobs` row, selected as `job_id, video_id, kind, external_id, since, checks`.
pub(super) fn active_job_row(r: &Row) -> Result<ActiveJob, StoreError> {
    let checks: i32 = r.try_get(5)?;
    ActiveJobColumns {
        job: r.try_get(0)?,
        video: r.try_get(1)?,
        kind: r.try_get(2)?,
        external_id: r.try_get(3)?,
        since: r.try_get(4)?,
        checks: checks.max(0) as u32,
    }
    .decode(Ok)
}
