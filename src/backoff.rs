//! The one backoff policy of every retry loop (the executor's effects, the Airtable
//! client's requests, the worker's entries): exponential, capped, and with full jitter
//! where many clients may have failed together, so that they do not retry together.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The ceiling of the first retry.
    pub(crate) base: Duration,
    /// No wait is longer, whatever the retry.
    pub(crate) cap: Duration,
}

impl Backoff {
    pub(crate) const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The longest wait before retry `n` (0 for the first): `base · 2^n`, capped.
    pub(crate) fn ceiling(&self, n: u32) -> Duration {
        self.base.saturating_mul(1u32 << n.min(16)).min(self.cap)
    }

    /// "Full jitter": a wait drawn uniformly from zero to [`Backoff::ceiling`].
    pub(crate) fn jittered(&self, n: u32) -> Duration {
        let ms = u64::try_from(self.ceiling(n).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(crate::clock::draw(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(250), Duration::from_secs(60));
        assert_eq!(b.ceiling(0), Duration::from_millis(250));
        assert_eq!(b.ceiling(1), Duration::from_millis(500));
        assert_eq!(b.ceiling(3), Duration::from_secs(2));
        assert_eq!(b.ceiling(8), Duration::from_secs(60));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_under_the_ceiling() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        for n in 0..8 {
            for _ in 0..50 {
                assert!(b.jittered(n) <= b.ceiling(n));
            }
        }
        assert!(b.jittered(40) <= Duration::from_secs(30));
    }
}
