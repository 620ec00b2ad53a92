//! The engine store's contract on both implementations: the embedded SQLite store (in
//! memory and on a file) and the shared PostgreSQL store, which must also hold it when
//! several replicas use one database. PostgreSQL tests run when
//! `REELSTATE_TEST_DATABASE_URL` is set (`.ci/run` sets it).

mod support;

use std::sync::Arc;
use std::time::Duration;

use reelstate::store::{Accepted, Lane, Lease, PgStore, SqliteStore, StoreError};
use support::store_contract::{self as contract, Shared};
use tokio_postgres::NoTls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_meets_the_store_contract() {
    let store: Shared = Arc::new(SqliteStore::open_in_memory().expect("open"));
    contract::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_meets_the_store_contract_and_keeps_it_across_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("reelstate.db");
    let store: Shared = Arc::new(SqliteStore::open(&path).expect("open"));
    contract::run_all(store.clone()).await;
    let v = contract::video();
    let id = contract::new_id(&store, contract::entry(&v, Some("kept"))).await;
    drop(store);
    let reopened: Shared = Arc::new(SqliteStore::open(&path).expect("reopen"));
    assert!(reopened.is_pending(id).await.expect("is_pending"));
    assert!(matches!(
        reopened.accept(contract::entry(&v, Some("kept"))).await.expect("accept"),
        Accepted::Duplicate { of, .. } if of == id
    ));
    // The suite again on the same file: it makes its own data.
    contract::run_all(reopened).await;
}

const LEASE: Duration = Duration::from_secs(1);

async fn pg(url: &str) -> Shared {
    Arc::new(PgStore::connect(url, LEASE).await.expect("connect"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_meets_the_store_contract() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    contract::run_all(pg(&db.url).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { PgStore::connect(&url, LEASE).await.map(|_| ()) })
        })
        .collect();
    for s in starts {
        s.await.expect("task").expect("every replica starts");
    }
    let (client, conn) = tokio_postgres::connect(&db.url, NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("migrations table")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i32> = reelstate::pg::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, expected, "each migration applied exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_migration_is_refused() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    pg(&db.url).await;
    let (client, conn) = tokio_postgres::connect(&db.url, NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .execute(
            "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1",
            &[],
        )
        .await
        .expect("edit");
    let err = PgStore::connect(&db.url, LEASE)
        .await
        .err()
        .expect("a database whose migration differs must be refused");
    assert!(err.to_string().contains("migration 1"), "{err}");
}

/// Makes a lease lapse as if its holder had died or stalled past it.
async fn expire(url: &str, lease: &Lease) {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
        .execute(
            "UPDATE leases SET expires_at = now() - interval '1 second'
             WHERE lane = $1 AND video_id = $2",
            &[&lease.lane().as_ref(), &lease.video().to_string()],
        )
        .await
        .expect("expire the lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_duplicates_and_leases() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    let (a, b) = (pg(&db.url).await, pg(&db.url).await);
    let v = contract::video();
    // A repeat reaching another replica is still a repeat, also when both race.
    let key = format!("k-{}", uuid::Uuid::new_v4());
    let (x, y) = tokio::join!(
        a.accept(contract::entry(&v, Some(&key))),
        b.accept(contract::entry(&v, Some(&key)))
    );
    let firsts = [x.expect("accept"), y.expect("accept")]
        .iter()
        .filter(|r| matches!(r, Accepted::New(_)))
        .count();
    assert_eq!(firsts, 1, "one first copy across replicas");
    // One holder across the cluster, renewed while it lives.
    let held = contract::one_lease(&a, Lane::Worker, &v).await;
    assert!(
        b.claim(Lane::Worker, vec![v.clone()])
            .await
            .expect("claim")
            .is_empty()
    );
    tokio::time::sleep(LEASE * 2).await;
    assert!(
        b.claim(Lane::Worker, vec![v.clone()])
            .await
            .expect("claim")
            .is_empty(),
        "a live replica's lease is renewed"
    );
    drop(held);
    drop(contract::eventually_claim(&b, Lane::Worker, &v).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_lease_writes_nothing() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    let (a, b) = (pg(&db.url).await, pg(&db.url).await);
    let v = contract::video();
    let stalled = contract::eventually_claim(&a, Lane::Worker, &v).await;
    let e = contract::entry(&v, None);
    let id = contract::new_id(&a, e.clone()).await;
    expire(&db.url, &stalled).await;
    let taken = contract::one_lease(&b, Lane::Worker, &v).await;
    let failed = contract::snapshot(
        &v,
        reelstate::domain::VideoStatus::MusicAdditionFailed,
        vec![],
    );
    let err = a
        .commit(contract::commit_of(&e, Some(failed), Vec::new()), &stalled)
        .await
        .expect_err("a commit under a lost lease must fail");
    assert!(matches!(err, StoreError::LeaseLost(_)), "{err:?}");
    assert!(
        a.is_pending(id).await.expect("pending"),
        "nothing was written"
    );
    assert_eq!(a.snapshot(&v).await.expect("snapshot"), None);
    let done = contract::snapshot(&v, reelstate::domain::VideoStatus::Completed, vec![]);
    b.commit(contract::commit_of(&e, Some(done), Vec::new()), &taken)
        .await
        .expect("the new holder commits");
    assert!(!a.is_pending(id).await.expect("pending"));
    drop(taken);

    // The executor's fencing: an external call starts only under the current lease.
    let ids = contract::with_effects(&b, &v, 1).await;
    let stale = contract::eventually_claim(&a, Lane::Executor, &v).await;
    expire(&db.url, &stale).await;
    let current = contract::one_lease(&b, Lane::Executor, &v).await;
    assert!(
        !a.effect_started(&ids[0], &stale, None)
            .await
            .expect("started")
    );
    assert!(
        b.effect_started(&ids[0], &current, None)
            .await
            .expect("started")
    );
}
