//! The worker: drains the inbox. One video at a time, in arrival order; different videos
//! in parallel. For each entry it loads the snapshot, calls the pure machine, and stores
//! the decision with its effects in one transaction. It performs no effect itself.
//!
//! `worker/first_contact.rs`: a video met for the first time (no snapshot yet) read from the
//! base and translated into the machine's types (`snapshot_from_records`; `snapshots_from_records`
//! for a scan's videos, read together before they are claimed: one request per 100 videos, then
//! one per 100 of their jobs, found by the videos' link arrays).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{Instrument, info, info_span, warn};

use crate::backoff::Backoff;
use crate::commands::CommandOutcome;
use crate::domain::RecordId;
use crate::engine::Engine;
use crate::machine::{Ctx, Effect, Event, Outcome, decide};
use crate::metrics::ProcessedLabels;
use crate::store::{
    Commit, EntryOutcome, HistoryRow, InboxEntry, Lane, Lease, Payload, claim_in_order,
};

mod first_contact;

use first_contact::{FirstContact, refresh_inputs, snapshot_from_records, snapshots_from_records};

/// How long a video waits before its entry is tried again after a transient failure
/// (reading the base), doubling up to the cap: the policy's ceiling, without jitter.
const RETRY: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(60));

/// How soon the inbox is read again after the store failed to answer.
const STORE_ERROR_PAUSE: Duration = Duration::from_millis(250);

/// Entries read per scan of the inbox.
const SCAN: u32 = 256;

/// How long a first-contact read made ahead (with the other videos of its scan) may be
/// used. A video that waited longer for a worker slot is read again rather than decided on
/// what the base said that long ago.
const PREFETCH_FRESH: Duration = Duration::from_secs(10);

/// A video's first contact, read ahead together with the other videos of the same scan:
/// what the base had (`None`: no such video), and when it was read.
struct Prefetched {
    at: tokio::time::Instant,
    found: Option<FirstContact>,
}

pub async fn run(engine: Arc<Engine>) {
    let backoff: Arc<Mutex<HashMap<RecordId, (u32, tokio::time::Instant)>>> = Arc::default();
    // Videos a task of this worker is processing: a scan lists their entries until they
    // commit, but their lease is taken, so they are neither claimed nor read ahead.
    let running: Arc<Mutex<HashSet<RecordId>>> = Arc::default();
    // First contacts read ahead and not used yet (the video was claimed elsewhere, or is
    // still waiting for a slot here): kept while fresh, so that a video pending for a
    // while is not read again at every scan (one batch per scan per replica otherwise).
    let mut ahead: HashMap<RecordId, Prefetched> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(
        engine.settings.worker_concurrency,
    ));
    loop {
        if engine.is_shutting_down() {
            break;
        }
        let wake = engine.wake_worker.notified();
        let mut rescan = engine.store.rescan_every();
        match engine.store.pending_entries(SCAN).await {
            Ok(entries) => {
                let now = tokio::time::Instant::now();
                let mut by_video: Vec<(RecordId, Vec<InboxEntry>)> = Vec::new();
                for e in entries {
                    match by_video.iter_mut().find(|(v, _)| *v == e.video_id) {
                        Some((_, list)) => list.push(e),
                        None => by_video.push((e.video_id.clone(), vec![e])),
                    }
                }
                by_video.retain(|(video, _)| {
                    !backoff
                        .lock()
                        .ok()
                        .and_then(|b| b.get(video).map(|(_, until)| *until > now))
                        .unwrap_or(false)
                });
                ahead.retain(|_, r| r.at.elapsed() < PREFETCH_FRESH);
                {
                    let busy = running.lock().map(|r| r.clone()).unwrap_or_default();
                    let idle: Vec<&(RecordId, Vec<InboxEntry>)> = by_video
                        .iter()
                        .filter(|(v, _)| !busy.contains(v) && !ahead.contains_key(v))
                        .collect();
                    ahead.extend(prefetch(&engine, &idle).await);
                }
                // One lease per video across every replica: a video whose lease another
                // task or replica holds is simply not ours this time round.
                let spawn = |lease: Lease, permit, list: Vec<InboxEntry>| {
                    let read = ahead.remove(lease.video());
                    let (engine, backoff) = (engine.clone(), backoff.clone());
                    let running = InFlight::enter(&running, lease.video());
                    tasks.spawn(async move {
                        let failed = process_video(&engine, &lease, list, read).await;
                        drop(permit);
                        let video = lease.video().clone();
                        if let Ok(mut b) = backoff.lock() {
                            if failed {
                                let n = b.get(&video).map_or(0, |(n, _)| n + 1);
                                let delay = RETRY.ceiling(n);
                                b.insert(video, (n, tokio::time::Instant::now() + delay));
                            } else {
                                b.remove(&video);
                            }
                        }
                        drop(running);
                        drop(lease);
                        engine.wake_worker.notify_one();
                    });
                };
                let stopping = || engine.is_shutting_down();
                claim_in_order(
                    &*engine.store,
                    stopping,
                    Lane::Worker,
                    &limit,
                    by_video,
                    spawn,
                )
                .await;
            }
            Err(e) => {
                warn!(error = %e, "worker could not read the inbox");
                rescan = rescan.min(STORE_ERROR_PAUSE);
            }
        }
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done {
                tracing::error!(error = %e, "a worker task failed; its video is released");
            }
        }
        // Nothing wakes the worker when a video's backoff ends: look again then.
        let now = tokio::time::Instant::now();
        if let Some(next) = backoff.lock().ok().and_then(|b| {
            b.values()
                .map(|(_, until)| *until)
                .filter(|u| *u > now)
                .min()
        }) {
            rescan = rescan.min(next - now);
        }
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(rescan) => {}
        }
    }
    // Finish in-flight videos: each entry either commits whole or stays pending.
    crate::engine::drain(&mut tasks).await;
}

/// Marks a video as being processed by a task of this worker until dropped (also when the
/// task panics).
struct InFlight {
    set: Arc<Mutex<HashSet<RecordId>>>,
    video: RecordId,
}

impl InFlight {
    fn enter(set: &Arc<Mutex<HashSet<RecordId>>>, video: &RecordId) -> Self {
        if let Ok(mut s) = set.lock() {
            s.insert(video.clone());
        }
        Self {
            set: set.clone(),
            video: video.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.video);
        }
    }
}

/// Reads ahead, together, the videos of this scan the engine meets for the first time
/// (no snapshot in the store, and an event to decide): two batched reads of the base
/// instead of two per video. A failed read is only logged: each video then reads alone,
/// and backs off on its own if that fails too.
async fn prefetch(
    engine: &Engine,
    by_video: &[&(RecordId, Vec<InboxEntry>)],
) -> HashMap<RecordId, Prefetched> {
    let mut unknown = Vec::new();
    for (video, list) in by_video.iter().copied() {
        if !list
            .iter()
            .any(|e| matches!(e.payload, Payload::Event { .. }))
        {
            continue;
        }
        if let Ok(None) = engine.store.snapshot(video).await {
            unknown.push(video.clone());
        }
    }
    if unknown.is_empty() {
        return HashMap::new();
    }
    let at = tokio::time::Instant::now();
    match snapshots_from_records(&engine.records, &unknown).await {
        Ok(found) => found
            .into_iter()
            .map(|(video, found)| (video, Prefetched { at, found }))
            .collect(),
        Err(e) => {
            warn!(error = %e, videos = unknown.len(), "could not read first-contact videos together");
            HashMap::new()
        }
    }
}

/// Processes a video's entries in order; stops at the first one that must be retried.
/// Returns true when it stopped early.
async fn process_video(
    engine: &Engine,
    lease: &Lease,
    entries: Vec<InboxEntry>,
    mut read: Option<Prefetched>,
) -> bool {
    for listed in entries {
        if engine.is_shutting_down() {
            return false;
        }
        // The list may predate the previous task for this video: re-read the entry.
        engine.store.yield_to_intake().await;
        let entry = match engine.store.is_pending(listed.event_id).await {
            Ok(true) => listed,
            Ok(false) => continue,
            Err(e) => {
                warn!(error = %e, "could not read an inbox entry");
                return true;
            }
        };
        let span = info_span!(
            "event",
            event_id = %entry.event_id,
            video_id = %entry.video_id,
            source = %entry.source
        );
        match process_entry(engine, lease, &entry, &mut read)
            .instrument(span)
            .await
        {
            Ok(()) => {}
            Err(e) => {
                warn!(event_id = %entry.event_id, video_id = %entry.video_id, error = %e,
                      "event left pending; will retry");
                return true;
            }
        }
    }
    false
}

#[derive(Debug, thiserror::Error)]
enum ProcessError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Records(#[from] crate::records::RecordsError),
}

async fn process_entry(
    engine: &Engine,
    lease: &Lease,
    entry: &InboxEntry,
    read: &mut Option<Prefetched>,
) -> Result<(), ProcessError> {
    let now = crate::clock::now();
    let webhook = entry.source.is_webhook();
    let record_only = |outcome: Outcome, note: String| Commit {
        event_id: entry.event_id,
        video_id: entry.video_id.clone(),
        snapshot: None,
        history: None,
        effects: if webhook {
            vec![(
                format!("{}:0", entry.event_id),
                Effect::RecordWebhookOutcome {
                    outcome,
                    job: None,
                    detail: Some(note.clone()),
                },
            )]
        } else {
            Vec::new()
        },
        outcome: outcome.into(),
        note: Some(note),
        job: None,
        job_records: Vec::new(),
        at: now,
    };
    let event = match &entry.payload {
        Payload::Duplicate { of } => {
            let commit = record_only(Outcome::Duplicate, format!("repeat delivery of event {of}"));
            return finish(engine, lease, entry, commit).await;
        }
        Payload::NotMusic {
            task_id,
            description,
        } => {
            let commit = record_only(
                Outcome::Recorded,
                format!("task {task_id} is not a music task ({description}); recorded only"),
            );
            return finish(engine, lease, entry, commit).await;
        }
        Payload::Event { event } => event,
    };

    let (mut snapshot, job_records, first_contact) =
        match engine.store.snapshot(&entry.video_id).await? {
            Some(s) => (s, Vec::new(), false),
            None => match first_contact(engine, &entry.video_id, read).await? {
                Some((s, records)) => (s, records, true),
                None => {
                    let commit = record_only(
                        Outcome::Unmatched,
                        format!("video {} is not in the Videos table", entry.video_id),
                    );
                    finish(engine, lease, entry, commit).await?;
                    engine
                        .commands
                        .answer(entry.event_id, CommandOutcome::VideoNotFound);
                    return Ok(());
                }
            },
        };
    // Commands read what others write on the video (source video, prompt) afresh, unless
    // it was just read; webhooks of jobs the engine started need no read at all.
    if matches!(
        event,
        Event::MusicRequested { .. } | Event::RetryRequested { .. }
    ) && !first_contact
    {
        refresh_inputs(&engine.records, &mut snapshot).await?;
    }

    let ctx = Ctx {
        now,
        event_id: entry.event_id,
        from_webhook: webhook,
        policy: engine.policy(),
    };
    let before = snapshot.video.status.clone();
    match decide(&snapshot, event, &ctx) {
        Ok(d) => {
            let effects = d
                .effects
                .iter()
                .enumerate()
                .map(|(i, e)| (effect_id(entry, i, e), e.clone()))
                .collect();
            let after = d.next.video.status.clone();
            info!(
                event = event.label(),
                outcome = %d.outcome,
                from = %before,
                to = %after,
                job_id = ?d.job.map(|j| j.to_string()),
                note = d.note.as_deref().unwrap_or(""),
                "decided"
            );
            if before != after {
                engine
                    .metrics
                    .video_transition(&snapshot.video.status, &d.next.video.status);
            }
            let answer = CommandOutcome::Done {
                outcome: Some(d.outcome.into()),
                status: Some(d.next.video.status.clone()),
                job: d.job,
            };
            let commit = Commit {
                event_id: entry.event_id,
                video_id: entry.video_id.clone(),
                history: Some(HistoryRow {
                    event_id: entry.event_id,
                    event: event.label().to_owned(),
                    from: before,
                    to: after,
                    outcome: d.outcome.into(),
                    at: now,
                }),
                snapshot: Some(d.next),
                effects,
                outcome: d.outcome.into(),
                note: d.note,
                job: d.job,
                job_records,
                at: now,
            };
            // The caller hears the answer only once it is stored.
            finish(engine, lease, entry, commit).await?;
            engine.commands.answer(entry.event_id, answer);
            Ok(())
        }
        Err(rejection) => {
            info!(event = event.label(), status = %before, reason = %rejection, "rejected");
            let commit = Commit {
                // A video just read from the base is remembered even when refused, and
                // with it the records of its jobs: a job an older handler left is updated
                // in its own record later, never created a second time.
                snapshot: first_contact.then_some(snapshot),
                job_records,
                outcome: EntryOutcome::Rejected,
                ..record_only(Outcome::Stale, rejection.to_string())
            };
            finish(engine, lease, entry, commit).await?;
            engine.commands.answer(
                entry.event_id,
                CommandOutcome::Rejected(rejection.to_string()),
            );
            Ok(())
        }
    }
}

/// The video as the base has it: the read made ahead with its scan when there is a fresh
/// one (used once: afterwards the store has the video), else a read of its own.
async fn first_contact(
    engine: &Engine,
    video: &RecordId,
    read: &mut Option<Prefetched>,
) -> Result<Option<FirstContact>, crate::records::RecordsError> {
    match read.take().filter(|r| r.at.elapsed() < PREFETCH_FRESH) {
        Some(r) => Ok(r.found),
        None => snapshot_from_records(&engine.records, video).await,
    }
}

/// An NCA submission's effect id is its submission id (sent to NCA as `id`), so that a
/// callback or status poll names the effect; every other effect is named after its event.
fn effect_id(entry: &InboxEntry, i: usize, e: &Effect) -> String {
    match e {
        Effect::SubmitNcaMix { submission_id, .. } => submission_id.clone(),
        _ => format!("{}:{i}", entry.event_id),
    }
}

async fn finish(
    engine: &Engine,
    lease: &Lease,
    entry: &InboxEntry,
    commit: Commit,
) -> Result<(), ProcessError> {
    let outcome = commit.outcome;
    let has_effects = !commit.effects.is_empty();
    engine.store.commit(commit, lease).await?;
    if entry.source.is_webhook() {
        engine
            .metrics
            .events_processed
            .get_or_create(&ProcessedLabels {
                source: entry.source,
                outcome,
            })
            .inc();
        let waited = crate::clock::now() - entry.received_at;
        engine
            .metrics
            .processing_latency
            .observe(waited.to_std().unwrap_or_default().as_secs_f64());
    }
    if has_effects {
        engine.wake_executor.notify_one();
    }
    Ok(())
}
