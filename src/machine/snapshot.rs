use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{JobStatus, JobType, MediaUrl, RecordId, VideoStatus};

/// The engine's own id for a job. Airtable record ids are assigned later, by Airtable,
/// so the machine names jobs with ids it can derive deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub Uuid);

impl JobId {
    /// Jobs another part of the pipeline created are named after their Airtable record,
    /// so that loading them twice gives the same id.
    pub fn for_record(record: &RecordId) -> Self {
        JobId(Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            record.as_str().as_bytes(),
        ))
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What decide() needs to know about one video and its jobs: nothing more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub video: Video,
    pub jobs: Vec<Job>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Video {
    pub id: RecordId,
    pub status: VideoStatus,
    /// The video the music is mixed under (Airtable: Combined Segments Video).
    pub source_video: Option<MediaUrl>,
    pub music_prompt: Option<String>,
    pub music: Option<MediaUrl>,
    pub final_video: Option<MediaUrl>,
    pub error_details: Option<String>,
    /// Redrives requested so far; bounded by [`super::Policy::max_retries`].
    pub retries: u32,
    /// The prompt an operator gave with the music request (`POST /videos/{id}/music`): a
    /// retry that orders new music asks for the same music. Engine state only (the base's
    /// Music Prompt is someone else's field); snapshots stored before it have none.
    #[serde(default)]
    pub requested_prompt: Option<String>,
    /// The `music_addition` job a retry created whose mix waits for the check that the
    /// stored track is still there (`Effect::CheckTrack`); `None` once it is answered.
    /// Engine state only; snapshots stored before it have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checking_track: Option<JobId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub kind: JobType,
    pub status: JobStatus,
    /// GoAPI's task id or NCA's job id, once the service has accepted the work.
    pub external_id: Option<String>,
    /// For NCA mixes: the deterministic `id` sent with the request and echoed in the
    /// callback, which ties a callback to exactly one submission.
    pub submission_id: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// The automatic re-submissions of this job's call on record (at most one): the
    /// count the executor checks before calling a service again, kept with the job so
    /// that no retention or event-log window can lose it. Snapshots stored before it
    /// have none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resubmissions: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The `id` of the n-th NCA submission for a video; also that effect's id.
pub fn submission_id(video: &RecordId, attempt: usize) -> String {
    format!("add_music:{video}:{attempt}")
}

impl Snapshot {
    /// A video the engine has not seen act yet, with no jobs.
    pub(crate) fn new(video: Video) -> Self {
        Self {
            video,
            jobs: Vec::new(),
        }
    }

    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    pub(crate) fn active_job(&self, kind: &JobType) -> Option<&Job> {
        self.jobs
            .iter()
            .rev()
            .find(|j| &j.kind == kind && j.status.is_active())
    }

    pub fn jobs_of(&self, kind: &JobType) -> impl Iterator<Item = &Job> {
        self.jobs.iter().filter(move |j| &j.kind == kind)
    }
}

impl Video {
    pub fn new(id: RecordId, status: VideoStatus) -> Self {
        Self {
            id,
            status,
            source_video: None,
            music_prompt: None,
            music: None,
            final_video: None,
            error_details: None,
            retries: 0,
            requested_prompt: None,
            checking_track: None,
        }
    }
}
