//! The engine's own durable state: the inbox of accepted events, the lifecycle snapshot of
//! every video it handles, the transition history, and the outbox of effects.
//!
//! Invariants: an event is acknowledged only after `accept` returns; a decision, its
//! history and its effects are stored in ONE transaction (`commit`), before any effect
//! runs; the outbox is the executor's only source of work, so a restart resumes it.
//!
//! Two implementations behind the [`Store`] trait: [`SqliteStore`] (embedded, one
//! process) and [`PgStore`] (PostgreSQL, any number of replicas). The worker and the
//! executor work on a video only while they hold its [`Lease`] for their [`Lane`]; the
//! store decides who holds it (in-process for SQLite, a row claimed with
//! `FOR UPDATE SKIP LOCKED` for PostgreSQL), and a commit under a lease that was taken over
//! fails with [`StoreError::LeaseLost`] and changes nothing.

mod lease;
mod overview;
mod postgres;
mod quarantine;
mod sqlite;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::RecordId;
use crate::machine::{Effect, Event, JobId, Outcome, Snapshot};

pub(crate) use lease::projection_sql;
pub use lease::{Lane, Lease, LocalLeases, PROJECTION_KINDS, claim_in_order};
pub use overview::{FailedVideo, Overview};
pub use postgres::PgStore;
pub use quarantine::split_readable;
pub use sqlite::{SqliteStore, busy_wait};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store error: {0}")]
    Postgres(#[from] crate::pg::PgError),
    /// Another replica took the video over (this one's lease expired): nothing was written.
    #[error("the lease on video {0} was taken over; nothing was written")]
    LeaseLost(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("store task failed: {0}")]
    Join(String),
    /// The embedded store belongs to one process; another one has it open.
    #[error(
        "{0} is already in use by another reelstate process{1}: the embedded store serves one process (two would roll each other's snapshots back); stop the other one, or run several replicas on PostgreSQL (REELSTATE_DB=postgres://…)"
    )]
    InUse(String, String),
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
    pub from: String,
    pub to: String,
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

/// Where an effect is. strum gives each state its SQL (and JSON) spelling.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    strum::Display,
    strum::EnumString,
    strum::AsRefStr,
    strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum EffectState {
    /// To run, or running.
    Pending,
    Done,
    /// Failed for good; an operator may requeue it.
    Failed,
    /// Could not be read; set aside.
    Quarantined,
}

/// Where an inbox entry is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    strum::Display,
    strum::EnumString,
    strum::AsRefStr,
    strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// Waiting for the worker.
    Pending,
    Done,
    /// Could not be read; set aside.
    Quarantined,
}

/// What processing an entry came to: the machine's [`Outcome`], or `rejected` for a
/// command the machine refused.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    strum::Display,
    strum::EnumString,
    strum::AsRefStr,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum EntryOutcome {
    Applied,
    Recorded,
    Duplicate,
    Stale,
    Unmatched,
    Rejected,
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

/// What one pruning pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub inbox: u64,
    pub history: u64,
    pub outbox: u64,
}

impl Pruned {
    pub fn total(&self) -> u64 {
        self.inbox + self.history + self.outbox
    }
}

/// One page of the event log.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// An outcome (`applied`, `duplicate`, …), or `failed`: events with an effect that
    /// failed for good.
    pub outcome: Option<String>,
    pub video: Option<RecordId>,
    /// Where the entries came from (GoAPI, NCA, an operator, the engine).
    pub source: Option<Source>,
    pub before_seq: Option<i64>,
    pub limit: u32,
}

/// A job waiting for its external service, as the reconciler sees it.
/// What the store knows of one record creation (see [`Store::record_intent`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordIntent {
    /// When the creation was first noted: an earlier attempt's record, if any, was created
    /// after this.
    pub since: DateTime<Utc>,
    /// True when this call noted it: no earlier attempt can have created anything.
    pub fresh: bool,
    pub record: Option<RecordId>,
}

#[derive(Debug, Clone)]
pub struct ActiveJob {
    pub job: JobId,
    pub video_id: RecordId,
    pub kind: crate::domain::JobType,
    pub external_id: Option<String>,
    pub since: DateTime<Utc>,
    pub checks: u32,
}

/// The engine's durable state, as the worker, the executor, the reconciler and the API
/// use it. Implementations keep every invariant in the module's documentation.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Stores an entry durably. A repeat (same dedupe key) is stored too, as a duplicate
    /// entry pointing at the first, so that the event log shows every delivery. Returns
    /// only once the entry is committed.
    async fn accept(&self, entry: NewEntry) -> Result<Accepted, StoreError>;

    /// Lets webhooks waiting for their commit go first (bounded); background work calls
    /// it before each step. Stores whose intake does not queue need not wait.
    async fn yield_to_intake(&self) {}

    /// Pending entries in arrival order, at most 16 per video.
    async fn pending_entries(&self, limit: u32) -> Result<Vec<InboxEntry>, StoreError>;
    /// Whether an entry still waits for the worker (a cheap re-check of a listed entry).
    async fn is_pending(&self, event_id: Uuid) -> Result<bool, StoreError>;
    /// Whether some entry of this video still waits for the worker (a callback, say).
    async fn has_pending_entries(&self, video: &RecordId) -> Result<bool, StoreError>;
    async fn entry(&self, event_id: Uuid) -> Result<Option<InboxEntry>, StoreError>;
    async fn events(&self, q: EventQuery) -> Result<Vec<InboxEntry>, StoreError>;

    async fn snapshot(&self, video: &RecordId) -> Result<Option<Snapshot>, StoreError>;
    /// Stores a processed entry's decision: snapshot, history, effects and the entry's
    /// outcome, all or nothing, and only while `lease` (the worker's lease on the video)
    /// is still this holder's; else [`StoreError::LeaseLost`].
    async fn commit(&self, commit: Commit, lease: &Lease) -> Result<(), StoreError>;

    /// Claims the videos' leases on `lane` that nobody else holds; returns those it got.
    async fn claim(&self, lane: Lane, videos: Vec<RecordId>) -> Result<Vec<Lease>, StoreError>;

    /// The first pending effect of each video's executor lane (`Lane::of_effect_kind`:
    /// its calls to services, its writes to the base) whose time has come, oldest first:
    /// a video's effects of one lane run one at a time, in the order they were decided.
    async fn due_effects(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError>;
    /// When the next effect this process could run is due, if any (to sleep until then):
    /// the first pending effect of each video's lane, leaving out (where the store can
    /// tell) those whose lease is held.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Marks an effect done and stores what it produced, in one transaction: this is
    /// what makes an effect's result count once even if the process dies right after.
    /// Only a pending effect: a late result of an effect already finished (by another
    /// replica, or by the callback that made the call unneeded) changes nothing and
    /// stores no follow-up. The same holds for every result below.
    async fn effect_done_with(
        &self,
        effect_id: &str,
        follow_up: Option<NewEntry>,
    ) -> Result<(), StoreError>;
    /// Records an effect as failed for good (replayable), with its follow-up event.
    async fn effect_failed_with(
        &self,
        effect_id: &str,
        error: &str,
        follow_up: Option<NewEntry>,
    ) -> Result<(), StoreError>;
    async fn effect_retry_later(
        &self,
        effect_id: &str,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError>;
    /// One effect as stored now.
    async fn outbox_entry(&self, effect_id: &str) -> Result<Option<OutboxEntry>, StoreError>;
    /// Notes that an external call is about to be made for this effect, if the
    /// executor's `lease` on its video still holds, the effect is still pending and its
    /// `started_at` is still `seen` (what the caller read): a compare-and-set, so that of
    /// two executors racing for one call at most one gets true. Returns false (and notes
    /// nothing) otherwise: then the call must not be made.
    async fn effect_started(
        &self,
        effect_id: &str,
        lease: &Lease,
        seen: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError>;
    /// Records an ambiguous failure of an external call: one attempt more, `started_at`
    /// kept, so the next attempt first waits out the grace period for the callback.
    async fn effect_ambiguous(&self, effect_id: &str, error: &str) -> Result<(), StoreError>;
    /// Postpones an effect without counting an attempt.
    async fn effect_defer(&self, effect_id: &str, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Puts a failed effect back in the queue (operator replay). Returns false if there is
    /// no failed effect of that id.
    async fn requeue_effect(&self, effect_id: &str) -> Result<bool, StoreError>;
    /// The video's pending effects in order, at most `limit`.
    async fn pending_effects_of(
        &self,
        video: &RecordId,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError>;
    async fn effects_of(&self, video: &RecordId) -> Result<Vec<OutboxEntry>, StoreError>;
    async fn history(&self, video: &RecordId) -> Result<Vec<HistoryRow>, StoreError>;

    /// Exactly-once creation of a record on a base with no writable key field
    /// (ARCHITECTURE.md, "Creating a record without a key"): notes, durably, that the
    /// record of `owner` (`job:<id>`, `event:<id>`) is about to be created, unless that was
    /// noted before; answers when it was first noted and the record claimed for it, if any.
    async fn record_intent(&self, owner: &str) -> Result<RecordIntent, StoreError>;
    /// Claims `record` for `owner`. False when another owner already has it (a record is
    /// claimed at most once) or `owner` already has another.
    async fn claim_record(&self, owner: &str, record: &RecordId) -> Result<bool, StoreError>;
    async fn set_job_record(&self, job: JobId, record: &RecordId) -> Result<(), StoreError>;
    /// The job's video and, once written, its Airtable record id.
    async fn job_location(
        &self,
        job: JobId,
    ) -> Result<Option<(RecordId, Option<RecordId>)>, StoreError>;

    async fn depths(&self) -> Result<Depths, StoreError>;
    /// Counts per state and what needs attention (at most `limit` rows of each list), for
    /// the operator page.
    async fn overview(&self, limit: u32) -> Result<Overview, StoreError>;
    /// Active jobs whose next check is due.
    async fn active_jobs_due(&self, now: DateTime<Utc>) -> Result<Vec<ActiveJob>, StoreError>;
    async fn reschedule_check(
        &self,
        job: JobId,
        checks: u32,
        next: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// A cheap write that proves the store is writable (/readyz).
    async fn ping(&self) -> Result<(), StoreError>;

    /// At shutdown, after the worker and the executor stopped: gives back every lease
    /// this process holds, so that other replicas take the work over at once rather than
    /// after the leases expire.
    async fn release_leases(&self) {}

    /// Whether `lease` is still its holder's right now. Writes the store cannot fence
    /// itself (Airtable's) are made only when this is true, so a holder that lost the
    /// video writes nothing. A lease of a one-process store is never lost.
    async fn holds(&self, lease: &Lease) -> Result<bool, StoreError> {
        let _ = lease;
        Ok(true)
    }

    /// Rows set aside because they could not be read, newest first.
    async fn quarantined(&self, limit: u32) -> Result<Vec<Quarantined>, StoreError>;

    /// Deletes, in batches of at most `batch` rows per table, what is older than
    /// `before` and no longer needed: processed inbox entries (raw bodies included)
    /// with no effect still open, transition history, and done effects. Pending work,
    /// failed (replayable) effects, quarantined rows and snapshots are kept.
    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<Pruned, StoreError>;
}
