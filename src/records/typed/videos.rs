//! The Videos table: read (one or many), created, updated, attachments kept.

use serde_json::{Value, json};

use super::Records;
use super::cells::{links, long_text, media, media_value, text};
use crate::domain::{MediaUrl, RecordId, VideoStatus};
use crate::records::{Fields, Filter, MediaKind, Record, RecordsError};

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

impl Records {
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
    pub(crate) async fn current_source_video(
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
    pub(crate) fn source_video_expires(&self) -> bool {
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
}
