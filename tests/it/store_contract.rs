//! The engine store's contract on both implementations: the embedded SQLite store (in
//! memory and on a file) and the shared PostgreSQL store, which must also hold it when
//! several replicas use one database. PostgreSQL tests run when
//! `REELSTATE_TEST_DATABASE_URL` is set (`.ci/run` sets it).

use crate::support;

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
async fn sqlite_quarantines_unreadable_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("reelstate.db");
    let store: Shared = Arc::new(SqliteStore::open(&path).expect("open"));
    let corrupt: contract::Corrupt = Box::new(move |sql: String| {
        let path = path.clone();
        Box::pin(async move {
            let c = rusqlite::Connection::open(&path).expect("open the file");
            c.busy_timeout(Duration::from_secs(10))
                .expect("busy timeout");
            assert_eq!(c.execute(&sql, []).expect("corrupt a row"), 1, "{sql}");
        })
    });
    contract::unreadable_rows_are_quarantined_and_stall_no_other_video(&store, &corrupt).await;
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

/// A PostgreSQL connection of the test's own, to play what the store cannot (an expired
/// lease, a corrupted row).
async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_quarantines_unreadable_rows() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    let store = pg(&db.url).await;
    let url = db.url.clone();
    let corrupt: contract::Corrupt = Box::new(move |statement: String| {
        let url = url.clone();
        Box::pin(async move {
            let n = sql(&url)
                .await
                .execute(&statement, &[])
                .await
                .expect("corrupt a row");
            assert_eq!(n, 1, "{statement}");
        })
    });
    contract::unreadable_rows_are_quarantined_and_stall_no_other_video(&store, &corrupt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_replica_hands_its_videos_over_before_its_leases_expire() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    // Ten minutes: without the hand-over the other replica could not take the video
    // within this test at all.
    let long = Duration::from_secs(600);
    let stopping: Shared = Arc::new(PgStore::connect(&db.url, long).await.expect("connect"));
    let other: Shared = Arc::new(PgStore::connect(&db.url, long).await.expect("connect"));
    let v = contract::video();
    // Held at exit (a task that did not finish in time keeps its lease objects).
    let _worker = contract::one_lease(&stopping, Lane::Worker, &v).await;
    let _executor = contract::one_lease(&stopping, Lane::Executor, &v).await;
    assert!(
        other
            .claim(Lane::Worker, vec![v.clone()])
            .await
            .expect("claim")
            .is_empty()
    );
    let client = sql(&db.url).await;
    let valid_until: chrono::DateTime<chrono::Utc> = client
        .query_one(
            "SELECT max(expires_at) FROM leases WHERE video_id = $1",
            &[&v.to_string()],
        )
        .await
        .expect("lease rows")
        .get(0);

    stopping.release_leases().await;

    // Taken at once (one claim each, no retry), while the leases would still be valid.
    let taken = contract::one_lease(&other, Lane::Worker, &v).await;
    let taken_exec = contract::one_lease(&other, Lane::Executor, &v).await;
    let now: chrono::DateTime<chrono::Utc> = client
        .query_one("SELECT now()", &[])
        .await
        .expect("now")
        .get(0);
    assert!(
        now + chrono::Duration::seconds(500) < valid_until,
        "handed over {}s before the lease would have expired",
        (valid_until - now).num_seconds()
    );
    assert!(other.holds(&taken).await.expect("holds"));
    assert!(other.holds(&taken_exec).await.expect("holds"));
    assert!(
        !stopping.holds(&_worker).await.expect("holds"),
        "given back means gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_current_holder_holds_a_lease() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    let (a, b) = (pg(&db.url).await, pg(&db.url).await);
    let v = contract::video();
    let stale = contract::one_lease(&a, Lane::Executor, &v).await;
    assert!(a.holds(&stale).await.expect("holds"));
    expire(&db.url, &stale).await;
    assert!(
        !a.holds(&stale).await.expect("holds"),
        "expired is not held"
    );
    let current = contract::one_lease(&b, Lane::Executor, &v).await;
    assert!(
        !a.holds(&stale).await.expect("holds"),
        "taken over is not held"
    );
    assert!(b.holds(&current).await.expect("holds"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commits_are_synchronous_whatever_the_url_says() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    // A URL (or a role, or a database) asking for asynchronous commits.
    let url = format!("{}%20-csynchronous_commit%3Doff", db.url);
    let store = PgStore::connect(&url, LEASE).await.expect("connect");
    let c = store.pool().get().await.expect("connection");
    let level: String = c
        .query_one("SHOW synchronous_commit", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(level, "on");
    let path: String = c
        .query_one("SHOW search_path", &[])
        .await
        .expect("show")
        .get(0);
    assert!(
        path.contains(&db.schema),
        "the URL's own options still apply: {path}"
    );
}
