//! The store's values: what goes in (entries, commits), what comes out (entries, effects,
//! history), and the states and outcomes it keeps, each spelled in SQL and JSON by strum
//! and serde alone.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{RecordId, VideoStatus, snake_case_enum};
use crate::machine::{Effect, Event, JobId, Outcome, Snapshot};

snake_case_enum! {
    /// Which service an inbox entry came from.
    #[derive(Deserialize)]
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
}

impl Source {
    /// The Service value of a Webhook Events record.
    pub(crate) fn service_name(self) -> &'static str {
        match self {
            Source::Goapi => "GoAPI",
            Source::Nca => "NCA Toolkit",
            Source::Api => "API",
            Source::Engine => "reelstate",
        }
    }

    pub(crate) fn is_webhook(self) -> bool {
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

/// A new inbox entry's id. Time-ordered (UUIDv7), so that the inbox's unique index on
/// event ids grows at its end: a random id puts every accept on its own index page, one
/// more page for each accept to write to the log, flush and checkpoint.
pub fn new_event_id() -> Uuid {
    let mut random = [0u8; 10];
    crate::clock::fill(&mut random);
    let millis = u64::try_from(crate::clock::now().timestamp_millis()).unwrap_or_default();
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
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
    pub state: EntryState,
    pub outcome: Option<EntryOutcome>,
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
    pub state: EffectState,
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
    pub from: VideoStatus,
    pub to: VideoStatus,
    pub outcome: EntryOutcome,
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
    pub outcome: EntryOutcome,
    pub note: Option<String>,
    pub job: Option<JobId>,
    /// Record ids of jobs read from the base (jobs other parts of the pipeline created).
    pub job_records: Vec<(JobId, RecordId)>,
    pub at: DateTime<Utc>,
}

snake_case_enum! {
    /// Where an effect is. Its SQL spelling is strum's.
    #[derive(strum::AsRefStr, strum::IntoStaticStr, strum::EnumIter)]
    pub enum EffectState {
        /// To run, or running.
        Pending,
        Done,
        /// Failed for good; an operator may requeue it.
        Failed,
        /// Could not be read; set aside.
        Quarantined,
    }
}

snake_case_enum! {
    /// Where an inbox entry is.
    #[derive(strum::AsRefStr, strum::IntoStaticStr, strum::EnumIter)]
    pub enum EntryState {
        /// Waiting for the worker.
        Pending,
        Done,
        /// Could not be read; set aside.
        Quarantined,
    }
}

snake_case_enum! {
    /// What processing an entry came to: the machine's [`Outcome`], or `rejected` for a
    /// command the machine refused.
    #[derive(strum::AsRefStr, strum::IntoStaticStr, strum::EnumIter)]
    pub enum EntryOutcome {
        Applied,
        Recorded,
        Duplicate,
        Stale,
        Unmatched,
        Rejected,
    }
}

impl From<Outcome> for EntryOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Applied => EntryOutcome::Applied,
            Outcome::Recorded => EntryOutcome::Recorded,
            Outcome::Duplicate => EntryOutcome::Duplicate,
            Outcome::Stale => EntryOutcome::Stale,
            Outcome::Unmatched => EntryOutcome::Unmatched,
        }
    }
}

/// Counts for /metrics and /readyz.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Depths {
    pub inbox_pending: i64,
    pub outbox_pending: i64,
    pub outbox_failed: i64,
    /// Rows set aside because they could not be read (inbox entries and effects).
    pub quarantined: i64,
    /// When the oldest entry still waiting for the worker was received.
    pub oldest_pending: Option<DateTime<Utc>>,
}

/// An inbox entry or an effect that could not be read (say, stored by a version whose
/// `Event` or `Effect` this one no longer understands): set aside with the reason, so
/// that the worker and the executor go on with every other row. The row itself is kept
/// (state `quarantined`) for an operator to inspect or repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantined {
    /// `inbox` or `outbox`.
    pub table: String,
    /// The entry's event id or the effect's id.
    pub id: String,
    /// As stored (it may itself be what could not be read).
    pub video_id: String,
    pub reason: String,
    pub at: Option<DateTime<Utc>>,
}

/// What one pruning batch deleted, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub inbox: u64,
    pub history: u64,
    pub outbox: u64,
    /// Keyless-create claims whose record is known for good elsewhere (the job's index)
    /// or whose owner has nothing left to write.
    pub creations: u64,
    /// Jobs no longer polled (left on a final video), out of the active list.
    pub parked_jobs: u64,
    /// Paid calls folded into the per-day, per-video totals.
    pub paid_calls: u64,
}

impl Pruned {
    /// Each table with what this batch deleted from it (the pruner's metric labels).
    pub(crate) fn by_table(&self) -> [(&'static str, u64); 6] {
        [
            ("inbox", self.inbox),
            ("history", self.history),
            ("outbox", self.outbox),
            ("record_creations", self.creations),
            ("active_jobs", self.parked_jobs),
            ("paid_calls", self.paid_calls),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_table().iter().map(|(_, n)| n).sum()
    }

    /// Whether some table had a full batch (more may be waiting).
    pub(crate) fn any_full(&self, batch: u32) -> bool {
        self.by_table().iter().any(|(_, n)| *n >= u64::from(batch))
    }
}

/// Which events of the log to show: those of one outcome, or those with an effect that
/// failed for good (recorded, replayable). Spelled in a query string as the outcome, or
/// as `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFilter {
    Outcome(EntryOutcome),
    EffectFailed,
}

impl EventFilter {
    const EFFECT_FAILED: &'static str = "failed";

    /// Every filter, in the order an operator is offered them.
    pub fn all() -> impl Iterator<Item = EventFilter> {
        use strum::IntoEnumIterator;
        EntryOutcome::iter()
            .map(EventFilter::Outcome)
            .chain([EventFilter::EffectFailed])
    }

    /// Every filter's query-string spelling.
    pub(crate) fn spellings() -> Vec<&'static str> {
        EventFilter::all().map(EventFilter::as_str).collect()
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventFilter::Outcome(o) => o.into(),
            EventFilter::EffectFailed => Self::EFFECT_FAILED,
        }
    }
}

impl std::fmt::Display for EventFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A query string's filter that names no outcome and is not `failed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("outcome {0:?} is not one of {list}", list = EventFilter::spellings().join(", "))]
pub struct UnknownEventFilter(pub String);

impl std::str::FromStr for EventFilter {
    type Err = UnknownEventFilter;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventFilter::all()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownEventFilter(s.to_owned()))
    }
}

/// One page of the event log.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub filter: Option<EventFilter>,
    pub video: Option<RecordId>,
    /// Where the entries came from (GoAPI, NCA, an operator, the engine).
    pub source: Option<Source>,
    pub before_seq: Option<i64>,
    pub limit: u32,
}

/// Whose record a keyless create makes (`record_creations.owner`): a job's Jobs record or
/// an event's Webhook Events record. Its text form is this type's alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    Job(JobId),
    Event(Uuid),
}

impl Owner {
    /// How a job's owner text begins (retention finds a job's claims by it).
    pub const JOB_PREFIX: &'static str = "job:";
    /// How an event's owner text begins.
    pub const EVENT_PREFIX: &'static str = "event:";
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Job(job) => write!(f, "{}{job}", Self::JOB_PREFIX),
            Owner::Event(event) => write!(f, "{}{event}", Self::EVENT_PREFIX),
        }
    }
}

/// What the store knows of one record creation (see [`super::Snapshots::record_intent`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordIntent {
    /// When the creation was first noted: an earlier attempt's record, if any, was created
    /// after this.
    pub since: DateTime<Utc>,
    /// True when this call noted it: no earlier attempt can have created anything.
    pub fresh: bool,
    pub record: Option<RecordId>,
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

#[cfg(test)]
mod event_filter_tests {
    use super::*;

    #[test]
    fn every_filter_reads_back_from_its_spelling() {
        for f in EventFilter::all() {
            assert_eq!(f.as_str().parse::<EventFilter>(), Ok(f));
        }
        assert_eq!("failed".parse(), Ok(EventFilter::EffectFailed));
        assert_eq!(
            "duplicate".parse(),
            Ok(EventFilter::Outcome(EntryOutcome::Duplicate))
        );
        assert_eq!(
            "Failed".parse::<EventFilter>(),
            Err(UnknownEventFilter("Failed".into()))
        );
    }
}
