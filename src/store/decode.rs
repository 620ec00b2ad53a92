//! Stored rows back into the store's types, the same for both backends. Each backend reads
//! its columns its own way (SQLite keeps times as text, PostgreSQL as `timestamptz`) and
//! hands them here, where every value is checked. A value that does not read is
//! [`StoreError::Corrupt`]: the row's fault, so a scan sets the row aside and goes on.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ActiveJob, HistoryRow, InboxEntry, OutboxEntry, StoreError};
use crate::domain::RecordId;
use crate::machine::{Effect, JobId};

pub(super) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// A state or outcome column, by its strum spelling.
pub(super) fn parse<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| corrupt(what, e))
}

pub(super) fn uuid(text: &str, what: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| corrupt(what, e))
}

pub(super) fn record_id(text: &str, what: &str) -> Result<RecordId, StoreError> {
    RecordId::parse(text).map_err(|e| corrupt(what, e))
}

fn job_id(text: &str) -> Result<JobId, StoreError> {
    uuid(text, "job id").map(JobId)
}

/// A `record_id` column that may be empty (a job not written yet, a creation not claimed).
pub(super) fn record_id_opt(text: Option<String>) -> Result<Option<RecordId>, StoreError> {
    text.map(|r| record_id(&r, "record id")).transpose()
}

/// A JSON array of a video's external ids, as the videos list aggregates them (none: no
/// job has one yet).
pub(super) fn external_ids(json: Option<&str>) -> Result<Vec<String>, StoreError> {
    json.map_or(Ok(Vec::new()), |j| {
        serde_json::from_str(j).map_err(|e| corrupt("external ids", e))
    })
}

/// A `job_index` row: the job's video and, once written, its record.
pub(super) fn job_location(
    video: &str,
    record: Option<String>,
) -> Result<(RecordId, Option<RecordId>), StoreError> {
    Ok((record_id(video, "video id")?, record_id_opt(record)?))
}

/// An inbox row's columns as read, `T` being the backend's timestamp.
pub(super) struct EntryColumns<T> {
    pub seq: i64,
    pub event_id: String,
    pub video: String,
    pub source: String,
    pub endpoint: String,
    pub raw_body: String,
    pub received_at: T,
    pub payload: String,
    pub state: String,
    pub outcome: Option<String>,
    pub note: Option<String>,
    pub job: Option<String>,
}

impl<T> EntryColumns<T> {
    pub fn decode(
        self,
        time: impl Fn(T) -> Result<DateTime<Utc>, StoreError>,
    ) -> Result<InboxEntry, StoreError> {
        Ok(InboxEntry {
            seq: self.seq,
            event_id: uuid(&self.event_id, "event id")?,
            video_id: record_id(&self.video, "video id")?,
            source: parse(&self.source, "source")?,
            endpoint: self.endpoint,
            raw_body: self.raw_body,
            received_at: time(self.received_at)?,
            payload: serde_json::from_str(&self.payload).map_err(|e| corrupt("payload", e))?,
            state: parse(&self.state, "entry state")?,
            outcome: self.outcome.map(|o| parse(&o, "outcome")).transpose()?,
            note: self.note,
            job: self.job.map(|j| job_id(&j)).transpose()?,
        })
    }
}

/// An outbox row's columns as read, `T` being the backend's timestamp.
pub(super) struct OutboxColumns<T> {
    pub seq: i64,
    pub effect_id: String,
    pub video: String,
    pub event_id: String,
    pub effect: String,
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at: T,
    pub last_error: Option<String>,
    pub started_at: Option<T>,
}

impl<T> OutboxColumns<T> {
    pub fn decode(
        self,
        time: impl Fn(T) -> Result<DateTime<Utc>, StoreError>,
    ) -> Result<OutboxEntry, StoreError> {
        Ok(OutboxEntry {
            seq: self.seq,
            effect_id: self.effect_id,
            video_id: record_id(&self.video, "video id")?,
            event_id: uuid(&self.event_id, "event id")?,
            effect: serde_json::from_str::<Effect>(&self.effect)
                .map_err(|e| corrupt("effect", e))?,
            state: parse(&self.state, "effect state")?,
            attempts: self.attempts,
            next_attempt_at: time(self.next_attempt_at)?,
            last_error: self.last_error,
            started_at: self.started_at.map(time).transpose()?,
        })
    }
}

/// An `active_jobs` row's columns as read, `T` being the backend's timestamp.
pub(super) struct ActiveJobColumns<T> {
    pub job: String,
    pub video: String,
    pub kind: String,
    pub external_id: Option<String>,
    pub since: T,
    pub checks: u32,
}

impl<T> ActiveJobColumns<T> {
    pub fn decode(
        self,
        time: impl Fn(T) -> Result<DateTime<Utc>, StoreError>,
    ) -> Result<ActiveJob, StoreError> {
        Ok(ActiveJob {
            job: job_id(&self.job)?,
            video_id: record_id(&self.video, "video id")?,
            kind: crate::domain::JobType::from(self.kind),
            external_id: self.external_id,
            since: time(self.since)?,
            checks: self.checks,
        })
    }
}

/// A `history` row's columns as read, `T` being the backend's timestamp.
pub(super) struct HistoryColumns<T> {
    pub event_id: String,
    pub event: String,
    pub from: String,
    pub to: String,
    pub outcome: String,
    pub at: T,
}

impl<T> HistoryColumns<T> {
    pub fn decode(
        self,
        time: impl Fn(T) -> Result<DateTime<Utc>, StoreError>,
    ) -> Result<HistoryRow, StoreError> {
        Ok(HistoryRow {
            event_id: uuid(&self.event_id, "event id")?,
            event: self.event,
            from: self.from,
            to: self.to,
            outcome: parse(&self.outcome, "outcome")?,
            at: time(self.at)?,
        })
    }
}
