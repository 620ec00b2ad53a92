//! [`PgBudget`]: the budget of a base shared by replicas through PostgreSQL: slot rows
//! claimed and released in the database, a lockout row, and a row per waiting read so that
//! other replicas' writes let it go first.

use super::*;

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

    /// The budget an [`AirtableBackend`](crate::records::airtable::AirtableBackend) with `cfg` needs:
    /// its base and rate, Airtable's window, and a lease of the request timeout (which
    /// bounds a request, body included) plus the window plus [`LEASE_MARGIN`].
    pub fn for_airtable(
        pool: Pool,
        cfg: &crate::records::airtable::config::AirtableConfig,
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
