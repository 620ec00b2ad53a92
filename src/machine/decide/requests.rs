//! The operator's requests: music for a video, a retry of its failed stage, and the answer
//! to the track check a retried mix waits for.

use super::jobs::{fail_job, mix_effect, new_addition, start_generation};
use super::{Ctx, Rejection, Step};
use crate::domain::{JobStatus, JobType, VideoStatus};
use crate::machine::{Effect, JobId, Outcome, RetryFrom, Snapshot, TrackCheck};

pub(super) fn music_requested(
    next: &mut Snapshot,
    prompt: &Option<String>,
    ctx: &Ctx,
    actions: &mut Vec<Effect>,
) -> Result<Step, Rejection> {
    match &next.video.status {
        VideoStatus::GeneratingMusic | VideoStatus::AddingMusic => {
            return Err(Rejection::InProgress {
                status: next.video.status.clone(),
            });
        }
        VideoStatus::Completed => return Err(Rejection::AlreadyCompleted),
        failed if failed.is_failed() => {
            return Err(Rejection::UseRetry {
                status: failed.clone(),
            });
        }
        _ => {}
    }
    if next.active_job(&JobType::MusicGeneration).is_some() {
        return Err(Rejection::JobInProgress {
            kind: JobType::MusicGeneration,
        });
    }
    if next.video.source_video.is_none() {
        return Err(Rejection::MissingSourceVideo);
    }
    let job = start_generation(next, prompt.clone(), ctx, actions);
    Ok(Step::new(Outcome::Applied, Some(job)))
}

/// A retry of a failed mix first checks that the music's track is still there: GoAPI's
/// track URLs are temporary, and a mix of an expired one fails after a paid round trip. The
/// `music_addition` job is created now and its mix waits for `TrackChecked`. `from: music`
/// asks for new music whatever the video has.
pub(super) fn retry_requested(
    next: &mut Snapshot,
    from: Option<RetryFrom>,
    ctx: &Ctx,
    actions: &mut Vec<Effect>,
) -> Result<Step, Rejection> {
    if !next.video.status.is_failed() {
        return Err(Rejection::NothingToRetry {
            status: next.video.status.clone(),
        });
    }
    if next.video.retries >= ctx.policy.max_retries {
        return Err(Rejection::RetryLimit {
            limit: ctx.policy.max_retries,
        });
    }
    let mix = match (from, &next.video.status, next.video.music.clone()) {
        (Some(RetryFrom::Music), _, _) => None,
        (_, VideoStatus::MusicAdditionFailed, Some(music)) => Some(music),
        (Some(RetryFrom::Mix), status, _) => {
            return Err(Rejection::NothingToMix {
                status: status.clone(),
            });
        }
        (None, _, _) => None,
    };
    if mix.is_some() && next.video.source_video.is_none() {
        return Err(Rejection::MissingSourceVideo);
    }
    supersede_active_jobs(next, ctx);
    let step = match mix {
        Some(music) => {
            let (job, _) = new_addition(next, music.clone(), ctx);
            next.video.checking_track = Some(job);
            actions.push(Effect::CheckTrack { job, music });
            Step::new(Outcome::Applied, Some(job))
                .note("checking that the music's track is still there before mixing it again")
        }
        None => {
            let job = start_generation(next, None, ctx, actions);
            let step = Step::new(Outcome::Applied, Some(job));
            if from == Some(RetryFrom::Music) {
                step.note("new music, as the retry asked")
            } else {
                step
            }
        }
    };
    next.video.retries += 1;
    Ok(step)
}

/// A retry starts the stage afresh: a music job still active from before (left by an older
/// handler, imported with the video, or never answered) is superseded, so that its late
/// news is `stale` instead of starting a second mix beside the retry's, or completing the
/// video with a track while the music the retry paid for is thrown away.
fn supersede_active_jobs(next: &mut Snapshot, ctx: &Ctx) {
    let failed = next.video.status.name().to_owned();
    for j in next.jobs.iter_mut().filter(|j| {
        j.status.is_active() && matches!(j.kind, JobType::MusicGeneration | JobType::MusicAddition)
    }) {
        j.status = JobStatus::Failed;
        j.error = Some(format!(
            "superseded: the operator retried the video from {failed}; news of this job no longer changes it"
        ));
        j.ended_at = Some(ctx.now);
        if next.video.checking_track == Some(j.id) {
            next.video.checking_track = None;
        }
    }
}

/// The answer to a retry's track check: mix the track unless its host said it is gone,
/// then order new music instead (part of the same retry: it is not counted again). An
/// answer that proves nothing mixes the track anyway: new music costs a GoAPI task and
/// replaces music the operator may have chosen, so it is bought only on proof; if the track
/// is gone after all, NCA's download fails and the video is back in music_addition_failed.
pub(super) fn track_checked(
    next: &mut Snapshot,
    job: JobId,
    check: &TrackCheck,
    ctx: &Ctx,
    actions: &mut Vec<Effect>,
) -> Step {
    let Some(current) = next
        .job(job)
        .filter(|j| j.kind == JobType::MusicAddition)
        .cloned()
    else {
        return Step::new(Outcome::Unmatched, None).note("no music_addition job of this video");
    };
    // Only a video still adding music waits for a check; whatever ended the stage
    // meanwhile stands.
    if next.video.status != VideoStatus::AddingMusic {
        return Step::new(Outcome::Stale, Some(job)).note(format!(
            "video is {}, not adding_music",
            next.video.status.name()
        ));
    }
    if next.video.checking_track != Some(job) {
        return Step::new(Outcome::Stale, Some(job)).note(format!(
            "no track check waits for this job (it is {}; answered already, or never asked)",
            current.status
        ));
    }
    next.video.checking_track = None;
    let ready = match (
        current.submission_id.clone(),
        next.video.music.clone(),
        next.video.source_video.clone(),
    ) {
        (Some(sid), Some(music), Some(video)) => Some((sid, music, video)),
        _ => None,
    };
    match (check, ready) {
        (TrackCheck::Gone { detail }, _) => {
            let error = format!(
                "the music's track is gone ({detail}): GoAPI's track URLs are temporary; new music is ordered"
            );
            fail_job(next, job, &error, ctx);
            let generation = start_generation(next, None, ctx, actions);
            Step::new(Outcome::Applied, Some(job))
                .note(format!("{error} (music_generation job {generation})"))
        }
        (TrackCheck::Reachable { detail }, Some((sid, music, video))) => {
            actions.push(mix_effect(next, job, sid, music, video, ctx));
            Step::new(Outcome::Applied, Some(job)).note(format!(
                "the music's track is still there ({detail}): mixing it"
            ))
        }
        (TrackCheck::Unknown { detail }, Some((sid, music, video))) => {
            actions.push(mix_effect(next, job, sid, music, video, ctx));
            Step::new(Outcome::Applied, Some(job)).note(format!(
                "could not tell whether the music's track is still there ({detail}); mixing it anyway: new music is ordered only when the track's host says it is gone"
            ))
        }
        // A retry's check starts only with both; a snapshot without them cannot mix.
        (_, None) => {
            let error = "nothing to mix: the video has no music or no Combined Segments Video";
            fail_job(next, job, error, ctx);
            Step::new(Outcome::Applied, Some(job))
        }
    }
}
