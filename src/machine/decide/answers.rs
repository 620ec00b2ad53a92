//! The services' answers: GoAPI's task updates, NCA's finished mixes, and a call accepted
//! (its external id, fed back by the executor).

use super::jobs::{complete_job, end_track_check, fail_job, job_mut, start_addition};
use super::{Ctx, Rejection, Step};
use crate::domain::{JobStatus, JobType, VideoStatus};
use crate::machine::mix_found_no_audio_track;
use crate::machine::{
    Effect, JobId, NcaResult, NcaUpdate, Outcome, Snapshot, TaskStatus, TaskUpdate,
};

pub(super) fn goapi_update(
    next: &mut Snapshot,
    u: &TaskUpdate,
    ctx: &Ctx,
    actions: &mut Vec<Effect>,
) -> Step {
    let gen_kind = JobType::MusicGeneration;
    let matched = next
        .jobs_of(&gen_kind)
        .filter(|j| j.external_id.as_deref() == Some(u.task_id.as_str()))
        .last()
        .map(|j| j.id);
    let named = u
        .named_job
        .and_then(|id| next.job(id))
        .filter(|j| j.kind == gen_kind);
    let job = match (matched, named) {
        (Some(id), _) => id,
        // The job our own create call started, named by the URL we signed for it: GoAPI
        // can call back before the create-task reply (and its task id) is stored.
        (None, Some(j)) if j.external_id.is_none() => j.id,
        (None, Some(j)) => {
            return Step::new(Outcome::Stale, None).note(format!(
                "task {} is not the task of the job its URL names ({})",
                u.task_id,
                j.external_id.as_deref().unwrap_or("-")
            ));
        }
        // An unknown task never binds to a waiting job: it may be another task of the
        // account, another pipeline's, or one we did not order.
        (None, None) => match next.active_job(&gen_kind) {
            Some(j) if j.external_id.is_some() => {
                return Step::new(Outcome::Stale, None).note(format!(
                    "task {} is not the video's current music task ({})",
                    u.task_id,
                    j.external_id.as_deref().unwrap_or("-")
                ));
            }
            _ => {
                return Step::new(Outcome::Unmatched, None).note(format!(
                    "no music_generation job of this video has task {}, and the callback URL names none",
                    u.task_id
                ));
            }
        },
    };
    let current = next.job(job).cloned().expect("job found above");
    if current.status.is_final() {
        let same = matches!(
            (current.status, u.status),
            (JobStatus::Completed, TaskStatus::Completed) | (JobStatus::Failed, TaskStatus::Failed)
        );
        return if same {
            Step::new(Outcome::Duplicate, Some(job)).note(format!("job already {}", current.status))
        } else {
            Step::new(Outcome::Stale, Some(job)).note(format!(
                "task reported {} after the job was {}",
                u.status, current.status
            ))
        };
    }
    if next.video.status.is_final() {
        return Step::new(Outcome::Stale, Some(job))
            .note(format!("video is already {}", next.video.status.name()));
    }
    let j = job_mut(next, job);
    let bound = j.external_id.is_none();
    if bound {
        j.external_id = Some(u.task_id.clone());
    }
    match u.status {
        TaskStatus::Pending | TaskStatus::Processing | TaskStatus::Staged => {
            let mut changed = bound;
            if u.status != TaskStatus::Pending && j.status == JobStatus::Pending {
                j.status = JobStatus::Processing;
                changed = true;
            }
            if next.video.status != VideoStatus::GeneratingMusic
                && next.video.status != VideoStatus::AddingMusic
            {
                next.video.status = VideoStatus::GeneratingMusic;
                changed = true;
            }
            let outcome = if changed {
                Outcome::Applied
            } else {
                Outcome::Recorded
            };
            Step::new(outcome, Some(job))
        }
        TaskStatus::Failed => {
            let error = u
                .error
                .clone()
                .unwrap_or_else(|| "GoAPI reported the task failed without a message".into());
            fail_job(next, job, &error, ctx);
            Step::new(Outcome::Applied, Some(job))
        }
        TaskStatus::Completed => match u.usable_track().cloned() {
            None => {
                let error = format!(
                    "GoAPI completed the task with no usable track ({} track(s), none finished with an http(s) URL)",
                    u.tracks.len()
                );
                fail_job(next, job, &error, ctx);
                Step::new(Outcome::Applied, Some(job))
            }
            Some(music) => {
                complete_job(next, job, ctx);
                next.video.music = Some(music.clone());
                if next.video.source_video.is_none() {
                    next.video.status = VideoStatus::MusicAdditionFailed;
                    next.video.error_details = Some(Rejection::MissingSourceVideo.to_string());
                } else {
                    start_addition(next, music, ctx, actions);
                }
                Step::new(Outcome::Applied, Some(job))
            }
        },
    }
}

pub(super) fn nca_finished(
    next: &mut Snapshot,
    u: &NcaUpdate,
    ctx: &Ctx,
    actions: &mut Vec<Effect>,
) -> Step {
    let add = JobType::MusicAddition;
    let job = if let Some(named) = u.named_job {
        // A callback to a URL we signed completes only the submission that URL names.
        let Some(j) = next.job(named).filter(|j| j.kind == add) else {
            return Step::new(Outcome::Unmatched, None)
                .note("the callback URL names no music_addition job of this video");
        };
        if let (Some(said), Some(ours)) = (&u.submission_id, &j.submission_id)
            && said != ours
        {
            return Step::new(Outcome::Unmatched, None).note(format!(
                "the callback is for submission {said}, its URL for the job of submission {ours}"
            ));
        }
        j.id
    } else {
        // Token-less callbacks (development mode, the reference handler's URL shape).
        let by_submission = u.submission_id.as_deref().and_then(|sid| {
            next.jobs_of(&add)
                .find(|j| j.submission_id.as_deref() == Some(sid))
                .map(|j| j.id)
        });
        let by_external = || {
            u.nca_job_id.as_deref().and_then(|id| {
                next.jobs_of(&add)
                    .find(|j| j.external_id.as_deref() == Some(id))
                    .map(|j| j.id)
            })
        };
        let legacy = || {
            u.submission_id
                .is_none()
                .then(|| next.active_job(&add).map(|j| j.id))
                .flatten()
        };
        let Some(job) = by_submission.or_else(by_external).or_else(legacy) else {
            return Step::new(Outcome::Unmatched, None)
                .note("no music_addition job of this video matches the callback");
        };
        job
    };
    let current = next.job(job).cloned().expect("job found above");
    if current.status.is_final() {
        let same = matches!(
            (current.status, &u.result),
            (JobStatus::Completed, NcaResult::Succeeded { .. })
                | (JobStatus::Failed, NcaResult::Failed { .. })
        );
        return if same {
            Step::new(Outcome::Duplicate, Some(job)).note(format!("job already {}", current.status))
        } else {
            Step::new(Outcome::Stale, Some(job)).note(format!(
                "callback arrived after the job was {}",
                current.status
            ))
        };
    }
    if next.video.status != VideoStatus::AddingMusic {
        return Step::new(Outcome::Stale, Some(job)).note(format!(
            "video is {}, not adding_music",
            next.video.status.name()
        ));
    }
    if let (None, Some(id)) = (&current.external_id, &u.nca_job_id) {
        job_mut(next, job).external_id = Some(id.clone());
    }
    match &u.result {
        NcaResult::Succeeded { output } => {
            complete_job(next, job, ctx);
            next.video.status = VideoStatus::Completed;
            next.video.final_video = Some(output.clone());
            next.video.error_details = None;
        }
        NcaResult::Failed { error } => {
            // This mix was under the voice unless an earlier one already found no audio
            // track (then it was the music alone, and a music file without audio fails
            // the same way: that must end here, not submit again).
            let with_voice = !next
                .jobs_of(&add)
                .any(|j| j.id != job && j.error.as_deref().is_some_and(mix_found_no_audio_track));
            fail_job(next, job, error, ctx);
            // A video without an audio track cannot be mixed under; it gets the music
            // alone, once.
            if with_voice
                && mix_found_no_audio_track(error)
                && let (Some(music), Some(_)) = (next.video.music.clone(), &next.video.source_video)
            {
                start_addition(next, music, ctx, actions);
            }
        }
    }
    Step::new(Outcome::Applied, Some(job))
}

pub(super) fn external_accepted(next: &mut Snapshot, job: JobId, external_id: &str) -> Step {
    let Some(current) = next.job(job).cloned() else {
        return Step::new(Outcome::Unmatched, None).note("no such job");
    };
    // Jobs of other stages belong to whoever created them, as in give_up().
    if matches!(current.kind, JobType::Other(_)) {
        return Step::new(Outcome::Unmatched, None).note("not a music job");
    }
    match current.external_id.as_deref() {
        Some(id) if id == external_id => {
            return Step::new(Outcome::Duplicate, Some(job)).note("external id already recorded");
        }
        Some(other) => {
            return Step::new(Outcome::Stale, Some(job))
                .note(format!("job already has external id {other}"));
        }
        None => {}
    }
    // Final is final, for the jobs too: an acceptance that comes after its job ended, or
    // after the video did, is kept on record only.
    if current.status.is_final() {
        return Step::new(Outcome::Stale, Some(job)).note(format!(
            "job already {}; the service's id was {external_id}",
            current.status
        ));
    }
    if next.video.status.is_final() {
        return Step::new(Outcome::Stale, Some(job)).note(format!(
            "video is already {}; the service's id was {external_id}",
            next.video.status.name()
        ));
    }
    let j = job_mut(next, job);
    j.external_id = Some(external_id.to_owned());
    if j.status == JobStatus::Pending {
        j.status = JobStatus::Processing;
    }
    // Whatever the service took, no track check waits for this job any more.
    end_track_check(next, job);
    Step::new(Outcome::Applied, Some(job))
}
