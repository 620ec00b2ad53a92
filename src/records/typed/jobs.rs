//! The Jobs table: a video's jobs found by its link array, a job by its external id, and
//! a job written by upsert on its Job ID or updated by record id.

use std::collections::HashMap;

use serde_json::json;

use super::cells::{links, long_text, text};
use super::{Records, VideoRecord};
use crate::domain::{JobStatus, JobType, RecordId};
use crate::records::{Fields, Filter, Record, RecordsError};

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

impl Records {
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
        let f = self.job_fields_with_id(job);
        self.upsert_on_key(&m.table, m.job_id.as_deref(), f).await
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
}
