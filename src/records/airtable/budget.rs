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

mod pg;
#[cfg(test)]
mod tests;

pub use pg::{BudgetError, LEASE_MARGIN, PgBudget};

/// The window Airtable counts its requests per base in.
pub(crate) const AIRTABLE_WINDOW: Duration = Duration::from_secs(1);

/// How long a queued write lets reads go ahead of it: once it has waited this long, it
/// takes the next slot whatever reads are waiting. Two windows: in a burst a read still
/// overtakes the writes queued ahead of it (each waits well under this at 5 requests a
/// second), and under a flood of reads every write still goes out within a few seconds.
pub(crate) const WRITE_PATIENCE: Duration = Duration::from_secs(2);

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
    pub(crate) fn new(release: impl FnOnce() + Send + 'static) -> Self {
        Self {
            release: Some(Box::new(release)),
        }
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
    pub(crate) fn new(requests_per_window: u32) -> Self {
        Self::with_window(requests_per_window, AIRTABLE_WINDOW)
    }

    pub fn with_window(requests_per_window: u32, window: Duration) -> Self {
        Self::with_patience(requests_per_window, window, WRITE_PATIENCE)
    }

    /// [`LocalBudget::with_window`] whose writes let reads go ahead for `patience` (tests).
    pub(crate) fn with_patience(
        requests_per_window: u32,
        window: Duration,
        patience: Duration,
    ) -> Self {
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
