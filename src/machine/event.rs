use serde::{Deserialize, Serialize};

use super::JobId;
use crate::domain::MediaUrl;

/// Everything that can happen to a video, already parsed: no JSON reaches the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// An operator or the pipeline asks for music (`POST /videos/{id}/music`).
    MusicRequested { prompt: Option<String> },
    /// An operator redrives a failed stage (`POST /videos/{id}/retry`), from the stage the
    /// video failed at unless `from` says otherwise. Entries stored before `from` existed
    /// read as `None`.
    RetryRequested {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<RetryFrom>,
    },
    /// GoAPI reports on a music task (webhook or status poll).
    GoapiTaskUpdate(TaskUpdate),
    /// NCA reports that a mix ended (callback or status poll).
    NcaJobFinished(NcaUpdate),
    /// A job got no answer at its source before its last deadline.
    JobDeadlinePassed { job: JobId },
    /// The executor got the external service to accept a job (its id for the job).
    ExternalAccepted { job: JobId, external_id: String },
    /// The executor gave up on the effect that was to start a job.
    EffectFailed { job: JobId, error: String },
    /// The executor is about to send a job's request again after an answer that did not
    /// prove the first was refused (a timeout, a gateway's 504, a kill during the call).
    /// It changes nothing; it puts the re-submission in the job's history.
    Resubmitting { job: JobId, reason: String },
    /// The executor checked whether the track a retried mix would use is still there
    /// (`Effect::CheckTrack`): GoAPI's track URLs are temporary.
    TrackChecked { job: JobId, check: TrackCheck },
}

/// Where an operator's retry starts (`{"from": ...}` in the retry's body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RetryFrom {
    /// New music: a new GoAPI task, whatever music the video has.
    Music,
    /// The mix again, with the music the video has (after checking that its track is still
    /// there); the same as no `from` on a video whose mix failed.
    Mix,
}

/// What checking a track's URL found. `detail` says what answered, for the history; it
/// never carries the URL (a signed URL's query is a credential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum TrackCheck {
    /// The host serves the track (2xx).
    Reachable { detail: String },
    /// The host says the track is not there any more (403, 404 or 410 to a plain GET).
    Gone { detail: String },
    /// No answer said either way before the executor's attempts ran out (timeouts, 5xx,
    /// anything else): it proves nothing, so it neither buys new music nor blocks the mix.
    Unknown { detail: String },
}

impl Event {
    /// The label of this event in `states/` and in the transition history.
    pub fn label(&self) -> &'static str {
        EventClass::of(self).label()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskUpdate {
    pub task_id: String,
    pub status: TaskStatus,
    /// Every track the task reported, usable or not, in the order GoAPI gave them.
    pub tracks: Vec<Track>,
    pub error: Option<String>,
    /// The job named by the callback URL this came to, when that URL is one we signed
    /// (its token verified): the only way news binds to a job with no service id yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_job: Option<JobId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    Processing,
    Staged,
    Completed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    /// `None` when the payload's URL was empty or not http(s).
    pub url: Option<MediaUrl>,
    pub finished: bool,
}

impl TaskUpdate {
    /// The track the mix uses: the first finished one with a usable URL.
    pub fn usable_track(&self) -> Option<&MediaUrl> {
        self.tracks
            .iter()
            .filter(|t| t.finished)
            .find_map(|t| t.url.as_ref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NcaUpdate {
    /// The `id` we sent with the request, echoed back; absent on legacy callbacks.
    pub submission_id: Option<String>,
    pub nca_job_id: Option<String>,
    pub result: NcaResult,
    /// The job named by the callback URL this came to, when that URL is one we signed
    /// (its token verified): the only way news binds to a job with no service id yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_job: Option<JobId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum NcaResult {
    Succeeded { output: MediaUrl },
    Failed { error: String },
}

/// Whether a failed mix failed because the video has no audio track to mix the music under:
/// ffmpeg's message for a filter graph naming `[0:a]` on such a video, as NCA returns it
/// (docs/goapi-and-nca.md, "A video without an audio track").
pub fn mix_found_no_audio_track(error: &str) -> bool {
    error.contains("Stream specifier ':a'") && error.contains("matches no streams")
}

/// Events grouped as the tables name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, strum::EnumIter, strum::AsRefStr)]
#[strum(serialize_all = "snake_case")]
pub enum EventClass {
    MusicRequested,
    RetryRequested,
    RetryFromMusic,
    RetryFromMix,
    GoapiPending,
    GoapiProcessing,
    GoapiStaged,
    GoapiCompleted,
    GoapiCompletedUnusable,
    GoapiFailed,
    NcaSucceeded,
    NcaFailed,
    NcaFailedNoAudio,
    ExternalAccepted,
    EffectFailed,
    JobDeadlinePassed,
    Resubmitting,
    TrackReachable,
    TrackGone,
    TrackUnknown,
}

impl EventClass {
    pub(crate) fn of(e: &Event) -> Self {
        match e {
            Event::MusicRequested { .. } => Self::MusicRequested,
            Event::RetryRequested {
                from: Some(RetryFrom::Music),
            } => Self::RetryFromMusic,
            Event::RetryRequested {
                from: Some(RetryFrom::Mix),
            } => Self::RetryFromMix,
            Event::RetryRequested { .. } => Self::RetryRequested,
            Event::GoapiTaskUpdate(u) => match u.status {
                TaskStatus::Pending => Self::GoapiPending,
                TaskStatus::Processing => Self::GoapiProcessing,
                TaskStatus::Staged => Self::GoapiStaged,
                TaskStatus::Failed => Self::GoapiFailed,
                TaskStatus::Completed if u.usable_track().is_some() => Self::GoapiCompleted,
                TaskStatus::Completed => Self::GoapiCompletedUnusable,
            },
            Event::NcaJobFinished(u) => match &u.result {
                NcaResult::Succeeded { .. } => Self::NcaSucceeded,
                NcaResult::Failed { error } if mix_found_no_audio_track(error) => {
                    Self::NcaFailedNoAudio
                }
                NcaResult::Failed { .. } => Self::NcaFailed,
            },
            Event::ExternalAccepted { .. } => Self::ExternalAccepted,
            Event::EffectFailed { .. } => Self::EffectFailed,
            Event::JobDeadlinePassed { .. } => Self::JobDeadlinePassed,
            Event::Resubmitting { .. } => Self::Resubmitting,
            Event::TrackChecked { check, .. } => match check {
                TrackCheck::Reachable { .. } => Self::TrackReachable,
                TrackCheck::Gone { .. } => Self::TrackGone,
                TrackCheck::Unknown { .. } => Self::TrackUnknown,
            },
        }
    }

    pub(crate) fn label(self) -> &'static str {
        // AsRefStr on a fieldless enum yields 'static strings.
        match self {
            Self::MusicRequested => "music_requested",
            Self::RetryRequested => "retry_requested",
            Self::RetryFromMusic => "retry_from_music",
            Self::RetryFromMix => "retry_from_mix",
            Self::GoapiPending => "goapi_pending",
            Self::GoapiProcessing => "goapi_processing",
            Self::GoapiStaged => "goapi_staged",
            Self::GoapiCompleted => "goapi_completed",
            Self::GoapiCompletedUnusable => "goapi_completed_unusable",
            Self::GoapiFailed => "goapi_failed",
            Self::NcaSucceeded => "nca_succeeded",
            Self::NcaFailed => "nca_failed",
            Self::NcaFailedNoAudio => "nca_failed_no_audio",
            Self::ExternalAccepted => "external_accepted",
            Self::EffectFailed => "effect_failed",
            Self::JobDeadlinePassed => "job_deadline_passed",
            Self::Resubmitting => "resubmitting",
            Self::TrackReachable => "track_reachable",
            Self::TrackGone => "track_gone",
            Self::TrackUnknown => "track_unknown",
        }
    }
}
