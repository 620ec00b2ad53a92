//! The request budget of an Airtable base: at most N requests "in flight or within one window
//! after their response", so that Airtable (5 requests per second per base, then a lockout)
//! never sees more than N requests in any window, whatever the network does.
//!
//! [`RequestBudget`] is the narrow interface the Airtable backend spends from; two
//! implementations:
//!
//! - [`LocalBudget`]: one process owns the base's budget (the default, and the only
//!   correct choice for a single replica);
//! - [`PgBudget`]: several replicas share the base's budget through PostgreSQL, so the
//!   5 requests/second hold for the whole cluster, and a 429 seen by one replica holds back
//!   all of them.
//!
//! Why "one window after the response" and not "N per window after sending": Airtable
//! receives request k+N after we send it, and we send it at least one window after request
//! k's response arrived (which Airtable sent after receiving request k). So on Airtable's
//! clock any window holds at most N requests, however requests are delayed on the way. The
//! price is that a slow response holds its slot longer.
//!
//! Who goes first when requests queue for a slot ([`Priority`]): reads, because something
//! waits on their answer (a decision on a video met for the first time, and through it the
//! video's render), while a write is a projection nothing in the engine waits for. A read
//! goes ahead of every queued write, except a write that has already waited
//! [`WRITE_PATIENCE`]: then the write goes first, so that reads never starve writes. The
//! order changes who gets the next slot, never how many slots there are.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::pg::PgError;

/// The window Airtable counts its requests per base in.
pub const AIRTABLE_WINDOW: Duration = Duration::from_secs(1);

/// How long a queued write lets reads go ahead of it: once it has waited this long, it
/// takes the next slot whatever reads are waiting. Two windows: in a burst a read still
/// overtakes the writes queued ahead of it (each waits well under this at 5 requests a
/// second), and under a flood of reads every write still goes out within a few seconds.
pub const WRITE_PATIENCE: Duration = Duration::from_secs(2);

/// Which queue a request waits in for its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A read: a decision (or a call) waits on its answer. Goes ahead of queued writes.
    Read,
    /// A write to the base: a projection, which nothing in the engine waits for.
    Write,
}

/// Where a backend takes its request slots from.
#[async_trait]
pub trait RequestBudget: Send + Sync {
    /// Waits until a request may be sent (a slot is free, no lockout holds, and no
    /// request that goes before it by `priority` is waiting) and grants the slot. The
    /// request is sent while the [`Slot`] is held; dropping it when the response has
    /// arrived starts the slot's last window.
    async fn acquire_for(&self, priority: Priority) -> Slot;

    /// [`RequestBudget::acquire_for`] a write: the request waits in arrival order.
    async fn acquire(&self) -> Slot {
        self.acquire_for(Priority::Write).await
    }

    /// After a 429 Airtable refuses the whole base for a while: nobody sharing this budget
    /// sends until then. A shorter lockout never shortens a longer one already running.
    async fn lock_out(&self, for_how_long: Duration);
}

/// A granted request slot. Dropping it returns it to its budget, which keeps it busy for one
/// more window (how is the budget's business: a closure given at creation).
#[must_use = "a slot is held until it is dropped; drop it when the response has arrived"]
pub struct Slot {
    release: Option<Box<dyn FnOnce() + Send>>,
}

impl Slot {
    /// A slot whose drop runs `release` (once, on the dropping thread: it must not block).
    pub fn new(release: impl FnOnce() + Send + 'static) -> Self {
        Self {
            release: Some(Box::new(release)),
        }
    }

    /// A slot that returns nothing when dropped: for budgets that could not account for it.
    pub fn untracked() -> Self {
        Self { release: None }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("tracked", &self.release.is_some())
            .finish()
    }
}

/// N permits handed out reads first: a queued read goes before every queued write that has
/// waited less than [`WRITE_PATIENCE`]; within each kind, in arrival order. The slots of
/// [`LocalBudget`], and the turn to ask the database of [`PgBudget`].
struct Turns {
    state: Mutex<TurnState>,
    patience: Duration,
}

#[derive(Default)]
struct TurnState {
    free: usize,
    reads: VecDeque<oneshot::Sender<()>>,
    /// Oldest first: a write that gave its turn back keeps its place by when it came.
    writes: VecDeque<(Instant, oneshot::Sender<()>)>,
}

impl Turns {
    fn new(permits: usize, patience: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(TurnState {
                free: permits,
                ..TurnState::default()
            }),
            patience,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TurnState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a permit; `since` is when the request began waiting (a write's place).
    async fn acquire(self: &Arc<Self>, priority: Priority, since: Instant) -> Turn {
        loop {
            let rx = {
                let mut state = self.state();
                if state.free > 0 {
                    state.free -= 1;
                    return Turn::granted(self);
                }
                let (tx, rx) = oneshot::channel();
                match priority {
                    Priority::Read => state.reads.push_back(tx),
                    Priority::Write => {
                        let at = state.writes.partition_point(|(t, _)| *t <= since);
                        state.writes.insert(at, (since, tx));
                    }
                }
                rx
            };
            let mut waiting = Waiting {
                rx: Some(rx),
                turns: self.clone(),
            };
            let handed = match waiting.rx.as_mut() {
                Some(rx) => rx.await.is_ok(),
                None => false,
            };
            waiting.rx = None;
            // A sender is only dropped unsent when its waiter had gone; never a permit
            // made out of nothing.
            if handed {
                return Turn::granted(self);
            }
        }
    }

    /// Whether a read waits for a permit (a write holding one may then give it back).
    fn reads_waiting(&self) -> bool {
        self.state().reads.iter().any(|tx| !tx.is_closed())
    }

    /// Hands a returned permit to the next waiter, or keeps it free.
    fn release(&self) {
        let mut state = self.state();
        loop {
            let write_is_due = state
                .writes
                .front()
                .is_some_and(|(since, _)| since.elapsed() >= self.patience);
            let next = if write_is_due {
                state.writes.pop_front().map(|(_, tx)| tx)
            } else {
                state
                    .reads
                    .pop_front()
                    .or_else(|| state.writes.pop_front().map(|(_, tx)| tx))
            };
            match next {
                // A waiter that gave up (its future dropped) is skipped.
                Some(tx) => {
                    if tx.send(()).is_ok() {
                        return;
                    }
                }
                None => {
                    state.free += 1;
                    return;
                }
            }
        }
    }
}

/// A granted permit of [`Turns`]; dropping it releases it at once.
struct Turn {
    turns: Arc<Turns>,
    kept: bool,
}

impl Turn {
    fn granted(turns: &Arc<Turns>) -> Self {
        Self {
            turns: turns.clone(),
            kept: false,
        }
    }

    /// Keeps the permit out of its [`Turns`] until `release` runs (a slot's last window).
    fn keep(mut self) -> Arc<Turns> {
        self.kept = true;
        self.turns.clone()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.kept {
            self.turns.release();
        }
    }
}

/// A waiter's place in the queue. Dropped before its permit arrived (the acquiring
/// future was cancelled), it gives back a permit handed to it in the meantime.
struct Waiting {
    rx: Option<oneshot::Receiver<()>>,
    turns: Arc<Turns>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.turns.release();
            }
        }
    }
}

/// The in-process budget: N slots handed out reads first ([`Priority`]), a slot returned
/// one window after the response of the request that used it arrived; a lockout clock of
/// its own.
pub struct LocalBudget {
    slots: Arc<Turns>,
    window: Duration,
    locked_until: Mutex<Option<Instant>>,
}

impl LocalBudget {
    /// `requests_per_window` slots (at least one), Airtable's one-second window.
    pub fn new(requests_per_window: u32) -> Self {
        Self::with_window(requests_per_window, AIRTABLE_WINDOW)
    }

    pub fn with_window(requests_per_window: u32, window: Duration) -> Self {
        Self::with_patience(requests_per_window, window, WRITE_PATIENCE)
    }

    /// [`LocalBudget::with_window`] whose writes let reads go ahead for `patience` (tests).
    pub fn with_patience(requests_per_window: u32, window: Duration, patience: Duration) -> Self {
        Self {
            slots: Turns::new(requests_per_window.max(1) as usize, patience),
            window,
            locked_until: Mutex::new(None),
        }
    }

    fn lockout_end(&self) -> Option<Instant> {
        let guard = self.locked_until.lock().unwrap_or_else(|p| p.into_inner());
        guard.filter(|t| *t > Instant::now())
    }
}

#[async_trait]
impl RequestBudget for LocalBudget {
    async fn acquire_for(&self, priority: Priority) -> Slot {
        let since = Instant::now();
        loop {
            if let Some(end) = self.lockout_end() {
                tokio::time::sleep_until(end).await;
            }
            let turn = self.slots.acquire(priority, since).await;
            // A lockout may have begun while we queued for the slot; then the slot was not
            // used and goes straight back (the turn drops here).
            if self.lockout_end().is_none() {
                let (window, slots) = (self.window, turn.keep());
                return Slot::new(move || {
                    match tokio::runtime::Handle::try_current() {
                        Ok(handle) => {
                            handle.spawn(async move {
                                tokio::time::sleep(window).await;
                                slots.release();
                            });
                        }
                        // Outside a runtime (shutdown) nothing else will send requests.
                        Err(_) => slots.release(),
                    }
                });
            }
        }
    }

    async fn lock_out(&self, for_how_long: Duration) {
        let until = Instant::now() + for_how_long;
        let mut guard = self.locked_until.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none_or(|t| t < until) {
            *guard = Some(until);
        }
    }
}

/// The longest a waiting replica sleeps before asking again whether a slot is free: a slot's
/// release (its response arrived) moves its end earlier than the lease the claim set.
const POLL: Duration = Duration::from_millis(50);
/// The shortest nap between two claims that found nothing: another replica got the slot
/// that was due, or it was locked by a claim in progress; no hot loop either way.
const MIN_NAP: Duration = Duration::from_millis(2);
/// A lockout only grows, but someone may clear it by hand: look again at least this often.
const MAX_LOCKOUT_NAP: Duration = Duration::from_secs(5);
/// One claim (connection included) may take this long before it counts as a failure.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after the first failed claim; it doubles up to [`MAX_FAILURE_PAUSE`].
const FIRST_FAILURE_PAUSE: Duration = Duration::from_millis(50);
const MAX_FAILURE_PAUSE: Duration = Duration::from_secs(2);
/// Releases tried before the slot is left to its lease.
const RELEASE_ATTEMPTS: u32 = 3;
/// How long a waiting read's row holds writes back unless the read asks again: several
/// of its polls, so that a live read keeps it; a read gone (cancelled, its replica dead)
/// holds nobody back for longer.
const READER_TTL: Duration = Duration::from_millis(500);
/// The margin [`PgBudget::for_airtable`] adds to a request's longest life in its lease:
/// between the claim and the send (gathering a batch, building the request) and between the
/// response and the release.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("invalid request budget: {0}")]
    Config(String),
}

/// The budget of one base shared by every replica using the same PostgreSQL schema
/// (migration 3, `airtable_budget_slots` and `airtable_budget_lockouts`).
///
/// Design: N slot rows per base, `(base, slot, busy_until, holder)`. A claim takes a row
/// whose `busy_until` has passed (`FOR UPDATE SKIP LOCKED`, so concurrent claims never take
/// the same row nor wait on each other) and sets `busy_until = now() + lease` with a fresh
/// `holder` token; dropping the [`Slot`] sets `busy_until = now() + window` if the token is
/// still ours. A lockout row per base holds `locked_until`; a claim never succeeds while it
/// is in the future. Every time is PostgreSQL's `now()`: no replica's clock is ever read, so
/// their offsets do not matter.
///
/// Guarantee: at most N requests per base are in flight or within one window after their
/// response, cluster-wide, provided a request's life (claim to release) stays within the
/// lease (the HTTP client's timeout bounds it: see [`PgBudget::for_airtable`]). A replica
/// that dies holding a slot, or cannot release it, loses it when the lease ends.
///
/// Priority ([`Priority`]): a read that finds no free slot registers itself in
/// `airtable_budget_readers` (migration 6) until granted, renewing its row with each claim
/// (it expires after [`READER_TTL`]); a write claims nothing while a live read is
/// registered, unless it has already waited its patience ([`WRITE_PATIENCE`]). In the
/// process, waiters take turns to ask the database reads first, and a write whose turn it
/// is gives the turn back when a read of this replica queues behind it.
///
/// Failure policy: the database decides, so when it cannot be reached `acquire` waits
/// (logging, retrying with a pause that grows to 2 s) rather than send unthrottled: every
/// replica would then spend the full budget and the base would be locked out for all of
/// them. A lockout that cannot be written is still kept by this replica.
pub struct PgBudget {
    pool: Pool,
    base: String,
    slots: i32,
    window_us: i64,
    lease_us: i64,
    rows_ready: AtomicBool,
    /// One task per process asks the database at a time; the others queue here, reads
    /// first, so that a burst of waiters is one poll every 50 ms, not one each.
    turn: Arc<Turns>,
    patience: Duration,
    reader_ttl_us: i64,
    /// A lockout this replica saw but could not write to the database.
    local_lockout: Mutex<Option<Instant>>,
}

fn micros(d: Duration) -> Option<i64> {
    i64::try_from(d.as_micros()).ok()
}

fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

impl PgBudget {
    /// The budget of `base_id`: `requests_per_window` slots (Airtable: 5), each busy until
    /// `window` (Airtable: [`AIRTABLE_WINDOW`]) after its response; a claim holds its slot
    /// for at most `lease` if never released, which must exceed the longest a request can
    /// take plus the window. The tables come from [`crate::pg::migrate`]; the base's slot
    /// rows are created on first use.
    pub fn new(
        pool: Pool,
        base_id: &str,
        requests_per_window: u32,
        window: Duration,
        lease: Duration,
    ) -> Result<Self, BudgetError> {
        if base_id.is_empty() {
            return Err(BudgetError::Config("the base id is empty".into()));
        }
        let slots = i32::try_from(requests_per_window.max(1))
            .map_err(|_| BudgetError::Config("too many requests per window".into()))?;
        if window.is_zero() {
            return Err(BudgetError::Config("the window is zero".into()));
        }
        if lease <= window {
            return Err(BudgetError::Config(format!(
                "the lease ({lease:?}) must be longer than the window ({window:?})"
            )));
        }
        let (Some(window_us), Some(lease_us), Some(reader_ttl_us)) =
            (micros(window), micros(lease), micros(READER_TTL))
        else {
            return Err(BudgetError::Config("window or lease out of range".into()));
        };
        Ok(Self {
            pool,
            base: base_id.to_owned(),
            slots,
            window_us,
            lease_us,
            rows_ready: AtomicBool::new(false),
            turn: Turns::new(1, WRITE_PATIENCE),
            patience: WRITE_PATIENCE,
            reader_ttl_us,
            local_lockout: Mutex::new(None),
        })
    }

    /// This budget with writes letting reads go ahead for `patience` instead of
    /// [`WRITE_PATIENCE`] (tests).
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.turn = Turns::new(1, patience);
        self.patience = patience;
        self
    }

    /// The budget an [`AirtableBackend`](super::AirtableBackend) with `cfg` needs:
    /// its base and rate, Airtable's window, and a lease of the request timeout (which
    /// bounds a request, body included) plus the window plus [`LEASE_MARGIN`].
    pub fn for_airtable(
        pool: Pool,
        cfg: &super::config::AirtableConfig,
    ) -> Result<Self, BudgetError> {
        let lease = cfg.request_timeout + AIRTABLE_WINDOW + LEASE_MARGIN;
        Self::new(
            pool,
            &cfg.base_id,
            cfg.requests_per_second,
            AIRTABLE_WINDOW,
            lease,
        )
    }

    fn local_lockout_end(&self) -> Option<Instant> {
        let guard = self.local_lockout.lock().unwrap_or_else(|p| p.into_inner());
        guard.filter(|t| *t > Instant::now())
    }

    /// One attempt: a slot, or how long to wait before the next attempt. `reader`: the
    /// waiting read's id, registered while it waits; `ahead_of_reads`: whether the claim
    /// may take a slot a registered read waits for (reads, and writes past their patience).
    async fn try_claim(
        &self,
        reader: Option<&str>,
        ahead_of_reads: bool,
    ) -> Result<Claim, PgError> {
        let client = self.pool.get().await?;
        if !self.rows_ready.load(Ordering::Acquire) {
            // Replicas configured with fewer slots simply never use the higher ones; the
            // largest N configured wins.
            client
                .execute(
                    "INSERT INTO airtable_budget_slots (base, slot)
                     SELECT $1, g FROM generate_series(0, $2::int - 1) AS g
                     ON CONFLICT DO NOTHING",
                    &[&self.base, &self.slots],
                )
                .await?;
            self.rows_ready.store(true, Ordering::Release);
        }
        let holder = uuid::Uuid::new_v4().simple().to_string();
        // One statement, so the lockout check, the waiting reads and the claim see one
        // instant. The hints (the lockout's end, the earliest slot's end) come from the
        // same snapshot. A read that gets nothing registers (or renews) itself; one granted
        // leaves; rows of reads long gone are swept on the way.
        let claim = client
            .prepare_cached(
                "WITH lockout AS (
                     SELECT locked_until FROM airtable_budget_lockouts
                     WHERE base = $1 AND locked_until > now()
                 ), readers AS (
                     SELECT 1 FROM airtable_budget_readers
                     WHERE base = $1 AND until > now() AND waiter IS DISTINCT FROM $6
                 ), claimed AS (
                     UPDATE airtable_budget_slots
                     SET busy_until = now() + $3::bigint * interval '1 microsecond',
                         holder = $4
                     WHERE base = $1 AND slot = (
                         SELECT slot FROM airtable_budget_slots
                         WHERE base = $1 AND slot < $2 AND busy_until <= now()
                           AND NOT EXISTS (SELECT 1 FROM lockout)
                           AND ($5 OR NOT EXISTS (SELECT 1 FROM readers))
                         ORDER BY busy_until, slot
                         LIMIT 1
                         FOR UPDATE SKIP LOCKED
                     )
                     RETURNING slot
                 ), waiting AS (
                     INSERT INTO airtable_budget_readers (base, waiter, until)
                     SELECT $1, $6, now() + $7::bigint * interval '1 microsecond'
                     WHERE $6 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM claimed)
                     ON CONFLICT (base, waiter) DO UPDATE SET until = EXCLUDED.until
                 ), served AS (
                     DELETE FROM airtable_budget_readers
                     WHERE base = $1
                       AND ((waiter = $6 AND EXISTS (SELECT 1 FROM claimed))
                            OR (until < now() - interval '1 minute'
                                AND waiter IS DISTINCT FROM $6))
                 )
                 SELECT (SELECT slot FROM claimed),
                        EXTRACT(EPOCH FROM (SELECT locked_until FROM lockout) - now())::float8,
                        EXTRACT(EPOCH FROM GREATEST(
                            (SELECT min(busy_until) FROM airtable_budget_slots
                             WHERE base = $1 AND slot < $2),
                            now()) - now())::float8,
                        NOT $5 AND EXISTS (SELECT 1 FROM readers)",
            )
            .await?;
        let row = client
            .query_one(
                &claim,
                &[
                    &self.base,
                    &self.slots,
                    &self.lease_us,
                    &holder,
                    &ahead_of_reads,
                    &reader,
                    &self.reader_ttl_us,
                ],
            )
            .await?;
        let slot: Option<i32> = row.try_get(0)?;
        let locked_for: Option<f64> = row.try_get(1)?;
        let next_free: Option<f64> = row.try_get(2)?;
        let behind_reads: bool = row.try_get(3)?;
        if let Some(slot) = slot {
            return Ok(Claim::Granted { slot, holder });
        }
        let nap = match (locked_for, next_free) {
            (Some(l), _) => seconds(l).min(MAX_LOCKOUT_NAP),
            // The free slot is a waiting read's: it takes it at its next poll.
            (None, Some(_)) if behind_reads => POLL,
            (None, Some(f)) => seconds(f).min(POLL),
            (None, None) => {
                // The base's rows are gone (a schema reset): make them again.
                self.rows_ready.store(false, Ordering::Release);
                POLL
            }
        };
        Ok(Claim::Wait(nap.max(MIN_NAP)))
    }

    fn slot(&self, slot: i32, holder: String) -> Slot {
        let pool = self.pool.clone();
        let base = self.base.clone();
        let window_us = self.window_us;
        Slot::new(move || {
            // Without a runtime (shutdown) the lease ends the claim.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(release(pool, base, slot, holder, window_us));
            }
        })
    }

    async fn write_lockout(&self, lockout_us: i64) -> Result<(), PgError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO airtable_budget_lockouts (base, locked_until)
                 VALUES ($1, now() + $2::bigint * interval '1 microsecond')
                 ON CONFLICT (base) DO UPDATE SET locked_until =
                     GREATEST(airtable_budget_lockouts.locked_until, EXCLUDED.locked_until)",
                &[&self.base, &lockout_us],
            )
            .await?;
        Ok(())
    }
}

enum Claim {
    Granted { slot: i32, holder: String },
    Wait(Duration),
}

/// Starts the slot's last window: it is free again one window after now (the response has
/// arrived), unless its lease already ran out and another claim holds it.
async fn release(pool: Pool, base: String, slot: i32, holder: String, window_us: i64) {
    for attempt in 1..=RELEASE_ATTEMPTS {
        let result = async {
            let client = pool.get().await?;
            client
                .execute(
                    "UPDATE airtable_budget_slots
                     SET busy_until = now() + $3::bigint * interval '1 microsecond',
                         holder = NULL
                     WHERE base = $1 AND slot = $2 AND holder = $4",
                    &[&base, &slot, &window_us, &holder],
                )
                .await?;
            Ok::<(), PgError>(())
        }
        .await;
        match result {
            Ok(()) => return,
            Err(e) if attempt < RELEASE_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "releasing an Airtable request slot failed; retrying");
                tokio::time::sleep(FIRST_FAILURE_PAUSE * attempt).await;
            }
            Err(e) => {
                // Safe: the slot stays busy until its lease ends, which costs throughput only.
                tracing::warn!(error = %e, slot, "could not release an Airtable request slot; it comes back when its lease ends");
            }
        }
    }
}

#[async_trait]
impl RequestBudget for PgBudget {
    async fn acquire_for(&self, priority: Priority) -> Slot {
        let since = Instant::now();
        let reader =
            (priority == Priority::Read).then(|| uuid::Uuid::new_v4().simple().to_string());
        let mut turn = self.turn.acquire(priority, since).await;
        let mut failures: u32 = 0;
        loop {
            if let Some(end) = self.local_lockout_end() {
                tokio::time::sleep_until(end).await;
                continue;
            }
            let ahead_of_reads = priority == Priority::Read || since.elapsed() >= self.patience;
            if !ahead_of_reads && self.turn.reads_waiting() {
                // A read of this replica waits behind this write: it asks first.
                drop(turn);
                turn = self.turn.acquire(priority, since).await;
                continue;
            }
            // A claim cut short may still have committed: that slot then waits for its
            // lease, which is safe.
            let attempt = tokio::time::timeout(
                CLAIM_TIMEOUT,
                self.try_claim(reader.as_deref(), ahead_of_reads),
            )
            .await;
            let error = match attempt {
                Ok(Ok(Claim::Granted { slot, holder })) => {
                    if failures > 0 {
                        tracing::info!(failures, "the Airtable request budget is reachable again");
                    }
                    return self.slot(slot, holder);
                }
                Ok(Ok(Claim::Wait(nap))) => {
                    failures = 0;
                    tokio::time::sleep(nap).await;
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {CLAIM_TIMEOUT:?}"),
            };
            failures = failures.saturating_add(1);
            // The first failure and then about one a minute, not one per retry.
            if failures == 1 || failures.is_multiple_of(30) {
                tracing::warn!(%error, failures, base = %self.base,
                    "the shared Airtable request budget is unreachable; holding requests back until it answers");
            }
            let pause = FIRST_FAILURE_PAUSE
                .saturating_mul(1 << (failures - 1).min(16))
                .min(MAX_FAILURE_PAUSE);
            tokio::time::sleep(pause).await;
        }
    }

    async fn lock_out(&self, for_how_long: Duration) {
        // This replica honours the lockout whatever happens to the database write.
        {
            let until = Instant::now() + for_how_long;
            let mut guard = self.local_lockout.lock().unwrap_or_else(|p| p.into_inner());
            if guard.is_none_or(|t| t < until) {
                *guard = Some(until);
            }
        }
        let Some(lockout_us) = micros(for_how_long) else {
            return;
        };
        for attempt in 1..=RELEASE_ATTEMPTS {
            match tokio::time::timeout(CLAIM_TIMEOUT, self.write_lockout(lockout_us)).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) if attempt == RELEASE_ATTEMPTS => {
                    tracing::warn!(error = %e, "could not share an Airtable lockout; the other replicas will meet it themselves");
                }
                Err(_) if attempt == RELEASE_ATTEMPTS => {
                    tracing::warn!(
                        "could not share an Airtable lockout in time; the other replicas will meet it themselves"
                    );
                }
                _ => tokio::time::sleep(FIRST_FAILURE_PAUSE * attempt).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queues `waiters` on `budget` one after the other (each `gap` after the one before,
    /// so their arrival order is fixed) while `held` holds every slot, then lets `held`
    /// go; answers the labels in the order their slots were granted. Each grantee gives
    /// its slot back at once.
    async fn grant_order(
        budget: Arc<LocalBudget>,
        held: Vec<Slot>,
        waiters: &[(&'static str, Priority)],
        gap: Duration,
    ) -> Vec<&'static str> {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (label, priority) in waiters.iter().copied() {
            let (budget, order) = (budget.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let slot = budget.acquire_for(priority).await;
                order.lock().unwrap().push(label);
                drop(slot);
            }));
            tokio::time::sleep(gap).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        order.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_read_is_granted_before_the_writes_queued_ahead_of_it() {
        let budget = Arc::new(LocalBudget::with_window(1, Duration::from_millis(30)));
        let held = vec![budget.acquire_for(Priority::Write).await];
        let order = grant_order(
            budget,
            held,
            &[
                ("write 1", Priority::Write),
                ("write 2", Priority::Write),
                ("read", Priority::Read),
                ("write 3", Priority::Write),
            ],
            Duration::from_millis(5),
        )
        .await;
        assert_eq!(order, ["read", "write 1", "write 2", "write 3"]);
    }

    #[tokio::test]
    async fn a_write_that_waited_its_patience_goes_before_the_reads() {
        let window = Duration::from_millis(20);
        let patience = Duration::from_millis(300);
        let budget = Arc::new(LocalBudget::with_patience(1, window, patience));
        let held = vec![budget.acquire_for(Priority::Write).await];
        let mut waiters = vec![("write", Priority::Write)];
        waiters.extend(std::iter::repeat_n(("read", Priority::Read), 40));
        let order = grant_order(budget, held, &waiters, Duration::ZERO).await;
        // The reads went first until the write had waited 300 ms: some of them, not all
        // forty (reads alone take 800 ms: one every 20 ms).
        let at = order.iter().position(|l| *l == "write").unwrap();
        assert!(at > 0 && at < 30, "the write was granted {at}th: {order:?}");
    }

    #[tokio::test]
    async fn a_budget_never_grants_more_slots_than_it_has_whatever_the_order() {
        let window = Duration::from_millis(50);
        let budget = Arc::new(LocalBudget::with_window(2, window));
        let granted = Arc::new(Mutex::new(Vec::<Instant>::new()));
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let (budget, granted) = (budget.clone(), granted.clone());
                let priority = if i % 3 == 0 {
                    Priority::Read
                } else {
                    Priority::Write
                };
                tokio::spawn(async move {
                    let slot = budget.acquire_for(priority).await;
                    granted.lock().unwrap().push(Instant::now());
                    drop(slot);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut at = granted.lock().unwrap().clone();
        at.sort();
        // Two slots, each busy one window after its release: any three grants span a
        // window at least.
        for w in at.windows(3) {
            assert!(
                w[2] - w[0] >= window,
                "three grants within {:?}",
                w[2] - w[0]
            );
        }
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_no_slot_behind() {
        let window = Duration::from_millis(20);
        let budget = Arc::new(LocalBudget::with_window(1, window));
        let held = budget.acquire_for(Priority::Write).await;
        // A read queues, is handed the slot while nobody polls it, and is dropped.
        let mut gave_up = budget.acquire_for(Priority::Read);
        assert!(futures::poll!(&mut gave_up).is_pending());
        drop(held);
        tokio::time::sleep(window * 3).await;
        drop(gave_up);
        let again = tokio::time::timeout(window, budget.acquire_for(Priority::Write)).await;
        assert!(
            again.is_ok(),
            "the slot handed to a waiter that gave up was lost"
        );
    }
}
