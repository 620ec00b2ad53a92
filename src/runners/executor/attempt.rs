//! One effect's run: re-read from the store, the call's checks, the lease check before a
//! write, then its result recorded with the follow-up event it feeds back (retried with
//! backoff when transient, waited on when ambiguous, recorded for good when permanent).

use std::time::Duration;

use tracing::{Instrument, info, info_span, warn};

use super::calls::{Prepared, external_job, prepare_external};
use super::error::EffectError;
use super::fold::folded_effect;
use super::follow_up::engine_entry;
use super::perform_call::perform_call;
use super::perform_write::perform_write;
use crate::backoff::Backoff;
use crate::engine::Engine;
use crate::machine::{Effect, Event};
use crate::metrics::{EffectKindLabels, EffectLabels};
use crate::store::{EffectState, Lane, Lease, OutboxEntry};

/// How long a video's effects pause after the store failed (the claim is held meanwhile).
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The longest wait before an effect's next attempt after a transient failure.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

pub(super) async fn run_one(
    engine: &Engine,
    lease: &Lease,
    listed: OutboxEntry,
    folded: Vec<OutboxEntry>,
) {
    let span = info_span!("effect", effect_id = %listed.effect_id, kind = listed.effect.kind(),
                          video_id = %listed.video_id, event_id = %listed.event_id);
    async {
        engine.store.yield_to_intake().await;
        // The list this came from may be older than the previous run for this video:
        // only what the store says now counts.
        let e = match engine.store.outbox_entry(&listed.effect_id).await {
            Ok(Some(e)) if e.state == EffectState::Pending => e,
            Ok(_) => return,
            Err(err) => {
                warn!(error = %err, "could not read the effect");
                tokio::time::sleep(STORE_ERROR_PAUSE).await;
                return;
            }
        };
        let kind = e.effect.kind();
        if let Some(job) = external_job(&e.effect) {
            match prepare_external(engine, lease, &e, job).await {
                Ok(Prepared::Go) => {}
                Ok(Prepared::Deferred) => return,
                Ok(Prepared::GiveUp(msg)) => {
                    warn!(error = %msg, "giving up on the call");
                    engine
                        .metrics
                        .effects
                        .get_or_create(&EffectLabels { kind, outcome: EffectState::Failed })
                        .inc();
                    let entry = engine_entry(&e, EffectState::Failed.as_ref(), Event::EffectFailed { job, error: msg.clone() });
                    match engine.store.effect_failed_with(&e.effect_id, &msg, Some(entry)).await {
                        Ok(()) => engine.wake_worker.notify_one(),
                        Err(err) => warn!(error = %err, "could not record the failed effect"),
                    }
                    return;
                }
                Ok(Prepared::NotNeeded(why)) => {
                    info!(reason = why, "external call not needed any more");
                    if let Err(err) = engine.store.effect_done_with(&e.effect_id, None).await {
                        warn!(error = %err, "could not record the skipped effect");
                    }
                    return;
                }
                Err(err) => {
                    warn!(error = %err, "could not prepare the external call");
                    tokio::time::sleep(STORE_ERROR_PAUSE).await;
                    return;
                }
            }
        }
        let started = std::time::Instant::now();
        let (effect, create_extra) = folded_effect(&e.effect, &folded);
        // Airtable cannot be asked to check a lease: each write asks the store, as its
        // request goes out, whether this executor still holds the video
        // (`records::fence`), so a replica that lost it writes nothing stale.
        let folded_entry = OutboxEntry { effect, ..e.clone() };
        let perform = async {
            match Lane::of_effect_kind(kind) {
                Lane::Executor => perform_call(engine, &folded_entry).await,
                _ => perform_write(engine, &folded_entry, &create_extra).await,
            }
        };
        let result = crate::records::fence::fenced(lease_fence(engine, lease), perform).await;
        if let Err(EffectError::LeaseLost) = result {
            info!("the video's lease is no longer this executor's; writing nothing");
            return;
        }
        engine
            .metrics
            .effect_duration
            .get_or_create(&EffectKindLabels { kind })
            .observe(started.elapsed().as_secs_f64());
        let stored = match result {
            Ok(follow_up) => {
                engine
                    .metrics
                    .effects
                        .get_or_create(&EffectLabels { kind, outcome: EffectState::Done })
                        .inc();
                let entry = follow_up.map(|event| engine_entry(&e, EffectState::Done.as_ref(), event));
                let done = engine.store.effect_done_with(&e.effect_id, entry).await;
                // Folded writes were written with this one. Should the process die before
                // they are marked, they run again: a repeat of the newest values.
                for f in &folded {
                    if done.is_ok() {
                        info!(effect_id = %f.effect_id, "written together with an earlier write of its record");
                    }
                    if let Err(err) = engine.store.effect_done_with(&f.effect_id, None).await {
                        warn!(error = %err, effect_id = %f.effect_id, "could not record a folded write; it will run again");
                    }
                }
                done
            }
            // Never counted against the attempts: the service may be doing the work, so
            // running out of attempts here would fail a job that renders anyway (and the
            // operator's retry would pay for it twice). An ambiguous call is settled like
            // an interrupted one (`calls::prepare_external`): its callback, a look-up at
            // the service, or its deadline and the one re-submission on record.
            Err(EffectError::Ambiguous(msg)) if external_job(&e.effect).is_some() => {
                engine.metrics.effect_retries.get_or_create(&EffectKindLabels { kind }).inc();
                warn!(error = %msg, "the call may have been received; waiting for its callback before calling again");
                engine.store.effect_ambiguous(&e.effect_id, &msg).await
            }
            Err(EffectError::Transient(msg)) if e.attempts + 1 < engine.settings.effect_max_attempts => {
                let delay = Backoff::new(engine.settings.effect_backoff, MAX_BACKOFF).jittered(e.attempts);
                engine.metrics.effect_retries.get_or_create(&EffectKindLabels { kind }).inc();
                warn!(error = %msg, attempt = e.attempts + 1, retry_in_ms = delay.as_millis() as u64, "effect failed; will retry");
                let at = crate::clock::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                engine.store.effect_retry_later(&e.effect_id, at, &msg).await
            }
            Err(EffectError::LeaseLost) => return,
            Err(EffectError::Transient(msg))
            | Err(EffectError::Ambiguous(msg))
            | Err(EffectError::Permanent(msg)) => {
                engine
                    .metrics
                    .effects
                        .get_or_create(&EffectLabels { kind, outcome: EffectState::Failed })
                        .inc();
                warn!(error = %msg, attempts = e.attempts + 1, "effect failed for good; recorded and replayable");
                // A job that could not be started fails, with the reason in Error Details.
                let entry = match &e.effect {
                    Effect::CreateGoapiTask { job, .. } | Effect::SubmitNcaMix { job, .. } => {
                        Some(engine_entry(&e, EffectState::Failed.as_ref(), Event::EffectFailed { job: *job, error: msg.clone() }))
                    }
                    _ => None,
                };
                engine.store.effect_failed_with(&e.effect_id, &msg, entry).await
            }
        };
        match stored {
            Ok(()) => engine.wake_worker.notify_one(),
            Err(err) => {
                warn!(error = %err, "could not record the effect's result; it will run again");
                // The store is failing: pause this video rather than spin on it.
                tokio::time::sleep(STORE_ERROR_PAUSE).await;
            }
        }
    }
    .instrument(span)
    .await
}

/// The executor's right to write this video: its lease, asked of the store each time.
fn lease_fence(engine: &Engine, lease: &Lease) -> crate::records::fence::Fence {
    let store = engine.store.clone();
    let lease = std::sync::Arc::new(lease.witness());
    std::sync::Arc::new(move || {
        let (store, lease) = (store.clone(), lease.clone());
        Box::pin(async move { store.holds(&lease).await.unwrap_or(false) })
    })
}
