//! The engine's own durable state: the inbox of accepted events, the lifecycle snapshot of
//! every video it handles, the transition history, and the outbox of effects.
//!
//! Invariants: an event is acknowledged only after `accept` returns; a decision, its
//! history and its effects are stored in ONE transaction (`commit_decision`), before any
//! effect runs; the outbox is the executor's only source of work, so a restart resumes it.

mod sqlite;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::RecordId;
use crate::machine::{Effect, Event, JobId, Snapshot};

pub use sqlite::{SqliteStore, busy_wait};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("store task failed: {0}")]
    Join(String),
}

/// Which service an inbox entry came from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display, strum::EnumString,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A GoAPI webhook (or a GoAPI status poll).
    Goapi,
    /// An NCA Toolkit callback (or an NCA status poll).
    Nca,
    /// An operator's command through the API or CLI.
    Api,
    /// The engine itself (results of effects, deadlines).
    Engine,
}

impl Source {
    /// The Service value of a Webhook Events record.
    pub fn service_name(self) -> &'static str {
        match self {
            Source::Goapi => "GoAPI",
            Source::Nca => "NCA Toolkit",
            Source::Api => "API",
            Source::Engine => "reelstate",
        }
    }

    pub fn is_webhook(self) -> bool {
        matches!(self, Source::Goapi | Source::Nca)
    }
}

/// What an accepted inbox entry asks the worker to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "payload", rename_all = "snake_case")]
pub enum Payload {
    /// Run the event through the machine.
    Event { event: Event },
    /// Record only: a GoAPI task that is not music (video or image generation).
    NotMusic {
        task_id: String,
        description: String,
    },
    /// Record only: a repeated delivery of `of`.
    Duplicate { of: Uuid },
}

/// A webhook or command to be stored before it is acknowledged.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub event_id: Uuid,
    pub video_id: RecordId,
    pub source: Source,
    pub endpoint: String,
    /// None for commands and engine events, which are never duplicates of each other.
    pub dedupe_key: Option<String>,
    pub raw_body: String,
    pub headers: String,
    pub received_at: DateTime<Utc>,
    pub payload: Payload,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    New(Uuid),
    /// Already stored under this event id; the repeat was stored as its own entry.
    Duplicate {
        of: Uuid,
        entry: Uuid,
    },
}

#[derive(Debug, Clone)]
pub struct InboxEntry {
    pub seq: i64,
    pub event_id: Uuid,
    pub video_id: RecordId,
    pub source: Source,
    pub endpoint: String,
    pub raw_body: String,
    pub received_at: DateTime<Utc>,
    pub payload: Payload,
    pub state: String,
    pub outcome: Option<String>,
    pub note: Option<String>,
    pub job: Option<JobId>,
}

/// A persisted effect.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub seq: i64,
    pub effect_id: String,
    pub video_id: RecordId,
    pub event_id: Uuid,
    pub effect: Effect,
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    /// An external call was started and its result never stored (the process died).
    pub started_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    pub event_id: Uuid,
    pub event: String,
    pub from: String,
    pub to: String,
    pub outcome: String,
    pub at: DateTime<Utc>,
}

/// What the worker stores for one processed entry, atomically.
#[derive(Debug, Clone)]
pub struct Commit {
    pub event_id: Uuid,
    pub video_id: RecordId,
    /// The new snapshot, when the machine ran (and the video is known).
    pub snapshot: Option<Snapshot>,
    pub history: Option<HistoryRow>,
    pub effects: Vec<(String, Effect)>,
    /// An [`Outcome`], or `rejected` for a command the machine refused.
    pub outcome: String,
    pub note: Option<String>,
    pub job: Option<JobId>,
    /// Record ids of jobs read from the base (jobs other parts of the pipeline created).
    pub job_records: Vec<(JobId, RecordId)>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectState {
    Pending,
    Done,
    Failed,
}

impl EffectState {
    pub fn as_str(self) -> &'static str {
        match self {
            EffectState::Pending => "pending",
            EffectState::Done => "done",
            EffectState::Failed => "failed",
        }
    }
}

/// Counts for /metrics and /readyz.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Depths {
    pub inbox_pending: i64,
    pub outbox_pending: i64,
    pub outbox_failed: i64,
}

/// One page of the event log.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// An outcome (`applied`, `duplicate`, …), or `failed`: events with an effect that
    /// failed for good.
    pub outcome: Option<String>,
    pub video: Option<RecordId>,
    pub before_seq: Option<i64>,
    pub limit: u32,
}

/// A job waiting for its external service, as the reconciler sees it.
#[derive(Debug, Clone)]
pub struct ActiveJob {
    pub job: JobId,
    pub video_id: RecordId,
    pub kind: crate::domain::JobType,
    pub external_id: Option<String>,
    pub since: DateTime<Utc>,
    pub checks: u32,
}
