//! [`Overview`] on SQLite: the snapshot is JSON text, read with SQLite's JSON functions.

use rusqlite::{Connection, OptionalExtension};

use super::outbox::{OUTBOX_COLS, outbox_row};
use super::snapshots::{ACTIVE_JOB_COLS, active_job_row};
use super::{Cached, parse_ts, ts};
use crate::domain::JobType;
use crate::store::decode::{external_ids, record_id};
use crate::store::overview::{FAILED_STATUSES, FailedVideo, Overview, VideoQuery, VideoRow};
use crate::store::{EffectState, EntryState, StoreError};

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
    o.inbox_pending = c.query_row_cached(
        "SELECT COUNT(*) FROM inbox WHERE state = ?1",
        [EntryState::Pending.as_ref()],
        |r| r.get(0),
    )?;
    let oldest: Option<String> = c
        .query_row_cached(
            "SELECT received_at FROM inbox WHERE state = ?1 ORDER BY seq LIMIT 1",
            [EntryState::Pending.as_ref()],
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
         WHERE o.state = ?1 OR (o.state = ?2 AND (o.attempts > 0 OR o.started_at IS NOT NULL))
         ORDER BY o.seq DESC LIMIT {limit}"
    ))?;
    o.troubled = st
        .query_map(
            [EffectState::Failed.as_ref(), EffectState::Pending.as_ref()],
            outbox_row,
        )?
        .map(|r| r?)
        .collect::<Result<_, _>>()?;
    Ok(o)
}

/// One page of the videos list ([`VideoQuery`]): the filters are ANDed, `failed` and
/// `stuck` ORed with each other; every value is a bound parameter.
pub(super) fn videos(c: &Connection, q: &VideoQuery) -> Result<Vec<VideoRow>, StoreError> {
    let limit = q.limit.clamp(1, 500);
    let mut sql = String::from(
        "SELECT v.video_id, json_extract(v.snapshot, '$.video.status'),
                json_extract(v.snapshot, '$.video.error_details'),
                json_extract(v.snapshot, '$.video.retries'), v.updated_at,
                (SELECT json_group_array(json_extract(j.value, '$.external_id'))
                 FROM json_each(v.snapshot, '$.jobs') AS j
                 WHERE json_extract(j.value, '$.external_id') IS NOT NULL),
                (SELECT MIN(a.since) FROM active_jobs a WHERE a.video_id = v.video_id)
         FROM video_state v WHERE 1 = 1",
    );
    let mut p: Vec<String> = Vec::new();
    if let Some(status) = &q.status {
        sql.push_str(" AND json_extract(v.snapshot, '$.video.status') = ?");
        p.push(status.clone());
    }
    let mut job = Vec::new();
    if let Some(kind) = &q.job_type {
        job.push("json_extract(j.value, '$.kind') = ?");
        p.push(kind.clone());
    }
    if let Some(status) = &q.job_status {
        job.push("json_extract(j.value, '$.status') = ?");
        p.push(status.clone());
    }
    if !job.is_empty() {
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM json_each(v.snapshot, '$.jobs') AS j WHERE {})",
            job.join(" AND ")
        ));
    }
    let mut trouble = Vec::new();
    if q.failed {
        trouble.push(format!(
            "json_extract(v.snapshot, '$.video.status') IN ('{}', '{}')",
            FAILED_STATUSES[0], FAILED_STATUSES[1]
        ));
    }
    if let Some(cut) = &q.stuck {
        trouble.push(
            "EXISTS (SELECT 1 FROM active_jobs a WHERE a.video_id = v.video_id
                     AND a.since < CASE WHEN a.kind = ? THEN ? ELSE ? END)"
                .into(),
        );
        p.push(JobType::MusicAddition.to_string());
        p.push(ts(cut.nca));
        p.push(ts(cut.goapi));
    }
    if !trouble.is_empty() {
        sql.push_str(&format!(" AND ({})", trouble.join(" OR ")));
    }
    if let Some(t) = q.changed_before {
        sql.push_str(" AND v.updated_at < ?");
        p.push(ts(t));
    }
    if let Some(t) = q.changed_since {
        sql.push_str(" AND v.updated_at >= ?");
        p.push(ts(t));
    }
    if let Some(s) = &q.search {
        sql.push_str(
            " AND (v.video_id = ? OR v.video_id IN
                   (SELECT video_id FROM job_index WHERE external_id = ?))",
        );
        p.push(s.clone());
        p.push(s.clone());
    }
    if let Some(after) = &q.after {
        sql.push_str(" AND (v.updated_at, v.video_id) < (?, ?)");
        p.push(ts(after.updated_at));
        p.push(after.video_id.clone());
    }
    sql.push_str(&format!(
        " ORDER BY v.updated_at DESC, v.video_id DESC LIMIT {limit}"
    ));
    let mut st = c.prepare_cached(&sql)?;
    let rows = st.query_map(rusqlite::params_from_iter(p.iter()), |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, Option<String>>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (video, status, error_details, retries, at, ids, waiting) = row?;
        out.push(VideoRow {
            video_id: record_id(&video, "video id")?,
            status: status.unwrap_or_default(),
            error_details,
            retries: retries.unwrap_or(0),
            updated_at: parse_ts(&at)?,
            external_ids: external_ids(ids.as_deref())?,
            waiting_since: waiting.map(|t| parse_ts(&t)).transpose()?,
        });
    }
    Ok(out)
}
