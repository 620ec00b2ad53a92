use serde::{Deserialize, Serialize};

use super::{JobId, Outcome};
use crate::domain::{JobStatus, JobType, MediaUrl, VideoStatus, snake_case_enum};

/// A side effect decided by the machine and performed, later and durably, by the executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Project the video's new fields onto its Videos record.
    UpdateVideo(VideoPatch),
    /// Create a Jobs record linked to the video.
    CreateJob {
        job: JobId,
        kind: JobType,
        status: JobStatus,
    },
    /// Patch a Jobs record the engine knows.
    UpdateJob { job: JobId, patch: JobPatch },
    /// Ask GoAPI for a music track; its task id comes back as `ExternalAccepted`.
    CreateGoapiTask { job: JobId, prompt: Option<String> },
    /// Ask NCA to mix `music` at `volume` under `video`'s own audio. `submission_id` is
    /// sent as NCA's `id` and is this effect's id, which makes the submission idempotent.
    SubmitNcaMix {
        job: JobId,
        submission_id: String,
        video: MediaUrl,
        music: MediaUrl,
        volume: f64,
        /// Mix under the video's own audio (`false`: the video has no audio track, so the
        /// music is its only sound). Effects stored before this field mixed with voice.
        #[serde(default = "with_voice")]
        voice: bool,
    },
    /// Find out whether the track a retried mix would use is still there (GoAPI's track
    /// URLs are temporary); the answer comes back as `TrackChecked` for `job`.
    CheckTrack { job: JobId, music: MediaUrl },
    /// Close the Webhook Events record of the event that caused this decision.
    RecordWebhookOutcome {
        outcome: Outcome,
        job: Option<JobId>,
        detail: Option<String>,
    },
}

snake_case_enum! {
    /// What an effect does, without its data: the outbox's `kind` column, a metric's label.
    /// Spelled as the effect's own JSON tag.
    #[derive(strum::AsRefStr, strum::IntoStaticStr, strum::EnumIter)]
    pub enum EffectKind {
        UpdateVideo,
        CreateJob,
        UpdateJob,
        CreateGoapiTask,
        SubmitNcaMix,
        CheckTrack,
        RecordWebhookOutcome,
    }
}

impl Effect {
    pub(crate) fn effect_kind(&self) -> EffectKind {
        match self {
            Effect::UpdateVideo(_) => EffectKind::UpdateVideo,
            Effect::CreateJob { .. } => EffectKind::CreateJob,
            Effect::UpdateJob { .. } => EffectKind::UpdateJob,
            Effect::CreateGoapiTask { .. } => EffectKind::CreateGoapiTask,
            Effect::SubmitNcaMix { .. } => EffectKind::SubmitNcaMix,
            Effect::CheckTrack { .. } => EffectKind::CheckTrack,
            Effect::RecordWebhookOutcome { .. } => EffectKind::RecordWebhookOutcome,
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        self.effect_kind().into()
    }

    /// The job the effect concerns, if any.
    pub(crate) fn job(&self) -> Option<JobId> {
        match self {
            Effect::CreateJob { job, .. }
            | Effect::UpdateJob { job, .. }
            | Effect::CreateGoapiTask { job, .. }
            | Effect::SubmitNcaMix { job, .. }
            | Effect::CheckTrack { job, .. } => Some(*job),
            Effect::RecordWebhookOutcome { job, .. } => *job,
            Effect::UpdateVideo(_) => None,
        }
    }

    /// The table, and the record where the effect itself knows it, that this effect
    /// writes; `None` for a call to an external service.
    pub fn target(&self) -> Option<Target> {
        match self {
            Effect::UpdateVideo(_) => Some(Target::Video),
            Effect::CreateJob { job, .. } | Effect::UpdateJob { job, .. } => {
                Some(Target::Job(*job))
            }
            Effect::RecordWebhookOutcome { .. } => Some(Target::WebhookEvent),
            Effect::CreateGoapiTask { .. }
            | Effect::SubmitNcaMix { .. }
            | Effect::CheckTrack { .. } => None,
        }
    }

    /// Whether an operator may run this effect again once it failed for good. A call
    /// that started a job is not: its job already failed through the machine, and a new
    /// attempt is a new job (a retry of the video's stage). A track check costs nothing,
    /// and an answer that comes too late is stale to the machine.
    pub fn replayable(&self) -> bool {
        !matches!(
            self,
            Effect::CreateGoapiTask { .. } | Effect::SubmitNcaMix { .. }
        )
    }
}

/// A table an effect writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Videos,
    Jobs,
    WebhookEvents,
}

/// What a write effect changes (see [`Effect::target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The video's Videos record.
    Video,
    /// A job's Jobs record.
    Job(JobId),
    /// The Webhook Events record of the event the effect was decided for: each event
    /// has its own, written once.
    WebhookEvent,
}

impl Target {
    pub(crate) fn table(self) -> Table {
        match self {
            Target::Video => Table::Videos,
            Target::Job(_) => Table::Jobs,
            Target::WebhookEvent => Table::WebhookEvents,
        }
    }

    /// Whether two effects with these targets write the same record. Two Webhook Events
    /// writes never do: they close two events' records.
    pub(crate) fn same_record(self, other: Target) -> bool {
        match (self, other) {
            (Target::Video, Target::Video) => true,
            (Target::Job(a), Target::Job(b)) => a == b,
            _ => false,
        }
    }
}

/// Fields of a Videos record to write; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoPatch {
    pub status: Option<VideoStatus>,
    pub music: Option<MediaUrl>,
    pub final_video: Option<MediaUrl>,
    /// `Some(None)` clears Error Details (a redrive starts clean).
    pub error_details: Option<Option<String>>,
}

/// Fields of a Jobs record to write; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPatch {
    pub status: Option<JobStatus>,
    pub external_id: Option<String>,
    pub error: Option<String>,
}

fn with_voice() -> bool {
    true
}
