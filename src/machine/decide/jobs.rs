//! What the steps do to a snapshot's jobs: start a stage, complete or fail a job.

use uuid::Uuid;

use super::Ctx;
use crate::domain::{JobStatus, JobType, MediaUrl, VideoStatus};
use crate::machine::{Effect, Job, JobId, Snapshot, mix_found_no_audio_track, submission_id};

pub(super) fn start_generation(
    next: &mut Snapshot,
    prompt: Option<String>,
    ctx: &Ctx,
    actions: &mut Vec<Effect>,
) -> JobId {
    let job = new_job(next, JobType::MusicGeneration, ctx);
    next.video.status = VideoStatus::GeneratingMusic;
    next.video.error_details = None;
    // An operator's prompt is kept for the retries of this video's music.
    let given = prompt.filter(|p| !p.trim().is_empty());
    if given.is_some() {
        next.video.requested_prompt = given.clone();
    }
    let prompt = given
        .or_else(|| next.video.requested_prompt.clone())
        .or_else(|| next.video.music_prompt.clone());
    actions.push(Effect::CreateGoapiTask { job, prompt });
    job
}

/// Callers guarantee the video has a source video.
pub(super) fn start_addition(
    next: &mut Snapshot,
    music: MediaUrl,
    ctx: &Ctx,
    actions: &mut Vec<Effect>,
) -> JobId {
    let video = next
        .video
        .source_video
        .clone()
        .expect("callers check the source video");
    let (job, sid) = new_addition(next, music.clone(), ctx);
    actions.push(mix_effect(next, job, sid, music, video, ctx));
    job
}

/// A `music_addition` job with its own submission id, the video `adding_music`; the mix
/// itself is [`mix_effect`], now or once a track check has answered.
pub(super) fn new_addition(next: &mut Snapshot, music: MediaUrl, ctx: &Ctx) -> (JobId, String) {
    let attempt = next.jobs_of(&JobType::MusicAddition).count() + 1;
    let sid = submission_id(&next.video.id, attempt);
    let job = new_job(next, JobType::MusicAddition, ctx);
    job_mut(next, job).submission_id = Some(sid.clone());
    next.video.status = VideoStatus::AddingMusic;
    next.video.music = Some(music);
    next.video.error_details = None;
    (job, sid)
}

pub(super) fn mix_effect(
    next: &Snapshot,
    job: JobId,
    submission_id: String,
    music: MediaUrl,
    video: MediaUrl,
    ctx: &Ctx,
) -> Effect {
    // Once a mix of this video found no audio track, its mixes are of the music alone.
    let voice = !next
        .jobs_of(&JobType::MusicAddition)
        .any(|j| j.error.as_deref().is_some_and(mix_found_no_audio_track));
    Effect::SubmitNcaMix {
        job,
        submission_id,
        video,
        music,
        volume: ctx.policy.volume,
        voice,
    }
}

pub(super) fn new_job(next: &mut Snapshot, kind: JobType, ctx: &Ctx) -> JobId {
    let id = JobId(Uuid::new_v5(&ctx.event_id, kind.name().as_bytes()));
    next.jobs.push(Job {
        id,
        kind,
        status: JobStatus::Pending,
        external_id: None,
        submission_id: None,
        error: None,
        created_at: ctx.now,
        ended_at: None,
        resubmissions: 0,
    });
    id
}

pub(super) fn job_mut(next: &mut Snapshot, id: JobId) -> &mut Job {
    next.jobs
        .iter_mut()
        .find(|j| j.id == id)
        .expect("job ids come from the snapshot")
}

pub(super) fn complete_job(next: &mut Snapshot, id: JobId, ctx: &Ctx) {
    let j = job_mut(next, id);
    j.status = JobStatus::Completed;
    j.ended_at = Some(ctx.now);
    end_track_check(next, id);
}

/// A job that ended has no track check waiting for it any more.
pub(super) fn end_track_check(next: &mut Snapshot, id: JobId) {
    if next.video.checking_track == Some(id) {
        next.video.checking_track = None;
    }
}

/// Fails a job and, through it, the video's stage; Error Details always says why.
pub(super) fn fail_job(next: &mut Snapshot, id: JobId, error: &str, ctx: &Ctx) {
    let error = if error.trim().is_empty() {
        "failed without a message".to_owned()
    } else {
        error.to_owned()
    };
    let j = job_mut(next, id);
    j.status = JobStatus::Failed;
    j.error = Some(error.clone());
    j.ended_at = Some(ctx.now);
    let failed = match j.kind {
        JobType::MusicAddition => VideoStatus::MusicAdditionFailed,
        _ => VideoStatus::MusicGenerationFailed,
    };
    next.video.status = failed;
    next.video.error_details = Some(error);
    end_track_check(next, id);
}
