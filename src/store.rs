//! The engine's own durable state: the inbox of accepted events, the lifecycle snapshot of
//! every video it handles, the transition history, and the outbox of effects.
//!
//! Invariants: an event is acknowledged only after `accept` returns; a decision, its
//! history and its effects are stored in ONE transaction (`commit`), before any effect
//! runs; the outbox is the executor's only source of work, so a restart resumes it.
//!
//! Two implementations: [`SqliteStore`] (embedded, one
//! process) and [`PgStore`] (PostgreSQL, any number of replicas). The worker and the
//! executor work on a video only while they hold its [`Lease`] for their [`Lane`]; the
//! store decides who holds it (in-process for SQLite, a row claimed with
//! `FOR UPDATE SKIP LOCKED` for PostgreSQL), and a commit under a lease that was taken over
//! fails with [`StoreError::LeaseLost`] and changes nothing.
//!
//! What a store does comes in narrow traits, one per concern, so that a caller names what
//! it may touch: [`Inbox`], [`Outbox`], [`Snapshots`], [`Leases`] and [`Maintenance`].
//! [`Store`] is all of them (any type that implements the five is one), for the engine,
//! which holds the store for every part. Each backend implements each trait in a file of
//! its own (`sqlite/inbox.rs`, `postgres/inbox.rs`, …).
//!
//! Files: `lease.rs` (leases and `claim_in_order`, the worker's and the executor's scheduling,
//! claiming videos in order as slots free up); `types.rs` (the stored values; `EffectState`,
//! `EntryState`, `EntryOutcome`, spelled in SQL by strum and nowhere else); `decode.rs` (a row read
//! back into them, once for both backends, and `ROW_FORMAT`, the format of the JSON in rows);
//! `overview.rs` (counts per state and what needs attention, for the operator page).
//! `sqlite.rs` (opening, connections, leases in memory) with `sqlite/group_commit.rs`,
//! `sqlite/wal_sync.rs`, `sqlite/checkpoint.rs` (the WAL copied off the commits, and `WriteGate`,
//! the file's write lock taken in-process, shared with the embedded records), `sqlite/schema.rs`
//! (`store_migrations`; a file of a newer version is refused) and `sqlite/backup.rs` (backup
//! beside the running service, restore); `postgres.rs` (pool, statements; migrations in
//! `crate::pg`) with `postgres/leases.rs` (leases as rows). Both backends read the snapshots'
//! JSON in SQL for the overview (`sqlite/overview.rs`, `postgres/overview.rs`) and quarantine
//! unreadable rows in `maintenance.rs`.

mod decode;
mod lease;
mod overview;
mod postgres;
mod quarantine;
mod sqlite;
mod types;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::RecordId;
use crate::machine::{JobId, Snapshot};

pub use decode::ROW_FORMAT;
pub use lease::projection_sql;
pub use lease::{Lane, Lease, LocalLeases, claim_in_order};
pub(crate) use overview::add_day;
pub use overview::{
    FailedVideo, Overview, PaidCalls, PaidDay, StuckCutoffs, VideoCursor, VideoQuery, VideoRow,
};
pub use postgres::{PgSimulation, PgStore};
pub(crate) use quarantine::split_readable;
pub use sqlite::backup;
pub use sqlite::{Cached, STORE_SCHEMA, SqliteStore, WriteGate, busy_wait, migrate_file, tune};
pub use types::{
    Accepted, ActiveJob, Commit, Depths, EffectState, EntryOutcome, EntryState, EventFilter,
    EventQuery, HistoryRow, InboxEntry, NewEntry, OutboxEntry, Owner, Payload, Pruned, Quarantined,
    RecordIntent, Source, UnknownEventFilter, new_event_id,
};

/// When the reconciler stops polling a job (it was left on a final video, or is still
/// active after its last check), its next check is pushed this far out: it is parked.
pub fn parked_from(now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::days(3650)
}

/// A check due later than this is a parked one (see [`parked_from`]); retention deletes
/// parked jobs of final videos once they are older than it.
pub(crate) fn parked_beyond(now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::days(365)
}

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
    /// A file the backup commands were given is missing, in the way, or unusable.
    #[error("{0}")]
    File(String),
    /// The file was written by a newer binary (its tables or rows are of a version this
    /// one does not know): reading it could misread them, writing it could break them.
    #[error(
        "the {what} in this file is at version {file}, written by a newer reelstate; this binary knows up to version {binary}. Run the newer binary, or restore the backup taken before the upgrade (docs/upgrade.md)"
    )]
    Newer {
        what: &'static str,
        file: i64,
        binary: i64,
    },
}

/// The engine's durable state, as the worker, the executor, the reconciler and the API
/// use it: every narrow trait at once. Implementations keep every invariant in the
/// module's documentation.
pub trait Store: Inbox + Outbox + Snapshots + Leases + Maintenance {}

impl<T: Inbox + Outbox + Snapshots + Leases + Maintenance + ?Sized> Store for T {}

/// The inbox: entries stored durably before they are acknowledged, and read back by the
/// worker in arrival order. For intake (webhooks, commands), the worker and the API.
#[async_trait::async_trait]
pub trait Inbox: Send + Sync {
    /// Stores an entry durably. A repeat (same dedupe key) is stored too, as a duplicate
    /// entry pointing at the first, so that the event log shows every delivery. Returns
    /// only once the entry is committed.
    async fn accept(&self, entry: NewEntry) -> Result<Accepted, StoreError>;
    /// Lets webhooks waiting for their commit go first (bounded); background work calls
    /// it before each step. Stores whose intake does not queue need not wait.
    async fn yield_to_intake(&self) {}
    /// How often the worker scans the inbox when nothing woke it. Entries this process
    /// accepts wake the worker themselves; the scan finds what arrived some other way (on
    /// a store shared by replicas, every other replica's entries), so the default is short.
    fn rescan_every(&self) -> std::time::Duration {
        std::time::Duration::from_millis(250)
    }
    /// Pending entries in arrival order, at most 16 per video.
    async fn pending_entries(&self, limit: u32) -> Result<Vec<InboxEntry>, StoreError>;
    /// Whether an entry still waits for the worker (a cheap re-check of a listed entry).
    async fn is_pending(&self, event_id: Uuid) -> Result<bool, StoreError>;
    /// Whether some entry of this video still waits for the worker (a callback, say).
    async fn has_pending_entries(&self, video: &RecordId) -> Result<bool, StoreError>;
    async fn entry(&self, event_id: Uuid) -> Result<Option<InboxEntry>, StoreError>;
    async fn events(&self, q: EventQuery) -> Result<Vec<InboxEntry>, StoreError>;
}

/// The outbox: the effects decided, and what became of each. For the executor, and for
/// the operator's replay.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync {
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
    ) -> Result<(), StoreError> {
        self.finish_effect(effect_id, EffectState::Done, None, follow_up)
            .await
    }
    /// Records an effect as failed for good (replayable), with its follow-up event.
    async fn effect_failed_with(
        &self,
        effect_id: &str,
        error: &str,
        follow_up: Option<NewEntry>,
    ) -> Result<(), StoreError> {
        self.finish_effect(
            effect_id,
            EffectState::Failed,
            Some(error.to_owned()),
            follow_up,
        )
        .await
    }
    /// What the two above share: a pending effect moved to its final `state` (done or
    /// failed) with its follow-up entry, in one transaction.
    async fn finish_effect(
        &self,
        effect_id: &str,
        state: EffectState,
        error: Option<String>,
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
}

/// What the worker decided: each video's snapshot, committed with its history and effects;
/// the job index (a job's video and record); the jobs waiting for their service (the
/// reconciler's worklist); and the records created on a base with no key field.
#[async_trait::async_trait]
pub trait Snapshots: Send + Sync {
    async fn snapshot(&self, video: &RecordId) -> Result<Option<Snapshot>, StoreError>;
    /// Stores a processed entry's decision: snapshot, history, effects and the entry's
    /// outcome, all or nothing, and only while `lease` (the worker's lease on the video)
    /// is still this holder's; else [`StoreError::LeaseLost`].
    async fn commit(&self, commit: Commit, lease: &Lease) -> Result<(), StoreError>;
    async fn history(&self, video: &RecordId) -> Result<Vec<HistoryRow>, StoreError>;
    async fn set_job_record(&self, job: JobId, record: &RecordId) -> Result<(), StoreError>;
    /// The job's video and, once written, its Airtable record id.
    async fn job_location(
        &self,
        job: JobId,
    ) -> Result<Option<(RecordId, Option<RecordId>)>, StoreError>;
    /// Exactly-once creation of a record on a base with no writable key field
    /// (ARCHITECTURE.md, "Creating a record without a key"): notes, durably, that the
    /// record of `owner` is about to be created, unless that was noted before; answers when
    /// it was first noted and the record claimed for it, if any.
    async fn record_intent(&self, owner: &Owner) -> Result<RecordIntent, StoreError>;
    /// Claims `record` for `owner`. False when another owner already has it (a record is
    /// claimed at most once) or `owner` already has another.
    async fn claim_record(&self, owner: &Owner, record: &RecordId) -> Result<bool, StoreError>;
    /// Active jobs whose next check is due.
    async fn active_jobs_due(&self, now: DateTime<Utc>) -> Result<Vec<ActiveJob>, StoreError>;
    async fn reschedule_check(
        &self,
        job: JobId,
        checks: u32,
        next: DateTime<Utc>,
    ) -> Result<(), StoreError>;
}

/// Who works on a video: at most one holder per lane and video, across every process
/// sharing the store. For the worker and the executor (`claim_in_order`).
#[async_trait::async_trait]
pub trait Leases: Send + Sync {
    /// Claims the videos' leases on `lane` that nobody else holds; returns those it got.
    async fn claim(&self, lane: Lane, videos: Vec<RecordId>) -> Result<Vec<Lease>, StoreError>;
    /// Whether `lease` is still its holder's right now. Writes the store cannot fence
    /// itself (Airtable's) are made only when this is true, so a holder that lost the
    /// video writes nothing. A lease of a one-process store is never lost.
    async fn holds(&self, lease: &Lease) -> Result<bool, StoreError> {
        let _ = lease;
        Ok(true)
    }
    /// At shutdown, after the worker and the executor stopped: gives back every lease
    /// this process holds, so that other replicas take the work over at once rather than
    /// after the leases expire.
    async fn release_leases(&self) {}
}

/// Looking after the store: its depths (/metrics, /readyz), the operator page's overview,
/// the rows set aside, and retention (the pruner).
#[async_trait::async_trait]
pub trait Maintenance: Send + Sync {
    async fn depths(&self) -> Result<Depths, StoreError>;
    /// Counts per state and what needs attention (at most `limit` rows of each list), for
    /// the operator page.
    async fn overview(&self, limit: u32) -> Result<Overview, StoreError>;
    /// One page of the videos the engine has handled, filtered and most recently changed
    /// first (the operator's list and search).
    async fn videos(&self, q: VideoQuery) -> Result<Vec<VideoRow>, StoreError>;
    /// The paid calls started for `video`, or for every video ever (they outlive
    /// retention).
    async fn paid_calls(&self, video: Option<&RecordId>) -> Result<PaidCalls, StoreError>;
    /// The paid calls started per day (UTC) since `since`, oldest first; days without any
    /// are left out.
    async fn paid_calls_by_day(&self, since: DateTime<Utc>) -> Result<Vec<PaidDay>, StoreError>;
    /// A cheap write that proves the store is writable (/readyz).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Rows set aside because they could not be read, newest first.
    async fn quarantined(&self, limit: u32) -> Result<Vec<Quarantined>, StoreError>;
    /// Deletes, in batches of at most `batch` rows per table, what is older than
    /// `before` and no longer needed: processed inbox entries (raw bodies included)
    /// with no effect still open, transition history, and done effects. Pending work,
    /// failed (replayable) effects, quarantined rows and snapshots are kept.
    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<Pruned, StoreError>;
}
