use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    Effect, Event, Job, JobId, JobPatch, NcaResult, NcaUpdate, Snapshot, TaskStatus, TaskUpdate,
    VideoPatch, submission_id,
};
use crate::domain::{JobStatus, JobType, MediaUrl, VideoStatus};

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

/// What an event did. Duplicates and stale events are outcomes, not errors: they are
/// recorded in the event log like any other.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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
        Event::RetryRequested => retry_requested(&mut next, ctx, &mut actions)?,
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

fn retry_requested(
    next: &mut Snapshot,
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
    let job = match (&next.video.status, next.video.music.clone()) {
        (VideoStatus::MusicAdditionFailed, Some(music)) => {
            if next.video.source_video.is_none() {
                return Err(Rejection::MissingSourceVideo);
            }
            start_addition(next, music, ctx, actions)
        }
        _ => start_generation(next, None, ctx, actions),
    };
    next.video.retries += 1;
    Ok(Step::new(Outcome::Applied, Some(job)))
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
    let attempt = next.jobs_of(&JobType::MusicAddition).count() + 1;
    // Once a mix of this video found no audio track, its mixes are of the music alone.
    let voice = !next
        .jobs_of(&JobType::MusicAddition)
        .any(|j| j.error.as_deref().is_some_and(mix_found_no_audio_track));
    let sid = submission_id(&next.video.id, attempt);
    let job = new_job(next, JobType::MusicAddition, ctx);
    job_mut(next, job).submission_id = Some(sid.clone());
    next.video.status = VideoStatus::AddingMusic;
    next.video.music = Some(music.clone());
    next.video.error_details = None;
    actions.push(Effect::SubmitNcaMix {
        job,
        submission_id: sid,
        video,
        music,
        volume: ctx.policy.volume,
        voice,
    });
    job
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
