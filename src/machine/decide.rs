use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    Effect, Event, Job, JobId, JobPatch, NcaResult, NcaUpdate, RetryFrom, Snapshot, TaskStatus,
    TaskUpdate, TrackCheck, VideoPatch, submission_id,
};
use crate::domain::{JobStatus, JobType, MediaUrl, VideoStatus, snake_case_enum};

/// Everything decide() would otherwise have to read from the world.
#[derive(Debug, Clone, PartialEq)]
pub struct Ctx {
    pub now: DateTime<Utc>,
    /// The id of the event being decided; new job ids are derived from it, so deciding
    /// the same event on the same snapshot always names the same jobs.
    pub event_id: Uuid,
    /// Whether the event came in as a webhook, whose Webhook Events record must be closed.
    pub from_webhook: bool,
    pub policy: Policy,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Music volume under the video's own audio (NCA `volume=` filter argument).
    pub volume: f64,
    /// How many redrives a video may have in all.
    pub max_retries: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            volume: 0.2,
            max_retries: 3,
        }
    }
}

snake_case_enum! {
    /// What an event did. Duplicates and stale events are outcomes, not errors: they are
    /// recorded in the event log like any other.
    #[derive(Hash, Deserialize)]
    pub enum Outcome {
        /// The state changed.
        Applied,
        /// Valid news that changes nothing (an intermediate status); kept on record only.
        Recorded,
        /// The same news again.
        Duplicate,
        /// News that the video has already moved past (an older task, a late intermediate status).
        Stale,
        /// No job of this video matches the event.
        Unmatched,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    /// The snapshot after the event; equal to the input unless the outcome is `Applied`.
    pub next: Snapshot,
    /// In the order the executor must perform them.
    pub effects: Vec<Effect>,
    /// The job the event concerned, for the event log.
    pub job: Option<JobId>,
    /// Why, in words, for the event log (e.g. what made an event stale).
    pub note: Option<String>,
}

/// A command that cannot apply in the video's current state. Webhook events are never
/// rejected: whatever they carry, they end as a [`Decision`] with an outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("music for this video is already in progress ({status})")]
    InProgress { status: String },
    #[error("this video is already completed")]
    AlreadyCompleted,
    #[error("this video's music stage failed ({status}); ask for a retry instead")]
    UseRetry { status: String },
    #[error("nothing to retry: the video is {status}")]
    NothingToRetry { status: String },
    #[error(
        "no mix to retry: the video is {status} without music to mix again; retry without \"from\", or with \"from\": \"music\""
    )]
    NothingToMix { status: String },
    #[error("retry limit reached ({limit} retries)")]
    RetryLimit { limit: u32 },
    #[error("the video has no Combined Segments Video to mix music under")]
    MissingSourceVideo,
}

struct Step {
    outcome: Outcome,
    job: Option<JobId>,
    note: Option<String>,
}

impl Step {
    fn new(outcome: Outcome, job: Option<JobId>) -> Self {
        Self {
            outcome,
            job,
            note: None,
        }
    }
    fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// The whole state machine: (snapshot, event) → decision. Pure, total and deterministic.
pub fn decide(s: &Snapshot, e: &Event, ctx: &Ctx) -> Result<Decision, Rejection> {
    let mut next = s.clone();
    let mut actions = Vec::new();
    let step = match e {
        Event::MusicRequested { prompt } => music_requested(&mut next, prompt, ctx, &mut actions)?,
        Event::RetryRequested { from } => retry_requested(&mut next, *from, ctx, &mut actions)?,
        Event::GoapiTaskUpdate(u) => goapi_update(&mut next, u, ctx, &mut actions),
        Event::NcaJobFinished(u) => nca_finished(&mut next, u, ctx, &mut actions),
        Event::JobDeadlinePassed { job } => {
            let error = match s.job(*job).map(|j| &j.kind) {
                Some(JobType::MusicGeneration) => "GoAPI gave no result before the job's deadline",
                Some(JobType::MusicAddition) => "NCA gave no result before the job's deadline",
                _ => "no result before the job's deadline",
            };
            give_up(&mut next, *job, error, ctx)
        }
        Event::EffectFailed { job, error } => give_up(&mut next, *job, error, ctx),
        Event::ExternalAccepted { job, external_id } => {
            external_accepted(&mut next, *job, external_id)
        }
        Event::Resubmitting { job, reason } => resubmitting(&next, *job, reason),
        Event::TrackChecked { job, check } => {
            track_checked(&mut next, *job, check, ctx, &mut actions)
        }
    };
    debug_assert!(step.outcome == Outcome::Applied || next == *s);
    Ok(finish(s, next, step, actions, ctx))
}

fn music_requested(
    next: &mut Snapshot,
    prompt: &Option<String>,
    ctx: &Ctx,
    actions: &mut Vec<Effect>,
) -> Result<Step, Rejection> {
    match &next.video.status {
        VideoStatus::GeneratingMusic | VideoStatus::AddingMusic => {
            return Err(Rejection::InProgress {
                status: next.video.status.name().to_owned(),
            });
        }
        VideoStatus::Completed => return Err(Rejection::AlreadyCompleted),
        failed if failed.is_failed() => {
            return Err(Rejection::UseRetry {
                status: failed.name().to_owned(),
            });
        }
        _ => {}
    }
    if next.active_job(&JobType::MusicGeneration).is_some() {
        return Err(Rejection::InProgress {
            status: "a music_generation job is processing".into(),
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
fn retry_requested(
    next: &mut Snapshot,
    from: Option<RetryFrom>,
    ctx: &Ctx,
    actions: &mut Vec<Effect>,
) -> Result<Step, Rejection> {
    if !next.video.status.is_failed() {
        return Err(Rejection::NothingToRetry {
            status: next.video.status.name().to_owned(),
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
                status: status.name().to_owned(),
            });
        }
        (None, _, _) => None,
    };
    let step = match mix {
        Some(music) => {
            if next.video.source_video.is_none() {
                return Err(Rejection::MissingSourceVideo);
            }
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

/// The answer to a retry's track check: mix the track unless its host said it is gone,
/// then order new music instead (part of the same retry: it is not counted again). An
/// answer that proves nothing mixes the track anyway: new music costs a GoAPI task and
/// replaces music the operator may have chosen, so it is bought only on proof; if the track
/// is gone after all, NCA's download fails and the video is back in music_addition_failed.
fn track_checked(
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

fn goapi_update(next: &mut Snapshot, u: &TaskUpdate, ctx: &Ctx, actions: &mut Vec<Effect>) -> Step {
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

/// Whether a failed mix failed because the video has no audio track to mix the music under:
/// ffmpeg's message for a filter graph naming `[0:a]` on such a video, as NCA returns it
/// (docs/goapi-and-nca.md, "A video without an audio track").
pub fn mix_found_no_audio_track(error: &str) -> bool {
    error.contains("Stream specifier ':a'") && error.contains("matches no streams")
}

fn nca_finished(next: &mut Snapshot, u: &NcaUpdate, ctx: &Ctx, actions: &mut Vec<Effect>) -> Step {
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

fn external_accepted(next: &mut Snapshot, job: JobId, external_id: &str) -> Step {
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
    let j = job_mut(next, job);
    j.external_id = Some(external_id.to_owned());
    if j.status == JobStatus::Pending {
        j.status = JobStatus::Processing;
    }
    // Whatever the service took, no track check waits for this job any more.
    end_track_check(next, job);
    Step::new(Outcome::Applied, Some(job))
}

/// A job-level failure (deadline, reconciliation, an effect given up). It fails the job and,
/// through it, the video's stage, but never a video that is already final: a completed video
/// stays completed and a failed one leaves its state only through an operator's retry. A job
/// still active on a final video was left behind (an older handler, an import at first
/// contact) and is left as it is, for people to read, not failed into the video.
/// A re-submission is news about a job, not a change: it is recorded against the job so
/// that its history shows every request that may have cost money.
fn resubmitting(next: &Snapshot, job: JobId, reason: &str) -> Step {
    match next.job(job) {
        None => Step::new(Outcome::Unmatched, None).note("no such job"),
        Some(j) if j.status.is_final() => {
            Step::new(Outcome::Stale, Some(job)).note(format!("job already {}", j.status))
        }
        Some(_) if next.video.status.is_final() => Step::new(Outcome::Stale, Some(job))
            .note(format!("video is already {}", next.video.status.name())),
        Some(_) => Step::new(Outcome::Recorded, Some(job))
            .note(format!("sending the request again: {reason}")),
    }
}

fn give_up(next: &mut Snapshot, job: JobId, error: &str, ctx: &Ctx) -> Step {
    match next.job(job) {
        None => Step::new(Outcome::Unmatched, None).note("no such job"),
        Some(j) if matches!(j.kind, JobType::Other(_)) => {
            Step::new(Outcome::Unmatched, None).note("not a music job")
        }
        Some(j) if j.status.is_final() => {
            Step::new(Outcome::Stale, Some(job)).note(format!("job already {}", j.status))
        }
        Some(_) if next.video.status.is_final() => {
            Step::new(Outcome::Stale, Some(job)).note(format!(
                "video is already {}; its left-over job is not failed into it",
                next.video.status.name()
            ))
        }
        Some(_) => {
            fail_job(next, job, error, ctx);
            Step::new(Outcome::Applied, Some(job))
        }
    }
}

fn start_generation(
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
fn start_addition(
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
fn new_addition(next: &mut Snapshot, music: MediaUrl, ctx: &Ctx) -> (JobId, String) {
    let attempt = next.jobs_of(&JobType::MusicAddition).count() + 1;
    let sid = submission_id(&next.video.id, attempt);
    let job = new_job(next, JobType::MusicAddition, ctx);
    job_mut(next, job).submission_id = Some(sid.clone());
    next.video.status = VideoStatus::AddingMusic;
    next.video.music = Some(music);
    next.video.error_details = None;
    (job, sid)
}

fn mix_effect(
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

fn new_job(next: &mut Snapshot, kind: JobType, ctx: &Ctx) -> JobId {
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
    });
    id
}

fn job_mut(next: &mut Snapshot, id: JobId) -> &mut Job {
    next.jobs
        .iter_mut()
        .find(|j| j.id == id)
        .expect("job ids come from the snapshot")
}

fn complete_job(next: &mut Snapshot, id: JobId, ctx: &Ctx) {
    let j = job_mut(next, id);
    j.status = JobStatus::Completed;
    j.ended_at = Some(ctx.now);
    end_track_check(next, id);
}

/// A job that ended has no track check waiting for it any more.
fn end_track_check(next: &mut Snapshot, id: JobId) {
    if next.video.checking_track == Some(id) {
        next.video.checking_track = None;
    }
}

/// Fails a job and, through it, the video's stage; Error Details always says why.
fn fail_job(next: &mut Snapshot, id: JobId, error: &str, ctx: &Ctx) {
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

/// Turns the difference between the old and new snapshot into Airtable writes, followed
/// by the external calls, followed by the event log entry.
fn finish(s: &Snapshot, next: Snapshot, step: Step, actions: Vec<Effect>, ctx: &Ctx) -> Decision {
    let mut effects = Vec::new();
    for job in &next.jobs {
        match s.job(job.id) {
            None => effects.push(Effect::CreateJob {
                job: job.id,
                kind: job.kind.clone(),
                status: job.status,
            }),
            Some(old) => {
                let patch = JobPatch {
                    status: (old.status != job.status).then_some(job.status),
                    external_id: (old.external_id != job.external_id)
                        .then(|| job.external_id.clone())
                        .flatten(),
                    error: (old.error != job.error)
                        .then(|| job.error.clone())
                        .flatten(),
                };
                if patch != JobPatch::default() {
                    effects.push(Effect::UpdateJob { job: job.id, patch });
                }
            }
        }
    }
    let (a, b) = (&s.video, &next.video);
    let patch = VideoPatch {
        status: (a.status != b.status).then(|| b.status.clone()),
        music: (a.music != b.music).then(|| b.music.clone()).flatten(),
        final_video: (a.final_video != b.final_video)
            .then(|| b.final_video.clone())
            .flatten(),
        error_details: (a.error_details != b.error_details).then(|| b.error_details.clone()),
    };
    if patch != VideoPatch::default() {
        effects.push(Effect::UpdateVideo(patch));
    }
    effects.extend(actions);
    if ctx.from_webhook {
        effects.push(Effect::RecordWebhookOutcome {
            outcome: step.outcome,
            job: step.job,
            detail: step.note.clone(),
        });
    }
    Decision {
        outcome: step.outcome,
        next,
        effects,
        job: step.job,
        note: step.note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RecordId;
    use crate::machine::Video;

    fn url(s: &str) -> MediaUrl {
        MediaUrl::parse(s).expect("valid")
    }

    fn ctx(n: u128) -> Ctx {
        Ctx {
            now: DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(n as i64),
            event_id: Uuid::from_u128(n),
            from_webhook: false,
            policy: Policy::default(),
        }
    }

    /// A video whose mix failed, with the music GoAPI gave and the prompt the operator
    /// asked for.
    fn addition_failed() -> Snapshot {
        let id = RecordId::parse("recDecide00000001").expect("valid");
        let mut v = Video::new(id.clone(), VideoStatus::MusicAdditionFailed);
        v.source_video = Some(url("https://videos.example/combined.mp4"));
        v.music = Some(url("https://img.theapi.app/temp/track.mp3"));
        v.music_prompt = Some("the base's prompt".into());
        v.requested_prompt = Some("the operator's prompt".into());
        v.error_details = Some("404 Client Error: File not found".into());
        let job = |n: u128, kind, status, sid: Option<String>| Job {
            id: JobId(Uuid::from_u128(n)),
            kind,
            status,
            external_id: Some(format!("ext-{n}")),
            submission_id: sid,
            error: (status == JobStatus::Failed).then(|| "failed".to_owned()),
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            ended_at: None,
        };
        Snapshot {
            jobs: vec![
                job(1, JobType::MusicGeneration, JobStatus::Completed, None),
                job(
                    2,
                    JobType::MusicAddition,
                    JobStatus::Failed,
                    Some(submission_id(&id, 1)),
                ),
            ],
            video: v,
        }
    }

    fn retry(from: Option<RetryFrom>) -> Event {
        Event::RetryRequested { from }
    }

    fn checked(job: JobId, check: TrackCheck) -> Event {
        Event::TrackChecked { job, check }
    }

    fn kinds(d: &Decision) -> Vec<&'static str> {
        d.effects.iter().map(Effect::kind).collect()
    }

    /// The retry, decided: the new job whose mix waits for the check.
    fn retried() -> (Decision, JobId) {
        let d = decide(&addition_failed(), &retry(None), &ctx(10)).expect("accepted");
        let job = d.job.expect("a job");
        (d, job)
    }

    #[test]
    fn retrying_a_failed_mix_checks_the_track_before_paying_for_a_mix() {
        let (d, job) = retried();
        assert_eq!(d.outcome, Outcome::Applied);
        assert_eq!(kinds(&d), ["create_job", "update_video", "check_track"]);
        assert_eq!(
            d.effects.last(),
            Some(&Effect::CheckTrack {
                job,
                music: url("https://img.theapi.app/temp/track.mp3"),
            })
        );
        assert_eq!(d.next.video.status, VideoStatus::AddingMusic);
        assert_eq!(d.next.video.checking_track, Some(job));
        assert_eq!(d.next.video.retries, 1);
        let j = d.next.job(job).expect("created");
        assert_eq!(
            (&j.kind, j.status),
            (&JobType::MusicAddition, JobStatus::Pending)
        );
        // `from: mix` is the same retry, said explicitly.
        let mix = decide(&addition_failed(), &retry(Some(RetryFrom::Mix)), &ctx(10));
        assert_eq!(mix.map(|m| m.effects), Ok(d.effects));
    }

    #[test]
    fn a_reachable_track_is_mixed_once() {
        let (d, job) = retried();
        let answer = checked(
            job,
            TrackCheck::Reachable {
                detail: "HEAD answered 200".into(),
            },
        );
        let mixed = decide(&d.next, &answer, &ctx(11)).expect("decided");
        assert_eq!(mixed.outcome, Outcome::Applied);
        let sid = d.next.job(job).and_then(|j| j.submission_id.clone());
        assert_eq!(
            mixed.effects,
            vec![Effect::SubmitNcaMix {
                job,
                submission_id: sid.expect("the job's own submission id"),
                video: url("https://videos.example/combined.mp4"),
                music: url("https://img.theapi.app/temp/track.mp3"),
                volume: 0.2,
                voice: true,
            }]
        );
        assert_eq!(mixed.next.video.checking_track, None);
        assert_eq!(mixed.next.video.status, VideoStatus::AddingMusic);
        // The same answer again (a replay) orders no second mix.
        let again = decide(&mixed.next, &answer, &ctx(12)).expect("decided");
        assert_eq!((again.outcome, again.effects.len()), (Outcome::Stale, 0));
    }

    #[test]
    fn a_gone_track_orders_new_music_with_the_operators_prompt_and_no_mix() {
        let (d, job) = retried();
        let gone = checked(
            job,
            TrackCheck::Gone {
                detail: "HEAD answered 404; GET answered 404".into(),
            },
        );
        let next = decide(&d.next, &gone, &ctx(11)).expect("decided");
        assert_eq!(next.outcome, Outcome::Applied);
        assert_eq!(
            kinds(&next),
            [
                "update_job",
                "create_job",
                "update_video",
                "create_goapi_task"
            ]
        );
        assert!(
            next.effects.iter().any(|e| matches!(e,
                Effect::CreateGoapiTask { prompt, .. } if prompt.as_deref() == Some("the operator's prompt"))),
            "{:?}",
            next.effects
        );
        let failed = next.next.job(job).expect("the mix job");
        assert_eq!(failed.status, JobStatus::Failed);
        assert!(
            failed
                .error
                .as_deref()
                .is_some_and(|e| e.contains("gone") && e.contains("GET answered 404")),
            "{failed:?}"
        );
        assert_eq!(next.next.video.status, VideoStatus::GeneratingMusic);
        assert_eq!(next.next.video.checking_track, None);
        assert_eq!(next.next.video.retries, 1, "the same retry, not another");
    }

    #[test]
    fn a_check_that_proves_nothing_mixes_the_track_rather_than_buying_music() {
        let (d, job) = retried();
        let unknown = checked(
            job,
            TrackCheck::Unknown {
                detail: "GET answered 503".into(),
            },
        );
        let next = decide(&d.next, &unknown, &ctx(11)).expect("decided");
        assert_eq!(kinds(&next), ["submit_nca_mix"]);
        assert!(next.note.is_some_and(|n| n.contains("mixing it anyway")));
    }

    #[test]
    fn retry_from_music_orders_new_music_without_checking_the_track() {
        let d =
            decide(&addition_failed(), &retry(Some(RetryFrom::Music)), &ctx(10)).expect("accepted");
        assert_eq!(
            kinds(&d),
            ["create_job", "update_video", "create_goapi_task"]
        );
        assert!(matches!(d.effects.last(),
            Some(Effect::CreateGoapiTask { prompt, .. }) if prompt.as_deref() == Some("the operator's prompt")));
        assert_eq!(d.next.video.status, VideoStatus::GeneratingMusic);
        assert_eq!(d.next.video.checking_track, None);
        assert_eq!(d.next.video.retries, 1);
    }

    #[test]
    fn retry_from_mix_needs_music_to_mix() {
        let mut s = addition_failed();
        s.video.status = VideoStatus::MusicGenerationFailed;
        s.video.music = None;
        assert_eq!(
            decide(&s, &retry(Some(RetryFrom::Mix)), &ctx(10)),
            Err(Rejection::NothingToMix {
                status: "music_generation_failed".into()
            })
        );
        // Without `from` it is the usual new task.
        let d = decide(&s, &retry(None), &ctx(10)).expect("accepted");
        assert_eq!(
            kinds(&d),
            ["create_job", "update_video", "create_goapi_task"]
        );
    }

    #[test]
    fn the_retry_limit_holds_whatever_the_retry_starts_from() {
        let mut s = addition_failed();
        s.video.retries = Policy::default().max_retries;
        for from in [None, Some(RetryFrom::Music), Some(RetryFrom::Mix)] {
            assert_eq!(
                decide(&s, &retry(from), &ctx(10)),
                Err(Rejection::RetryLimit { limit: 3 })
            );
        }
    }

    #[test]
    fn a_check_answered_after_its_job_failed_changes_nothing() {
        let (d, job) = retried();
        let deadline = Event::JobDeadlinePassed { job };
        let failed = decide(&d.next, &deadline, &ctx(11)).expect("decided");
        assert_eq!(failed.next.video.status, VideoStatus::MusicAdditionFailed);
        assert_eq!(failed.next.video.checking_track, None);
        for check in [
            TrackCheck::Reachable {
                detail: "HEAD answered 200".into(),
            },
            TrackCheck::Gone {
                detail: "GET answered 404".into(),
            },
        ] {
            let late = decide(&failed.next, &checked(job, check), &ctx(12)).expect("decided");
            assert_eq!(late.outcome, Outcome::Stale);
            assert_eq!(late.next, failed.next, "final is final");
            assert!(late.effects.is_empty());
        }
    }

    #[test]
    fn a_check_answer_for_another_job_binds_to_nothing() {
        let (d, _) = retried();
        let other = checked(
            JobId(Uuid::from_u128(2)),
            TrackCheck::Gone {
                detail: "GET answered 404".into(),
            },
        );
        let next = decide(&d.next, &other, &ctx(11)).expect("decided");
        assert_eq!((next.outcome, next.effects.len()), (Outcome::Stale, 0));
        let unknown = checked(
            JobId(Uuid::from_u128(99)),
            TrackCheck::Gone {
                detail: "GET answered 404".into(),
            },
        );
        let next = decide(&d.next, &unknown, &ctx(11)).expect("decided");
        assert_eq!(next.outcome, Outcome::Unmatched);
    }
}
