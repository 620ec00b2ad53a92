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

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::clients::ClientError;
use crate::clients::goapi::CreateTask;
use crate::clients::nca::MixRequest;
use crate::domain::{JobType, RecordId};
use crate::engine::Engine;
use crate::machine::{Effect, Event, JobId, JobPatch, Outcome, Table, Target};
use crate::records::{JobFields, RecordsError, VideoFields, WebhookEventRecord};
use crate::store::{
    EffectState, Lane, Lease, NewEntry, OutboxEntry, Payload, Source, claim_in_order,
};
use crate::webhook::callback::CallbackEndpoint;

/// How long a video's effects pause after the store failed (the claim is held meanwhile).
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The shortest sleep of a pass that claimed nothing.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// The longest wait before an effect's next attempt after a transient failure.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How many effects run at once (Airtable's limiter, not this, bounds Airtable traffic).
const CONCURRENCY: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum EffectError {
    #[error("{0}")]
    Transient(String),
    /// An external call that may have been received: retried only after the grace period
    /// (its `started_at` is kept), so that its callback can arrive first.
    #[error("{0}")]
    Ambiguous(String),
    #[error("{0}")]
    Permanent(String),
}

impl From<RecordsError> for EffectError {
    fn from(e: RecordsError) -> Self {
        if e.is_transient() {
            EffectError::Transient(e.to_string())
        } else {
            EffectError::Permanent(e.to_string())
        }
    }
}

impl From<ClientError> for EffectError {
    fn from(e: ClientError) -> Self {
        if e.is_ambiguous() {
            EffectError::Ambiguous(e.to_string())
        } else if e.is_transient() {
            EffectError::Transient(e.to_string())
        } else {
            EffectError::Permanent(e.to_string())
        }
    }
}

impl From<crate::store::StoreError> for EffectError {
    fn from(e: crate::store::StoreError) -> Self {
        EffectError::Transient(e.to_string())
    }
}

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
        match engine.store.due_effects(Utc::now(), 512).await {
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
                            run_video(&engine, &lease, e).await;
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
            Ok(Some(at)) => (at - Utc::now())
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
    while tasks.join_next().await.is_some() {}
}

/// How long after its cause was received a video's job writes wait for that job's call
/// to be answered, so that the job's record is written once with its external id
/// (issue 17: one write per record) rather than created, then updated.
const GATHER_CALLS: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// Runs the next effect of the video's lane, together with the writes right after it in
/// that lane that go to the same table and touch other records: run concurrently, they
/// share one Airtable request (the backend coalesces up to 10 records), while the lane's
/// order holds. Later writes of a record in the group are folded into its write (the
/// newest value of each field wins, so the record never shows an older state than one
/// already written) and done with it.
async fn run_video(engine: &Engine, lease: &Lease, first: OutboxEntry) {
    let lane = lease.lane();
    let Some(target) = first.effect.target() else {
        run_one(engine, lease, first, Vec::new()).await;
        return;
    };
    let table = target.table();
    if table == Table::Jobs {
        gather_calls(engine, &first).await;
    }
    let pending = engine
        .store
        .pending_effects_of(&first.video_id, 20)
        .await
        .unwrap_or_default();
    let after = first.seq;
    let fold_jobs = engine.records.jobs_have_key();
    let mut group: Vec<(OutboxEntry, Vec<OutboxEntry>)> = vec![(first, Vec::new())];
    let mut targets: Vec<Target> = vec![target];
    let mut open = true;
    for e in pending
        .into_iter()
        .filter(|e| e.seq > after && Lane::of_effect_kind(e.effect.kind()) == lane)
    {
        let Some(t) = e.effect.target() else {
            break;
        };
        // A later write of a record already in the group folds into it, when it can.
        let foldable = |head: &OutboxEntry, folded: &[OutboxEntry]| {
            t.table() == table
                && match (&head.effect, &e.effect) {
                    (Effect::UpdateVideo(_), Effect::UpdateVideo(_)) => true,
                    (
                        Effect::CreateJob { job: a, .. } | Effect::UpdateJob { job: a, .. },
                        Effect::UpdateJob { job: b, .. },
                    ) => fold_jobs && a == b,
                    _ => false,
                }
                && folded.iter().all(|f| f.seq < e.seq)
        };
        if let Some(member) = group.iter_mut().find(|(h, f)| foldable(h, f)) {
            member.1.push(e);
            continue;
        }
        if targets.iter().any(|g| g.same_record(t)) {
            // Not foldable: this record's later writes wait for the next pass, in order.
            open = false;
            continue;
        }
        // One write per record in a group: two writes of one record keep their order.
        if open && t.table() == table && table != Table::Videos {
            targets.push(t);
            group.push((e, Vec::new()));
        } else {
            open = false;
        }
    }
    futures::future::join_all(
        group
            .into_iter()
            .map(|(e, folded)| run_one(engine, lease, e, folded)),
    )
    .await;
}

/// Before a video's job writes: while one of those jobs is still waiting for its call's
/// answer (the call about to go or in flight, or its answer not yet decided), and the
/// writes' cause arrived less than `GATHER_CALLS` ago, waits for it. Bounded, and only the
/// projection waits: the call itself never waits for a write.
async fn gather_calls(engine: &Engine, first: &OutboxEntry) {
    let Ok(Some(cause)) = engine.store.entry(first.event_id).await else {
        return;
    };
    let until = cause.received_at + GATHER_CALLS;
    while Utc::now() < until && !engine.is_shutting_down() {
        let Ok(pending) = engine.store.pending_effects_of(&first.video_id, 20).await else {
            return;
        };
        let Ok(Some(snapshot)) = engine.store.snapshot(&first.video_id).await else {
            return;
        };
        let unanswered = |job: JobId| {
            snapshot.job(job).is_some_and(|j| {
                j.status == crate::domain::JobStatus::Pending && j.external_id.is_none()
            })
        };
        let written: Vec<JobId> = pending
            .iter()
            .filter_map(|e| match &e.effect {
                Effect::CreateJob { job, .. } | Effect::UpdateJob { job, .. } => Some(*job),
                _ => None,
            })
            .filter(|j| unanswered(*j))
            .collect();
        if written.is_empty() {
            return;
        }
        let call_due = pending.iter().any(|e| {
            external_job(&e.effect).is_some_and(|j| written.contains(&j))
                && e.attempts == 0
                && e.next_attempt_at <= Utc::now()
        });
        let answer_undecided = engine
            .store
            .has_pending_entries(&first.video_id)
            .await
            .unwrap_or(false);
        if !call_due && !answer_undecided {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `patch` with `later`'s fields written over it.
fn fold_job_patch(patch: &mut JobPatch, later: &JobPatch) {
    if later.status.is_some() {
        patch.status = later.status;
    }
    if later.external_id.is_some() {
        patch.external_id.clone_from(&later.external_id);
    }
    if later.error.is_some() {
        patch.error.clone_from(&later.error);
    }
}

/// The write of `head` with the later writes of its record folded in.
fn folded_effect(head: &Effect, folded: &[OutboxEntry]) -> (Effect, JobPatch) {
    let mut effect = head.clone();
    let mut create_extra = JobPatch::default();
    for later in folded {
        match (&mut effect, &later.effect) {
            (Effect::UpdateVideo(p), Effect::UpdateVideo(l)) => {
                if l.status.is_some() {
                    p.status.clone_from(&l.status);
                }
                if l.music.is_some() {
                    p.music.clone_from(&l.music);
                }
                if l.final_video.is_some() {
                    p.final_video.clone_from(&l.final_video);
                }
                if l.error_details.is_some() {
                    p.error_details.clone_from(&l.error_details);
                }
            }
            (Effect::UpdateJob { patch, .. }, Effect::UpdateJob { patch: l, .. }) => {
                fold_job_patch(patch, l)
            }
            (Effect::CreateJob { .. }, Effect::UpdateJob { patch: l, .. }) => {
                fold_job_patch(&mut create_extra, l)
            }
            _ => {}
        }
    }
    (effect, create_extra)
}

async fn run_one(engine: &Engine, lease: &Lease, listed: OutboxEntry, folded: Vec<OutboxEntry>) {
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
                        .inc("reelstate_effects_total", &[("kind", kind), ("outcome", EffectState::Failed.as_ref())]);
                    let entry = engine_entry(&e, "failed", Event::EffectFailed { job, error: msg.clone() });
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
        // Airtable cannot be asked to check a lease: the write is made only while this
        // executor still holds the video, so a replica that lost it writes nothing stale.
        if e.effect.target().is_some() && !engine.store.holds(lease).await.unwrap_or(false) {
            info!("the video's lease is no longer this executor's; writing nothing");
            return;
        }
        let started = std::time::Instant::now();
        let (effect, create_extra) = folded_effect(&e.effect, &folded);
        let result = perform(engine, &OutboxEntry { effect, ..e.clone() }, &create_extra).await;
        engine.metrics.observe_effect(kind, started.elapsed());
        let stored = match result {
            Ok(follow_up) => {
                engine
                    .metrics
                    .inc("reelstate_effects_total", &[("kind", kind), ("outcome", EffectState::Done.as_ref())]);
                let entry = follow_up.map(|event| engine_entry(&e, "done", event));
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
            Err(EffectError::Ambiguous(msg)) if e.attempts + 1 < engine.settings.effect_max_attempts => {
                engine.metrics.inc("reelstate_effect_retries_total", &[("kind", kind)]);
                warn!(error = %msg, "the call may have been received; waiting for its callback before calling again");
                engine.store.effect_ambiguous(&e.effect_id, &msg).await
            }
            Err(EffectError::Transient(msg)) if e.attempts + 1 < engine.settings.effect_max_attempts => {
                let delay = Backoff::new(engine.settings.effect_backoff, MAX_BACKOFF).jittered(e.attempts);
                engine.metrics.inc("reelstate_effect_retries_total", &[("kind", kind)]);
                warn!(error = %msg, attempt = e.attempts + 1, retry_in_ms = delay.as_millis() as u64, "effect failed; will retry");
                let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                engine.store.effect_retry_later(&e.effect_id, at, &msg).await
            }
            Err(EffectError::Transient(msg))
            | Err(EffectError::Ambiguous(msg))
            | Err(EffectError::Permanent(msg)) => {
                engine
                    .metrics
                    .inc("reelstate_effects_total", &[("kind", kind), ("outcome", EffectState::Failed.as_ref())]);
                warn!(error = %msg, attempts = e.attempts + 1, "effect failed for good; recorded and replayable");
                // A job that could not be started fails, with the reason in Error Details.
                let entry = match &e.effect {
                    Effect::CreateGoapiTask { job, .. } | Effect::SubmitNcaMix { job, .. } => {
                        Some(engine_entry(&e, "failed", Event::EffectFailed { job: *job, error: msg.clone() }))
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

/// The job an effect starts at an external service (the calls that must not be repeated).
fn external_job(effect: &Effect) -> Option<JobId> {
    match effect {
        Effect::CreateGoapiTask { job, .. } | Effect::SubmitNcaMix { job, .. } => Some(*job),
        _ => None,
    }
}

enum Prepared {
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

/// Whether the job's history already shows its one automatic re-submission.
async fn already_resubmitted(
    engine: &Engine,
    video: &RecordId,
    job: JobId,
) -> Result<bool, crate::store::StoreError> {
    let events = engine
        .store
        .events(crate::store::EventQuery {
            video: Some(video.clone()),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    Ok(events.iter().any(|entry| {
        matches!(&entry.payload, Payload::Event { event: Event::Resubmitting { job: j, .. } } if *j == job)
    }))
}

/// Before an external call: if a previous call for this effect was interrupted (the
/// process died after sending, before storing the answer), give the service's callback
/// the grace period to arrive first, and the worker the time to process it (nothing of
/// the video left pending in the inbox); then call only if the job still waits for it.
/// This is what keeps a kill -9 from submitting the same mix twice.
async fn prepare_external(
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
        let waited_out = Utc::now() >= started + job_deadline(engine, &e.effect);
        if Utc::now() < resume {
            // Look again in a little while: the callback may come any moment, and this
            // effect holds back the video's later calls until it is settled.
            let next = (Utc::now() + chrono::Duration::seconds(2)).min(resume);
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
            let next = Utc::now() + chrono::Duration::seconds(2);
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
                        ..engine_entry(e, "found", crate::reconciler::name_job(event, job))
                    };
                    engine.enqueue(entry).await?;
                    engine
                        .store
                        .effect_defer(&e.effect_id, Utc::now() + chrono::Duration::seconds(1))
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
                        .effect_defer(&e.effect_id, Utc::now() + LOOKUP_EVERY)
                        .await?;
                    return Ok(Prepared::Deferred);
                }
            }
        }
        // At most one automatic re-submission per job, on record before it is sent.
        if already_resubmitted(engine, &e.video_id, job).await? {
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
                .effect_defer(&e.effect_id, Utc::now() + LOOKUP_EVERY)
                .await?;
            return Ok(Prepared::Deferred);
        }
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
        engine.enqueue(entry).await?;
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

/// An event the engine feeds itself, named after the effect so that storing it twice
/// (a retried commit) stores it once.
fn engine_entry(e: &OutboxEntry, what: &str, event: Event) -> NewEntry {
    NewEntry {
        event_id: Uuid::new_v4(),
        video_id: e.video_id.clone(),
        source: Source::Engine,
        endpoint: format!("effect/{}", e.effect.kind()),
        dedupe_key: Some(format!("effect:{what}:{}", e.effect_id)),
        raw_body: String::new(),
        headers: "{}".into(),
        received_at: Utc::now(),
        payload: Payload::Event { event },
    }
}

/// `create_extra`: later updates of a job folded into its creation (otherwise empty).
async fn perform(
    engine: &Engine,
    e: &OutboxEntry,
    create_extra: &JobPatch,
) -> Result<Option<Event>, EffectError> {
    let video = &e.video_id;
    match &e.effect {
        Effect::UpdateVideo(p) => {
            let fields = VideoFields {
                status: p.status.clone(),
                music: p.music.clone(),
                final_video: p.final_video.clone(),
                error_details: p.error_details.clone(),
                ..VideoFields::default()
            };
            engine.records.update_video(video, &fields).await?;
            Ok(None)
        }
        Effect::CreateJob { job, kind, status } => {
            let endpoint = match kind {
                JobType::MusicAddition => Some(CallbackEndpoint::Nca),
                JobType::MusicGeneration => Some(CallbackEndpoint::Goapi),
                JobType::Other(_) => None,
            };
            let webhook_url =
                endpoint.map(|at| engine.signer.readable_url(at, video, &job.to_string()));
            let fields = JobFields {
                job_id: job.to_string(),
                job_type: Some(kind.clone()),
                status: Some(create_extra.status.unwrap_or(*status)),
                related_video: Some(video.clone()),
                external_job_id: create_extra.external_id.clone(),
                webhook_url,
                error_details: create_extra.error.clone(),
                timestamps: Some(format!("{{\"created\":\"{}\"}}", Utc::now().to_rfc3339())),
            };
            let record = if engine.records.jobs_have_key() {
                engine.records.write_job(&fields).await?
            } else {
                let f = engine.records.job_fields_with_id(&fields);
                crate::creation::write_once(engine, &format!("job:{job}"), jobs_table(engine), f)
                    .await?
            };
            engine.store.set_job_record(*job, &record).await?;
            Ok(None)
        }
        Effect::UpdateJob { job, patch } => {
            let mut fields = JobFields {
                job_id: job.to_string(),
                job_type: None,
                status: patch.status,
                related_video: None,
                external_job_id: patch.external_id.clone(),
                webhook_url: None,
                error_details: patch.error.clone(),
                timestamps: None,
            };
            // Jobs another part of the pipeline created are named after their record and
            // updated by record id, as is every job on a base without a Job ID to write.
            // With one, the engine's own jobs are upserted on it, which lets this write
            // share one request with the video's job creation. A job with no record yet
            // on a base without a key is written as its creation would be.
            let keyed = engine.records.jobs_have_key();
            match engine.store.job_location(*job).await?.and_then(|(_, r)| r) {
                Some(record) if !keyed || JobId::for_record(&record) == *job => {
                    engine.records.update_job(&record, &fields).await?
                }
                _ if keyed => {
                    let record = engine.records.write_job(&fields).await?;
                    engine.store.set_job_record(*job, &record).await?;
                }
                _ => {
                    fields.related_video = Some(video.clone());
                    let f = engine.records.job_fields_with_id(&fields);
                    let owner = format!("job:{job}");
                    let record =
                        crate::creation::write_once(engine, &owner, jobs_table(engine), f).await?;
                    engine.store.set_job_record(*job, &record).await?;
                }
            }
            Ok(None)
        }
        Effect::CreateGoapiTask { job, prompt } => {
            let client = engine.goapi.as_ref().ok_or_else(|| {
                EffectError::Permanent("GoAPI is not configured: set GOAPI_API_KEY".into())
            })?;
            let secret = engine
                .settings
                .goapi_webhook_secret
                .clone()
                .unwrap_or_default();
            let task = CreateTask {
                prompt: prompt
                    .clone()
                    .filter(|p| !p.trim().is_empty())
                    .unwrap_or_else(|| engine.settings.default_music_prompt.clone()),
                webhook_url: engine.signer.goapi_url(video, &job.to_string()),
                webhook_secret: secret,
            };
            let task_id = client.create_task(&task).await?;
            info!(job_id = %job, task_id = %task_id, "GoAPI task created");
            Ok(Some(Event::ExternalAccepted {
                job: *job,
                external_id: task_id,
            }))
        }
        Effect::SubmitNcaMix {
            job,
            submission_id,
            video: source,
            music,
            volume,
            voice,
        } => {
            let client = engine.nca.as_ref().ok_or_else(|| {
                EffectError::Permanent(
                    "NCA is not configured: set NCA_API_URL and NCA_API_KEY".into(),
                )
            })?;
            // An attachment's URL is Airtable's copy and expires: read the current one.
            let source = if engine.records.source_video_expires() {
                engine
                    .records
                    .current_source_video(video)
                    .await?
                    .ok_or_else(|| {
                        EffectError::Permanent(
                            "the video has no Combined Segments Video any more".into(),
                        )
                    })?
            } else {
                source.clone()
            };
            let req = MixRequest {
                video_url: source,
                music_url: music.clone(),
                volume: *volume,
                webhook_url: engine.signer.nca_url(video, &job.to_string()),
                id: submission_id.clone(),
                voice: *voice,
            };
            let accepted = client.submit_mix(&req).await?;
            info!(job_id = %job, nca_job_id = %accepted.job_id, "NCA mix submitted");
            // NCA ran the job in the request and answered its final envelope (200 with
            // `response`): no callback will follow, so this answer is the callback.
            if let Some(envelope) = &accepted.finished {
                let mut update = match crate::webhook::nca::parse_nca_value(envelope) {
                    Ok(hook) => hook.update,
                    // It took the job: calling again would mix twice. Fail it, with why.
                    Err(err) => crate::machine::NcaUpdate {
                        submission_id: None,
                        nca_job_id: None,
                        result: crate::machine::NcaResult::Failed {
                            error: format!(
                                "NCA answered the mix synchronously with a result we cannot read: {err}"
                            ),
                        },
                        named_job: None,
                    },
                };
                update.submission_id = Some(submission_id.clone());
                update.named_job = Some(*job);
                update.nca_job_id.get_or_insert(accepted.job_id);
                info!(job_id = %job, "NCA answered with the finished mix: taken as its callback");
                return Ok(Some(Event::NcaJobFinished(update)));
            }
            Ok(Some(Event::ExternalAccepted {
                job: *job,
                external_id: accepted.job_id,
            }))
        }
        Effect::CheckTrack { job, music } => {
            use crate::clients::track::{TrackAnswer, check};
            use crate::machine::TrackCheck;
            let attempt = e.attempts + 1;
            let check = match check(music).await {
                TrackAnswer::Reachable(detail) => TrackCheck::Reachable { detail },
                TrackAnswer::Gone(detail) => TrackCheck::Gone { detail },
                // Asked again with backoff; after the last attempt the machine hears that
                // nothing could be told (it mixes anyway: only proof buys new music).
                TrackAnswer::Inconclusive(detail)
                    if attempt >= engine.settings.effect_max_attempts =>
                {
                    TrackCheck::Unknown {
                        detail: format!("{detail} (attempt {attempt} of {attempt})"),
                    }
                }
                TrackAnswer::Inconclusive(detail) => {
                    return Err(EffectError::Transient(format!(
                        "the track's host did not say whether it has the track: {detail}"
                    )));
                }
            };
            info!(job_id = %job, answer = ?check, "track checked");
            Ok(Some(Event::TrackChecked { job: *job, check }))
        }
        Effect::RecordWebhookOutcome {
            outcome,
            job,
            detail,
        } => {
            let Some(entry) = engine.store.entry(e.event_id).await? else {
                return Err(EffectError::Permanent(format!(
                    "event {} is not in the inbox",
                    e.event_id
                )));
            };
            let related_job = match job {
                Some(j) => job_record(engine, *j).await?,
                None => None,
            };
            let success = matches!(outcome, Outcome::Applied | Outcome::Recorded);
            let error_details = (!success).then(|| match detail {
                Some(d) => format!("{outcome}: {d}"),
                None => outcome.to_string(),
            });
            let record = WebhookEventRecord {
                event_id: entry.event_id.to_string(),
                service: entry.source.to_string(),
                endpoint: entry.endpoint.clone(),
                raw_payload: entry.raw_body.clone(),
                processed: true,
                success,
                timestamp: entry.received_at,
                related_job,
                error_details,
            };
            if engine.records.events_have_key() {
                engine.records.record_webhook_event(&record).await?;
            } else {
                let fields = engine.records.webhook_event_fields(&record);
                let table = engine.records.mapping().webhook_events.table.clone();
                let owner = format!("event:{}", entry.event_id);
                crate::creation::write_once(engine, &owner, &table, fields).await?;
            }
            Ok(None)
        }
    }
}

fn jobs_table(engine: &Engine) -> &str {
    &engine.records.mapping().jobs.table
}

async fn job_record(engine: &Engine, job: JobId) -> Result<Option<RecordId>, EffectError> {
    Ok(engine.store.job_location(job).await?.and_then(|(_, r)| r))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use clap::Parser;

    use super::*;
    use crate::domain::{JobStatus, MediaUrl, VideoStatus};
    use crate::machine::{Job, NcaResult, NcaUpdate, Snapshot, Video, submission_id};
    use crate::records::Records;
    use crate::records::sqlite::SqliteRecords;
    use crate::store::{Commit, SqliteStore};
    use crate::webhook::CallbackSigner;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: crate::configuration::ServeArgs,
    }

    /// An engine on in-memory stores, with no external service (nothing here calls one).
    fn engine(grace_secs: &str) -> Arc<Engine> {
        engine_on(Arc::new(SqliteStore::open_in_memory().unwrap()), grace_secs)
    }

    fn engine_on(store: Arc<dyn crate::store::Store>, grace_secs: &str) -> Arc<Engine> {
        let settings = Cli::try_parse_from([
            "reelstate",
            "--dev",
            "--interrupted-grace-secs",
            grace_secs,
            // No service to ask here: the job's deadline is what allows calling again.
            "--nca-deadline-secs",
            "0",
        ])
        .unwrap()
        .serve
        .validate()
        .unwrap();
        let mapping = settings.mapping.clone();
        let records = Records::new(
            Arc::new(SqliteRecords::open_in_memory(&mapping).unwrap()),
            mapping,
        );
        let signer =
            CallbackSigner::new(settings.signing_secret.as_bytes(), "http://127.0.0.1:9").unwrap();
        Engine::new(
            store,
            records,
            Arc::new(settings),
            signer,
            None,
            None,
            None,
            None,
            Arc::default(),
        )
    }

    fn entry(video: &RecordId, source: Source, event: Event) -> NewEntry {
        NewEntry {
            event_id: Uuid::new_v4(),
            video_id: video.clone(),
            source,
            endpoint: "test".into(),
            dedupe_key: None,
            raw_body: String::new(),
            headers: "{}".into(),
            received_at: Utc::now(),
            payload: Payload::Event { event },
        }
    }

    /// The faults bench once submitted a mix twice: the process died during the NCA call,
    /// NCA's callback arrived and was stored within the grace period, but the worker had not
    /// processed it yet when the grace period ended, so the job still looked unanswered
    /// and the executor called again. An interrupted call must wait while the video has
    /// events the worker has not processed: one of them may be that callback.
    #[tokio::test]
    async fn an_interrupted_call_waits_for_the_videos_unprocessed_events() {
        let engine = engine("0");
        let store = &engine.store;
        let video = RecordId::parse("recA1b2C3d4E5f6G7").unwrap();
        let url = |s: &str| MediaUrl::parse(s).unwrap();
        let job = JobId(Uuid::new_v4());
        let sid = submission_id(&video, 1);
        let mut snapshot = Snapshot::new(Video::new(video.clone(), VideoStatus::AddingMusic));
        snapshot.jobs.push(Job {
            id: job,
            kind: JobType::MusicAddition,
            status: JobStatus::Pending,
            external_id: None,
            submission_id: Some(sid.clone()),
            error: None,
            created_at: Utc::now(),
            ended_at: None,
        });
        let worker = store
            .claim(Lane::Worker, vec![video.clone()])
            .await
            .unwrap()
            .pop()
            .unwrap();
        let lease = store
            .claim(Lane::Executor, vec![video.clone()])
            .await
            .unwrap()
            .pop()
            .unwrap();
        // The decision that asked for the mix, committed with its effect.
        let cause = entry(&video, Source::Goapi, Event::RetryRequested { from: None });
        let cause_id = cause.event_id;
        store.accept(cause).await.unwrap();
        store
            .commit(
                Commit {
                    event_id: cause_id,
                    video_id: video.clone(),
                    snapshot: Some(snapshot),
                    history: None,
                    effects: vec![(
                        sid.clone(),
                        Effect::SubmitNcaMix {
                            job,
                            submission_id: sid.clone(),
                            video: url("https://cdn.example/v.mp4"),
                            music: url("https://cdn.example/m.mp3"),
                            volume: 0.2,
                            voice: true,
                        },
                    )],
                    outcome: crate::store::EntryOutcome::Applied,
                    note: None,
                    job: Some(job),
                    job_records: Vec::new(),
                    at: Utc::now(),
                },
                &worker,
            )
            .await
            .unwrap();
        // The call was sent, then the process died: started, no result, grace over (0 s).
        assert!(store.effect_started(&sid, &lease, None).await.unwrap());
        let interrupted = store.outbox_entry(&sid).await.unwrap().unwrap();
        assert!(interrupted.started_at.is_some());

        // Nothing of the video waits for the worker: the call is made again, once, and the
        // re-submission is on the job's record first.
        assert!(matches!(
            prepare_external(&engine, &lease, &interrupted, job)
                .await
                .unwrap(),
            Prepared::Go
        ));

        // NCA's callback is stored but not processed yet: no new call.
        let callback = entry(
            &video,
            Source::Nca,
            Event::NcaJobFinished(NcaUpdate {
                submission_id: Some(sid.clone()),
                nca_job_id: Some("nca-1".into()),
                result: NcaResult::Succeeded {
                    output: url("https://cdn.example/out.mp4"),
                },
                named_job: Some(job),
            }),
        );
        let callback_id = callback.event_id;
        store.accept(callback).await.unwrap();
        let interrupted = store.outbox_entry(&sid).await.unwrap().unwrap();
        assert!(matches!(
            prepare_external(&engine, &lease, &interrupted, job)
                .await
                .unwrap(),
            Prepared::Deferred
        ));

        // Once the worker has been through it (here: recorded without changing the job),
        // the job's state decides again: the one re-submission was spent, so no third call.
        let resubmission = store
            .pending_entries(10)
            .await
            .unwrap()
            .into_iter()
            .find(|en| {
                matches!(
                    en.payload,
                    Payload::Event {
                        event: Event::Resubmitting { .. }
                    }
                )
            })
            .expect("the re-submission is on record");
        store
            .commit(
                Commit {
                    event_id: resubmission.event_id,
                    video_id: video.clone(),
                    snapshot: None,
                    history: None,
                    effects: Vec::new(),
                    outcome: crate::store::EntryOutcome::Recorded,
                    note: None,
                    job: Some(job),
                    job_records: Vec::new(),
                    at: Utc::now(),
                },
                &worker,
            )
            .await
            .unwrap();
        store
            .commit(
                Commit {
                    event_id: callback_id,
                    video_id: video.clone(),
                    snapshot: None,
                    history: None,
                    effects: Vec::new(),
                    outcome: crate::store::EntryOutcome::Unmatched,
                    note: None,
                    job: None,
                    job_records: Vec::new(),
                    at: Utc::now(),
                },
                &worker,
            )
            .await
            .unwrap();
        assert!(matches!(
            prepare_external(&engine, &lease, &interrupted, job)
                .await
                .unwrap(),
            Prepared::GiveUp(_)
        ));
    }

    /// The lanes split exactly the plain writes (which share Airtable requests, and which
    /// the lease check before a write covers) from the calls (which need the executor
    /// lane's lease to start: `effect_started`).
    #[test]
    fn the_projection_lane_is_the_plain_writes() {
        let job = JobId(Uuid::new_v4());
        let url = MediaUrl::parse("https://cdn.example/v.mp4").unwrap();
        let all = [
            Effect::UpdateVideo(Default::default()),
            Effect::CreateJob {
                job,
                kind: JobType::MusicGeneration,
                status: JobStatus::Pending,
            },
            Effect::UpdateJob {
                job,
                patch: Default::default(),
            },
            Effect::RecordWebhookOutcome {
                outcome: Outcome::Applied,
                job: None,
                detail: None,
            },
            Effect::CreateGoapiTask { job, prompt: None },
            Effect::SubmitNcaMix {
                job,
                submission_id: "s".into(),
                video: url.clone(),
                music: url,
                volume: 0.2,
                voice: true,
            },
        ];
        for e in &all {
            assert_eq!(
                Lane::of_effect_kind(e.kind()) == Lane::Projection,
                e.target().is_some(),
                "{e:?}"
            );
            assert_eq!(
                Lane::of_effect_kind(e.kind()) == Lane::Executor,
                external_job(e).is_some(),
                "{e:?}"
            );
        }
    }

    /// A record's later writes fold into its first: each field takes its newest value, a
    /// field no later write names keeps the first write's.
    #[test]
    fn folded_writes_keep_the_newest_value_of_each_field() {
        let video = RecordId::parse("recA1b2C3d4E5f6G7").unwrap();
        let job = JobId(Uuid::new_v4());
        let listed = |seq: i64, effect: Effect| OutboxEntry {
            seq,
            effect_id: format!("e:{seq}"),
            video_id: video.clone(),
            event_id: Uuid::new_v4(),
            effect,
            state: EffectState::Pending,
            attempts: 0,
            next_attempt_at: Utc::now(),
            last_error: None,
            started_at: None,
        };
        let update = |status: Option<JobStatus>, external: Option<&str>| Effect::UpdateJob {
            job,
            patch: JobPatch {
                status,
                external_id: external.map(str::to_owned),
                error: None,
            },
        };
        let create = Effect::CreateJob {
            job,
            kind: JobType::MusicAddition,
            status: JobStatus::Pending,
        };
        let later = [
            listed(2, update(Some(JobStatus::Processing), Some("nca-1"))),
            listed(3, update(Some(JobStatus::Completed), None)),
        ];
        let (effect, extra) = folded_effect(&create, &later);
        assert_eq!(effect, create);
        assert_eq!(
            extra,
            JobPatch {
                status: Some(JobStatus::Completed),
                external_id: Some("nca-1".into()),
                error: None,
            }
        );
        let (effect, extra) = folded_effect(&update(Some(JobStatus::Pending), None), &later);
        assert_eq!(effect, update(Some(JobStatus::Completed), Some("nca-1")));
        assert_eq!(extra, JobPatch::default());

        let first = Effect::UpdateVideo(crate::machine::VideoPatch {
            status: Some(VideoStatus::AddingMusic),
            music: Some(MediaUrl::parse("https://cdn.example/m.mp3").unwrap()),
            error_details: Some(Some("old".into())),
            ..Default::default()
        });
        let then = listed(
            4,
            Effect::UpdateVideo(crate::machine::VideoPatch {
                status: Some(VideoStatus::Completed),
                error_details: Some(None),
                ..Default::default()
            }),
        );
        let (effect, _) = folded_effect(&first, std::slice::from_ref(&then));
        assert_eq!(
            effect,
            Effect::UpdateVideo(crate::machine::VideoPatch {
                status: Some(VideoStatus::Completed),
                music: Some(MediaUrl::parse("https://cdn.example/m.mp3").unwrap()),
                final_video: None,
                error_details: Some(None),
            })
        );
    }

    /// Airtable cannot refuse a stale writer, so the executor must not write once another
    /// replica has taken the video over (PostgreSQL, when REELSTATE_TEST_DATABASE_URL is set).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_that_lost_the_video_writes_nothing_to_airtable() {
        let Some(base) = std::env::var("REELSTATE_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
        else {
            return;
        };
        let schema = format!("t_{}", Uuid::new_v4().simple());
        let (admin, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
        let lease_for = Duration::from_secs(60);
        let lost = crate::store::PgStore::connect(&url, lease_for)
            .await
            .unwrap();
        let other = crate::store::PgStore::connect(&url, lease_for)
            .await
            .unwrap();
        let engine = engine_on(Arc::new(lost.clone()), "600");
        let store = &engine.store;
        let video = RecordId::parse("recA1b2C3d4E5f6G7").unwrap();
        let worker = store
            .claim(Lane::Worker, vec![video.clone()])
            .await
            .unwrap()
            .pop()
            .unwrap();
        let cause = entry(&video, Source::Goapi, Event::RetryRequested { from: None });
        let cause_id = cause.event_id;
        store.accept(cause).await.unwrap();
        let effect_id = format!("{cause_id}:0");
        let write = Effect::RecordWebhookOutcome {
            outcome: Outcome::Applied,
            job: None,
            detail: Some("written by a replica that lost the video".into()),
        };
        store
            .commit(
                Commit {
                    event_id: cause_id,
                    video_id: video.clone(),
                    snapshot: None,
                    history: None,
                    effects: vec![(effect_id.clone(), write)],
                    outcome: crate::store::EntryOutcome::Applied,
                    note: None,
                    job: None,
                    job_records: Vec::new(),
                    at: Utc::now(),
                },
                &worker,
            )
            .await
            .unwrap();
        let stale = store
            .claim(Lane::Executor, vec![video.clone()])
            .await
            .unwrap()
            .pop()
            .unwrap();
        // This replica stalls past its lease; another one takes the video over.
        admin
            .execute(
                &format!(
                    "UPDATE {schema}.leases SET expires_at = now() - interval '1 second'
                     WHERE lane = 'executor'"
                ),
                &[],
            )
            .await
            .unwrap();
        let _current = crate::store::Leases::claim(&other, Lane::Executor, vec![video.clone()])
            .await
            .unwrap()
            .pop()
            .expect("the other replica takes the video");
        let listed = store.outbox_entry(&effect_id).await.unwrap().unwrap();
        run_one(&engine, &stale, listed, Vec::new()).await;
        let after = store.outbox_entry(&effect_id).await.unwrap().unwrap();
        assert_eq!(
            (after.state, after.attempts),
            (EffectState::Pending, 0),
            "nothing written, nothing recorded: the effect is the new holder's"
        );
        drop((worker, stale, engine, lost, other));
        let _ = admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await;
    }
}
