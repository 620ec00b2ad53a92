//! [`Overview`] on PostgreSQL: the snapshot is JSON text, read as `jsonb`.

use super::outbox::{OUTBOX_COLS, outbox_row};
use super::snapshots::active_job_row;
use super::{row_one, rows};
use crate::domain::JobType;
use crate::store::StoreError;
use crate::store::decode::{external_ids, record_id};
use crate::store::overview::{FAILED_STATUSES, FailedVideo, Overview, VideoQuery, VideoRow};

pub(super) async fn overview(
    c: &impl deadpool_postgres::GenericClient,
    limit: u32,
) -> Result<Overview, StoreError> {
    let limit = i64::from(limit.clamp(1, 500));
    let mut o = Overview::default();
    for r in rows(
        c,
        "SELECT snapshot::jsonb -> 'video' ->> 'status' AS s, COUNT(*) FROM video_state
         GROUP BY s ORDER BY s",
        &[],
    )
    .await?
    {
        o.videos.push((
            r.try_get::<_, Option<String>>(0)?.unwrap_or_default(),
            r.try_get(1)?,
        ));
    }
    for r in rows(
        c,
        "SELECT j ->> 'kind' AS k, j ->> 'status' AS s, COUNT(*)
         FROM video_state, jsonb_array_elements(snapshot::jsonb -> 'jobs') AS j
         GROUP BY k, s ORDER BY k, s",
        &[],
    )
    .await?
    {
        o.jobs.push((
            r.try_get::<_, Option<String>>(0)?.unwrap_or_default(),
            r.try_get::<_, Option<String>>(1)?.unwrap_or_default(),
            r.try_get(2)?,
        ));
    }
    let r = row_one(
        c,
        "SELECT (SELECT COUNT(*) FROM inbox WHERE state = 'pending'),
                (SELECT received_at FROM inbox WHERE state = 'pending' ORDER BY seq LIMIT 1)",
        &[],
    )
    .await?;
    o.inbox_pending = r.try_get(0)?;
    o.oldest_pending = r.try_get(1)?;
    let failed: Vec<String> = FAILED_STATUSES.iter().map(|s| s.to_string()).collect();
    for r in rows(
        c,
        "SELECT video_id, snapshot::jsonb -> 'video' ->> 'status' AS s,
                snapshot::jsonb -> 'video' ->> 'error_details', updated_at
         FROM video_state WHERE snapshot::jsonb -> 'video' ->> 'status' = ANY($1)
         ORDER BY updated_at DESC LIMIT $2",
        &[&failed, &limit],
    )
    .await?
    {
        let video: String = r.try_get(0)?;
        o.failed.push(FailedVideo {
            video_id: record_id(&video, "video id")?,
            status: r.try_get(1)?,
            error_details: r.try_get(2)?,
            updated_at: r.try_get(3)?,
        });
    }
    for r in rows(
        c,
        "SELECT job_id, video_id, kind, external_id, since, checks FROM active_jobs
         ORDER BY since LIMIT $1",
        &[&limit],
    )
    .await?
    {
        o.waiting.push(active_job_row(&r)?);
    }
    let sql = format!(
        "SELECT {OUTBOX_COLS} FROM outbox
         WHERE state = 'failed' OR (state = 'pending' AND (attempts > 0 OR started_at IS NOT NULL))
         ORDER BY seq DESC LIMIT $1"
    );
    for r in rows(c, &sql, &[&limit]).await? {
        o.troubled.push(outbox_row(&r)?);
    }
    Ok(o)
}

/// One page of the videos list ([`VideoQuery`]): the filters are ANDed, `failed` and
/// `stuck` ORed with each other; every value is a bound parameter.
pub(super) async fn videos(
    c: &impl deadpool_postgres::GenericClient,
    q: &VideoQuery,
) -> Result<Vec<VideoRow>, StoreError> {
    use chrono::{DateTime, Utc};
    use tokio_postgres::types::ToSql;

    enum P {
        Text(String),
        Time(DateTime<Utc>),
    }
    let mut p: Vec<P> = Vec::new();
    let mut arg = |v: P| {
        p.push(v);
        format!("${}", p.len())
    };
    let mut sql = String::from(
        "SELECT v.video_id, snapshot::jsonb -> 'video' ->> 'status',
                snapshot::jsonb -> 'video' ->> 'error_details',
                (snapshot::jsonb -> 'video' ->> 'retries')::bigint, v.updated_at,
                (SELECT json_agg(j ->> 'external_id' ORDER BY n)::text
                 FROM jsonb_array_elements(v.snapshot::jsonb -> 'jobs') WITH ORDINALITY AS t(j, n)
                 WHERE j ->> 'external_id' IS NOT NULL),
                (SELECT MIN(a.since) FROM active_jobs a WHERE a.video_id = v.video_id)
         FROM video_state v WHERE TRUE",
    );
    if let Some(status) = &q.status {
        let a = arg(P::Text(status.clone()));
        sql.push_str(&format!(
            " AND snapshot::jsonb -> 'video' ->> 'status' = {a}"
        ));
    }
    let mut job = Vec::new();
    if let Some(kind) = &q.job_type {
        job.push(format!("j ->> 'kind' = {}", arg(P::Text(kind.clone()))));
    }
    if let Some(status) = &q.job_status {
        job.push(format!("j ->> 'status' = {}", arg(P::Text(status.clone()))));
    }
    if !job.is_empty() {
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM jsonb_array_elements(v.snapshot::jsonb -> 'jobs') AS j
                          WHERE {})",
            job.join(" AND ")
        ));
    }
    let mut trouble = Vec::new();
    if q.failed {
        trouble.push(format!(
            "snapshot::jsonb -> 'video' ->> 'status' IN ('{}', '{}')",
            FAILED_STATUSES[0], FAILED_STATUSES[1]
        ));
    }
    if let Some(cut) = &q.stuck {
        let addition = arg(P::Text(JobType::MusicAddition.to_string()));
        let (nca, goapi) = (arg(P::Time(cut.nca)), arg(P::Time(cut.goapi)));
        trouble.push(format!(
            "EXISTS (SELECT 1 FROM active_jobs a WHERE a.video_id = v.video_id
                     AND a.since < CASE WHEN a.kind = {addition} THEN {nca}::timestamptz
                                        ELSE {goapi}::timestamptz END)"
        ));
    }
    if !trouble.is_empty() {
        sql.push_str(&format!(" AND ({})", trouble.join(" OR ")));
    }
    if let Some(t) = q.changed_before {
        let a = arg(P::Time(t));
        sql.push_str(&format!(" AND v.updated_at < {a}"));
    }
    if let Some(t) = q.changed_since {
        let a = arg(P::Time(t));
        sql.push_str(&format!(" AND v.updated_at >= {a}"));
    }
    if let Some(s) = &q.search {
        let a = arg(P::Text(s.clone()));
        sql.push_str(&format!(
            " AND (v.video_id = {a} OR v.video_id IN
                   (SELECT video_id FROM job_index WHERE external_id = {a}))"
        ));
    }
    if let Some(after) = &q.after {
        let (t, v) = (
            arg(P::Time(after.updated_at)),
            arg(P::Text(after.video_id.clone())),
        );
        sql.push_str(&format!(" AND (v.updated_at, v.video_id) < ({t}, {v})"));
    }
    sql.push_str(&format!(
        " ORDER BY v.updated_at DESC, v.video_id DESC LIMIT {}",
        q.limit.clamp(1, 500)
    ));
    let params: Vec<&(dyn ToSql + Sync)> = p
        .iter()
        .map(|v| match v {
            P::Text(s) => s as &(dyn ToSql + Sync),
            P::Time(t) => t as &(dyn ToSql + Sync),
        })
        .collect();
    let mut out = Vec::new();
    for r in rows(c, &sql, &params).await? {
        let video: String = r.try_get(0)?;
        let ids: Option<String> = r.try_get(5)?;
        out.push(VideoRow {
            video_id: record_id(&video, "video id")?,
            status: r.try_get::<_, Option<String>>(1)?.unwrap_or_default(),
            error_details: r.try_get(2)?,
            retries: r.try_get::<_, Option<i64>>(3)?.unwrap_or(0),
            updated_at: r.try_get(4)?,
            external_ids: external_ids(ids.as_deref())?,
            waiting_since: r.try_get(6)?,
        });
    }
    Ok(out)
}
