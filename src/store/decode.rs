//! Stored rows back into the store's types, the same for both backends. Each backend reads
//! its columns its own way (SQLite keeps times as text, PostgreSQL as `timestamptz`) and
//! hands them here, where every value is checked. A value that does not read is
//! [`StoreError::Corrupt`]: the row's fault, so a scan sets the row aside and goes on.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ActiveJob, HistoryRow, InboxEntry, OutboxEntry, StoreError};
use crate::domain::{RecordId, VideoStatus};
use crate::machine::{Effect, JobId};

/// The format of the JSON kept in rows (snapshots, effects, payloads), written first in
/// each as `"v"`. A change that an older binary would misread (a renamed or retyped field;
/// not an added optional one, which serde skips) takes the next number, and readers older
/// than it set such rows aside as unreadable instead of acting on a misreading. On
/// PostgreSQL, where replicas of two versions share rows through a rolling deploy, a new
/// format is shipped readable one release before it is written (docs/upgrade.md).
pub const ROW_FORMAT: u64 = 1;

/// `value` as JSON with the row format first: `{"v":1,...}`. First, so that a reader finds
/// it without parsing the row twice (all three are JSON objects: structs, and enums tagged
/// inside the object, which ignore the extra field).
pub(super) fn to_row<T: serde::Serialize>(value: &T, what: &str) -> Result<String, StoreError> {
    let json = serde_json::to_string(value).map_err(|e| corrupt(what, e))?;
    let Some(fields) = json.strip_prefix('{') else {
        return Err(corrupt(what, "not a JSON object"));
    };
    let sep = if fields == "}" { "" } else { "," };
    Ok(format!("{{\"v\":{ROW_FORMAT}{sep}{fields}"))
}

/// A row's JSON back, once its format is one this binary reads: rows from before the
/// format was written have none and are format 1's. A newer format is the row's
/// [`StoreError::Corrupt`], so that scans set it aside (quarantine) as any unreadable row.
pub(super) fn from_row<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, StoreError> {
    if let Some(rest) = text.strip_prefix("{\"v\":") {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let v: u64 = rest[..digits]
            .parse()
            .map_err(|e| corrupt(&format!("{what} row format"), e))?;
        if v > ROW_FORMAT {
            return Err(StoreError::Corrupt(format!(
                "{what} is in row format {v}, written by a newer reelstate; this binary reads up to format {ROW_FORMAT} (docs/upgrade.md)"
            )));
        }
    }
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

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
    pub(crate) seq: i64,
    pub(crate) event_id: String,
    pub(crate) video: String,
    pub(crate) source: String,
    pub(crate) endpoint: String,
    pub(crate) raw_body: String,
    pub(crate) received_at: T,
    pub(crate) payload: String,
    pub(crate) state: String,
    pub(crate) outcome: Option<String>,
    pub(crate) note: Option<String>,
    pub(crate) job: Option<String>,
}

impl<T> EntryColumns<T> {
    pub(crate) fn decode(
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
            payload: from_row(&self.payload, "payload")?,
            state: parse(&self.state, "entry state")?,
            outcome: self.outcome.map(|o| parse(&o, "outcome")).transpose()?,
            note: self.note,
            job: self.job.map(|j| job_id(&j)).transpose()?,
        })
    }
}

/// An outbox row's columns as read, `T` being the backend's timestamp.
pub(super) struct OutboxColumns<T> {
    pub(crate) seq: i64,
    pub(crate) effect_id: String,
    pub(crate) video: String,
    pub(crate) event_id: String,
    pub(crate) effect: String,
    pub(crate) state: String,
    pub(crate) attempts: u32,
    pub(crate) next_attempt_at: T,
    pub(crate) last_error: Option<String>,
    pub(crate) started_at: Option<T>,
}

impl<T> OutboxColumns<T> {
    pub(crate) fn decode(
        self,
        time: impl Fn(T) -> Result<DateTime<Utc>, StoreError>,
    ) -> Result<OutboxEntry, StoreError> {
        Ok(OutboxEntry {
            seq: self.seq,
            effect_id: self.effect_id,
            video_id: record_id(&self.video, "video id")?,
            event_id: uuid(&self.event_id, "event id")?,
            effect: from_row::<Effect>(&self.effect, "effect")?,
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
    pub(crate) job: String,
    pub(crate) video: String,
    pub(crate) kind: String,
    pub(crate) external_id: Option<String>,
    pub(crate) since: T,
    pub(crate) checks: u32,
}

impl<T> ActiveJobColumns<T> {
    pub(crate) fn decode(
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
    pub(crate) event_id: String,
    pub(crate) event: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) outcome: String,
    pub(crate) at: T,
}

impl<T> HistoryColumns<T> {
    pub(crate) fn decode(
        self,
        time: impl Fn(T) -> Result<DateTime<Utc>, StoreError>,
    ) -> Result<HistoryRow, StoreError> {
        Ok(HistoryRow {
            event_id: uuid(&self.event_id, "event id")?,
            event: self.event,
            from: VideoStatus::from_airtable(&self.from),
            to: VideoStatus::from_airtable(&self.to),
            outcome: parse(&self.outcome, "outcome")?,
            at: time(self.at)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Outcome;
    use crate::store::Payload;

    #[test]
    fn rows_carry_their_format_first_and_read_back() {
        let effect = Effect::RecordWebhookOutcome {
            outcome: Outcome::Applied,
            job: None,
            detail: None,
        };
        let row = to_row(&effect, "effect").unwrap();
        assert!(
            row.starts_with(&format!("{{\"v\":{ROW_FORMAT},\"effect\":")),
            "{row}"
        );
        assert_eq!(from_row::<Effect>(&row, "effect").unwrap(), effect);
        let payload = Payload::Duplicate { of: Uuid::nil() };
        let row = to_row(&payload, "payload").unwrap();
        assert_eq!(from_row::<Payload>(&row, "payload").unwrap(), payload);
    }

    #[test]
    fn rows_from_before_the_format_read_as_format_one() {
        let old = serde_json::to_string(&Payload::Duplicate { of: Uuid::nil() }).unwrap();
        assert!(!old.contains("\"v\""), "{old}");
        assert_eq!(
            from_row::<Payload>(&old, "payload").unwrap(),
            Payload::Duplicate { of: Uuid::nil() }
        );
    }

    #[test]
    fn a_newer_format_is_the_rows_fault_and_says_so() {
        let newer = format!(
            "{{\"v\":{},\"payload\":\"duplicate\",\"of\":\"{}\"}}",
            ROW_FORMAT + 1,
            Uuid::nil()
        );
        match from_row::<Payload>(&newer, "payload") {
            Err(StoreError::Corrupt(why)) => {
                assert!(
                    why.contains(&format!("row format {}", ROW_FORMAT + 1)),
                    "{why}"
                );
                assert!(why.contains(&format!("up to format {ROW_FORMAT}")), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }
}
