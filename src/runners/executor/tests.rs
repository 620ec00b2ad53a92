use chrono::Utc;
use clap::Parser;
use uuid::Uuid;

use super::attempt::run_one;
use super::calls::{Prepared, external_job, prepare_external};
use super::fold::folded_effect;
use super::*;
use crate::domain::{JobStatus, JobType, MediaUrl, RecordId, VideoStatus};
use crate::machine::{
    Effect, Event, Job, JobId, JobPatch, NcaResult, NcaUpdate, Outcome, Snapshot, Video,
    submission_id,
};
use crate::records::Records;
use crate::records::embedded::sqlite::SqliteRecords;
use crate::store::{Commit, EffectState, EntryOutcome, NewEntry, Payload, Source, SqliteStore};
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

/// A lease on the video in `lane`, which nobody else holds in these tests.
async fn claim(store: &dyn crate::store::Store, lane: Lane, video: &RecordId) -> Lease {
    store
        .claim(lane, vec![video.clone()])
        .await
        .unwrap()
        .pop()
        .unwrap()
}

/// The worker's commit of `event_id` with this outcome, changing nothing else.
fn commit(event_id: Uuid, video: &RecordId, outcome: EntryOutcome, job: Option<JobId>) -> Commit {
    Commit {
        event_id,
        video_id: video.clone(),
        snapshot: None,
        history: None,
        effects: Vec::new(),
        outcome,
        note: None,
        job,
        job_records: Vec::new(),
        at: Utc::now(),
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
        resubmissions: 0,
    });
    let worker = claim(&**store, Lane::Worker, &video).await;
    let lease = claim(&**store, Lane::Executor, &video).await;
    // The decision that asked for the mix, committed with its effect.
    let cause = entry(&video, Source::Goapi, Event::RetryRequested { from: None });
    let cause_id = cause.event_id;
    store.accept(cause).await.unwrap();
    store
        .commit(
            Commit {
                snapshot: Some(snapshot),
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
                ..commit(cause_id, &video, EntryOutcome::Applied, Some(job))
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
            commit(
                resubmission.event_id,
                &video,
                EntryOutcome::Recorded,
                Some(job),
            ),
            &worker,
        )
        .await
        .unwrap();
    store
        .commit(
            commit(callback_id, &video, EntryOutcome::Unmatched, None),
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
        // CI runs every PostgreSQL test (.ci/run sets the URL).
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and REELSTATE_TEST_DATABASE_URL is not set"
        );
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
    let worker = claim(&**store, Lane::Worker, &video).await;
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
                effects: vec![(effect_id.clone(), write)],
                ..commit(cause_id, &video, EntryOutcome::Applied, None)
            },
            &worker,
        )
        .await
        .unwrap();
    let stale = claim(&**store, Lane::Executor, &video).await;
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
