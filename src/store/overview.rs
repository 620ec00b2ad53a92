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

/// The statuses [`Overview::failed`] lists, as stored in snapshots.
pub(crate) const FAILED_STATUSES: [&str; 2] = ["music_generation_failed", "music_addition_failed"];

#[cfg(test)]
mod tests {
    use crate::domain::VideoStatus;

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
