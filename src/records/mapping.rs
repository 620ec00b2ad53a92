//! Which tables, fields and select values this base uses. Real bases differ (one production
//! base has no Status field on Videos and keeps results in attachment fields), so the
//! names live in an optional TOML file; the defaults follow the reference handler.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::domain::{JobStatus, JobType, VideoStatus};

/// How a media field stores its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// A URL (or single line text) field: the URL as a string.
    #[default]
    Url,
    /// An attachment field: written `[{"url": ...}]`, read back as a list of objects with `url`.
    /// Airtable copies the file, which also outlives GoAPI's temporary URLs.
    Attachment,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mapping {
    pub videos: VideosMapping,
    pub jobs: JobsMapping,
    pub webhook_events: WebhookEventsMapping,
    /// Engine status name → the select option the base uses for it.
    pub video_status_values: BTreeMap<String, String>,
    pub job_status_values: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VideosMapping {
    pub table: String,
    /// `None`: the base has no Status field; the engine keeps the status to itself.
    pub status: Option<String>,
    pub combined_segments_video: String,
    pub combined_segments_video_kind: MediaKind,
    pub music_prompt: Option<String>,
    pub music: String,
    pub music_kind: MediaKind,
    pub final_video: String,
    pub final_video_kind: MediaKind,
    pub error_details: Option<String>,
    /// The Videos side of the Jobs link (read to find a video's jobs without a formula).
    pub jobs_link: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsMapping {
    pub table: String,
    pub job_id: String,
    pub job_type: String,
    pub status: String,
    pub related_video: String,
    pub external_job_id: String,
    pub webhook_url: Option<String>,
    pub error_details: Option<String>,
    pub timestamps: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookEventsMapping {
    pub table: String,
    pub event_id: String,
    pub service: String,
    pub endpoint: String,
    pub raw_payload: String,
    pub processed: String,
    pub success: String,
    pub timestamp: String,
    pub related_job: Option<String>,
    pub error_details: Option<String>,
}

impl Default for VideosMapping {
    fn default() -> Self {
        Self {
            table: "Videos".into(),
            status: Some("Status".into()),
            combined_segments_video: "Combined Segments Video".into(),
            combined_segments_video_kind: MediaKind::Url,
            music_prompt: Some("Music Prompt".into()),
            music: "Music".into(),
            music_kind: MediaKind::Url,
            final_video: "Final Video".into(),
            final_video_kind: MediaKind::Url,
            error_details: Some("Error Details".into()),
            jobs_link: Some("Jobs".into()),
        }
    }
}

impl Default for JobsMapping {
    fn default() -> Self {
        Self {
            table: "Jobs".into(),
            job_id: "Job ID".into(),
            job_type: "Type".into(),
            status: "Status".into(),
            related_video: "Related Video".into(),
            external_job_id: "External Job ID".into(),
            webhook_url: Some("Webhook URL".into()),
            error_details: Some("Error Details".into()),
            timestamps: Some("Timestamps".into()),
        }
    }
}

impl Default for WebhookEventsMapping {
    fn default() -> Self {
        Self {
            table: "Webhook Events".into(),
            event_id: "Event ID".into(),
            service: "Service".into(),
            endpoint: "Endpoint".into(),
            raw_payload: "Raw Payload".into(),
            processed: "Processed".into(),
            success: "Success".into(),
            timestamp: "Timestamp".into(),
            related_job: Some("Related Job".into()),
            error_details: Some("Error Details".into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("cannot read mapping file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("mapping file {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

impl Mapping {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn load(path: &Path) -> Result<Self, MappingError> {
        let text = std::fs::read_to_string(path).map_err(|source| MappingError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| MappingError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// The Videos.Status field, unless the base has none (absent or set to "").
    pub fn video_status_field(&self) -> Option<&str> {
        self.videos.status.as_deref().filter(|s| !s.is_empty())
    }

    /// The select option written for a video status.
    pub fn video_status_value(&self, s: &VideoStatus) -> String {
        self.video_status_values
            .get(s.name())
            .cloned()
            .unwrap_or_else(|| s.name().to_owned())
    }

    /// Reads a Status cell back into the engine's status.
    pub fn parse_video_status(&self, value: &str) -> VideoStatus {
        self.video_status_values
            .iter()
            .find(|(_, v)| v.as_str() == value)
            .map(|(k, _)| VideoStatus::from_airtable(k))
            .unwrap_or_else(|| VideoStatus::from_airtable(value))
    }

    pub fn job_status_value(&self, s: JobStatus) -> String {
        self.job_status_values
            .get(s.as_ref())
            .cloned()
            .unwrap_or_else(|| s.to_string())
    }

    pub fn parse_job_status(&self, value: &str) -> Option<JobStatus> {
        let engine = self
            .job_status_values
            .iter()
            .find(|(_, v)| v.as_str() == value)
            .map(|(k, _)| k.as_str())
            .unwrap_or(value);
        engine.parse().ok()
    }

    pub fn job_type_value(&self, t: &JobType) -> String {
        t.name().to_owned()
    }

    /// Every select option the engine may write into Videos.Status.
    pub fn video_status_options(&self) -> Vec<String> {
        VideoStatus::KNOWN
            .iter()
            .map(|s| self.video_status_value(s))
            .collect()
    }

    pub fn job_status_options(&self) -> Vec<String> {
        use strum::IntoEnumIterator;
        JobStatus::iter()
            .map(|s| self.job_status_value(s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_reference_handler() {
        let m = Mapping::default();
        assert_eq!(m.videos.table, "Videos");
        assert_eq!(m.jobs.external_job_id, "External Job ID");
        assert_eq!(m.webhook_events.raw_payload, "Raw Payload");
    }

    #[test]
    fn a_base_without_status_and_with_attachments() {
        let m = Mapping::from_toml(
            r#"
            [videos]
            status = ""
            music = "Music"
            music_kind = "attachment"
            final_video = "Video + Music"
            final_video_kind = "attachment"
            [video_status_values]
            completed = "Done"
            "#,
        )
        .unwrap();
        assert_eq!(m.videos.final_video, "Video + Music");
        assert_eq!(m.videos.music_kind, MediaKind::Attachment);
        assert_eq!(m.video_status_value(&VideoStatus::Completed), "Done");
        assert_eq!(m.parse_video_status("Done"), VideoStatus::Completed);
        assert!(Mapping::from_toml("[videos]\nnope = 1").is_err());
    }
}
