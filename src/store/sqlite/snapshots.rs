//! The embedded snapshots: the worker's commit (snapshot, job index, active jobs, history,
//! effects and the entry's outcome in one transaction), the reads of them, and the records
//! created on a base with no key field.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{Cached, SqliteStore, parse_ts, ts};
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
impl Snapshots for SqliteStore {
    async fn snapshot(&self, video: &RecordId) -> Result<Option<Snapshot>, StoreError> {
        let video = video.to_string();
        self.read(move |c| {
            let s: Option<String> = c
                .query_row_cached(
                    "SELECT snapshot FROM video_state WHERE video_id = ?1",
                    [&video],
                    |r| r.get(0),
                )
                .optional()?;
            s.map(|s| from_row(&s, "snapshot")).transpose()
        })
        .await
    }

    /// Stores a processed entry's decision: snapshot, history, effects and the entry's
    /// outcome, all or nothing.
    async fn commit(&self, commit: Commit, lease: &Lease) -> Result<(), StoreError> {
        // A local lease is only ever given back by dropping it: holding the video's worker
        // lease is proof enough.
        if lease.lane() != Lane::Worker || lease.video() != &commit.video_id {
            return Err(StoreError::LeaseLost(commit.video_id.to_string()));
        }
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let video = commit.video_id.to_string();
            let at = ts(commit.at);
            if let Some(s) = &commit.snapshot {
                let json = to_row(s, "snapshot")?;
                tx.execute_cached(
                    "INSERT INTO video_state (video_id, snapshot, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(video_id) DO UPDATE SET snapshot = ?2, updated_at = ?3",
                    params![video, json, at],
                )?;
                for j in &s.jobs {
                    // Rewritten only when the external id changes (a job gets one once).
                    tx.execute_cached(
                        "INSERT INTO job_index (job_id, video_id, external_id) VALUES (?1, ?2, ?3)
                         ON CONFLICT(job_id) DO UPDATE SET external_id = excluded.external_id
                         WHERE job_index.external_id IS NOT excluded.external_id",
                        params![j.id.to_string(), video, j.external_id],
                    )?;
                    // The reconciler's worklist: jobs still waiting for their service.
                    if j.status.is_active() {
                        tx.execute_cached(
                            "INSERT INTO active_jobs (job_id, video_id, kind, external_id, since, next_check_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                             ON CONFLICT(job_id) DO UPDATE SET external_id = excluded.external_id",
                            params![j.id.to_string(), video, j.kind.name(), j.external_id, at],
                        )?;
                    } else {
                        tx.execute_cached("DELETE FROM active_jobs WHERE job_id = ?1", [j.id.to_string()])?;
                    }
                }
            }
            for (job, record) in &commit.job_records {
                tx.execute_cached(
                    "UPDATE job_index SET record_id = ?2 WHERE job_id = ?1",
                    params![job.to_string(), record.to_string()],
                )?;
            }
            if let Some(h) = &commit.history {
                tx.execute_cached(
                    "INSERT INTO history (video_id, event_id, event, from_status, to_status, outcome, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![video, h.event_id.to_string(), h.event, h.from.name(), h.to.name(), h.outcome.as_ref(), ts(h.at)],
                )?;
            }
            for (id, effect) in &commit.effects {
                let json = to_row(effect, "effect")?;
                // An effect id names one effect for ever: storing it again is a no-op.
                tx.execute_cached(
                    "INSERT INTO outbox (effect_id, video_id, event_id, kind, effect, next_attempt_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT(effect_id) DO NOTHING",
                    params![id, video, commit.event_id.to_string(), effect.kind(), json, at],
                )?;
            }
            tx.execute_cached(
                "UPDATE inbox SET state = ?6, outcome = ?2, note = ?3, job_id = ?4, processed_at = ?5
                 WHERE event_id = ?1",
                params![
                    commit.event_id.to_string(),
                    commit.outcome.as_ref(),
                    commit.note,
                    commit.job.map(|j| j.to_string()),
                    at,
                    EntryState::Done.as_ref()
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn history(&self, video: &RecordId) -> Result<Vec<HistoryRow>, StoreError> {
        let video = video.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT event_id, event, from_status, to_status, outcome, at FROM history
                 WHERE video_id = ?1 ORDER BY id",
            )?;
            let rows = st.query_map([video], |r| {
                Ok(HistoryColumns {
                    event_id: r.get(0)?,
                    event: r.get(1)?,
                    from: r.get(2)?,
                    to: r.get(3)?,
                    outcome: r.get(4)?,
                    at: r.get::<_, String>(5)?,
                })
            })?;
            rows.map(|r| r?.decode(|t| parse_ts(&t))).collect()
        })
        .await
    }

    async fn set_job_record(&self, job: JobId, record: &RecordId) -> Result<(), StoreError> {
        let record = record.to_string();
        self.with(move |c| {
            c.execute_cached(
                "UPDATE job_index SET record_id = ?2 WHERE job_id = ?1",
                params![job.to_string(), record],
            )?;
            Ok(())
        })
        .await
    }

    /// The job's video and, once written, its Airtable record id.
    async fn job_location(
        &self,
        job: JobId,
    ) -> Result<Option<(RecordId, Option<RecordId>)>, StoreError> {
        self.read(move |c| {
            let row: Option<(String, Option<String>)> = c
                .query_row_cached(
                    "SELECT video_id, record_id FROM job_index WHERE job_id = ?1",
                    [job.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            row.map(|(v, r)| job_location(&v, r)).transpose()
        })
        .await
    }

    async fn record_intent(&self, owner: &Owner) -> Result<RecordIntent, StoreError> {
        let owner = owner.to_string();
        // Durable: it precedes a create that Airtable cannot deduplicate.
        self.with_durably(move |c| {
            let inserted = c.execute_cached(
                "INSERT OR IGNORE INTO record_creations (owner, started_at) VALUES (?1, ?2)",
                params![owner, ts(crate::clock::now())],
            )?;
            let (since, record): (String, Option<String>) = c.query_row_cached(
                "SELECT started_at, record_id FROM record_creations WHERE owner = ?1",
                [&owner],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(RecordIntent {
                since: parse_ts(&since)?,
                fresh: inserted == 1,
                record: record_id_opt(record)?,
            })
        })
        .await
    }

    async fn claim_record(&self, owner: &Owner, record: &RecordId) -> Result<bool, StoreError> {
        let (owner, record) = (owner.to_string(), record.to_string());
        self.with(move |c| {
            let taken: Option<String> = c
                .query_row_cached(
                    "SELECT owner FROM record_creations WHERE record_id = ?1",
                    [&record],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(other) = taken {
                return Ok(other == owner);
            }
            let n = c.execute_cached(
                "INSERT INTO record_creations (owner, started_at, record_id) VALUES (?1, ?2, ?3)
                 ON CONFLICT (owner) DO UPDATE SET record_id = excluded.record_id
                 WHERE record_creations.record_id IS NULL",
                params![owner, ts(crate::clock::now()), record],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Active jobs whose next check is due.
    async fn active_jobs_due(&self, now: DateTime<Utc>) -> Result<Vec<ActiveJob>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ACTIVE_JOB_COLS} FROM active_jobs
                 WHERE next_check_at <= ?1 ORDER BY next_check_at LIMIT 500"
            ))?;
            st.query_map([ts(now)], active_job_row)?
                .map(|row| row?)
                .collect()
        })
        .await
    }

    async fn reschedule_check(
        &self,
        job: JobId,
        checks: u32,
        next: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute_cached(
                "UPDATE active_jobs SET checks = ?2, next_check_at = ?3 WHERE job_id = ?1",
                params![job.to_string(), checks, ts(next)],
            )?;
            Ok(())
        })
        .await
    }
}

pub(super) const ACTIVE_JOB_COLS: &str = "job_id, video_id, kind, external_id, since, checks";

/// One `active_jobs` row, selected as [`ACTIVE_JOB_COLS`]. An unreadable id or time is an
/// error of the row (the caller's `collect` stops at it), never a panic.
pub(super) fn active_job_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<ActiveJob, StoreError>> {
    let columns = ActiveJobColumns {
        job: r.get(0)?,
        video: r.get(1)?,
        kind: r.get(2)?,
        external_id: r.get(3)?,
        since: r.get::<_, String>(4)?,
        checks: r.get(5)?,
    };
    Ok(columns.decode(|t| parse_ts(&t)))
}
