//! What the operator page shows at a glance, read from the engine's own store only (never
//! from Airtable): counts per state, the inbox's backlog, and what needs attention.

use chrono::{DateTime, Utc};

use super::{ActiveJob, OutboxEntry};
use crate::domain::RecordId;

#[derive(Debug, Clone, Default)]
pub struct Overview {
    /// Videos per status (the engine's snapshot), by status name.
    pub videos: Vec<(String, i64)>,
    /// Jobs per (type, status), across every video's snapshot.
    pub jobs: Vec<(String, String, i64)>,
    /// Entries waiting for the worker, and when the oldest of them arrived.
    pub inbox_pending: i64,
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Videos in a failed state, most recently changed first.
    pub failed: Vec<FailedVideo>,
    /// Every job waiting for its service, longest waiting first (whether it is past its
    /// deadline depends on settings the store does not know).
    pub waiting: Vec<ActiveJob>,
    /// Effects in trouble, newest first: failed for good, retrying after a failed attempt,
    /// or interrupted during an external call.
    pub troubled: Vec<OutboxEntry>,
}

#[derive(Debug, Clone)]
pub struct FailedVideo {
    pub video_id: RecordId,
    pub status: String,
    pub error_details: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// One page of the videos list (`GET /videos`, `/ui/videos`), most recently changed first.
/// Every filter set must hold; `failed` and `stuck` together mean either (what needs
/// attention).
#[derive(Debug, Clone, Default)]
pub struct VideoQuery {
    /// A status name as stored in snapshots.
    pub status: Option<String>,
    /// Videos with a job of this type (`music_generation`, …) and/or in this job status
    /// (`processing`, …): both, when both are set, of one job.
    pub job_type: Option<String>,
    pub job_status: Option<String>,
    /// Videos in a failed state ([`FAILED_STATUSES`]).
    pub failed: bool,
    /// Videos with a job still waiting for its service since before its cutoff.
    pub stuck: Option<StuckCutoffs>,
    /// Last changed strictly before / at or after these times.
    pub changed_before: Option<DateTime<Utc>>,
    pub changed_since: Option<DateTime<Utc>>,
    /// A video id, or the external id (GoAPI task id, NCA job id) of one of its jobs,
    /// matched exactly: the job index holds external ids under an index of their own.
    pub search: Option<String>,
    /// Only videos after this one in the list's order (the previous page's last row).
    pub after: Option<VideoCursor>,
    pub limit: u32,
}

/// A job waiting for its service since before its cutoff (now minus the service's
/// deadline, which the store does not know) makes its video stuck: NCA's for mixes,
/// GoAPI's for every other job, as the overview's late jobs.
#[derive(Debug, Clone, Copy)]
pub struct StuckCutoffs {
    pub goapi: DateTime<Utc>,
    pub nca: DateTime<Utc>,
}

/// A position in the videos list: its order is (last change, video id), both descending,
/// so that videos changed at the same instant still page without a gap or a repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoCursor {
    pub updated_at: DateTime<Utc>,
    pub video_id: String,
}

impl VideoCursor {
    /// `<microseconds since the epoch>-<video id>`: opaque to callers, safe in a URL.
    pub(crate) fn encode(&self) -> String {
        format!("{}-{}", self.updated_at.timestamp_micros(), self.video_id)
    }

    pub(crate) fn decode(s: &str) -> Option<Self> {
        let (micros, video) = s.split_once('-')?;
        let updated_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        (!video.is_empty()).then(|| Self {
            updated_at,
            video_id: video.to_owned(),
        })
    }
}

/// One row of the videos list.
#[derive(Debug, Clone)]
pub struct VideoRow {
    pub video_id: RecordId,
    pub status: String,
    pub error_details: Option<String>,
    pub retries: i64,
    pub updated_at: DateTime<Utc>,
    /// Its jobs' external ids (GoAPI task ids, NCA job ids), oldest job first.
    pub external_ids: Vec<String>,
    /// Since when its oldest job still waiting for a service has waited.
    pub waiting_since: Option<DateTime<Utc>>,
}

impl VideoRow {
    pub fn cursor(&self) -> VideoCursor {
        VideoCursor {
            updated_at: self.updated_at,
            video_id: self.video_id.to_string(),
        }
    }
}

/// Paid external calls started: GoAPI tasks and NCA renders, re-submissions included (each
/// start of a call is one, whatever its answer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PaidCalls {
    pub goapi_tasks: i64,
    pub nca_renders: i64,
}

impl PaidCalls {
    /// Adds one count per service, as the stores read them (`goapi`, `nca`).
    pub(crate) fn add(&mut self, service: &str, n: i64) {
        match service {
            "goapi" => self.goapi_tasks += n,
            _ => self.nca_renders += n,
        }
    }
}

/// The paid calls started on one day (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidDay {
    pub day: chrono::NaiveDate,
    pub calls: PaidCalls,
}

/// Adds a (day, service) count read in day order to `days`.
pub(crate) fn add_day(days: &mut Vec<PaidDay>, day: chrono::NaiveDate, service: &str, n: i64) {
    if days.last().is_none_or(|d| d.day != day) {
        days.push(PaidDay {
            day,
            calls: PaidCalls::default(),
        });
    }
    if let Some(last) = days.last_mut() {
        last.calls.add(service, n);
    }
}

/// The statuses [`Overview::failed`] lists, as stored in snapshots.
pub(crate) const FAILED_STATUSES: [&str; 2] = ["music_generation_failed", "music_addition_failed"];

/// The final statuses (completed, then [`FAILED_STATUSES`]) as snapshots spell them, to
/// bind as SQL parameters.
pub(crate) fn final_statuses() -> (String, &'static str, &'static str) {
    let [a, b] = FAILED_STATUSES;
    (
        crate::domain::VideoStatus::Completed.name().to_owned(),
        a,
        b,
    )
}

#[cfg(test)]
mod tests {
    use crate::domain::VideoStatus;

    #[test]
    fn a_cursor_survives_its_round_trip_and_rejects_garbage() {
        let c = super::VideoCursor {
            updated_at: chrono::DateTime::from_timestamp_micros(1_796_000_000_123_456).unwrap(),
            video_id: "recA1b2C3d4E5f6G7".into(),
        };
        assert_eq!(super::VideoCursor::decode(&c.encode()), Some(c));
        for bad in ["", "12", "x-recA", "12-", "-recA"] {
            assert_eq!(super::VideoCursor::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_failed_statuses_are_the_machines() {
        let failed: Vec<&str> = VideoStatus::KNOWN
            .iter()
            .filter(|s| s.is_failed())
            .map(|s| s.name())
            .collect();
        assert_eq!(failed, super::FAILED_STATUSES);
    }
}
