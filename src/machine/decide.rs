//! decide(): the whole state machine, (snapshot, event) → decision. This file holds what a
//! decision is and turns a step's changed snapshot into effects (`finish`); the steps are
//! per family of events: the operator's requests (`requests`), the services' answers
//! (`answers`), job-level events (`job_events`), on the shared job helpers (`jobs`).

mod answers;
mod job_events;
mod jobs;
mod requests;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use answers::{external_accepted, goapi_update, nca_finished};
use job_events::{give_up, resubmitting};
use requests::{music_requested, retry_requested, track_checked};

use super::{Effect, Event, JobId, JobPatch, Outcome, Snapshot, VideoPatch};
use crate::domain::{JobType, VideoStatus};

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
    InProgress { status: VideoStatus },
    /// The video's status allows a request, but one of its jobs is still out there.
    #[error("music for this video is already in progress (a {kind} job is processing)")]
    JobInProgress { kind: JobType },
    #[error("this video is already completed")]
    AlreadyCompleted,
    #[error("this video's music stage failed ({status}); ask for a retry instead")]
    UseRetry { status: VideoStatus },
    #[error("nothing to retry: the video is {status}")]
    NothingToRetry { status: VideoStatus },
    #[error(
        "no mix to retry: the video is {status} without music to mix again; retry without \"from\", or with \"from\": \"music\""
    )]
    NothingToMix { status: VideoStatus },
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
        Event::Resubmitting { job, reason } => resubmitting(&mut next, *job, reason),
        Event::TrackChecked { job, check } => {
            track_checked(&mut next, *job, check, ctx, &mut actions)
        }
    };
    debug_assert!(step.outcome == Outcome::Applied || next == *s);
    Ok(finish(s, next, step, actions, ctx))
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
