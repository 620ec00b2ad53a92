//! [`Overview`] on SQLite: the snapshot is JSON text, read with SQLite's JSON functions.

use rusqlite::{Connection, OptionalExtension};

use super::outbox::{OUTBOX_COLS, outbox_row};
use super::parse_ts;
use super::snapshots::{ACTIVE_JOB_COLS, active_job_row};
use crate::store::StoreError;
use crate::store::decode::record_id;
use crate::store::overview::{FAILED_STATUSES, FailedVideo, Overview};

pub(super) fn overview(c: &Connection, limit: u32) -> Result<Overview, StoreError> {
    let limit = limit.clamp(1, 500);
    let mut o = Overview::default();
    let mut st = c.prepare_cached(
        "SELECT json_extract(snapshot, '$.video.status') AS s, COUNT(*) FROM video_state
         GROUP BY s ORDER BY s",
    )?;
    o.videos = st
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                r.get(1)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut st = c.prepare_cached(
        "SELECT json_extract(j.value, '$.kind') AS k, json_extract(j.value, '$.status') AS s,
                COUNT(*)
         FROM video_state, json_each(video_state.snapshot, '$.jobs') AS j
         GROUP BY k, s ORDER BY k, s",
    )?;
    o.jobs = st
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                r.get(2)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    o.inbox_pending = c.query_row(
        "SELECT COUNT(*) FROM inbox WHERE state = 'pending'",
        [],
        |r| r.get(0),
    )?;
    let oldest: Option<String> = c
        .query_row(
            "SELECT received_at FROM inbox WHERE state = 'pending' ORDER BY seq LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    o.oldest_pending = oldest.map(|t| parse_ts(&t)).transpose()?;
    let mut st = c.prepare_cached(&format!(
        "SELECT video_id, json_extract(snapshot, '$.video.status') AS s,
                json_extract(snapshot, '$.video.error_details'), updated_at
         FROM video_state WHERE s IN ('{}', '{}') ORDER BY updated_at DESC LIMIT {limit}",
        FAILED_STATUSES[0], FAILED_STATUSES[1]
    ))?;
    let failed = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in failed {
        let (video, status, error_details, at) = row?;
        o.failed.push(FailedVideo {
            video_id: record_id(&video, "video id")?,
            status,
            error_details,
            updated_at: parse_ts(&at)?,
        });
    }
    let mut st = c.prepare_cached(&format!(
        "SELECT {ACTIVE_JOB_COLS} FROM active_jobs ORDER BY since LIMIT {limit}"
    ))?;
    for row in st.query_map([], active_job_row)? {
        o.waiting.push(row??);
    }
    let mut st = c.prepare_cached(&format!(
        "SELECT {OUTBOX_COLS} FROM outbox o
         WHERE o.state = 'failed' OR (o.state = 'pending' AND (o.attempts > 0 OR o.started_at IS NOT NULL))
         ORDER BY o.seq DESC LIMIT {limit}"
    ))?;
    o.troubled = st
        .query_map([], outbox_row)?
        .map(|r| r?)
        .collect::<Result<_, _>>()?;
    Ok(o)
}
