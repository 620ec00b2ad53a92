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
    /// Engine status name → the select options the base uses for it.
    pub video_status_values: BTreeMap<String, Spellings>,
    pub job_status_values: BTreeMap<String, Spellings>,
    /// Engine job type (`music_generation`, `music_addition`) → the Type options.
    pub job_type_values: BTreeMap<String, Spellings>,
    /// Engine service (`goapi`, `nca`) → the Service options of Webhook Events.
    pub service_values: BTreeMap<String, Spellings>,
}

/// The select options one engine value is read as, the first of them the one written.
/// A base that outlived an earlier build holds records in that build's spelling too (one
/// production base's Jobs.Type has both `music` and `music_generation`), and a record read
/// in neither would not be recognised. In the TOML, a string or a non-empty list of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "OneOrMany")]
pub struct Spellings(Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl TryFrom<OneOrMany> for Spellings {
    type Error = String;
    fn try_from(v: OneOrMany) -> Result<Self, String> {
        match v {
            OneOrMany::One(s) => Ok(Self(vec![s])),
            OneOrMany::Many(list) if list.is_empty() => {
                Err("an empty list: name at least the option to write".into())
            }
            OneOrMany::Many(list) => Ok(Self(list)),
        }
    }
}

impl Spellings {
    /// The option written.
    pub(crate) fn written(&self) -> &str {
        &self.0[0]
    }

    pub(crate) fn reads(&self, value: &str) -> bool {
        self.0.iter().any(|s| s == value)
    }

    pub(crate) fn all(&self) -> &[String] {
        &self.0
    }
}

impl From<&str> for Spellings {
    fn from(s: &str) -> Self {
        Self(vec![s.to_owned()])
    }
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
    /// Written only when mapped (and writable): the engine keys jobs on its own ids and
    /// the record ids it keeps in its store, never on this field.
    pub job_id: Option<String>,
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
    /// Written only when mapped (and writable), as for `Job ID`.
    pub event_id: Option<String>,
    pub service: String,
    pub endpoint: Option<String>,
    pub raw_payload: String,
    pub processed: String,
    pub success: String,
    pub timestamp: Option<String>,
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
            job_id: Some("Job ID".into()),
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
            event_id: Some("Event ID".into()),
            service: "Service".into(),
            endpoint: Some("Endpoint".into()),
            raw_payload: "Raw Payload".into(),
            processed: "Processed".into(),
            success: "Success".into(),
            timestamp: Some("Timestamp".into()),
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
    /// Parses a mapping file. An optional field set to `""` is switched off: the engine
    /// neither reads nor writes it.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let mut m: Mapping = toml::from_str(text).map_err(|e| e.to_string())?;
        m.switch_off_empties();
        m.check_values()?;
        Ok(m)
    }

    fn switch_off_empties(&mut self) {
        let off = |o: &mut Option<String>| {
            if o.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *o = None;
            }
        };
        let v = &mut self.videos;
        for o in [
            &mut v.status,
            &mut v.music_prompt,
            &mut v.error_details,
            &mut v.jobs_link,
        ] {
            off(o);
        }
        let j = &mut self.jobs;
        for o in [
            &mut j.job_id,
            &mut j.webhook_url,
            &mut j.error_details,
            &mut j.timestamps,
        ] {
            off(o);
        }
        let w = &mut self.webhook_events;
        for o in [
            &mut w.event_id,
            &mut w.endpoint,
            &mut w.timestamp,
            &mut w.related_job,
            &mut w.error_details,
        ] {
            off(o);
        }
    }

    /// Value tables may only name values the engine has, and give each a non-empty
    /// option: a typo there would otherwise surface as a 422 mid-lifecycle.
    fn check_values(&self) -> Result<(), String> {
        use strum::IntoEnumIterator;
        let video: Vec<String> = VideoStatus::KNOWN
            .iter()
            .map(|s| s.name().to_owned())
            .collect();
        let job: Vec<String> = JobStatus::iter().map(|s| s.to_string()).collect();
        let types: Vec<String> = JobType::KNOWN.iter().map(|t| t.name().to_owned()).collect();
        let services = vec!["goapi".to_owned(), "nca".to_owned()];
        for (table, values, known) in [
            ("video_status_values", &self.video_status_values, &video),
            ("job_status_values", &self.job_status_values, &job),
            ("job_type_values", &self.job_type_values, &types),
            ("service_values", &self.service_values, &services),
        ] {
            for (k, v) in values {
                if !known.contains(k) {
                    return Err(format!(
                        "[{table}] has no engine value {k:?}; the engine's values are {}",
                        known.join(", ")
                    ));
                }
                if v.all().iter().any(|s| s.trim().is_empty()) {
                    return Err(format!("[{table}] {k} is empty; name the option to write"));
                }
            }
        }
        Ok(())
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
    pub(crate) fn video_status_value(&self, s: &VideoStatus) -> String {
        written(&self.video_status_values, s.name())
    }

    /// Reads a Status cell back into the engine's status.
    pub(crate) fn parse_video_status(&self, value: &str) -> VideoStatus {
        VideoStatus::from_airtable(read(&self.video_status_values, value))
    }

    pub(crate) fn job_status_value(&self, s: JobStatus) -> String {
        written(&self.job_status_values, s.as_ref())
    }

    pub(crate) fn parse_job_status(&self, value: &str) -> Option<JobStatus> {
        read(&self.job_status_values, value).parse().ok()
    }

    pub(crate) fn job_type_value(&self, t: &JobType) -> String {
        written(&self.job_type_values, t.name())
    }

    /// Reads a Type cell back into the engine's job type.
    pub(crate) fn parse_job_type(&self, value: &str) -> JobType {
        JobType::from(read(&self.job_type_values, value).to_owned())
    }

    /// Every Type option the engine may write.
    pub fn job_type_options(&self) -> Vec<String> {
        [JobType::MusicGeneration, JobType::MusicAddition]
            .iter()
            .map(|t| self.job_type_value(t))
            .collect()
    }

    /// The Service option written for a delivery from `service` (`goapi`, `nca`);
    /// `default` is the spelling of the reference handler.
    pub(crate) fn service_value(&self, service: &str, default: &str) -> String {
        self.service_values
            .get(service)
            .map_or_else(|| default.to_owned(), |v| v.written().to_owned())
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

/// The option written for engine value `engine`: its first spelling, else its own name.
fn written(values: &BTreeMap<String, Spellings>, engine: &str) -> String {
    values
        .get(engine)
        .map_or_else(|| engine.to_owned(), |v| v.written().to_owned())
}

/// The engine value a cell's option is read as: the one listing it among its spellings,
/// else the option itself (a base spelling the engine's own names needs no mapping).
fn read<'a>(values: &'a BTreeMap<String, Spellings>, option: &'a str) -> &'a str {
    values
        .iter()
        .find(|(_, v)| v.reads(option))
        .map_or(option, |(k, _)| k.as_str())
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

    #[test]
    fn an_empty_name_switches_a_field_off_and_values_are_checked() {
        let m = Mapping::from_toml(
            r#"
            [jobs]
            job_id = ""
            timestamps = ""
            [webhook_events]
            event_id = ""
            endpoint = ""
            timestamp = ""
            error_details = ""
            related_job = ""
            [job_type_values]
            music_generation = "music"
            [service_values]
            nca = "NCA"
            "#,
        )
        .unwrap();
        assert_eq!(m.jobs.job_id, None);
        assert_eq!(m.jobs.timestamps, None);
        assert_eq!(m.jobs.webhook_url.as_deref(), Some("Webhook URL"));
        let w = &m.webhook_events;
        assert!(w.event_id.is_none() && w.endpoint.is_none() && w.timestamp.is_none());
        assert!(w.error_details.is_none() && w.related_job.is_none());
        assert_eq!(m.job_type_value(&JobType::MusicGeneration), "music");
        assert_eq!(m.parse_job_type("music"), JobType::MusicGeneration);
        assert_eq!(m.job_type_value(&JobType::MusicAddition), "music_addition");
        assert_eq!(m.service_value("nca", "NCA Toolkit"), "NCA");
        assert_eq!(m.service_value("goapi", "GoAPI"), "GoAPI");
        let typo = Mapping::from_toml("[job_status_values]\ncomplete = \"Done\"").unwrap_err();
        assert!(typo.contains("\"complete\""), "{typo}");
        assert!(Mapping::from_toml("[service_values]\ngoapi = \"\"").is_err());
    }

    #[test]
    fn a_value_may_list_the_spellings_it_is_read_as_and_writes_the_first() {
        let m = Mapping::from_toml(
            r#"
            [job_type_values]
            music_generation = ["music_generation", "music"]
            music_addition = "final"
            [job_status_values]
            completed = ["Done", "Completed"]
            "#,
        )
        .unwrap();
        assert_eq!(m.parse_job_type("music"), JobType::MusicGeneration);
        assert_eq!(
            m.parse_job_type("music_generation"),
            JobType::MusicGeneration
        );
        assert_eq!(m.parse_job_type("final"), JobType::MusicAddition);
        assert_eq!(
            m.job_type_value(&JobType::MusicGeneration),
            "music_generation"
        );
        assert_eq!(m.job_type_value(&JobType::MusicAddition), "final");
        assert_eq!(
            m.job_type_options(),
            ["music_generation".to_owned(), "final".to_owned()]
        );
        assert_eq!(m.parse_job_status("Completed"), Some(JobStatus::Completed));
        assert_eq!(m.parse_job_status("Done"), Some(JobStatus::Completed));
        assert_eq!(m.job_status_value(JobStatus::Completed), "Done");
        // An option listed nowhere is read as the engine's own name, or not at all.
        assert_eq!(m.parse_job_type("music_addition"), JobType::MusicAddition);
        assert!(matches!(m.parse_job_type("voice"), JobType::Other(_)));

        for bad in [
            "[job_type_values]\nmusic_generation = []",
            "[job_type_values]\nmusic_generation = [\"music\", \"\"]",
            "[job_type_values]\nmusic_generation = [1]",
        ] {
            assert!(Mapping::from_toml(bad).is_err(), "{bad}");
        }
    }
}
