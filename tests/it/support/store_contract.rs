//! The engine store's contract: what the worker, the executor, the reconciler and the API
//! rely on, checked the same way on every implementation of `reelstate::store::Store`.
//! Each check makes its own videos (fresh record ids), so the suite can run on a store
//! that already holds data.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reelstate::domain::{JobStatus, JobType, MediaUrl, RecordId, VideoStatus};
use reelstate::machine::{Effect, Event, Job, JobId, Outcome, Snapshot, Video};
use reelstate::store::{
    Accepted, Commit, EffectState, EntryOutcome, EntryState, EventFilter, EventQuery, HistoryRow,
    Lane, NewEntry, Owner, PaidCalls, Payload, Source, Store, StuckCutoffs, VideoQuery,
};
use uuid::Uuid;

pub type Shared = Arc<dyn Store>;

/// A fresh Airtable-shaped record id.
pub fn video() -> RecordId {
    let hex = Uuid::new_v4().simple().to_string();
    RecordId::parse(&format!("rec{}", &hex[..14])).expect("valid record id")
}

pub fn entry(video: &RecordId, key: Option<&str>) -> NewEntry {
    NewEntry {
        event_id: Uuid::new_v4(),
        video_id: video.clone(),
        source: Source::Goapi,
        endpoint: "/webhooks/goapi".into(),
        dedupe_key: key.map(str::to_owned),
        raw_body: r#"{"task_id":"t-1"}"#.into(),
        headers: "{}".into(),
        received_at: Utc::now(),
        payload: Payload::Event {
            event: Event::RetryRequested { from: None },
        },
    }
}

pub fn snapshot(video: &RecordId, status: VideoStatus, jobs: Vec<Job>) -> Snapshot {
    Snapshot {
        video: Video::new(video.clone(), status),
        jobs,
    }
}

fn job(status: JobStatus, external: Option<&str>) -> Job {
    Job {
        id: JobId(Uuid::new_v4()),
        kind: JobType::MusicGeneration,
        status,
        external_id: external.map(str::to_owned),
        submission_id: None,
        error: None,
        created_at: Utc::now(),
        ended_at: None,
        resubmissions: 0,
    }
}

fn record_effect(detail: &str) -> Effect {
    Effect::RecordWebhookOutcome {
        outcome: Outcome::Applied,
        job: None,
        detail: Some(detail.to_owned()),
    }
}

pub fn commit_of(e: &NewEntry, snap: Option<Snapshot>, effects: Vec<(String, Effect)>) -> Commit {
    Commit {
        event_id: e.event_id,
        video_id: e.video_id.clone(),
        history: snap.as_ref().map(|s| HistoryRow {
            event_id: e.event_id,
            event: "retry_requested".into(),
            from: VideoStatus::from_airtable("Processing"),
            to: s.video.status.clone(),
            outcome: EntryOutcome::Applied,
            at: Utc::now(),
        }),
        snapshot: snap,
        effects,
        outcome: EntryOutcome::Applied,
        note: Some("a note".into()),
        job: None,
        job_records: Vec::new(),
        at: Utc::now(),
    }
}

pub async fn new_id(store: &Shared, e: NewEntry) -> Uuid {
    match store.accept(e).await.expect("accept") {
        Accepted::New(id) => id,
        other => panic!("expected a new entry, got {other:?}"),
    }
}

/// Every single-store check.
pub async fn run_all(store: Shared) {
    accept_stores_and_detects_repeats(&store).await;
    concurrent_repeats_store_one_first(&store).await;
    pending_entries_keep_arrival_order_and_cap_each_video(&store).await;
    commit_is_whole_and_marks_the_entry_done(&store).await;
    leases_are_exclusive_per_lane_until_dropped(&store).await;
    effects_run_in_order_one_video_at_a_time(&store).await;
    calls_do_not_queue_behind_projections(&store).await;
    effect_results_store_their_follow_up_once(&store).await;
    failed_effects_are_listed_and_replayable(&store).await;
    started_calls_are_remembered(&store).await;
    every_start_of_a_paid_call_is_counted(&store).await;
    late_results_do_not_reopen_a_finished_effect(&store).await;
    a_commit_needs_the_videos_worker_lease(&store).await;
    the_reconcilers_worklist_follows_active_jobs(&store).await;
    events_page_and_filter(&store).await;
    overview_counts_states_and_lists_what_needs_attention(&store).await;
    the_videos_list_filters_searches_and_pages(&store).await;
    record_creations_are_noted_then_claimed_once(&store).await;
    pruning_deletes_only_what_is_old_and_finished(&store).await;
    retention_keeps_what_a_row_still_serves(&store).await;
    store.ping().await.expect("ping");
    let d = store.depths().await.expect("depths");
    assert!(d.inbox_pending >= 0 && d.outbox_pending >= 0 && d.outbox_failed >= 1);
}

pub async fn accept_stores_and_detects_repeats(store: &Shared) {
    let v = video();
    let key = format!("k-{}", Uuid::new_v4());
    let first = new_id(store, entry(&v, Some(&key))).await;
    let again = store.accept(entry(&v, Some(&key))).await.expect("accept");
    let Accepted::Duplicate { of, entry: dup } = again else {
        panic!("a repeat must be a duplicate, got {again:?}")
    };
    assert_eq!(of, first);
    // Every delivery is in the log: the repeat too, pointing at the first.
    let stored = store.entry(dup).await.expect("entry").expect("stored");
    assert!(matches!(stored.payload, Payload::Duplicate { of } if of == first));
    let first_entry = store.entry(first).await.expect("entry").expect("stored");
    assert_eq!(first_entry.raw_body, r#"{"task_id":"t-1"}"#);
    assert_eq!(first_entry.state, EntryState::Pending);
    assert!(store.is_pending(first).await.expect("is_pending"));
    // No key: never a duplicate.
    new_id(store, entry(&v, None)).await;
    new_id(store, entry(&v, None)).await;
    assert!(store.entry(Uuid::new_v4()).await.expect("entry").is_none());
}

pub async fn concurrent_repeats_store_one_first(store: &Shared) {
    let v = video();
    let key = format!("k-{}", Uuid::new_v4());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, e) = (store.clone(), entry(&v, Some(&key)));
            tokio::spawn(async move { store.accept(e).await })
        })
        .collect();
    let mut new = Vec::new();
    let mut dups = Vec::new();
    for t in tasks {
        match t.await.expect("task").expect("accept") {
            Accepted::New(id) => new.push(id),
            Accepted::Duplicate { of, .. } => dups.push(of),
        }
    }
    assert_eq!(new.len(), 1, "exactly one first copy");
    assert_eq!(dups.len(), 7);
    assert!(dups.iter().all(|of| *of == new[0]));
}

pub async fn pending_entries_keep_arrival_order_and_cap_each_video(store: &Shared) {
    let (a, b) = (video(), video());
    let mut ids_a = Vec::new();
    for i in 0..20 {
        ids_a.push(new_id(store, entry(&a, None)).await);
        if i % 5 == 0 {
            new_id(store, entry(&b, None)).await;
        }
    }
    let pending = store.pending_entries(4096).await.expect("pending");
    let of_a: Vec<Uuid> = pending
        .iter()
        .filter(|e| e.video_id == a)
        .map(|e| e.event_id)
        .collect();
    // At most 16 per video, the oldest, in order: one chatty video cannot hide others.
    assert_eq!(of_a, ids_a[..16].to_vec());
    assert_eq!(pending.iter().filter(|e| e.video_id == b).count(), 4);
    let seqs: Vec<i64> = pending.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "arrival order");
    // Lists leave the raw body out (it can be a megabyte); `entry` has it.
    assert!(pending.iter().all(|e| e.raw_body.is_empty()));
}

pub async fn commit_is_whole_and_marks_the_entry_done(store: &Shared) {
    let v = video();
    let e = entry(&v, None);
    let id = new_id(store, e.clone()).await;
    let j = job(JobStatus::Processing, Some("task-1"));
    let snap = snapshot(&v, VideoStatus::GeneratingMusic, vec![j.clone()]);
    let effects = vec![
        (format!("{id}:0"), record_effect("first")),
        (format!("{id}:1"), record_effect("second")),
    ];
    assert!(store.has_pending_entries(&v).await.expect("pending"));
    let lease = one_lease(store, Lane::Worker, &v).await;
    store
        .commit(commit_of(&e, Some(snap.clone()), effects.clone()), &lease)
        .await
        .expect("commit");
    assert!(
        !store.has_pending_entries(&v).await.expect("pending"),
        "nothing of the video left for the worker"
    );
    assert_eq!(store.snapshot(&v).await.expect("snapshot"), Some(snap));
    let stored = store.entry(id).await.expect("entry").expect("stored");
    assert_eq!(stored.state, EntryState::Done);
    assert_eq!(stored.outcome, Some(EntryOutcome::Applied));
    assert_eq!(stored.note.as_deref(), Some("a note"));
    assert!(!store.is_pending(id).await.expect("is_pending"));
    let history = store.history(&v).await.expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].event_id, id);
    assert_eq!(history[0].to, VideoStatus::GeneratingMusic);
    let outbox = store.effects_of(&v).await.expect("effects");
    assert_eq!(
        outbox
            .iter()
            .map(|o| o.effect_id.clone())
            .collect::<Vec<_>>(),
        vec![format!("{id}:0"), format!("{id}:1")]
    );
    assert!(
        outbox
            .iter()
            .all(|o| o.state == EffectState::Pending && o.attempts == 0)
    );
    // The job is indexed under its video.
    let (video_of_job, record) = store
        .job_location(j.id)
        .await
        .expect("job_location")
        .expect("indexed");
    assert_eq!(video_of_job, v);
    assert_eq!(record, None);
    let rec = video();
    store.set_job_record(j.id, &rec).await.expect("set record");
    assert_eq!(
        store.job_location(j.id).await.expect("job_location"),
        Some((v.clone(), Some(rec)))
    );
    // An effect id names one effect for ever: committing it again adds nothing.
    let e2 = entry(&v, None);
    new_id(store, e2.clone()).await;
    store
        .commit(commit_of(&e2, None, effects), &lease)
        .await
        .expect("commit");
    assert_eq!(store.effects_of(&v).await.expect("effects").len(), 2);
}

/// An effect as stored now (it must exist).
async fn stored(store: &Shared, id: &str) -> reelstate::store::OutboxEntry {
    store.outbox_entry(id).await.expect("get").expect("stored")
}

/// How many events the engine fed itself for the video that still wait for the worker.
async fn engine_events(store: &Shared, v: &RecordId) -> usize {
    store
        .pending_entries(4096)
        .await
        .expect("pending")
        .into_iter()
        .filter(|e| &e.video_id == v && e.source == Source::Engine)
        .count()
}

pub async fn one_lease(store: &Shared, lane: Lane, v: &RecordId) -> reelstate::store::Lease {
    let mut got = store.claim(lane, vec![v.clone()]).await.expect("claim");
    assert_eq!(got.len(), 1, "a free video must be claimable");
    got.remove(0)
}

pub async fn leases_are_exclusive_per_lane_until_dropped(store: &Shared) {
    let (a, b) = (video(), video());
    let held = store
        .claim(Lane::Worker, vec![a.clone(), b.clone()])
        .await
        .expect("claim");
    assert_eq!(held.len(), 2);
    assert!(
        store
            .claim(Lane::Worker, vec![a.clone()])
            .await
            .expect("claim")
            .is_empty(),
        "a held lease is not granted twice"
    );
    // The executor's lane is another lease.
    assert_eq!(
        store
            .claim(Lane::Executor, vec![a.clone()])
            .await
            .expect("claim")
            .len(),
        1
    );
    drop(held);
    assert_eq!(
        eventually_claim(store, Lane::Worker, &a).await.video(),
        &a,
        "a dropped lease is free again"
    );
}

/// Claims `v`, retrying briefly: a lease given back is written back in the background.
pub async fn eventually_claim(store: &Shared, lane: Lane, v: &RecordId) -> reelstate::store::Lease {
    for _ in 0..100 {
        if let Some(l) = store
            .claim(lane, vec![v.clone()])
            .await
            .expect("claim")
            .pop()
        {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the lease on {v} never became free");
}

pub async fn with_effects(store: &Shared, v: &RecordId, n: usize) -> Vec<String> {
    let e = entry(v, None);
    let id = new_id(store, e.clone()).await;
    let effects: Vec<(String, Effect)> = (0..n)
        .map(|i| (format!("{id}:{i}"), record_effect(&format!("effect {i}"))))
        .collect();
    let ids = effects.iter().map(|(i, _)| i.clone()).collect();
    let lease = eventually_claim(store, Lane::Worker, v).await;
    store
        .commit(commit_of(&e, None, effects), &lease)
        .await
        .expect("commit");
    ids
}

pub async fn effects_run_in_order_one_video_at_a_time(store: &Shared) {
    let v = video();
    let ids = with_effects(store, &v, 3).await;
    let first_of_v = |due: &[reelstate::store::OutboxEntry]| {
        due.iter()
            .filter(|e| e.video_id == v)
            .map(|e| e.effect_id.clone())
            .collect::<Vec<_>>()
    };
    let due = store.due_effects(Utc::now(), 4096).await.expect("due");
    assert_eq!(
        first_of_v(&due),
        vec![ids[0].clone()],
        "only the video's first"
    );
    assert_eq!(
        store
            .pending_effects_of(&v, 10)
            .await
            .expect("pending")
            .iter()
            .map(|e| e.effect_id.clone())
            .collect::<Vec<_>>(),
        ids
    );
    // Postponed: not due now, and the video's later effects wait behind it.
    let later = Utc::now() + chrono::Duration::seconds(60);
    store.effect_defer(&ids[0], later).await.expect("defer");
    let due = store.due_effects(Utc::now(), 4096).await.expect("due");
    assert!(first_of_v(&due).is_empty());
    assert!(store.next_due().await.expect("next_due").is_some());
    let due = store.due_effects(later, 4096).await.expect("due");
    assert_eq!(first_of_v(&due), vec![ids[0].clone()]);
    // A transient failure: one attempt more, due again later.
    store
        .effect_retry_later(&ids[0], Utc::now(), "503")
        .await
        .expect("retry later");
    let e = store
        .outbox_entry(&ids[0])
        .await
        .expect("outbox_entry")
        .expect("stored");
    assert_eq!((e.attempts, e.last_error.as_deref()), (1, Some("503")));
    store.effect_done_with(&ids[0], None).await.expect("done");
    let due = store.due_effects(Utc::now(), 4096).await.expect("due");
    assert_eq!(first_of_v(&due), vec![ids[1].clone()], "then the next one");
}

/// A video's effects form two lanes (issue 17): its calls to services, and its writes to
/// the base. Each lane runs in decision order; neither waits for the other, so a mix is
/// not held behind Airtable writes waiting for the request budget.
pub async fn calls_do_not_queue_behind_projections(store: &Shared) {
    let v = video();
    let e = entry(&v, None);
    let id = new_id(store, e.clone()).await;
    let job = JobId(Uuid::new_v4());
    let call = |n: u32| Effect::CreateGoapiTask {
        job,
        prompt: Some(format!("call {n}")),
    };
    let effects: Vec<(String, Effect)> = vec![
        (format!("{id}:0"), record_effect("write 0")),
        (format!("{id}:1"), record_effect("write 1")),
        (format!("{id}:2"), call(0)),
        (format!("{id}:3"), record_effect("write 2")),
        (format!("{id}:4"), call(1)),
    ];
    let ids: Vec<String> = effects.iter().map(|(i, _)| i.clone()).collect();
    let lease = eventually_claim(store, Lane::Worker, &v).await;
    store
        .commit(commit_of(&e, None, effects), &lease)
        .await
        .expect("commit");
    let due_of_v = |due: &[reelstate::store::OutboxEntry]| {
        let mut ids: Vec<String> = due
            .iter()
            .filter(|e| e.video_id == v)
            .map(|e| e.effect_id.clone())
            .collect();
        ids.sort();
        ids
    };
    let due = store.due_effects(Utc::now(), 4096).await.expect("due");
    assert_eq!(
        due_of_v(&due),
        vec![ids[0].clone(), ids[2].clone()],
        "the first write and the first call, each first of its lane"
    );
    // A write held back (the budget, a lockout) holds back the writes behind it only.
    let later = Utc::now() + chrono::Duration::seconds(60);
    store.effect_defer(&ids[0], later).await.expect("defer");
    let due = store.due_effects(Utc::now(), 4096).await.expect("due");
    assert_eq!(due_of_v(&due), vec![ids[2].clone()]);
    store.effect_done_with(&ids[2], None).await.expect("done");
    let due = store.due_effects(Utc::now(), 4096).await.expect("due");
    assert_eq!(due_of_v(&due), vec![ids[4].clone()], "then the next call");
    // And a call held back holds back no write.
    store.effect_defer(&ids[4], later).await.expect("defer");
    store.effect_done_with(&ids[0], None).await.expect("done");
    let due = store.due_effects(Utc::now(), 4096).await.expect("due");
    assert_eq!(
        due_of_v(&due),
        vec![ids[1].clone()],
        "writes in their order"
    );
    for id in [&ids[1], &ids[3], &ids[4]] {
        store.effect_done_with(id, None).await.expect("done");
    }
}

pub async fn effect_results_store_their_follow_up_once(store: &Shared) {
    let v = video();
    let ids = with_effects(store, &v, 1).await;
    let follow = |id: &str| NewEntry {
        source: Source::Engine,
        dedupe_key: Some(format!("effect:done:{id}")),
        ..entry(&v, None)
    };
    store
        .effect_done_with(&ids[0], Some(follow(&ids[0])))
        .await
        .expect("done");
    // A retried commit (the process died before knowing it committed) stores nothing new.
    store
        .effect_done_with(&ids[0], Some(follow(&ids[0])))
        .await
        .expect("done again");
    let engine_events = engine_events(store, &v).await;
    assert_eq!(engine_events, 1);
    let e = stored(store, &ids[0]).await;
    assert_eq!(e.state, EffectState::Done);
}

pub async fn failed_effects_are_listed_and_replayable(store: &Shared) {
    let v = video();
    let ids = with_effects(store, &v, 1).await;
    store
        .effect_failed_with(&ids[0], "422 INVALID_VALUE", None)
        .await
        .expect("failed");
    let e = stored(store, &ids[0]).await;
    assert_eq!(e.state, EffectState::Failed);
    assert_eq!(e.last_error.as_deref(), Some("422 INVALID_VALUE"));
    let failed = store
        .events(EventQuery {
            filter: Some(EventFilter::EffectFailed),
            video: Some(v.clone()),
            source: None,
            before_seq: None,
            limit: 50,
        })
        .await
        .expect("events");
    assert_eq!(failed.len(), 1, "the event whose effect failed");
    assert!(store.requeue_effect(&ids[0]).await.expect("requeue"));
    assert!(
        !store.requeue_effect(&ids[0]).await.expect("requeue"),
        "only failed ones"
    );
    let e = stored(store, &ids[0]).await;
    assert_eq!((e.state, e.attempts), (EffectState::Pending, 0));
    // Leave one failed effect for the depth check of the suite.
    store
        .effect_failed_with(&ids[0], "422 again", None)
        .await
        .expect("failed");
}

pub async fn started_calls_are_remembered(store: &Shared) {
    let v = video();
    let ids = with_effects(store, &v, 1).await;
    let lease = eventually_claim(store, Lane::Executor, &v).await;
    // The worker's lease, or another video's, does not start a call.
    let worker = eventually_claim(store, Lane::Worker, &v).await;
    assert!(
        !store
            .effect_started(&ids[0], &worker, None)
            .await
            .expect("started")
    );
    drop(worker);
    let other = eventually_claim(store, Lane::Executor, &video()).await;
    assert!(
        !store
            .effect_started(&ids[0], &other, None)
            .await
            .expect("started")
    );
    assert!(
        store
            .effect_started(&ids[0], &lease, None)
            .await
            .expect("started")
    );
    let e = stored(store, &ids[0]).await;
    assert!(e.started_at.is_some(), "a call in flight is on record");
    // Compare-and-set: whoever looked before that start does not start it again.
    assert!(
        !store
            .effect_started(&ids[0], &lease, None)
            .await
            .expect("started"),
        "a call started since the caller looked is not started twice"
    );
    // Ambiguous: counted, and the start kept so that the next try waits for the callback.
    store
        .effect_ambiguous(&ids[0], "connection reset")
        .await
        .expect("ambiguous");
    let e = stored(store, &ids[0]).await;
    assert_eq!(e.attempts, 1);
    assert!(e.started_at.is_some());
    // The next try, after the grace period, names the start it saw.
    assert!(
        store
            .effect_started(&ids[0], &lease, e.started_at)
            .await
            .expect("started")
    );
    store.effect_done_with(&ids[0], None).await.expect("done");
    let e = stored(store, &ids[0]).await;
    assert!(e.started_at.is_none());
    assert!(
        !store
            .effect_started(&ids[0], &lease, None)
            .await
            .expect("started"),
        "a finished effect is not started again"
    );
}

/// The paid calls per video, in total and per day: every start of a GoAPI task or an NCA
/// mix (a re-submission is a second start), and nothing else. Totals are deltas: the suite
/// may run on a store holding data.
pub async fn every_start_of_a_paid_call_is_counted(store: &Shared) {
    let v = video();
    let since = Utc::now() - chrono::Duration::hours(1);
    let sum = |days: Vec<reelstate::store::PaidDay>| {
        days.iter().fold(PaidCalls::default(), |t, d| PaidCalls {
            goapi_tasks: t.goapi_tasks + d.calls.goapi_tasks,
            nca_renders: t.nca_renders + d.calls.nca_renders,
        })
    };
    let total_before = store.paid_calls(None).await.expect("paid calls");
    let days_before = sum(store.paid_calls_by_day(since).await.expect("by day"));
    let e = entry(&v, None);
    let id = new_id(store, e.clone()).await;
    let job = JobId(Uuid::new_v4());
    let url = |s: &str| MediaUrl::parse(s).expect("url");
    let (goapi, nca, write) = (
        format!("{id}:goapi"),
        format!("{id}:nca"),
        format!("{id}:w"),
    );
    let effects = vec![
        (goapi.clone(), Effect::CreateGoapiTask { job, prompt: None }),
        (
            nca.clone(),
            Effect::SubmitNcaMix {
                job,
                submission_id: format!("add_music:{v}:1"),
                video: url("https://example.com/v.mp4"),
                music: url("https://example.com/m.mp3"),
                volume: 0.2,
                voice: true,
            },
        ),
        (write.clone(), record_effect("a write to the base")),
    ];
    let worker = eventually_claim(store, Lane::Worker, &v).await;
    store
        .commit(commit_of(&e, None, effects), &worker)
        .await
        .expect("commit");
    drop(worker);
    assert_eq!(
        store.paid_calls(Some(&v)).await.expect("paid calls"),
        PaidCalls::default(),
        "decided is not started"
    );
    let lease = eventually_claim(store, Lane::Executor, &v).await;
    assert!(
        store
            .effect_started(&goapi, &lease, None)
            .await
            .expect("start")
    );
    assert!(
        !store
            .effect_started(&goapi, &lease, None)
            .await
            .expect("start"),
        "a start that loses the race is no call"
    );
    store
        .effect_ambiguous(&goapi, "connection reset")
        .await
        .expect("ambiguous");
    let seen = stored(store, &goapi).await.started_at;
    assert!(
        store
            .effect_started(&goapi, &lease, seen)
            .await
            .expect("re-submission")
    );
    store.effect_done_with(&goapi, None).await.expect("done");
    assert!(
        store
            .effect_started(&nca, &lease, None)
            .await
            .expect("start")
    );
    assert!(
        store
            .effect_started(&write, &lease, None)
            .await
            .expect("start")
    );
    let mine = PaidCalls {
        goapi_tasks: 2,
        nca_renders: 1,
    };
    assert_eq!(store.paid_calls(Some(&v)).await.expect("paid calls"), mine);
    assert_eq!(
        store.paid_calls(Some(&video())).await.expect("paid calls"),
        PaidCalls::default()
    );
    let total = store.paid_calls(None).await.expect("paid calls");
    assert_eq!(
        (
            total.goapi_tasks - total_before.goapi_tasks,
            total.nca_renders - total_before.nca_renders
        ),
        (2, 1)
    );
    let days = sum(store.paid_calls_by_day(since).await.expect("by day"));
    assert_eq!(
        (
            days.goapi_tasks - days_before.goapi_tasks,
            days.nca_renders - days_before.nca_renders
        ),
        (2, 1)
    );
    let today = store
        .paid_calls_by_day(Utc::now() - chrono::Duration::minutes(1))
        .await
        .expect("by day");
    assert!(
        today
            .last()
            .is_some_and(|d| d.day == Utc::now().date_naive()
                && d.calls.goapi_tasks >= 2
                && d.calls.nca_renders >= 1),
        "{today:?}"
    );
}

/// A result arriving after the effect finished (another replica ran it, or the callback
/// made it unneeded) changes nothing and stores no follow-up.
pub async fn late_results_do_not_reopen_a_finished_effect(store: &Shared) {
    let v = video();
    let ids = with_effects(store, &v, 1).await;
    store.effect_done_with(&ids[0], None).await.expect("done");
    let late = NewEntry {
        source: Source::Engine,
        dedupe_key: Some(format!("effect:failed:{}", ids[0])),
        ..entry(&v, None)
    };
    store
        .effect_failed_with(&ids[0], "timed out", Some(late))
        .await
        .expect("late failure");
    store
        .effect_retry_later(&ids[0], Utc::now(), "503")
        .await
        .expect("late retry");
    store
        .effect_ambiguous(&ids[0], "reset")
        .await
        .expect("late ambiguous");
    let e = stored(store, &ids[0]).await;
    assert_eq!((e.state, e.attempts), (EffectState::Done, 1), "{e:?}");
    assert_eq!(e.last_error, None);
    let engine_events = engine_events(store, &v).await;
    assert_eq!(engine_events, 0, "no follow-up for a late result");
}

/// A commit names the lease it was decided under: another lane's or video's is refused.
pub async fn a_commit_needs_the_videos_worker_lease(store: &Shared) {
    let (v, w) = (video(), video());
    let e = entry(&v, None);
    let id = new_id(store, e.clone()).await;
    for wrong in [
        eventually_claim(store, Lane::Executor, &v).await,
        eventually_claim(store, Lane::Worker, &w).await,
    ] {
        let err = store
            .commit(commit_of(&e, None, Vec::new()), &wrong)
            .await
            .expect_err("a commit under the wrong lease must fail");
        assert!(
            matches!(err, reelstate::store::StoreError::LeaseLost(_)),
            "{err:?}"
        );
    }
    assert!(
        store.is_pending(id).await.expect("pending"),
        "nothing written"
    );
}

pub async fn the_reconcilers_worklist_follows_active_jobs(store: &Shared) {
    let v = video();
    let running = job(JobStatus::Processing, Some("task-9"));
    let e = entry(&v, None);
    new_id(store, e.clone()).await;
    let lease = eventually_claim(store, Lane::Worker, &v).await;
    let snap = snapshot(&v, VideoStatus::GeneratingMusic, vec![running.clone()]);
    store
        .commit(commit_of(&e, Some(snap), Vec::new()), &lease)
        .await
        .expect("commit");
    let due = store
        .active_jobs_due(Utc::now() + chrono::Duration::seconds(1))
        .await
        .expect("due");
    let mine = due.iter().find(|j| j.job == running.id).expect("listed");
    assert_eq!(mine.external_id.as_deref(), Some("task-9"));
    assert_eq!(mine.checks, 0);
    let later = Utc::now() + chrono::Duration::seconds(600);
    store
        .reschedule_check(running.id, 2, later)
        .await
        .expect("reschedule");
    let due = store.active_jobs_due(Utc::now()).await.expect("due");
    assert!(
        due.iter().all(|j| j.job != running.id),
        "not due before its time"
    );
    let due = store.active_jobs_due(later).await.expect("due");
    assert_eq!(
        due.iter()
            .find(|j| j.job == running.id)
            .expect("due")
            .checks,
        2
    );
    // Finished: off the list.
    let done = Job {
        status: JobStatus::Completed,
        ..running.clone()
    };
    let e2 = entry(&v, None);
    new_id(store, e2.clone()).await;
    let snap = snapshot(&v, VideoStatus::AddingMusic, vec![done]);
    store
        .commit(commit_of(&e2, Some(snap), Vec::new()), &lease)
        .await
        .expect("commit");
    let due = store.active_jobs_due(later).await.expect("due");
    assert!(due.iter().all(|j| j.job != running.id));
}

pub async fn events_page_and_filter(store: &Shared) {
    let v = video();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(new_id(store, entry(&v, None)).await);
    }
    let q = |before_seq| EventQuery {
        filter: None,
        video: Some(v.clone()),
        source: None,
        before_seq,
        limit: 2,
    };
    let page1 = store.events(q(None)).await.expect("events");
    assert_eq!(
        page1.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        vec![ids[4], ids[3]],
        "newest first"
    );
    let page2 = store.events(q(Some(page1[1].seq))).await.expect("events");
    assert_eq!(
        page2.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    let applied = store
        .events(EventQuery {
            filter: Some(EventFilter::Outcome(EntryOutcome::Applied)),
            video: Some(v.clone()),
            source: None,
            before_seq: None,
            limit: 10,
        })
        .await
        .expect("events");
    assert!(applied.is_empty(), "none processed yet");
    let mut from_nca = entry(&v, None);
    from_nca.source = Source::Nca;
    let nca_id = new_id(store, from_nca).await;
    let by_source = |source| EventQuery {
        video: Some(v.clone()),
        source: Some(source),
        limit: 10,
        ..EventQuery::default()
    };
    let nca = store.events(by_source(Source::Nca)).await.expect("events");
    assert_eq!(
        nca.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        vec![nca_id]
    );
    let goapi = store
        .events(by_source(Source::Goapi))
        .await
        .expect("events");
    assert_eq!(goapi.len(), 5, "the GoAPI entries only");
}

/// The videos list on a store that may hold other videos: every query is bounded to the
/// last changes this check makes (a few milliseconds after its start, explicit times so
/// that the order is certain), and every external id is fresh.
pub async fn the_videos_list_filters_searches_and_pages(store: &Shared) {
    // Stores keep microseconds.
    let t0 = chrono::DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("now");
    let at = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
    let task = format!("task-{}", Uuid::new_v4());
    let nca_job = format!("nca-{}", Uuid::new_v4());
    let (done, failed, mixing, generating) = (video(), video(), video(), video());
    let mut generation = job(JobStatus::Failed, None);
    let mixing_job = Job {
        kind: JobType::MusicAddition,
        ..job(JobStatus::Processing, Some(&nca_job))
    };
    let waiting = job(JobStatus::Processing, None);
    let commit_at = |v: &RecordId, status: VideoStatus, jobs: Vec<Job>, ms: i64| {
        let (store, v) = (store.clone(), v.clone());
        async move {
            let e = entry(&v, None);
            new_id(&store, e.clone()).await;
            let lease = eventually_claim(&store, Lane::Worker, &v).await;
            let mut c = commit_of(&e, Some(snapshot(&v, status, jobs)), Vec::new());
            c.at = at(ms);
            store.commit(c, &lease).await.expect("commit");
        }
    };
    commit_at(&done, VideoStatus::Completed, Vec::new(), 1).await;
    // The task id arrives with a later commit: the index follows it.
    commit_at(
        &failed,
        VideoStatus::GeneratingMusic,
        vec![generation.clone()],
        2,
    )
    .await;
    generation.external_id = Some(task.clone());
    commit_at(
        &failed,
        VideoStatus::MusicGenerationFailed,
        vec![generation],
        3,
    )
    .await;
    commit_at(&mixing, VideoStatus::AddingMusic, vec![mixing_job], 4).await;
    commit_at(&generating, VideoStatus::GeneratingMusic, vec![waiting], 5).await;

    let list = |q: VideoQuery| {
        let store = store.clone();
        async move {
            let rows = store.videos(q).await.expect("videos");
            rows.into_iter().map(|r| r.video_id).collect::<Vec<_>>()
        }
    };
    let mine = || VideoQuery {
        changed_since: Some(t0),
        limit: 10,
        ..VideoQuery::default()
    };
    assert_eq!(
        list(mine()).await,
        vec![
            generating.clone(),
            mixing.clone(),
            failed.clone(),
            done.clone()
        ],
        "most recently changed first"
    );
    let search = |s: &str| VideoQuery {
        search: Some(s.to_owned()),
        limit: 10,
        ..VideoQuery::default()
    };
    assert_eq!(
        list(search(&task)).await,
        vec![failed.clone()],
        "by GoAPI task id"
    );
    assert_eq!(
        list(search(&nca_job)).await,
        vec![mixing.clone()],
        "by NCA job id"
    );
    assert_eq!(
        list(search(done.as_str())).await,
        vec![done.clone()],
        "by video id"
    );
    assert!(list(search("task-nobody-made")).await.is_empty());
    let row = store
        .videos(search(&nca_job))
        .await
        .expect("videos")
        .remove(0);
    assert_eq!(row.status, "adding_music");
    assert_eq!(row.external_ids, vec![nca_job.clone()]);
    assert_eq!(row.waiting_since, Some(at(4)));
    assert_eq!(row.updated_at, at(4));

    let status = |s: &str| VideoQuery {
        status: Some(s.to_owned()),
        ..mine()
    };
    assert_eq!(
        list(status("music_generation_failed")).await,
        vec![failed.clone()]
    );
    assert_eq!(
        list(status("generating_music")).await,
        vec![generating.clone()],
        "a video is listed by its current state only"
    );
    let jobs = |kind: Option<&str>, status: Option<&str>| VideoQuery {
        job_type: kind.map(str::to_owned),
        job_status: status.map(str::to_owned),
        ..mine()
    };
    assert_eq!(
        list(jobs(Some("music_addition"), Some("processing"))).await,
        vec![mixing.clone()]
    );
    assert_eq!(
        list(jobs(Some("music_generation"), None)).await,
        vec![generating.clone(), failed.clone()]
    );
    assert_eq!(list(jobs(None, Some("failed"))).await, vec![failed.clone()]);
    assert!(
        list(jobs(Some("music_addition"), Some("failed")))
            .await
            .is_empty(),
        "type and status of one job"
    );
    // Stuck: GoAPI's jobs waiting since before its cutoff; NCA's cutoff is earlier.
    let cut = StuckCutoffs {
        goapi: at(60_000),
        nca: at(4),
    };
    let stuck = VideoQuery {
        stuck: Some(cut),
        ..mine()
    };
    assert_eq!(list(stuck.clone()).await, vec![generating.clone()]);
    let both = VideoQuery {
        stuck: Some(StuckCutoffs {
            nca: at(60_000),
            ..cut
        }),
        ..mine()
    };
    assert_eq!(list(both).await, vec![generating.clone(), mixing.clone()]);
    let attention = VideoQuery {
        failed: true,
        ..stuck
    };
    assert_eq!(
        list(attention).await,
        vec![generating.clone(), failed.clone()],
        "failed or stuck"
    );
    let older = VideoQuery {
        changed_before: Some(at(3)),
        ..mine()
    };
    assert_eq!(
        list(older).await,
        vec![done.clone()],
        "changed before, strictly"
    );

    // Pages of two, then nothing after the last.
    let page = |after| VideoQuery {
        after,
        limit: 2,
        ..mine()
    };
    let first = store.videos(page(None)).await.expect("videos");
    let ids: Vec<_> = first.iter().map(|r| r.video_id.clone()).collect();
    assert_eq!(ids, vec![generating.clone(), mixing.clone()]);
    let second = store
        .videos(page(Some(first[1].cursor())))
        .await
        .expect("videos");
    let ids: Vec<_> = second.iter().map(|r| r.video_id.clone()).collect();
    assert_eq!(ids, vec![failed.clone(), done.clone()]);
    assert!(
        list(page(Some(second[1].cursor()))).await.is_empty(),
        "nothing after the last"
    );
}

/// The operator page's counts are deltas here: the suite may run on a store holding data.
pub async fn overview_counts_states_and_lists_what_needs_attention(store: &Shared) {
    let count = |o: &reelstate::store::Overview, status: &str| {
        o.videos
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n)
    };
    let jobs = |o: &reelstate::store::Overview, status: &str| {
        o.jobs
            .iter()
            .find(|(k, s, _)| k == "music_generation" && s == status)
            .map_or(0, |(_, _, n)| *n)
    };
    let before = store.overview(500).await.expect("overview");

    // A failed video with a failed job and a second, waiting job.
    let failed = video();
    let e = entry(&failed, None);
    new_id(store, e.clone()).await;
    let mut snap = snapshot(
        &failed,
        VideoStatus::MusicGenerationFailed,
        vec![job(JobStatus::Failed, Some("t-1"))],
    );
    snap.video.error_details = Some("GoAPI said <quota>".into());
    let lease = eventually_claim(store, Lane::Worker, &failed).await;
    store
        .commit(commit_of(&e, Some(snap), Vec::new()), &lease)
        .await
        .expect("commit");
    drop(lease);
    let generating = video();
    let e = entry(&generating, None);
    new_id(store, e.clone()).await;
    let waiting = job(JobStatus::Processing, Some("t-2"));
    let snap = snapshot(
        &generating,
        VideoStatus::GeneratingMusic,
        vec![waiting.clone()],
    );
    let lease = eventually_claim(store, Lane::Worker, &generating).await;
    store
        .commit(commit_of(&e, Some(snap), Vec::new()), &lease)
        .await
        .expect("commit");
    drop(lease);
    // An effect retrying after a failed attempt, and a pending entry.
    let retrying = video();
    let ids = with_effects(store, &retrying, 1).await;
    store
        .effect_retry_later(&ids[0], Utc::now(), "503 from Airtable")
        .await
        .expect("retry later");
    let pending = video();
    new_id(store, entry(&pending, None)).await;

    let after = store.overview(500).await.expect("overview");
    assert_eq!(
        count(&after, "music_generation_failed"),
        count(&before, "music_generation_failed") + 1
    );
    assert_eq!(
        count(&after, "generating_music"),
        count(&before, "generating_music") + 1
    );
    assert_eq!(jobs(&after, "failed"), jobs(&before, "failed") + 1);
    assert_eq!(jobs(&after, "processing"), jobs(&before, "processing") + 1);
    assert!(after.inbox_pending > before.inbox_pending);
    let first = store.pending_entries(1).await.expect("pending");
    assert_eq!(
        after.oldest_pending,
        first.first().map(|e| e.received_at),
        "the age of the first entry in arrival order"
    );
    let listed = after
        .failed
        .iter()
        .find(|f| f.video_id == failed)
        .expect("the failed video is listed");
    assert_eq!(listed.status, "music_generation_failed");
    assert_eq!(listed.error_details.as_deref(), Some("GoAPI said <quota>"));
    assert!(
        after.failed.iter().all(|f| f.video_id != generating),
        "only failed videos"
    );
    assert!(after.waiting.iter().any(|j| j.job == waiting.id));
    let troubled = after
        .troubled
        .iter()
        .find(|t| t.effect_id == ids[0])
        .expect("the retrying effect is listed");
    assert_eq!(troubled.last_error.as_deref(), Some("503 from Airtable"));
    assert!(
        after.troubled.iter().all(|t| t.state != EffectState::Done),
        "never a done effect"
    );
}

/// The store's half of creating a record without a key (ARCHITECTURE.md, "Creating a
/// record without a key"): the first intent is fresh and later ones are not (an earlier
/// attempt may have created the record); a record is claimed by one owner only, and an
/// owner keeps the record it claimed.
pub async fn record_creations_are_noted_then_claimed_once(store: &Shared) {
    let a = Owner::Job(JobId(Uuid::new_v4()));
    let b = Owner::Event(Uuid::new_v4());
    let first = store.record_intent(&a).await.expect("intent");
    assert!(first.fresh && first.record.is_none(), "{first:?}");
    let again = store.record_intent(&a).await.expect("intent again");
    assert!(
        !again.fresh,
        "a second intent means an attempt may have created it"
    );
    assert_eq!(again.since, first.since, "the first intent's time is kept");
    let hex = Uuid::new_v4().simple().to_string();
    let record = RecordId::parse(&format!("rec{}", &hex[..14])).expect("record id");
    assert!(store.claim_record(&a, &record).await.expect("claim"));
    assert!(
        store.claim_record(&a, &record).await.expect("claim again"),
        "claiming one's own record again is fine"
    );
    assert!(
        !store
            .claim_record(&b, &record)
            .await
            .expect("claim by another"),
        "a record is claimed by one owner only"
    );
    let other = RecordId::parse(&format!("rec{}", &hex[14..28])).expect("record id");
    assert!(
        !store.claim_record(&a, &other).await.expect("second record"),
        "an owner keeps the record it claimed"
    );
    assert_eq!(
        store.record_intent(&a).await.expect("intent").record,
        Some(record)
    );
    // An owner with no intent noted may claim directly (a record found another way).
    assert!(store.claim_record(&b, &other).await.expect("claim b"));
    assert_eq!(
        store.record_intent(&b).await.expect("intent b").record,
        Some(other)
    );
}

/// Runs one SQL statement on the store's own database: the test's way to leave a row the
/// store cannot read, as a newer (or older) version of reelstate would.
pub type Corrupt = Box<dyn Fn(String) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

pub async fn unreadable_rows_are_quarantined_and_stall_no_other_video(
    store: &Shared,
    corrupt: &Corrupt,
) {
    let (bad, good) = (video(), video());
    let poisoned = new_id(store, entry(&bad, None)).await;
    let fine = new_id(store, entry(&good, None)).await;
    corrupt(format!(
        "UPDATE inbox SET payload = '{{\"payload\": \"from_a_newer_version\"}}' WHERE event_id = '{poisoned}'"
    ))
    .await;
    let pending = store
        .pending_entries(4096)
        .await
        .expect("one unreadable entry does not fail the scan");
    assert!(
        pending.iter().any(|e| e.event_id == fine),
        "the other video goes on"
    );
    assert!(!pending.iter().any(|e| e.event_id == poisoned));
    assert!(
        !store.is_pending(poisoned).await.expect("is_pending"),
        "set aside"
    );
    // And it stays aside: the next scan neither fails nor lists it.
    let again = store.pending_entries(4096).await.expect("scan");
    assert!(!again.iter().any(|e| e.event_id == poisoned));
    store
        .events(EventQuery {
            limit: 500,
            ..EventQuery::default()
        })
        .await
        .expect("the event log still lists");

    let bad_effects = with_effects(store, &bad, 2).await;
    let good_effects = with_effects(store, &good, 1).await;
    corrupt(format!(
        "UPDATE outbox SET effect = '{{\"from_a_newer_version\": true}}' WHERE effect_id = '{}'",
        bad_effects[0]
    ))
    .await;
    let later = Utc::now() + chrono::Duration::minutes(1);
    let due = store
        .due_effects(later, 4096)
        .await
        .expect("one unreadable effect does not fail the scan");
    assert!(due.iter().any(|e| e.effect_id == good_effects[0]));
    assert!(!due.iter().any(|e| e.effect_id == bad_effects[0]));
    let due = store.due_effects(later, 4096).await.expect("scan");
    assert!(
        due.iter().any(|e| e.effect_id == bad_effects[1]),
        "the video's next effect is not held behind the unreadable one"
    );
    store.effects_of(&bad).await.expect("the video still shows");

    let listed = store.quarantined(500).await.expect("quarantined");
    let entry_row = listed
        .iter()
        .find(|q| q.id == poisoned.to_string())
        .expect("the entry is listed");
    assert_eq!(
        (entry_row.table.as_str(), entry_row.video_id.as_str()),
        ("inbox", bad.as_str())
    );
    assert!(entry_row.reason.contains("payload"), "{entry_row:?}");
    let effect_row = listed
        .iter()
        .find(|q| q.id == bad_effects[0])
        .expect("the effect is listed");
    assert_eq!(effect_row.table, "outbox");
    assert!(effect_row.reason.contains("effect"), "{effect_row:?}");
    assert!(store.depths().await.expect("depths").quarantined >= 2);
}

pub async fn pruning_deletes_only_what_is_old_and_finished(store: &Shared) {
    let v = video();
    // A processed entry whose effect is done, one whose effect failed (replayable), and
    // an entry still waiting.
    let finished = with_effects(store, &v, 1).await;
    store
        .effect_done_with(&finished[0], None)
        .await
        .expect("done");
    let failed = with_effects(store, &v, 1).await;
    store
        .effect_failed_with(&failed[0], "boom", None)
        .await
        .expect("failed");
    let e = entry(&v, None);
    let with_history = new_id(store, e.clone()).await;
    let lease = eventually_claim(store, Lane::Worker, &v).await;
    let snap = snapshot(&v, VideoStatus::GeneratingMusic, vec![]);
    store
        .commit(commit_of(&e, Some(snap.clone()), Vec::new()), &lease)
        .await
        .expect("commit");
    drop(lease);
    let waiting = new_id(store, entry(&v, None)).await;
    let events_of = |store: Shared, v: RecordId| async move {
        store
            .events(EventQuery {
                video: Some(v),
                limit: 500,
                ..EventQuery::default()
            })
            .await
            .expect("events")
            .iter()
            .map(|e| e.event_id)
            .collect::<Vec<_>>()
    };

    // Nothing is old yet: an hour ago keeps everything.
    store
        .prune(Utc::now() - chrono::Duration::hours(1), 500)
        .await
        .expect("prune");
    assert_eq!(events_of(store.clone(), v.clone()).await.len(), 4);
    assert_eq!(store.history(&v).await.expect("history").len(), 1);
    assert_eq!(store.effects_of(&v).await.expect("effects").len(), 2);

    // Everything is old: batches of one, until none is left.
    let mut passes = 0;
    loop {
        let p = store
            .prune(Utc::now() + chrono::Duration::minutes(1), 1)
            .await
            .expect("prune");
        assert!(p.inbox <= 1 && p.history <= 1 && p.outbox <= 1, "{p:?}");
        if p.total() == 0 {
            break;
        }
        passes += 1;
        assert!(passes < 100_000, "pruning never ends");
    }
    assert!(passes >= 1);
    let left = events_of(store.clone(), v.clone()).await;
    assert!(left.contains(&waiting), "pending work is kept");
    assert!(
        !left.contains(&with_history),
        "a processed entry with nothing open is deleted, raw body and all"
    );
    assert!(store.entry(with_history).await.expect("entry").is_none());
    assert_eq!(left.len(), 2, "the failed effect's entry stays: {left:?}");
    assert!(store.history(&v).await.expect("history").is_empty());
    let effects: Vec<String> = store
        .effects_of(&v)
        .await
        .expect("effects")
        .into_iter()
        .map(|e| e.effect_id)
        .collect();
    assert_eq!(
        effects, failed,
        "done effects go, failed (replayable) ones stay"
    );
    assert_eq!(store.snapshot(&v).await.expect("snapshot"), Some(snap));
}

/// Prunes with everything old until a batch deletes nothing; the sum of what it deleted.
async fn prune_everything(store: &Shared) -> reelstate::store::Pruned {
    let mut all = reelstate::store::Pruned::default();
    for _ in 0..100_000 {
        let p = store
            .prune(Utc::now() + chrono::Duration::minutes(1), 7)
            .await
            .expect("prune");
        if p.total() == 0 {
            return all;
        }
        all.creations += p.creations;
        all.parked_jobs += p.parked_jobs;
        all.paid_calls += p.paid_calls;
    }
    panic!("pruning never ends");
}

/// The tables that grow with traffic but serve something after their row's work is done:
/// a keyless create's claim goes only once nothing can write its owner's record again, a
/// parked job only when its video is final, and paid calls leave their counts behind.
pub async fn retention_keeps_what_a_row_still_serves(store: &Shared) {
    // Paid calls: counted per video and per day before and after they are folded.
    let v = video();
    let e = entry(&v, None);
    let id = new_id(store, e.clone()).await;
    let (goapi, nca) = (format!("{id}:goapi"), format!("{id}:nca"));
    let job_a = JobId(Uuid::new_v4());
    let url = |s: &str| MediaUrl::parse(s).expect("url");
    let effects = vec![
        (
            goapi.clone(),
            Effect::CreateGoapiTask {
                job: job_a,
                prompt: None,
            },
        ),
        (
            nca.clone(),
            Effect::SubmitNcaMix {
                job: job_a,
                submission_id: format!("add_music:{v}:1"),
                video: url("https://example.com/v.mp4"),
                music: url("https://example.com/m.mp3"),
                volume: 0.2,
                voice: true,
            },
        ),
    ];
    let worker = eventually_claim(store, Lane::Worker, &v).await;
    store
        .commit(commit_of(&e, None, effects), &worker)
        .await
        .expect("commit");
    drop(worker);
    let lease = eventually_claim(store, Lane::Executor, &v).await;
    for effect in [&goapi, &nca] {
        assert!(
            store
                .effect_started(effect, &lease, None)
                .await
                .expect("start")
        );
        store.effect_done_with(effect, None).await.expect("done");
    }
    drop(lease);
    let since = Utc::now() - chrono::Duration::days(2);
    let mine = store.paid_calls(Some(&v)).await.expect("paid calls");
    assert_eq!((mine.goapi_tasks, mine.nca_renders), (1, 1));
    let total = store.paid_calls(None).await.expect("paid calls");
    let days = store.paid_calls_by_day(since).await.expect("by day");

    // Keyless-create claims: a job's whose record is in its index goes, one whose record
    // is not there yet stays; an event's with an effect left to requeue stays, one whose
    // effects are done goes; an intent never claimed stays (it finds a lost create).
    let hex = || Uuid::new_v4().simple().to_string();
    let rec = || RecordId::parse(&format!("rec{}", &hex()[..14])).expect("record id");
    let v2 = video();
    let indexed = job(JobStatus::Processing, None);
    let unindexed = job(JobStatus::Processing, None);
    let e2 = entry(&v2, None);
    new_id(store, e2.clone()).await;
    let worker = eventually_claim(store, Lane::Worker, &v2).await;
    let snap = snapshot(
        &v2,
        VideoStatus::GeneratingMusic,
        vec![indexed.clone(), unindexed.clone()],
    );
    store
        .commit(commit_of(&e2, Some(snap), Vec::new()), &worker)
        .await
        .expect("commit");
    drop(worker);
    let indexed_record = rec();
    store
        .set_job_record(indexed.id, &indexed_record)
        .await
        .expect("index");
    let failed = with_effects(store, &v2, 1).await;
    store
        .effect_failed_with(&failed[0], "refused", None)
        .await
        .expect("failed");
    let failed_event = stored(store, &failed[0]).await.event_id;
    let finished = with_effects(store, &v2, 1).await;
    store
        .effect_done_with(&finished[0], None)
        .await
        .expect("done");
    let finished_event = stored(store, &finished[0]).await.event_id;
    let owners = [
        (Owner::Job(indexed.id), Some(indexed_record), false),
        (Owner::Job(unindexed.id), Some(rec()), true),
        (Owner::Event(failed_event), Some(rec()), true),
        (Owner::Event(finished_event), Some(rec()), false),
        (Owner::Event(Uuid::new_v4()), None, true),
    ];
    for (owner, record, _) in &owners {
        store.record_intent(owner).await.expect("intent");
        if let Some(record) = record {
            assert!(store.claim_record(owner, record).await.expect("claim"));
        }
    }

    // Parked jobs: a job left on a completed video goes; one parked on a video still in
    // flight stays (it shows as stuck until someone acts).
    let parked_on = |status: VideoStatus| async move {
        let v = video();
        let left = job(JobStatus::Processing, Some("task-left"));
        let e = entry(&v, None);
        new_id(store, e.clone()).await;
        let worker = eventually_claim(store, Lane::Worker, &v).await;
        store
            .commit(
                commit_of(
                    &e,
                    Some(snapshot(&v, status, vec![left.clone()])),
                    Vec::new(),
                ),
                &worker,
            )
            .await
            .expect("commit");
        store
            .reschedule_check(left.id, 3, reelstate::store::parked_from(Utc::now()))
            .await
            .expect("park");
        left.id
    };
    let on_completed = parked_on(VideoStatus::Completed).await;
    let on_active = parked_on(VideoStatus::GeneratingMusic).await;

    let pruned = prune_everything(store).await;
    assert!(pruned.paid_calls >= 2, "{pruned:?}");
    assert!(pruned.creations >= 2, "{pruned:?}");
    assert!(pruned.parked_jobs >= 1, "{pruned:?}");

    assert_eq!(store.paid_calls(Some(&v)).await.expect("paid calls"), mine);
    assert_eq!(store.paid_calls(None).await.expect("paid calls"), total);
    assert_eq!(store.paid_calls_by_day(since).await.expect("by day"), days);
    for (owner, record, kept) in &owners {
        let intent = store.record_intent(owner).await.expect("intent");
        if *kept {
            assert!(!intent.fresh, "{owner}'s claim is kept");
            assert_eq!(&intent.record, record, "{owner}");
        } else {
            assert!(intent.fresh, "{owner}'s claim is pruned");
        }
    }
    let listed: Vec<JobId> = store
        .active_jobs_due(Utc::now() + chrono::Duration::days(3651))
        .await
        .expect("due")
        .into_iter()
        .map(|j| j.job)
        .collect();
    assert!(
        !listed.contains(&on_completed),
        "a final video's parked job goes"
    );
    assert!(
        listed.contains(&on_active),
        "an active video's parked job stays"
    );
}
