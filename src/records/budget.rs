//! The request budget of an Airtable base: at most N requests "in flight or within one window
//! after their response", so that Airtable (5 requests per second per base, then a lockout)
//! never sees more than N requests in any window, whatever the network does.
//!
//! [`RequestBudget`] is the narrow interface the Airtable backend spends from, so that the
//! budget can live elsewhere than in the process (replicas sharing a base must share it);
//! [`LocalBudget`] is the in-process one, the default.
//!
//! Why "one window after the response" and not "N per window after sending": Airtable
//! receives request k+N after we send it, and we send it at least one window after request
//! k's response arrived (which Airtable sent after receiving request k). So on Airtable's
//! clock any window holds at most N requests, however requests are delayed on the way. The
//! price is that a slow response holds its slot longer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio::time::Instant;

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
