//! [`Overview`] on PostgreSQL: the snapshot is JSON text, read as `jsonb`.

use super::outbox::{OUTBOX_COLS, outbox_row};
use super::snapshots::active_job_row;
use super::{row_one, rows};
use crate::store::StoreError;
use crate::store::decode::record_id;
use crate::store::overview::{FAILED_STATUSES, FailedVideo, Overview};

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
