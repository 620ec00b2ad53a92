//! The records contract suite against the PostgreSQL backend, and what several replicas
//! writing into one database at once must also get right: one record per upserted key, and
//! two-way links that stay two-way. Each test gets a schema of its own in the database
//! named by `REELSTATE_TEST_DATABASE_URL`, and returns early when it is not set.
//!
//! Every test runs on several threads: dropping the test schema blocks the thread it runs
//! on, and the pool's connection tasks must still run meanwhile to close their sessions.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use reelstate::domain::RecordId;
use reelstate::records::embedded::postgres::PgRecords;
use reelstate::records::{Filter, Mapping, RecordBackend, RecordsError};
use serde_json::json;
use support::fields;
use support::pg::{TestDatabase, database};
use support::records_contract::{find_by, links, run_all, upsert_refusals};

/// A migrated schema, or `None` when PostgreSQL tests are off.
async fn migrated() -> Option<TestDatabase> {
    let db = database().await?;
    let pool = reelstate::pg::pool(&db.url, 2).expect("a pool for the test schema");
    reelstate::pg::migrate(&pool)
        .await
        .expect("the migrations apply to a fresh schema");
    Some(db)
}

/// One replica: a pool of its own, as a separate process would have.
fn replica(db: &TestDatabase, connections: usize) -> PgRecords {
    let pool = reelstate::pg::pool(&db.url, connections).expect("a pool for the test schema");
    PgRecords::new(pool, &Mapping::default()).expect("PgRecords over a migrated schema")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_2_creates_the_records_tables() {
    let Some(db) = database().await else { return };
    let pool = reelstate::pg::pool(&db.url, 1).expect("pool");
    let applied = reelstate::pg::migrate(&pool).await.expect("migrate");
    let every: Vec<i32> = reelstate::pg::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(applied, every, "a fresh schema gets every migration");
    assert!(applied.contains(&2), "the records migration is one of them");
    let again = reelstate::pg::migrate(&pool).await.expect("migrate again");
    assert!(again.is_empty(), "migrations apply once, got {again:?}");
}

// Several worker threads, so that the suite's concurrent upserts really overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_meets_the_records_contract() {
    let Some(db) = migrated().await else { return };
    let backend = Arc::new(replica(&db, 4));
    run_all(backend.clone()).await;
    // Twice on the same schema: the suite makes its own data, so it must not trip over a
    // previous run's records.
    run_all(backend).await;
}

/// The production base's mapping (no key fields, attachments, mapped spellings) on
/// PostgreSQL records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_meets_the_records_contract_of_a_base_without_keys() {
    let Some(db) = migrated().await else { return };
    let pool = reelstate::pg::pool(&db.url, 2).expect("a pool for the test schema");
    let mapping = Mapping::from_toml(support::records_contract::PRODUCTION_MAPPING)
        .expect("the production mapping parses");
    let backend = Arc::new(PgRecords::new(pool, &mapping).expect("PgRecords"));
    support::records_contract::run_production(backend).await;
}

/// Three replicas, each with its own pool, upsert one key thirty times at once (and
/// each create an event): one record, and every create lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_upserting_one_key_make_one_record() {
    let Some(db) = migrated().await else { return };
    let replicas: Vec<Arc<dyn RecordBackend>> =
        (0..3).map(|_| Arc::new(replica(&db, 4)) as _).collect();
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let b = Arc::clone(&replicas[i % replicas.len()]);
            tokio::spawn(async move {
                let job = b
                    .upsert(
                        "Jobs",
                        "Job ID",
                        fields(
                            json!({"Job ID": "shared-key", "Timestamps": format!("writer {i}")}),
                        ),
                    )
                    .await?;
                b.create(
                    "Webhook Events",
                    fields(json!({"Event ID": format!("event-{i}"), "Service": "nca"})),
                )
                .await?;
                Ok::<_, RecordsError>(job.id)
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for t in futures::future::join_all(tasks).await {
        let id = t
            .expect("writer task panicked")
            .unwrap_or_else(|e| panic!("a concurrent write failed: {e}"));
        ids.insert(id);
    }
    assert_eq!(
        ids.len(),
        1,
        "every upsert of one key must land on one record"
    );
    let jobs = find_by(&*replicas[0], "Jobs", "Job ID", "shared-key").await;
    assert_eq!(
        jobs.len(),
        1,
        "upserts of one key from three replicas must make one record"
    );
    for i in 0..30 {
        let found = find_by(
            &*replicas[1],
            "Webhook Events",
            "Event ID",
            &format!("event-{i}"),
        )
        .await;
        assert_eq!(found.len(), 1, "create {i} must have landed exactly once");
    }
}

/// Replicas create jobs linked to a few videos, move them between videos, rewrite videos'
/// Jobs lists and link webhook events, all at once. Afterwards every link must still be
/// two-way: a job is in a video's Jobs exactly when the video is the job's Related Video
/// (a lost update of an inverse field breaks this), and likewise for events and jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_and_link_updates_stay_two_way() {
    let Some(db) = migrated().await else { return };
    let replicas: Vec<Arc<dyn RecordBackend>> =
        (0..3).map(|_| Arc::new(replica(&db, 4)) as _).collect();
    let b0 = &replicas[0];
    let mut videos: Vec<RecordId> = Vec::new();
    for n in 0..3 {
        let v = b0
            .create("Videos", fields(json!({"Name": format!("video {n}")})))
            .await
            .expect("create video");
        videos.push(v.id);
    }
    let videos = Arc::new(videos);

    // Round one: jobs are created linked to a video, and upserted (some twice, from two
    // replicas at once), each with an event linked to it.
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let b = Arc::clone(&replicas[i % replicas.len()]);
            let videos = Arc::clone(&videos);
            tokio::spawn(async move {
                let video = videos[i % videos.len()].as_str();
                let job = if i % 2 == 0 {
                    b.create(
                        "Jobs",
                        fields(json!({"Job ID": format!("job-{i}"), "Related Video": [video]})),
                    )
                    .await?
                } else {
                    b.upsert(
                        "Jobs",
                        "Job ID",
                        fields(
                            json!({"Job ID": format!("upserted-{}", i / 4), "Related Video": [video]}),
                        ),
                    )
                    .await?
                };
                b.upsert(
                    "Webhook Events",
                    "Event ID",
                    fields(
                        json!({"Event ID": format!("event-{i}"), "Related Job": [job.id.as_str()]}),
                    ),
                )
                .await?;
                Ok::<_, RecordsError>(job.id)
            })
        })
        .collect();
    let mut jobs: Vec<RecordId> = Vec::new();
    for t in futures::future::join_all(tasks).await {
        let id = t
            .expect("task panicked")
            .unwrap_or_else(|e| panic!("a concurrent create or upsert failed: {e}"));
        if !jobs.contains(&id) {
            jobs.push(id);
        }
    }
    let jobs = Arc::new(jobs);

    // Round two: both sides of the same links are written at once, in opposite orders
    // (a job moved to another video while that video's Jobs list is rewritten).
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let b = Arc::clone(&replicas[i % replicas.len()]);
            let (videos, jobs) = (Arc::clone(&videos), Arc::clone(&jobs));
            tokio::spawn(async move {
                let video = &videos[(i * 7) % videos.len()];
                if i % 3 == 0 {
                    let picked: Vec<&str> = jobs
                        .iter()
                        .skip(i % 4)
                        .step_by(3)
                        .map(RecordId::as_str)
                        .collect();
                    b.update("Videos", video, fields(json!({"Jobs": picked})))
                        .await?;
                } else {
                    let job = &jobs[(i * 5) % jobs.len()];
                    let to = if i % 5 == 0 {
                        json!(null)
                    } else {
                        json!([video.as_str()])
                    };
                    b.update("Jobs", job, fields(json!({"Related Video": to})))
                        .await?;
                }
                Ok::<_, RecordsError>(())
            })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        t.expect("task panicked")
            .unwrap_or_else(|e| panic!("a concurrent link update failed: {e}"));
    }

    let all_jobs = b0
        .find("Jobs", &Filter::RecordIds(jobs.to_vec()))
        .await
        .expect("read the jobs");
    assert_eq!(all_jobs.len(), jobs.len(), "every job is still there");
    let all_videos = b0
        .find("Videos", &Filter::RecordIds(videos.to_vec()))
        .await
        .expect("read the videos");
    let mut from_jobs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for job in &all_jobs {
        // Possibly several: writing a video's Jobs adds that video to a job's Related
        // Video without taking the job from its other video, as on Airtable.
        for v in links(job, "Related Video") {
            from_jobs
                .entry(v)
                .or_default()
                .insert(job.id.as_str().to_owned());
        }
    }
    for video in &all_videos {
        assert_eq!(
            links(video, "Jobs"),
            from_jobs.remove(video.id.as_str()).unwrap_or_default(),
            "video {}'s Jobs must be exactly the jobs whose Related Video it is",
            video.id
        );
    }
    assert!(
        from_jobs.is_empty(),
        "jobs point at videos that do not list them: {from_jobs:?}"
    );

    let mut events_of_jobs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in 0..24 {
        let events = find_by(&**b0, "Webhook Events", "Event ID", &format!("event-{i}")).await;
        assert_eq!(events.len(), 1, "event-{i} was upserted once");
        for job in links(&events[0], "Related Job") {
            events_of_jobs
                .entry(job)
                .or_default()
                .insert(events[0].id.as_str().to_owned());
        }
    }
    for job in &all_jobs {
        assert_eq!(
            links(job, "Webhook Events"),
            events_of_jobs.remove(job.id.as_str()).unwrap_or_default(),
            "job {}'s Webhook Events must be exactly the events linked to it",
            job.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_refuses_what_airtable_refuses() {
    let Some(db) = migrated().await else { return };
    let b = replica(&db, 2);
    upsert_refusals(&b).await;
}

/// Long texts (whole webhook payloads) are stored and found by value like short ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_texts_are_found_by_value() {
    let Some(db) = migrated().await else { return };
    let b = replica(&db, 2);
    let payload = format!("{{\"data\": \"{}\"}}", "x".repeat(200_000));
    let created = b
        .create(
            "Webhook Events",
            fields(json!({"Event ID": "long", "Raw Payload": payload})),
        )
        .await
        .expect("a long text is stored");
    let found = find_by(&b, "Webhook Events", "Raw Payload", &payload).await;
    assert_eq!(found, vec![created]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmigrated_schema_is_a_permanent_error() {
    let Some(db) = database().await else { return };
    let b = replica(&db, 1);
    let result = b.create("Videos", fields(json!({"Name": "x"}))).await;
    match result {
        Err(RecordsError::Permanent { message, .. }) => assert!(
            message.contains("migrat"),
            "the error should point at the migrations: {message}"
        ),
        other => panic!("a missing table must be a permanent error, got {other:?}"),
    }
}

/// No database needed: nothing listens on port 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_transient() {
    let pool = reelstate::pg::pool("postgres://postgres@127.0.0.1:1/none", 1).expect("pool");
    let b = PgRecords::new(pool, &Mapping::default()).expect("PgRecords");
    let id: RecordId = "recAAAAAAAAAAAAAA".parse().expect("record id");
    for result in [
        b.get("Videos", &id).await.map(|_| ()),
        b.create("Videos", fields(json!({"Name": "x"})))
            .await
            .map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(RecordsError::Transient(_))),
            "a connection failure must be transient, got {result:?}"
        );
    }
}

/// PostgreSQL text cannot hold NUL (SQLite's can): such a write is refused, and for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_text_is_refused_permanently() {
    let Some(db) = migrated().await else { return };
    let b = replica(&db, 1);
    let result = b
        .create("Videos", fields(json!({"Name": "nul-\u{0}-inside"})))
        .await;
    assert!(
        matches!(result, Err(RecordsError::Permanent { .. })),
        "a NUL in a text must be a permanent error, got {result:?}"
    );
}
