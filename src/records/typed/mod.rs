//! The engine's view of the three tables, on top of any [`RecordBackend`].

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::records::{Fields, Filter, Mapping, MediaKind, Record, RecordBackend, RecordsError};
use crate::domain::{JobStatus, JobType, MediaUrl, RecordId, VideoStatus};
use crate::text::shorten;

/// Airtable's long text limit; longer values are cut, keeping start and end.
pub const LONG_TEXT_MAX: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub struct VideoRecord {
    pub id: RecordId,
    /// `None` when the base has no Status field or the cell is empty.
    pub status: Option<VideoStatus>,
    pub combined_segments_video: Option<MediaUrl>,
    pub music_prompt: Option<String>,
    pub music: Option<MediaUrl>,
    pub final_video: Option<MediaUrl>,
    pub error_details: Option<String>,
    pub jobs: Vec<RecordId>,
}

/// A partial write to a Videos record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VideoFields {
    pub status: Option<VideoStatus>,
    pub combined_segments_video: Option<MediaUrl>,
    pub music_prompt: Option<String>,
    pub music: Option<MediaUrl>,
    pub final_video: Option<MediaUrl>,
    /// `Some(None)` clears it.
    pub error_details: Option<Option<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: RecordId,
    /// The engine's own job id (`Job ID`), when the engine created the job.
    pub job_id: Option<String>,
    pub job_type: JobType,
    pub status: Option<JobStatus>,
    /// The Status cell as written, when there is one (to tell "empty" from "unknown").
    pub status_text: Option<String>,
    pub external_job_id: Option<String>,
    pub related_video: Vec<RecordId>,
    pub error_details: Option<String>,
}

/// A write to a Jobs record, matched on `Job ID` (an upsert: one request creates or updates).
#[derive(Debug, Clone, PartialEq)]
pub struct JobFields {
    pub job_id: String,
    pub job_type: Option<JobType>,
    pub status: Option<JobStatus>,
    pub related_video: Option<RecordId>,
    pub external_job_id: Option<String>,
    pub webhook_url: Option<String>,
    pub error_details: Option<String>,
    pub timestamps: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEventRecord {
    pub event_id: String,
    /// The engine's name of the sender (`goapi`, `nca`); the mapping spells it.
    pub service: String,
    pub endpoint: String,
    pub raw_payload: String,
    pub processed: bool,
    pub success: bool,
    pub timestamp: DateTime<Utc>,
    pub related_job: Option<RecordId>,
    pub error_details: Option<String>,
}

/// The typed tables. Cheap to clone.
#[derive(Clone)]
pub struct Records {
    backend: Arc<dyn RecordBackend>,
    mapping: Arc<Mapping>,
}

impl Records {
    pub fn new(backend: Arc<dyn RecordBackend>, mapping: Mapping) -> Self {
        Self {
            backend,
            mapping: Arc::new(mapping),
        }
    }

    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    pub fn backend(&self) -> &Arc<dyn RecordBackend> {
        &self.backend
    }

    pub async fn get_video(&self, id: &RecordId) -> Result<Option<VideoRecord>, RecordsError> {
        let m = &self.mapping.videos;
        Ok(self
            .backend
            .get(&m.table, id)
            .await?
            .map(|r| self.video_record(&r)))
    }

    /// The videos with these ids that exist, read together: the backend turns the list
    /// into `RECORD_ID()` filters (Airtable: one request per 100 ids), not one read each.
    pub async fn get_videos(&self, ids: &[RecordId]) -> Result<Vec<VideoRecord>, RecordsError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let records = self
            .backend
            .find(&self.mapping.videos.table, &Filter::RecordIds(ids.to_vec()))
            .await?;
        Ok(records
            .iter()
            .filter(|r| ids.contains(&r.id))
            .map(|r| self.video_record(r))
            .collect())
    }

    fn video_record(&self, r: &Record) -> VideoRecord {
        let m = &self.mapping.videos;
        let f = &r.fields;
        VideoRecord {
            id: r.id.clone(),
            status: self
                .mapping
                .video_status_field()
                .and_then(|s| text(f, s))
                .map(|s| self.mapping.parse_video_status(&s)),
            combined_segments_video: media(f, &m.combined_segments_video),
            music_prompt: m.music_prompt.as_deref().and_then(|p| text(f, p)),
            music: media(f, &m.music),
            final_video: media(f, &m.final_video),
            error_details: m.error_details.as_deref().and_then(|p| text(f, p)),
            jobs: m
                .jobs_link
                .as_deref()
                .map(|l| links(f, l))
                .unwrap_or_default(),
        }
    }

    /// Creates a Videos record (the sandbox and tests seed videos this way).
    pub async fn create_video(&self, fields: &VideoFields) -> Result<RecordId, RecordsError> {
        let r = self
            .backend
            .create(&self.mapping.videos.table, self.video_fields(fields))
            .await?;
        Ok(r.id)
    }

    pub async fn update_video(
        &self,
        id: &RecordId,
        fields: &VideoFields,
    ) -> Result<(), RecordsError> {
        let mut f = self.video_fields(fields);
        if f.is_empty() {
            return Ok(());
        }
        self.keep_attachments(id, &mut f).await?;
        self.backend
            .update(&self.mapping.videos.table, id, f)
            .await?;
        Ok(())
    }

    /// An attachment field's write replaces its whole list, and Airtable keeps an existing
    /// attachment only when the list names its `{"id"}`: so the attachments already there
    /// are read and passed back, except one of the same file name as the new one (a retried
    /// write, or a new version of the same file). File names, not URLs, identify a file:
    /// the URL Airtable reads back is its own copy, never the one written.
    async fn keep_attachments(&self, id: &RecordId, f: &mut Fields) -> Result<(), RecordsError> {
        let m = &self.mapping.videos;
        let attachment_fields: Vec<&String> = [
            (&m.music, m.music_kind),
            (&m.final_video, m.final_video_kind),
            (&m.combined_segments_video, m.combined_segments_video_kind),
        ]
        .into_iter()
        .filter(|(name, kind)| *kind == MediaKind::Attachment && f.contains_key(name.as_str()))
        .map(|(name, _)| name)
        .collect();
        if attachment_fields.is_empty() {
            return Ok(());
        }
        let Some(current) = self.backend.get(&m.table, id).await? else {
            return Err(RecordsError::NotFound(id.to_string(), m.table.clone()));
        };
        for name in attachment_fields {
            let Some(Value::Array(new)) = f.get(name.as_str()).cloned() else {
                continue;
            };
            let new_names: Vec<&str> = new
                .iter()
                .filter_map(|a| a.get("filename").and_then(Value::as_str))
                .collect();
            let mut list: Vec<Value> = current
                .fields
                .get(name.as_str())
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|a| {
                    a.get("filename")
                        .and_then(Value::as_str)
                        .is_none_or(|n| !new_names.contains(&n))
                })
                // Airtable knows its attachments by id; a store that keeps them as written
                // (the embedded ones) gets them back whole.
                .map(|a| match a.get("id") {
                    Some(id) => json!({ "id": id }),
                    None => a.clone(),
                })
                .collect();
            list.extend(new);
            f.insert(name.clone(), Value::Array(list));
        }
        Ok(())
    }

    /// The Combined Segments Video as the base has it now. Airtable's attachment URLs are
    /// copies that expire after a few hours, so the URL handed to another service is read
    /// just before handing it over, never taken from an earlier read.
    pub async fn current_source_video(
        &self,
        id: &RecordId,
    ) -> Result<Option<MediaUrl>, RecordsError> {
        Ok(self
            .get_video(id)
            .await?
            .and_then(|v| v.combined_segments_video))
    }

    /// Whether the source video is an attachment (its URL expires; see
    /// [`Records::current_source_video`]).
    pub fn source_video_expires(&self) -> bool {
        self.mapping.videos.combined_segments_video_kind == MediaKind::Attachment
    }

    fn video_fields(&self, v: &VideoFields) -> Fields {
        let m = &self.mapping.videos;
        let mut f = Fields::new();
        if let (Some(s), Some(field)) = (&v.status, self.mapping.video_status_field()) {
            f.insert(field.into(), json!(self.mapping.video_status_value(s)));
        }
        if let Some(u) = &v.combined_segments_video {
            f.insert(
                m.combined_segments_video.clone(),
                media_value(u, m.combined_segments_video_kind),
            );
        }
        if let (Some(p), Some(field)) = (&v.music_prompt, &m.music_prompt) {
            f.insert(field.clone(), json!(p));
        }
        if let Some(u) = &v.music {
            f.insert(m.music.clone(), media_value(u, m.music_kind));
        }
        if let Some(u) = &v.final_video {
            f.insert(m.final_video.clone(), media_value(u, m.final_video_kind));
        }
        if let (Some(e), Some(field)) = (&v.error_details, &m.error_details) {
            f.insert(
                field.clone(),
                e.as_deref().map_or(Value::Null, |e| json!(long_text(e))),
            );
        }
        f
    }

    /// The video's music jobs, found the way real Airtable allows: by the video's own link
    /// array, then by `RECORD_ID()`; never by searching a linked field in a formula.
    pub async fn jobs_of_video(&self, video: &VideoRecord) -> Result<Vec<JobRecord>, RecordsError> {
        if video.jobs.is_empty() {
            return Ok(Vec::new());
        }
        let records = self
            .backend
            .find(
                &self.mapping.jobs.table,
                &Filter::RecordIds(video.jobs.clone()),
            )
            .await?;
        Ok(records.iter().map(|r| self.job_record(r)).collect())
    }

    /// The jobs of several videos, read together (one `RECORD_ID()` filter over every
    /// video's link array; Airtable: one request per 100 jobs), each video's in the order
    /// the backend lists them, as [`Records::jobs_of_video`] has them. A video with no
    /// jobs maps to an empty list.
    pub async fn jobs_of_videos(
        &self,
        videos: &[VideoRecord],
    ) -> Result<HashMap<RecordId, Vec<JobRecord>>, RecordsError> {
        let ids: Vec<RecordId> = videos.iter().flat_map(|v| v.jobs.iter().cloned()).collect();
        let found: Vec<JobRecord> = if ids.is_empty() {
            Vec::new()
        } else {
            self.backend
                .find(&self.mapping.jobs.table, &Filter::RecordIds(ids))
                .await?
                .iter()
                .map(|r| self.job_record(r))
                .collect()
        };
        Ok(videos
            .iter()
            .map(|v| {
                let jobs = found
                    .iter()
                    .filter(|j| v.jobs.contains(&j.id))
                    .cloned()
                    .collect();
                (v.id.clone(), jobs)
            })
            .collect())
    }

    pub async fn find_job_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<JobRecord>, RecordsError> {
        let m = &self.mapping.jobs;
        let records = self
            .backend
            .find(
                &m.table,
                &Filter::Equals {
                    field: m.external_job_id.clone(),
                    value: external_id.to_owned(),
                },
            )
            .await?;
        Ok(records.first().map(|r| self.job_record(r)))
    }

    pub async fn get_job(&self, id: &RecordId) -> Result<Option<JobRecord>, RecordsError> {
        Ok(self
            .backend
            .get(&self.mapping.jobs.table, id)
            .await?
            .map(|r| self.job_record(&r)))
    }

    fn job_record(&self, r: &Record) -> JobRecord {
        let m = &self.mapping.jobs;
        let f = &r.fields;
        JobRecord {
            id: r.id.clone(),
            job_id: m.job_id.as_deref().and_then(|k| text(f, k)),
            job_type: self
                .mapping
                .parse_job_type(&text(f, &m.job_type).unwrap_or_default()),
            status: text(f, &m.status).and_then(|s| self.mapping.parse_job_status(&s)),
            status_text: text(f, &m.status),
            external_job_id: text(f, &m.external_job_id),
            related_video: links(f, &m.related_video),
            error_details: m.error_details.as_deref().and_then(|e| text(f, e)),
        }
    }

    /// Whether jobs are upserted on a writable `Job ID` field (the mapping names one);
    /// otherwise a job's record is known only by the record id kept in the store.
    pub fn jobs_have_key(&self) -> bool {
        self.mapping.jobs.job_id.is_some()
    }

    /// Creates or updates the job with this `Job ID`; returns its record id. Only for a
    /// mapping with a Job ID field ([`Records::jobs_have_key`]).
    pub async fn write_job(&self, job: &JobFields) -> Result<RecordId, RecordsError> {
        let m = &self.mapping.jobs;
        let Some(key) = &m.job_id else {
            return Err(unkeyed(&m.table));
        };
        let f = self.job_fields_with_id(job);
        let r = self.backend.upsert(&m.table, key, f).await?;
        Ok(r.id)
    }

    /// The fields of a new Jobs record: those of the write, and the engine's Job ID when
    /// the mapping has a field for it.
    pub fn job_fields_with_id(&self, job: &JobFields) -> Fields {
        let mut f = self.job_fields(job);
        if let Some(key) = &self.mapping.jobs.job_id {
            f.insert(key.clone(), json!(job.job_id));
        }
        f
    }

    /// Updates a job by record id: for jobs another part of the pipeline created, whose
    /// Job ID (if any) is not the engine's, and for every job on a base without a Job ID
    /// the engine may write. The Job ID field is left as it is.
    pub async fn update_job(&self, record: &RecordId, job: &JobFields) -> Result<(), RecordsError> {
        let f = self.job_fields(job);
        if !f.is_empty() {
            self.backend
                .update(&self.mapping.jobs.table, record, f)
                .await?;
        }
        Ok(())
    }

    /// Creates a record with exactly these fields (no key to merge on); the caller keeps
    /// its id. See `creation` for how a create is made exactly-once without a key.
    pub async fn create(&self, table: &str, fields: Fields) -> Result<Record, RecordsError> {
        self.backend.create(table, fields).await
    }

    /// Records of `table` created at or after `since` (Airtable's `CREATED_TIME()`).
    pub async fn created_since(
        &self,
        table: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Record>, RecordsError> {
        self.backend.find(table, &Filter::CreatedSince(since)).await
    }

    fn job_fields(&self, job: &JobFields) -> Fields {
        let m = &self.mapping.jobs;
        let mut f = Fields::new();
        if let Some(t) = &job.job_type {
            f.insert(m.job_type.clone(), json!(self.mapping.job_type_value(t)));
        }
        if let Some(s) = job.status {
            f.insert(m.status.clone(), json!(self.mapping.job_status_value(s)));
        }
        if let Some(v) = &job.related_video {
            f.insert(m.related_video.clone(), json!([v.as_str()]));
        }
        if let Some(x) = &job.external_job_id {
            f.insert(m.external_job_id.clone(), json!(x));
        }
        if let (Some(u), Some(field)) = (&job.webhook_url, &m.webhook_url) {
            f.insert(field.clone(), json!(u));
        }
        if let (Some(e), Some(field)) = (&job.error_details, &m.error_details) {
            f.insert(field.clone(), json!(long_text(e)));
        }
        if let (Some(t), Some(field)) = (&job.timestamps, &m.timestamps) {
            f.insert(field.clone(), json!(t));
        }
        f
    }

    /// Whether Webhook Events records are upserted on a writable `Event ID` field.
    pub fn events_have_key(&self) -> bool {
        self.mapping.webhook_events.event_id.is_some()
    }

    /// The fields of the event's record, as the mapping names and spells them.
    pub fn webhook_event_fields(&self, e: &WebhookEventRecord) -> Fields {
        let m = &self.mapping.webhook_events;
        let mut f = Fields::new();
        if let Some(field) = &m.event_id {
            f.insert(field.clone(), json!(e.event_id));
        }
        f.insert(
            m.service.clone(),
            json!(
                self.mapping
                    .service_value(&e.service, default_service(&e.service))
            ),
        );
        if let Some(field) = &m.endpoint {
            f.insert(field.clone(), json!(e.endpoint));
        }
        f.insert(m.raw_payload.clone(), json!(long_text(&e.raw_payload)));
        f.insert(m.processed.clone(), json!(e.processed));
        f.insert(m.success.clone(), json!(e.success));
        if let Some(field) = &m.timestamp {
            f.insert(
                field.clone(),
                json!(e.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true)),
            );
        }
        if let (Some(j), Some(field)) = (&e.related_job, &m.related_job) {
            f.insert(field.clone(), json!([j.as_str()]));
        }
        if let (Some(d), Some(field)) = (&e.error_details, &m.error_details) {
            f.insert(field.clone(), json!(long_text(d)));
        }
        f
    }

    /// Writes the event's record, once per Event ID whatever its outcome (an upsert, so a
    /// retried write never makes a second record). Only for a mapping with an Event ID
    /// field ([`Records::events_have_key`]).
    pub async fn record_webhook_event(
        &self,
        e: &WebhookEventRecord,
    ) -> Result<RecordId, RecordsError> {
        let m = &self.mapping.webhook_events;
        let Some(key) = &m.event_id else {
            return Err(unkeyed(&m.table));
        };
        let f = self.webhook_event_fields(e);
        let r = self.backend.upsert(&m.table, key, f).await?;
        Ok(r.id)
    }

    pub async fn find_webhook_event(&self, event_id: &str) -> Result<Option<Record>, RecordsError> {
        let m = &self.mapping.webhook_events;
        let Some(key) = &m.event_id else {
            return Ok(None);
        };
        let found = self
            .backend
            .find(
                &m.table,
                &Filter::Equals {
                    field: key.clone(),
                    value: event_id.to_owned(),
                },
            )
            .await?;
        Ok(found.into_iter().next())
    }
}

/// The reference handler's spelling of a service (`Service` of Webhook Events).
fn default_service(service: &str) -> &str {
    match service {
        "goapi" => "GoAPI",
        "nca" => "NCA Toolkit",
        other => other,
    }
}

fn unkeyed(table: &str) -> RecordsError {
    RecordsError::Permanent {
        status: 0,
        kind: "NO_KEY_FIELD".into(),
        message: format!(
            "the mapping names no key field for {table:?}: records are created once by the \
             engine's creation rule, not upserted"
        ),
    }
}

/// A text cell; absent and empty are the same (Airtable omits empties).
fn text(f: &Fields, name: &str) -> Option<String> {
    match f.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        // A single select read through some APIs, or a lookup: take the first text.
        Value::Array(items) => items.iter().find_map(|v| v.as_str().map(str::to_owned)),
        _ => None,
    }
}

/// A media cell of either kind: a URL string, or attachments `[{"url": ...}]` (the newest,
/// last, one: earlier ones are kept on update), or a lookup's list of URLs.
fn media(f: &Fields, name: &str) -> Option<MediaUrl> {
    match f.get(name)? {
        Value::String(s) => MediaUrl::parse(s).ok(),
        Value::Array(items) => items
            .iter()
            .rev()
            .find_map(|a| a.get("url").and_then(Value::as_str).or_else(|| a.as_str()))
            .and_then(|u| MediaUrl::parse(u).ok()),
        _ => None,
    }
}

fn media_value(u: &MediaUrl, kind: MediaKind) -> Value {
    match kind {
        MediaKind::Url => json!(u.as_str()),
        MediaKind::Attachment => json!([{ "url": u.as_str(), "filename": file_name(u) }]),
    }
}

/// The file name an attachment is written with (and later recognised by): the URL's last
/// path segment, or `media` when it has none.
fn file_name(u: &MediaUrl) -> String {
    url::Url::parse(u.as_str())
        .ok()
        .and_then(|p| {
            p.path_segments()
                .and_then(|mut s| s.next_back().map(str::to_owned))
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "media".into())
}

fn links(f: &Fields, name: &str) -> Vec<RecordId> {
    f.get(name)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .filter_map(|s| RecordId::parse(s).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Cuts text to Airtable's long text limit, keeping its start and its end, where an
/// ffmpeg error usually says what went wrong.
pub fn long_text(s: &str) -> String {
    shorten(s, LONG_TEXT_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_reads_both_kinds() {
        let mut f = Fields::new();
        f.insert("A".into(), json!("https://x.example/a.mp3"));
        f.insert(
            "B".into(),
            json!([{"id": "att1", "url": "https://x.example/b.mp4"}]),
        );
        f.insert("C".into(), json!("not a url"));
        assert_eq!(media(&f, "A").unwrap().as_str(), "https://x.example/a.mp3");
        assert_eq!(media(&f, "B").unwrap().as_str(), "https://x.example/b.mp4");
        assert_eq!(media(&f, "C"), None);
        assert_eq!(media(&f, "D"), None);
    }
}
