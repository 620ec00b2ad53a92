//! The Airtable request budget: the in-process one, and the one replicas share through
//! PostgreSQL (`PgBudget`). The PostgreSQL tests run only when `REELSTATE_TEST_DATABASE_URL`
//! is set; each gets a schema of its own. A "replica" here is an `AirtableBackend` with its
//! own connection pool and its own `PgBudget`, all on one schema and one Airtable double.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures::future::join_all;
use reelstate::domain::RecordId;
use reelstate::records::RecordBackend;
use reelstate::records::airtable::AirtableBackend;
use reelstate::records::airtable::budget::{LocalBudget, PgBudget, Priority, RequestBudget};
use serde_json::json;
use support::airtable_double::{AirtableDouble, DoubleConfig, config_for};
use support::fields;
use support::pg::TestDatabase;

async fn migrated_pool(db: &TestDatabase) -> Pool {
    let pool = reelstate::pg::pool(&db.url, 4).unwrap();
    reelstate::pg::migrate(&pool).await.unwrap();
    pool
}

/// One replica: its own pool and budget on the shared schema.
async fn replica(db: &TestDatabase, double: &AirtableDouble) -> Arc<AirtableBackend> {
    let pool = reelstate::pg::pool(&db.url, 4).unwrap();
    let cfg = config_for(double);
    let budget = Arc::new(PgBudget::for_airtable(pool, &cfg).unwrap());
    Arc::new(AirtableBackend::with_budget(cfg, budget).unwrap())
}

async fn replicas(
    db: &TestDatabase,
    double: &AirtableDouble,
    n: usize,
) -> Vec<Arc<AirtableBackend>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(replica(db, double).await);
    }
    out
}

#[tokio::test]
async fn local_budget_keeps_a_slot_busy_one_window_after_its_release() {
    let window = Duration::from_millis(200);
    let budget = Arc::new(LocalBudget::with_window(2, window));
    let first = budget.acquire().await;
    let _second = budget.acquire().await;
    let waiter = tokio::spawn({
        let budget = budget.clone();
        async move {
            let _third = budget.acquire().await;
            Instant::now()
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "a third slot while two are held");
    let released = Instant::now();
    drop(first);
    let granted = waiter.await.unwrap();
    let waited = granted - released;
    assert!(
        waited >= window && waited < window * 2,
        "granted {waited:?} after the release"
    );
}

#[tokio::test]
async fn local_budget_lockout_holds_every_request_back() {
    let budget = LocalBudget::with_window(5, Duration::from_millis(50));
    budget.lock_out(Duration::from_millis(300)).await;
    // A shorter lockout does not shorten the running one.
    budget.lock_out(Duration::from_millis(10)).await;
    let start = Instant::now();
    let _slot = budget.acquire().await;
    assert!(
        start.elapsed() >= Duration::from_millis(290),
        "{:?}",
        start.elapsed()
    );
}

/// The hazard the shared budget exists for: three replicas, each keeping 5 requests per
/// second on its own, together overrun the base and get it locked out.
#[tokio::test]
async fn three_local_budgets_overrun_the_base() {
    let double = AirtableDouble::start(DoubleConfig::default()).await;
    let id = RecordId::parse(&double.insert_record("Videos", json!({"Name": "v"}))).unwrap();
    let backends: Vec<Arc<AirtableBackend>> = (0..3)
        .map(|_| Arc::new(AirtableBackend::new(config_for(&double)).unwrap()))
        .collect();
    let reads = backends.iter().flat_map(|b| {
        let id = id.clone();
        (0..5).map(move |_| {
            let (b, id) = (b.clone(), id.clone());
            async move { b.get("Videos", &id).await }
        })
    });
    for r in join_all(reads).await {
        assert!(r.unwrap().is_some());
    }
    assert!(double.max_requests_in_any_second() > 5);
    assert!(double.requests().iter().any(|r| r.status == 429));
    double.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_five_requests_per_second() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    migrated_pool(&db).await;
    let double = AirtableDouble::start(DoubleConfig::default()).await;
    let replicas = replicas(&db, &double, 3).await;
    let start = Instant::now();
    // Each task writes a record, reads it back, updates it and reads it again: 3 × 8 × 4 =
    // 96 calls, the reads one request each, the writes batched as each replica's queue
    // allows.
    let tasks = replicas.iter().enumerate().flat_map(|(r, b)| {
        (0..8).map(move |t| {
            let b = b.clone();
            async move {
                let name = format!("r{r}-t{t}");
                let created = b
                    .create("Videos", fields(json!({ "Name": name })))
                    .await
                    .unwrap();
                let read = b.get("Videos", &created.id).await.unwrap().unwrap();
                assert_eq!(read.fields["Name"], json!(name));
                b.update(
                    "Videos",
                    &created.id,
                    fields(json!({"Final Video": format!("https://media.example/{name}.mp4")})),
                )
                .await
                .unwrap();
                let read = b.get("Videos", &created.id).await.unwrap().unwrap();
                assert!(read.fields.contains_key("Final Video"));
            }
        })
    });
    join_all(tasks).await;
    let elapsed = start.elapsed();

    let log = double.requests();
    let max = double.max_requests_in_any_second();
    eprintln!(
        "{} requests in {elapsed:?}; at most {max} in any one second",
        log.len()
    );
    assert!(max <= 5, "{max} requests in one second");
    assert!(log.iter().all(|r| r.status == 200), "no 429, no error");
    for b in &replicas {
        assert_eq!(b.stats().rate_limited, 0);
    }
    let mut names: Vec<String> = double
        .records("Videos")
        .iter()
        .map(|r| {
            let name = r.fields["Name"].as_str().unwrap().to_owned();
            assert_eq!(
                r.fields["Final Video"],
                json!(format!("https://media.example/{name}.mp4")),
                "the update of {name} landed"
            );
            name
        })
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..3)
        .flat_map(|r| (0..8).map(move |t| format!("r{r}-t{t}")))
        .collect();
    expected.sort();
    assert_eq!(names, expected, "every record once, none twice");
    let written: u64 = replicas.iter().map(|b| b.stats().records_written).sum();
    assert_eq!(written, 48);
    double.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockout_seen_by_one_replica_holds_back_the_others() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    let pool = migrated_pool(&db).await;
    let double = AirtableDouble::start(DoubleConfig::default()).await;
    let id = RecordId::parse(&double.insert_record("Videos", json!({"Name": "v"}))).unwrap();
    let replicas = replicas(&db, &double, 3).await;
    let lockout = config_for(&double).lockout;

    double.rate_limit_at_request(1);
    let first = tokio::spawn({
        let (b, id) = (replicas[0].clone(), id.clone());
        async move { b.get("Videos", &id).await }
    });
    // Until the replica that met the 429 has shared its lockout.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let client = pool.get().await.unwrap();
        let row = client
            .query_opt(
                "SELECT 1 FROM airtable_budget_lockouts WHERE locked_until > now()",
                &[],
            )
            .await
            .unwrap();
        if row.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no lockout was shared");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let others = replicas[1..].iter().flat_map(|b| {
        let id = id.clone();
        (0..3).map(move |_| {
            let (b, id) = (b.clone(), id.clone());
            async move { b.get("Videos", &id).await }
        })
    });
    for r in join_all(others).await {
        assert!(r.unwrap().is_some());
    }
    assert!(first.await.unwrap().unwrap().is_some());

    let log = double.requests();
    let refused: Vec<_> = log.iter().filter(|r| r.status == 429).collect();
    assert_eq!(refused.len(), 1, "only the injected 429: {log:?}");
    let locked_at = refused[0].at;
    let after: Vec<Duration> = log
        .iter()
        .filter(|r| r.at > locked_at)
        .map(|r| r.at - locked_at)
        .collect();
    assert_eq!(after.len(), 7, "the retry and the six others");
    // PostgreSQL's clock started the lockout after the double's 429; a millisecond of
    // slack covers the two clocks' rounding.
    let earliest = after.iter().min().copied().unwrap_or_default();
    eprintln!("lockout {lockout:?}; the first request after the 429 came {earliest:?} later");
    assert!(
        earliest + Duration::from_millis(1) >= lockout,
        "a request {earliest:?} after the 429"
    );
    for b in &replicas[1..] {
        assert_eq!(b.stats().rate_limited, 0);
    }
    assert!(double.max_requests_in_any_second() <= 5);
    double.shutdown().await;
}

#[tokio::test]
async fn a_slot_held_by_a_dead_replica_comes_back_after_its_lease() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    migrated_pool(&db).await;
    let window = Duration::from_millis(100);
    let lease = Duration::from_secs(1);
    let budget = |db: &TestDatabase| {
        let pool = reelstate::pg::pool(&db.url, 2).unwrap();
        PgBudget::new(pool, "appLEASE", 1, window, lease).unwrap()
    };

    // A replica claims the base's only slot and dies without releasing it.
    let dead = budget(&db);
    let claimed = Instant::now();
    std::mem::forget(dead.acquire().await);
    drop(dead);

    let alive = budget(&db);
    let slot = alive.acquire().await;
    let waited = claimed.elapsed();
    assert!(
        waited >= lease && waited < lease + Duration::from_millis(500),
        "the dead replica's slot came back after {waited:?}"
    );

    // A released slot, by contrast, comes back one window after its release.
    let released = Instant::now();
    drop(slot);
    let _again = budget(&db).acquire().await;
    let waited = released.elapsed();
    assert!(
        waited >= window && waited < lease,
        "a released slot came back after {waited:?}"
    );
}

/// Fail closed: while the budget's tables cannot be reached, nothing is granted (every
/// replica sending unthrottled would get the base locked out); when they can, it is.
#[tokio::test]
async fn acquire_waits_out_a_database_failure_instead_of_sending_unthrottled() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    // Not migrated yet: every claim fails.
    let pool = reelstate::pg::pool(&db.url, 2).unwrap();
    let budget = Arc::new(
        PgBudget::new(
            pool.clone(),
            "appOUTAGE",
            5,
            Duration::from_millis(100),
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    let waiter = tokio::spawn({
        let budget = budget.clone();
        async move {
            let _slot = budget.acquire().await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "a slot granted without the database");
    reelstate::pg::migrate(&pool).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("a slot once the database answers")
        .unwrap();
}

#[test]
fn a_budget_with_a_lease_shorter_than_its_window_is_refused() {
    let pool = reelstate::pg::pool("postgres://nobody@127.0.0.1:1/none", 1).unwrap();
    assert!(
        PgBudget::new(
            pool.clone(),
            "app",
            5,
            Duration::from_secs(1),
            Duration::from_secs(1)
        )
        .is_err()
    );
    assert!(PgBudget::new(pool, "", 5, Duration::from_secs(1), Duration::from_secs(2)).is_err());
}

/// Priority across replicas: while writes of two replicas queue for the base's only slot,
/// a read (on one of those replicas, behind its own writes) is granted first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_goes_ahead_of_the_writes_queued_on_every_replica() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    migrated_pool(&db).await;
    let window = Duration::from_millis(200);
    let budget = |db: &TestDatabase| {
        let pool = reelstate::pg::pool(&db.url, 2).unwrap();
        Arc::new(PgBudget::new(pool, "appPRIORITY", 1, window, Duration::from_secs(3)).unwrap())
    };
    let (holder, b, c) = (budget(&db), budget(&db), budget(&db));
    let held = holder.acquire_for(Priority::Write).await;
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (label, budget, priority) in [
        ("write b1", b.clone(), Priority::Write),
        ("write c1", c.clone(), Priority::Write),
        ("write b2", b.clone(), Priority::Write),
        ("read b", b.clone(), Priority::Read),
    ] {
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let slot = budget.acquire_for(priority).await;
            order.lock().unwrap().push(label);
            drop(slot);
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order.first(), Some(&"read b"), "grant order {order:?}");
    assert_eq!(order.len(), 4, "every write granted too: {order:?}");
}
