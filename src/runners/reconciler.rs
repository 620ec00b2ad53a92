//! Reconciliation: a job still waiting for its service past its deadline is checked at
//! the source (GoAPI's task API, NCA's job status) and the answer is fed to the machine
//! as an event. A job still without an answer after its last check fails with Error
//! Details. So a lost webhook never leaves a video stuck.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tracing::{info, warn};

use crate::domain::JobType;
use crate::engine::Engine;
use crate::find_out::{Lookup, find_nca_submission};
use crate::machine::{Event, TaskStatus};
use crate::metrics::JobKindLabels;
use crate::store::{ActiveJob, NewEntry, Payload, Source};
use crate::webhook::goapi::parse_task_object;
use crate::webhook::nca::{NcaJobState, parse_nca_status};

pub async fn run(engine: Arc<Engine>) {
    let mut shutdown = engine.shutdown_signal();
    let tick = engine
        .settings
        .reconcile_interval
        .min(Duration::from_secs(5));
    loop {
        if engine.is_shutting_down() {
            break;
        }
        match check_due(&engine).await {
            Err(e) => {
                engine.store_outage.note();
                warn!(error = %e, "reconciliation pass failed");
            }
            Ok(()) => {
                if let Some(since) = engine.store_outage.take() {
                    match catch_up(&engine).await {
                        Ok(found) => {
                            info!(%since, found, "the store answers again; asked the services about the jobs still waiting")
                        }
                        Err(e) => {
                            engine.store_outage.note();
                            warn!(error = %e, "asking about the jobs still waiting after the store's outage failed");
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => {}
        }
    }
}

enum Answer {
    /// The service has the job's result: feed it in.
    Result(Event),
    /// Still queued or running, or nothing to ask with.
    NotYet,
}

/// A job the reconciler will not poll any more, a job of a final video or one still active
/// after its last check (its answers changed nothing, so asking again would only spend the
/// service's and our requests forever), is parked: retention later drops it from the
/// active list once its video is final.
fn parked(now: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    crate::store::parked_from(now)
}

async fn check_due(engine: &Engine) -> Result<(), crate::store::StoreError> {
    let now = crate::clock::now();
    for job in engine.store.active_jobs_due(now).await? {
        // Final is final: a job left active on a completed or failed video (an older
        // handler's, or imported at first contact) is kept as it is, never polled, never
        // failed into the video.
        let snapshot = engine.store.snapshot(&job.video_id).await?;
        let submission = snapshot
            .as_ref()
            .and_then(|s| s.job(job.job))
            .and_then(|j| j.submission_id.clone());
        let video_status = snapshot.map(|s| s.video.status);
        if let Some(status) = video_status.filter(|s| s.is_final()) {
            info!(job_id = %job.job, video_id = %job.video_id, status = status.name(),
                  "not polling a left-over job of a final video");
            engine
                .store
                .reschedule_check(job.job, job.checks, parked(now))
                .await?;
            continue;
        }
        let deadline = match job.kind {
            JobType::MusicAddition => engine.settings.nca_deadline,
            _ => engine.settings.goapi_deadline,
        };
        let due_at = job.since + chrono::Duration::from_std(deadline).unwrap_or_default();
        if now < due_at {
            engine
                .store
                .reschedule_check(job.job, job.checks, due_at)
                .await?;
            continue;
        }
        let answer = match ask(engine, &job, submission.as_deref()).await {
            Ok(a) => a,
            Err(e) => {
                // An outage of the service's API is not an answer: it fails no job.
                warn!(job_id = %job.job, error = %e, "could not check the job at its service");
                let next = now
                    + chrono::Duration::from_std(engine.settings.reconcile_interval)
                        .unwrap_or_default();
                engine
                    .store
                    .reschedule_check(job.job, job.checks, next)
                    .await?;
                continue;
            }
        };
        let checks = job.checks + 1;
        let event = match answer {
            // The answer is about this job: it binds to it as a callback to the URL we
            // signed for it would.
            Answer::Result(event) => Some(name_job(event, job.job)),
            Answer::NotYet if checks >= engine.settings.reconcile_checks => {
                info!(job_id = %job.job, checks, "no answer after the last check; failing the job");
                Some(Event::JobDeadlinePassed { job: job.job })
            }
            Answer::NotYet => None,
        };
        if let Some(event) = event {
            let key = format!("reconcile:{}:{}:{checks}", job.job, event.label());
            engine.enqueue(entry(&job, event, key, now)).await?;
            counted(engine, &job);
        }
        let next = if checks >= engine.settings.reconcile_checks {
            // The last check has been fed in: a job that is still active afterwards is one
            // the machine will not close (its news is stale), so it is not polled again.
            parked(now)
        } else {
            now + chrono::Duration::from_std(engine.settings.reconcile_interval).unwrap_or_default()
        };
        engine.store.reschedule_check(job.job, checks, next).await?;
    }
    Ok(())
}

/// After the store was unreachable here: every job still waiting on a video that is not
/// final is asked at its service now. A result is fed in as the reconciler's; any other
/// answer changes nothing (the job keeps its deadline and its checks), since a callback
/// still to come will bring it. Returns how many results were found.
async fn catch_up(engine: &Engine) -> Result<usize, crate::store::StoreError> {
    let now = crate::clock::now();
    let s = &engine.settings;
    let furthest = s
        .nca_deadline
        .max(s.goapi_deadline)
        .max(s.reconcile_interval);
    let horizon = now + chrono::Duration::from_std(furthest).unwrap_or_default();
    let mut found = 0;
    for job in engine.store.active_jobs_due(horizon).await? {
        let snapshot = engine.store.snapshot(&job.video_id).await?;
        if snapshot.as_ref().is_none_or(|s| s.video.status.is_final()) {
            continue;
        }
        let submission = snapshot
            .as_ref()
            .and_then(|s| s.job(job.job))
            .and_then(|j| j.submission_id.clone());
        let Ok(Answer::Result(event)) = ask(engine, &job, submission.as_deref()).await else {
            continue;
        };
        let event = name_job(event, job.job);
        let key = format!("catch-up:{}:{}", job.job, event.label());
        engine.enqueue(entry(&job, event, key, now)).await?;
        counted(engine, &job);
        found += 1;
    }
    Ok(found)
}

/// The reconciler's answer about `job`, as an inbox entry; `key` deduplicates it (every
/// replica may find the same answer).
fn entry(job: &ActiveJob, event: Event, key: String, now: chrono::DateTime<Utc>) -> NewEntry {
    NewEntry {
        event_id: crate::store::new_event_id(),
        video_id: job.video_id.clone(),
        source: Source::Engine,
        endpoint: "reconcile".into(),
        dedupe_key: Some(key),
        raw_body: String::new(),
        headers: "{}".into(),
        received_at: now,
        payload: Payload::Event { event },
    }
}

async fn ask(engine: &Engine, job: &ActiveJob, submission: Option<&str>) -> Result<Answer, String> {
    let Some(external) = &job.external_id else {
        // A mix whose submission got no clear answer has no NCA id: NCA's done jobs name
        // the submission they ran, so its result can still be found.
        if let (JobType::MusicAddition, Some(sid)) = (&job.kind, submission)
            && let Lookup::Found(event) = find_nca_submission(engine, sid, job.since).await
        {
            return Ok(Answer::Result(event));
        }
        return Ok(Answer::NotYet);
    };
    match job.kind {
        JobType::MusicGeneration => {
            let Some(client) = &engine.goapi else {
                return Ok(Answer::NotYet);
            };
            let task = client.get_task(external).await.map_err(|e| e.to_string())?;
            let hook = parse_task_object(&task, None).map_err(|e| e.to_string())?;
            Ok(match hook.update.status {
                TaskStatus::Completed | TaskStatus::Failed => {
                    Answer::Result(Event::GoapiTaskUpdate(hook.update))
                }
                _ => Answer::NotYet,
            })
        }
        JobType::MusicAddition => {
            let Some(client) = &engine.nca else {
                return Ok(Answer::NotYet);
            };
            let body = client
                .job_status(external)
                .await
                .map_err(|e| e.to_string())?;
            Ok(match parse_nca_status(&body).map_err(|e| e.to_string())? {
                NcaJobState::Done(hook) => Answer::Result(Event::NcaJobFinished(hook.update)),
                NcaJobState::Queued | NcaJobState::Running | NcaJobState::Unknown => Answer::NotYet,
            })
        }
        JobType::Other(_) => Ok(Answer::NotYet),
    }
}

/// Marks a service's answer as being about `job`.
pub(crate) fn name_job(event: Event, job: crate::machine::JobId) -> Event {
    match event {
        Event::GoapiTaskUpdate(mut u) => {
            u.named_job = Some(job);
            Event::GoapiTaskUpdate(u)
        }
        Event::NcaJobFinished(mut u) => {
            u.named_job = Some(job);
            Event::NcaJobFinished(u)
        }
        other => other,
    }
}

/// One more job checked at its service (`reelstate_reconciliations_total`).
fn counted(engine: &Engine, job: &ActiveJob) {
    engine
        .metrics
        .reconciliations
        .get_or_create(&JobKindLabels {
            kind: job.kind.clone(),
        })
        .inc();
}
