//! The lifecycles' states. strum holds each state's Airtable spelling in exactly one place;
//! a base that spells them differently maps them in the records mapping, not here.

use serde::{Deserialize, Serialize};
use strum::{AsRefStr, Display, EnumString};

use super::snake_case_enum;

/// Where a video stands in the music stage.
///
/// `Other` carries a status that another part of the pipeline wrote (an earlier stage, a
/// manual edit): the engine never crashes on it and never silently drops it.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, Display, EnumString, AsRefStr, Serialize, Deserialize,
)]
#[strum(serialize_all = "snake_case")]
#[serde(try_from = "String", into = "String")]
pub enum VideoStatus {
    SegmentsCombined,
    GeneratingMusic,
    AddingMusic,
    Completed,
    MusicGenerationFailed,
    MusicAdditionFailed,
    #[strum(default)]
    Other(String),
}

impl VideoStatus {
    /// Every status the engine itself knows, in lifecycle order.
    pub const KNOWN: [VideoStatus; 6] = [
        VideoStatus::SegmentsCombined,
        VideoStatus::GeneratingMusic,
        VideoStatus::AddingMusic,
        VideoStatus::Completed,
        VideoStatus::MusicGenerationFailed,
        VideoStatus::MusicAdditionFailed,
    ];

    /// The spelling used in Airtable and in `states/`; `Other` keeps what was written.
    pub fn name(&self) -> &str {
        match self {
            VideoStatus::Other(s) => s,
            known => known.as_ref(),
        }
    }

    /// The status as a metric label: the engine's own names, and `other` for whatever
    /// else a base holds, so that a base's odd statuses cannot grow a series each.
    pub(crate) fn label(&self) -> &str {
        match self {
            VideoStatus::Other(_) => "other",
            known => known.as_ref(),
        }
    }

    pub fn is_failed(&self) -> bool {
        matches!(
            self,
            VideoStatus::MusicGenerationFailed | VideoStatus::MusicAdditionFailed
        )
    }

    /// Nothing but an explicit retry moves a video out of these.
    pub fn is_final(&self) -> bool {
        matches!(self, VideoStatus::Completed) || self.is_failed()
    }

    /// Parses an Airtable value; unknown values become `Other` rather than an error.
    pub fn from_airtable(s: &str) -> Self {
        s.parse()
            .unwrap_or_else(|_| VideoStatus::Other(s.to_owned()))
    }
}

impl From<String> for VideoStatus {
    fn from(s: String) -> Self {
        VideoStatus::from_airtable(&s)
    }
}

impl From<VideoStatus> for String {
    fn from(s: VideoStatus) -> Self {
        s.name().to_owned()
    }
}

snake_case_enum! {
    /// A Job record's lifecycle: `pending → processing → completed | failed`.
    #[derive(AsRefStr, strum::EnumIter, Deserialize)]
    pub enum JobStatus {
        Pending,
        Processing,
        Completed,
        Failed,
    }
}

impl JobStatus {
    pub fn is_active(self) -> bool {
        matches!(self, JobStatus::Pending | JobStatus::Processing)
    }
    pub fn is_final(self) -> bool {
        !self.is_active()
    }
}

/// What a Job record does. Types written by other parts of the pipeline are carried
/// through untouched as `Other`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, Display, EnumString, AsRefStr, Serialize, Deserialize,
)]
#[strum(serialize_all = "snake_case")]
#[serde(try_from = "String", into = "String")]
pub enum JobType {
    MusicGeneration,
    MusicAddition,
    #[strum(default)]
    Other(String),
}

impl JobType {
    /// The types the engine itself creates.
    pub const KNOWN: [JobType; 2] = [JobType::MusicGeneration, JobType::MusicAddition];

    pub fn name(&self) -> &str {
        match self {
            JobType::Other(s) => s,
            known => known.as_ref(),
        }
    }
}

impl From<String> for JobType {
    fn from(s: String) -> Self {
        s.parse().unwrap_or(JobType::Other(s))
    }
}

impl From<JobType> for String {
    fn from(t: JobType) -> Self {
        t.name().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn airtable_spellings_round_trip() {
        for s in VideoStatus::KNOWN {
            assert_eq!(VideoStatus::from_airtable(s.name()), s);
        }
        assert_eq!(VideoStatus::GeneratingMusic.name(), "generating_music");
        assert_eq!(JobType::MusicAddition.name(), "music_addition");
        assert_eq!(JobStatus::Processing.to_string(), "processing");
    }

    #[test]
    fn foreign_values_are_carried_not_dropped() {
        let s = VideoStatus::from_airtable("Segments Combining");
        assert_eq!(s, VideoStatus::Other("Segments Combining".into()));
        assert_eq!(s.name(), "Segments Combining");
        assert_eq!(String::from(s), "Segments Combining");
        let t = JobType::from("thumbnail".to_string());
        assert_eq!(t.name(), "thumbnail");
    }
}
