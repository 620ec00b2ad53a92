//! The effect executor: the one place that performs side effects. It runs persisted
//! effects in two lanes per video, its calls to services and its writes to the base
//! (`Lane::of_effect_kind`), each in decision order, different videos' and a video's two
//! lanes in parallel (a mix never waits for Airtable's request budget); it retries
//! transient failures with exponential backoff and full jitter, and records permanent ones.
//!
//! Exactly once: an effect is marked done in the same transaction that stores what it
//! produced (the follow-up event). The one window left is between an external call
//! returning and that transaction, and any answer that does not prove the request was
//! refused (ambiguous). Neither service deduplicates, so such a call is sent again only
//! after finding out (`find_out`: the service does not have it) or once the job's deadline
//! has passed, at most once per job, with a `resubmitting` event in the job's history first.
//!
//! Files: this one, the loop that claims each lane's next effect; `projection.rs`, a lane's
//! next group of effects (a video's consecutive writes to one table run together to share a
//! request; a job's writes wait at most 1 s after their cause for the job's call to be answered,
//! so the record is written once with its external id); `attempt.rs`, one effect's run and its
//! result recorded, inside the lease's write fence, with `follow_up.rs`, the event fed back;
//! `calls.rs`, the checks before a call (grace period, `find_out`, the one re-submission, counted
//! on the job); `perform_call.rs`, a call to a service, and `perform_write.rs`, a write to the
//! base, each for its lane's effects; `creation.rs`, creating a record once on a
//! base with no writable key field; `fold.rs`, a record's later writes folded into its first
//! (newest value of each field wins); `error.rs`, `EffectError`, each client's error classified
//! once.

mod attempt;
mod calls;
pub(crate) mod creation;
mod error;
mod fold;
mod follow_up;
mod perform_call;
mod perform_write;
mod projection;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::engine::Engine;
use crate::store::{Lane, Lease, OutboxEntry, claim_in_order};

/// The shortest sleep of a pass that claimed nothing.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// How many effects run at once (Airtable's limiter, not this, bounds Airtable traffic).
const CONCURRENCY: usize = 64;

pub async fn run(engine: Arc<Engine>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        if engine.is_shutting_down() {
            break;
        }
        let wake = engine.wake_executor.notified();
        // Due work none of which could be claimed: in flight here (its end wakes this
        // loop) or held by another replica.
        let mut stuck = false;
        match engine.store.due_effects(crate::clock::now(), 512).await {
            Ok(due) => {
                let before = tasks.len();
                let any_due = !due.is_empty();
                // A video's calls and its writes to the base are two lanes, each in
                // decision order, each under its own lease: a call never waits for the
                // base's request budget. Calls are claimed first: they are what a
                // video's progress waits on.
                let (calls, writes): (Vec<_>, Vec<_>) = due
                    .into_iter()
                    .map(|e| (e.video_id.clone(), e))
                    .partition(|(_, e)| Lane::of_effect_kind(e.effect.kind()) == Lane::Executor);
                for (lane, items) in [(Lane::Executor, calls), (Lane::Projection, writes)] {
                    let spawn = |lease: Lease, permit, e: OutboxEntry| {
                        let engine = engine.clone();
                        tasks.spawn(async move {
                            projection::run_video(&engine, &lease, e).await;
                            drop(permit);
                            drop(lease);
                            engine.wake_executor.notify_one();
                        });
                    };
                    let stopping = || engine.is_shutting_down();
                    claim_in_order(&*engine.store, stopping, lane, &limit, items, spawn).await;
                }
                stuck = any_due && tasks.len() == before;
            }
            Err(e) => warn!(error = %e, "executor could not read the outbox"),
        }
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done {
                tracing::error!(error = %e, "an executor task failed; its video is released");
            }
        }
        // Then look again soon, not at once.
        let floor = if stuck {
            IDLE_POLL
        } else {
            Duration::from_millis(5)
        };
        let sleep = match engine.store.next_due().await {
            Ok(Some(at)) => (at - crate::clock::now())
                .to_std()
                .unwrap_or_default()
                .clamp(floor, Duration::from_secs(1)),
            _ => Duration::from_secs(1),
        };
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
    // Graceful shutdown: effects already started finish and are recorded.
    crate::engine::drain(&mut tasks).await;
}
