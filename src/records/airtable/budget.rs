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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::pg::PgError;

/// The window Airtable counts its requests per base in.
pub const AIRTABLE_WINDOW: Duration = Duration::from_secs(1);

/// Where a backend takes its request slots from.
#[async_trait]
pub trait RequestBudget: Send + Sync {
    /// Waits until a request may be sent (a slot is free and no lockout holds) and grants
    /// the slot. The request is sent while the [`Slot`] is held; dropping it when the
    /// response has arrived starts the slot's last window.
    async fn acquire(&self) -> Slot;

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

/// The in-process budget: a semaphore of N slots, a slot returned one window after the
/// response of the request that used it arrived; a lockout clock of its own.
pub struct LocalBudget {
    slots: Arc<Semaphore>,
    window: Duration,
    locked_until: Mutex<Option<Instant>>,
}

impl LocalBudget {
    /// `requests_per_window` slots (at least one), Airtable's one-second window.
    pub fn new(requests_per_window: u32) -> Self {
        Self::with_window(requests_per_window, AIRTABLE_WINDOW)
    }

    pub fn with_window(requests_per_window: u32, window: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(requests_per_window.max(1) as usize)),
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
    async fn acquire(&self) -> Slot {
        loop {
            if let Some(end) = self.lockout_end() {
                tokio::time::sleep_until(end).await;
            }
            // The semaphore is never closed, so this only fails if that invariant broke;
            // then sending unthrottled is better than never sending.
            let Ok(permit) = self.slots.clone().acquire_owned().await else {
                return Slot::untracked();
            };
            // A lockout may have begun while we queued for the slot; then the slot was not
            // used and goes straight back (the permit drops here).
            if self.lockout_end().is_none() {
                let window = self.window;
                return Slot::new(move || {
                    // Outside a runtime (shutdown) nothing else will send requests anyway.
                    if let Ok(handle) = tokio::runtime::Handle::try_current() {
                        handle.spawn(async move {
                            tokio::time::sleep(window).await;
                            drop(permit);
                        });
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
    /// One task per process asks the database at a time; the others queue here, in order,
    /// so that a burst of waiters is one poll every 50 ms, not one each.
    turn: tokio::sync::Mutex<()>,
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
        let (Some(window_us), Some(lease_us)) = (micros(window), micros(lease)) else {
            return Err(BudgetError::Config("window or lease out of range".into()));
        };
        Ok(Self {
            pool,
            base: base_id.to_owned(),
            slots,
            window_us,
            lease_us,
            rows_ready: AtomicBool::new(false),
            turn: tokio::sync::Mutex::new(()),
            local_lockout: Mutex::new(None),
        })
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

    /// One attempt: a slot, or how long to wait before the next attempt.
    async fn try_claim(&self) -> Result<Claim, PgError> {
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
        // One statement, so the lockout check and the claim see one instant. The hints
        // (the lockout's end, the earliest slot's end) come from the same snapshot.
        let claim = client
            .prepare_cached(
                "WITH lockout AS (
                     SELECT locked_until FROM airtable_budget_lockouts
                     WHERE base = $1 AND locked_until > now()
                 ), claimed AS (
                     UPDATE airtable_budget_slots
                     SET busy_until = now() + $3::bigint * interval '1 microsecond',
                         holder = $4
                     WHERE base = $1 AND slot = (
                         SELECT slot FROM airtable_budget_slots
                         WHERE base = $1 AND slot < $2 AND busy_until <= now()
                           AND NOT EXISTS (SELECT 1 FROM lockout)
                         ORDER BY busy_until, slot
                         LIMIT 1
                         FOR UPDATE SKIP LOCKED
                     )
                     RETURNING slot
                 )
                 SELECT (SELECT slot FROM claimed),
                        EXTRACT(EPOCH FROM (SELECT locked_until FROM lockout) - now())::float8,
                        EXTRACT(EPOCH FROM GREATEST(
                            (SELECT min(busy_until) FROM airtable_budget_slots
                             WHERE base = $1 AND slot < $2),
                            now()) - now())::float8",
            )
            .await?;
        let row = client
            .query_one(&claim, &[&self.base, &self.slots, &self.lease_us, &holder])
            .await?;
        let slot: Option<i32> = row.try_get(0)?;
        let locked_for: Option<f64> = row.try_get(1)?;
        let next_free: Option<f64> = row.try_get(2)?;
        if let Some(slot) = slot {
            return Ok(Claim::Granted { slot, holder });
        }
        let nap = match (locked_for, next_free) {
            (Some(l), _) => seconds(l).min(MAX_LOCKOUT_NAP),
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
    async fn acquire(&self) -> Slot {
        let _turn = self.turn.lock().await;
        let mut failures: u32 = 0;
        loop {
            if let Some(end) = self.local_lockout_end() {
                tokio::time::sleep_until(end).await;
                continue;
            }
            // A claim cut short may still have committed: that slot then waits for its
            // lease, which is safe.
            let attempt = tokio::time::timeout(CLAIM_TIMEOUT, self.try_claim()).await;
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
