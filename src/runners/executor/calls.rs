//! Before an external call (GoAPI, NCA): whether the job still waits for it, and after an
//! interrupted or ambiguous call, the grace period, the look-up at the service and the one
//! re-submission on record (ARCHITECTURE.md, "Exactly once, and the one window").

use tracing::info;

use super::follow_up::engine_entry;
use crate::domain::RecordId;
use crate::engine::Engine;
use crate::machine::{Effect, Event, JobId};
use crate::store::{Accepted, Lease, NewEntry, OutboxEntry};

/// The job an effect starts at an external service (the calls that must not be repeated).
pub(super) fn external_job(effect: &Effect) -> Option<JobId> {
    match effect {
        Effect::CreateGoapiTask { job, .. } | Effect::SubmitNcaMix { job, .. } => Some(*job),
        _ => None,
    }
}

pub(super) enum Prepared {
    Go,
    Deferred,
    NotNeeded(&'static str),
    /// The one automatic re-submission was spent and the job's deadline has passed with
    /// no answer: the call is not made a third time; the job fails, visibly, for an
    /// operator to look at the service and retry.
    GiveUp(String),
}

/// How often a call whose answer was ambiguous is looked up at its service.
const LOOKUP_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// The deadline of the job an external effect starts: no ambiguous call is sent again,
/// without proof that the service does not have it, before this has passed.
fn job_deadline(engine: &Engine, effect: &Effect) -> chrono::TimeDelta {
    let d = match effect {
        Effect::SubmitNcaMix { .. } => engine.settings.nca_deadline,
        _ => engine.settings.goapi_deadline,
    };
    chrono::TimeDelta::from_std(d).unwrap_or_default()
}

/// How many automatic re-submissions the job has on record, as its snapshot says now.
/// Read after the video's inbox is empty, so that a `resubmitting` already stored has
/// been counted.
async fn resubmissions(
    engine: &Engine,
    video: &RecordId,
    job: JobId,
) -> Result<u32, crate::store::StoreError> {
    Ok(engine
        .store
        .snapshot(video)
        .await?
        .and_then(|s| s.job(job).map(|j| j.resubmissions))
        .unwrap_or(0))
}

/// Before an external call: if a previous call for this effect was interrupted (the
/// process died after sending, before storing the answer), give the service's callback
/// the grace period to arrive first, and the worker the time to process it (nothing of
/// the video left pending in the inbox); then call only if the job still waits for it.
/// This is what keeps a kill -9 from submitting the same mix twice.
pub(super) async fn prepare_external(
    engine: &Engine,
    lease: &Lease,
    e: &OutboxEntry,
    job: JobId,
) -> Result<Prepared, crate::store::StoreError> {
    let snapshot = engine.store.snapshot(&e.video_id).await?;
    let waiting = snapshot
        .as_ref()
        .and_then(|s| s.job(job))
        .is_some_and(|j| j.status == crate::domain::JobStatus::Pending && j.external_id.is_none());
    if !waiting {
        return Ok(Prepared::NotNeeded(
            "the job was already accepted, finished or failed",
        ));
    }
    if let Some(started) = e.started_at {
        let resume = started
            + chrono::Duration::from_std(engine.settings.interrupted_grace).unwrap_or_default();
        let waited_out = crate::clock::now() >= started + job_deadline(engine, &e.effect);
        if crate::clock::now() < resume {
            // Look again in a little while: the callback may come any moment, and this
            // effect holds back the video's later calls until it is settled.
            let next = (crate::clock::now() + chrono::Duration::seconds(2)).min(resume);
            info!(resume_at = %resume, "a previous call may have been received; waiting for its callback before calling again");
            engine.store.effect_defer(&e.effect_id, next).await?;
            return Ok(Prepared::Deferred);
        }
        // The callback may have arrived and wait in the inbox behind other work: the job
        // only shows it once the worker has processed it, so call again only when nothing
        // of this video is left to process.
        if engine.store.has_pending_entries(&e.video_id).await? {
            info!(
                "a previous call may have been received and the video has events still to process; calling again only after them"
            );
            let next = crate::clock::now() + chrono::Duration::seconds(2);
            engine.store.effect_defer(&e.effect_id, next).await?;
            return Ok(Prepared::Deferred);
        }
        // Find out before calling again: the service may have the work (its callback
        // lost, or still to come), and neither NCA nor GoAPI deduplicates a second call.
        if !waited_out {
            match crate::find_out::look_up(engine, &e.effect, started).await {
                crate::find_out::Lookup::Found(event) => {
                    info!(
                        "the service has the job's result: feeding it in instead of calling again"
                    );
                    let entry = NewEntry {
                        dedupe_key: Some(format!(
                            "lookup:{}:{}",
                            e.effect_id,
                            started.timestamp_millis()
                        )),
                        endpoint: "find-out".into(),
                        ..engine_entry(e, "found", crate::runners::reconciler::name_job(event, job))
                    };
                    engine.enqueue(entry).await?;
                    engine
                        .store
                        .effect_defer(
                            &e.effect_id,
                            crate::clock::now() + chrono::Duration::seconds(1),
                        )
                        .await?;
                    return Ok(Prepared::Deferred);
                }
                crate::find_out::Lookup::Absent => {
                    info!("the service answered that it does not have the job");
                }
                crate::find_out::Lookup::CannotTell(why) => {
                    info!(why = %why, "cannot tell yet whether the service has the job; waiting before calling again");
                    engine
                        .store
                        .effect_defer(&e.effect_id, crate::clock::now() + LOOKUP_EVERY)
                        .await?;
                    return Ok(Prepared::Deferred);
                }
            }
        }
        // At most one automatic re-submission per job, on record before it is sent.
        let mut spent = resubmissions(engine, &e.video_id, job).await? > 0;
        if !spent {
            let reason = match (waited_out, e.last_error.as_deref()) {
                (true, Some(err)) => format!("no answer before the job's deadline after: {err}"),
                (true, None) => {
                    "no answer before the job's deadline after a call the process did not see end"
                        .to_owned()
                }
                (false, Some(err)) => format!("the service does not have the job after: {err}"),
                (false, None) => {
                    "the service does not have the job the process was calling when it stopped"
                        .to_owned()
                }
            };
            let entry = NewEntry {
                dedupe_key: Some(format!("resubmit:{}", e.effect_id)),
                endpoint: "resubmit".into(),
                ..engine_entry(e, "resubmit", Event::Resubmitting { job, reason })
            };
            // The entry's dedupe key is the effect's: should the job's count have missed
            // a re-submission already stored (its entry set aside unread), the store's
            // answer still tells, and no third call goes out.
            spent = matches!(engine.enqueue(entry).await?, Accepted::Duplicate { .. });
        }
        if spent {
            if waited_out {
                return Ok(Prepared::GiveUp(format!(
                    "{}: no answer to the call, nor to its one automatic re-submission, before the job's deadline; not calling a third time (last error: {})",
                    e.effect.kind(),
                    e.last_error
                        .as_deref()
                        .unwrap_or("the process stopped during the call")
                )));
            }
            engine
                .store
                .effect_defer(&e.effect_id, crate::clock::now() + LOOKUP_EVERY)
                .await?;
            return Ok(Prepared::Deferred);
        }
    }
    if !engine
        .store
        .effect_started(&e.effect_id, lease, e.started_at)
        .await?
    {
        // Another replica holds the video now (or finished the effect): it is theirs.
        return Ok(Prepared::Deferred);
    }
    Ok(Prepared::Go)
}
