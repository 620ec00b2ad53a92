//! First contact: a video the engine meets for the first time (no snapshot in its store)
//! is read from the base, with its jobs, and translated into the machine's types. The
//! only time the engine reads a video's jobs from the records (what it creates, it
//! remembers).

use std::collections::HashMap;

use uuid::Uuid;

use crate::domain::{JobStatus, JobType, RecordId, VideoStatus};
use crate::machine::{Job, JobId, Snapshot, Video};
use crate::records::{JobRecord, Records, RecordsError, VideoRecord};

/// A video the engine has not handled yet, as the base has it.
pub(crate) async fn snapshot_from_records(
    records: &Records,
    video: &RecordId,
) -> Result<Option<FirstContact>, RecordsError> {
    let Some(v) = records.get_video(video).await? else {
        return Ok(None);
    };
    let jobs = records.jobs_of_video(&v).await?;
    Ok(Some(first_contact(&v, jobs)))
}

/// [`snapshot_from_records`] for several videos at once, in two batched reads
/// (the videos, then all their jobs) instead of two reads per video. Every id asked
/// for is in the answer: `None` when the Videos table has no such record.
pub(crate) async fn snapshots_from_records(
    records: &Records,
    videos: &[RecordId],
) -> Result<HashMap<RecordId, Option<FirstContact>>, RecordsError> {
    let found = records.get_videos(videos).await?;
    let mut jobs = records.jobs_of_videos(&found).await?;
    let mut out: HashMap<RecordId, Option<FirstContact>> =
        videos.iter().map(|v| (v.clone(), None)).collect();
    for v in &found {
        let of_video = jobs.remove(&v.id).unwrap_or_default();
        out.insert(v.id.clone(), Some(first_contact(v, of_video)));
    }
    Ok(out)
}

/// Refreshes what others write on the video (the source video, the prompt) into a
/// snapshot the engine already has.
pub(crate) async fn refresh_inputs(
    records: &Records,
    s: &mut Snapshot,
) -> Result<bool, RecordsError> {
    let Some(v) = records.get_video(&s.video.id).await? else {
        return Ok(false);
    };
    s.video.source_video = v.combined_segments_video;
    s.video.music_prompt = v.music_prompt;
    Ok(true)
}

/// What first contact learns of a video: its snapshot, and the engine's ids for the job
/// records it found (for the store's job index).
pub(crate) type FirstContact = (Snapshot, Vec<(JobId, RecordId)>);

fn first_contact(v: &VideoRecord, jobs: Vec<JobRecord>) -> FirstContact {
    let mut known = Vec::new();
    let mut snapshot = Snapshot::new(video_from_record(v));
    for j in jobs {
        if !matches!(
            j.job_type,
            JobType::MusicGeneration | JobType::MusicAddition
        ) {
            continue;
        }
        let id = j
            .job_id
            .as_deref()
            .and_then(|s| Uuid::parse_str(s).ok())
            .map(JobId)
            .unwrap_or_else(|| JobId::for_record(&j.id));
        // A Status this mapping does not know (a spelling another tool uses) says
        // nothing reliable: the job is left out rather than taken as running.
        let status = match (&j.status, &j.status_text) {
            (Some(s), _) => *s,
            (None, None) => JobStatus::Pending,
            (None, Some(text)) => {
                tracing::warn!(job_record = %j.id, status = %text, "job status not in the mapping; job ignored");
                continue;
            }
        };
        known.push((id, j.id.clone()));
        snapshot.jobs.push(Job {
            id,
            kind: j.job_type,
            status,
            external_id: j.external_job_id,
            submission_id: None,
            error: j.error_details,
            created_at: crate::clock::now(),
            ended_at: None,
            resubmissions: 0,
        });
    }
    (snapshot, known)
}

fn video_from_record(v: &VideoRecord) -> Video {
    // A base without a Status field still works: infer the stage from the results.
    let status = v.status.clone().unwrap_or(if v.final_video.is_some() {
        VideoStatus::Completed
    } else {
        VideoStatus::SegmentsCombined
    });
    Video {
        id: v.id.clone(),
        status,
        source_video: v.combined_segments_video.clone(),
        music_prompt: v.music_prompt.clone(),
        music: v.music.clone(),
        final_video: v.final_video.clone(),
        error_details: v.error_details.clone(),
        retries: 0,
        requested_prompt: None,
        checking_track: None,
    }
}
