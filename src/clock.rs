//! The engine's clock and its source of chance: every "now", every jittered wait and every
//! new id of the engine comes from here, never from `Utc::now()` or `rand` directly.
//!
//! In production these are the system's. A deterministic simulation (`tests/it/sim`)
//! replaces both for the thread it runs on ([`simulate`]): time is the simulation's
//! runtime's paused clock, chance a generator seeded from the run's seed, so that one seed
//! is one fixed run, replayable byte for byte.

use std::cell::RefCell;

use chrono::{DateTime, Utc};
use rand::{Rng, RngCore, SeedableRng};

struct Simulated {
    /// What `now()` answers at `start` on the runtime's clock.
    epoch: DateTime<Utc>,
    start: tokio::time::Instant,
    /// How far the wall clock was stepped ([`step`]): an NTP correction, while the
    /// runtime's clock, like a monotonic one, runs on unmoved.
    stepped: chrono::Duration,
    chance: rand::rngs::StdRng,
}

thread_local! {
    static SIMULATED: RefCell<Option<Simulated>> = const { RefCell::new(None) };
}

/// The current time.
pub fn now() -> DateTime<Utc> {
    SIMULATED
        .with(|s| {
            s.borrow().as_ref().map(|s| {
                s.epoch
                    + s.stepped
                    + chrono::Duration::from_std(tokio::time::Instant::now() - s.start)
                        .unwrap_or_default()
            })
        })
        .unwrap_or_else(Utc::now)
}

/// A number drawn uniformly from `0..=max`.
pub(crate) fn draw(max: u64) -> u64 {
    SIMULATED
        .with(|s| {
            s.borrow_mut()
                .as_mut()
                .map(|s| s.chance.random_range(0..=max))
        })
        .unwrap_or_else(|| rand::rng().random_range(0..=max))
}

/// Random bytes (the random part of new ids).
pub(crate) fn fill(bytes: &mut [u8]) {
    SIMULATED.with(|s| match s.borrow_mut().as_mut() {
        Some(s) => s.chance.fill_bytes(bytes),
        None => rand::rng().fill_bytes(bytes),
    })
}

/// While the returned guard lives, this thread's time is `epoch` plus the tokio clock's
/// advance since now (a paused runtime's virtual time), and its chance is drawn from
/// `seed`. For the deterministic simulation only: a simulated thread runs the whole
/// engine on one current-thread runtime, its store calls inline.
pub fn simulate(epoch: DateTime<Utc>, seed: u64) -> Simulation {
    SIMULATED.with(|s| {
        *s.borrow_mut() = Some(Simulated {
            epoch,
            start: tokio::time::Instant::now(),
            stepped: chrono::Duration::zero(),
            chance: rand::rngs::StdRng::seed_from_u64(seed),
        })
    });
    Simulation(())
}

/// Steps this simulated thread's wall clock by `by` (forward or back), as NTP may step a
/// real one, while sleeps and deadlines of the runtime's clock run on as they were. Does
/// nothing outside a simulation: production's wall clock is the system's.
pub fn step(by: chrono::Duration) {
    SIMULATED.with(|s| {
        if let Some(s) = s.borrow_mut().as_mut() {
            s.stepped += by;
        }
    })
}

/// Ends the simulation of this thread when dropped.
pub struct Simulation(());

impl Drop for Simulation {
    fn drop(&mut self) {
        SIMULATED.with(|s| *s.borrow_mut() = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_simulated_thread_reads_the_paused_clock_and_a_seeded_chance() {
        let epoch = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let draws = |seed| {
            let _sim = simulate(epoch, seed);
            (0..4).map(|_| draw(1_000_000)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7), "one seed, one sequence");
        assert_ne!(draws(7), draws(8));
        let _sim = simulate(epoch, 1);
        assert_eq!(now(), epoch);
        tokio::time::sleep(std::time::Duration::from_secs(90)).await;
        assert_eq!(now(), epoch + chrono::Duration::seconds(90));
        step(chrono::Duration::minutes(-2));
        assert_eq!(
            now(),
            epoch - chrono::Duration::seconds(30),
            "the wall clock stepped back"
        );
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        assert_eq!(
            now(),
            epoch - chrono::Duration::seconds(20),
            "and runs on from there"
        );
        drop(_sim);
        step(chrono::Duration::days(-1000));
        assert!(
            now() > epoch + chrono::Duration::days(300),
            "the system's clock again"
        );
    }
}
