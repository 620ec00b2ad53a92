//! The shared store: PostgreSQL, for several replicas on one database. Same tables and
//! semantics as the embedded store; what differs is who may work on what. Leases are rows
//! claimed with `FOR UPDATE SKIP LOCKED` (replicas never wait on each other's claims),
//! renewed while held, and fenced: a decision commits only under the token its lease was
//! claimed with, so a replica that stalled past its lease cannot overwrite the work of the
//! replica that took over.
//!
//! By concern: `inbox`, `outbox`, `snapshots` (commit, job index, history, record
//! creations), `leases`, `maintenance` (quarantine, depths, overview, retention); this
//! file connects and runs statements.

mod inbox;
mod leases;
mod maintenance;
mod outbox;
mod overview;
mod snapshots;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{Lane, StoreError};
use crate::domain::RecordId;
use crate::pg::PgError;
use leases::renew;
use tokio_postgres::Error as DbError;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(PgError::Db(e))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Postgres(e.into())
    }
}

/// Connections per replica: intake, the worker, the executor and the API share them.
const POOL_SIZE: usize = 16;

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// This process's name in the leases table: unique per start, so that a restarted
    /// replica never mistakes its dead predecessor's leases for its own.
    owner: String,
    lease_for: Duration,
    /// The leases this process holds, so that it never claims one twice and renews only
    /// what it holds.
    held: Arc<Mutex<HashSet<(Lane, RecordId)>>>,
    /// Set when a deterministic simulation drives this store.
    sim: Option<PgSimulation>,
}

/// How a deterministic simulation (tests/it/sim/pg.rs) drives a store on PostgreSQL: its
/// statements read the simulation's clock instead of the server's `now()`, so that leases
/// expire in simulated time and a seed is one fixed order; its connections live on a
/// runtime of their own, apart from the simulation's paused one.
#[derive(Clone)]
pub struct PgSimulation {
    /// What the store's statements use for the current time.
    pub now: Arc<Mutex<DateTime<Utc>>>,
    /// The runtime the store's connections run on.
    pub runtime: tokio::runtime::Handle,
    /// Set once the simulated process is killed: what it drops after that (a lease it
    /// held) reaches nothing, as after a kill -9.
    pub killed: Arc<AtomicBool>,
}

impl PgSimulation {
    /// Runs `work` on the store's runtime and waits for it, unless the process is killed.
    fn wait_for(&self, work: impl Future<Output = ()> + Send + 'static) {
        if self.killed.load(Ordering::SeqCst) {
            return;
        }
        let (done, wait) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            work.await;
            let _ = done.send(());
        });
        let _ = wait.recv();
    }
}

impl PgStore {
    /// Connects, applies the migrations (under their lock) and starts renewing the
    /// leases this process will hold. A lease not renewed for `lease_for` (the process
    /// died or stalled) may be claimed by another replica.
    pub async fn connect(url: &str, lease_for: Duration) -> Result<Self, StoreError> {
        let pool = crate::pg::pool(url, POOL_SIZE)?;
        crate::pg::migrate(&pool).await?;
        // synchronous_commit is the session's (crate::pg::pool); fsync is the server's.
        if let Ok(c) = pool.get().await
            && let Ok(row) = c.query_one("SHOW fsync", &[]).await
            && row.get::<_, String>(0) != "on"
        {
            tracing::warn!(
                "PostgreSQL runs with fsync = off: an acknowledged webhook can be lost on a crash of its machine"
            );
        }
        let store = Self {
            pool,
            owner: format!("{}-{}", std::process::id(), Uuid::new_v4().simple()),
            lease_for: lease_for.max(Duration::from_millis(300)),
            held: Arc::default(),
            sim: None,
        };
        tokio::spawn(renew(
            Arc::downgrade(&store.held),
            store.pool.clone(),
            store.owner.clone(),
            store.lease_for,
        ));
        Ok(store)
    }

    /// A store a deterministic simulation drives: connected on `sim.runtime` (call it
    /// there), with no renewal of its own ([`PgStore::renew_leases`] is the
    /// simulation's to call) and its times read from `sim.now`.
    pub async fn connect_simulated(
        url: &str,
        lease_for: Duration,
        sim: PgSimulation,
    ) -> Result<Self, StoreError> {
        let pool = crate::pg::pool(url, 4)?;
        crate::pg::migrate(&pool).await?;
        Ok(Self {
            pool,
            owner: format!("sim-{}", Uuid::new_v4().simple()),
            lease_for,
            held: Arc::default(),
            sim: Some(sim),
        })
    }

    /// The time a statement uses: the simulation's, else `None` (the server's `now()`).
    fn at(&self) -> Option<DateTime<Utc>> {
        self.sim
            .as_ref()
            .and_then(|s| s.now.lock().ok().map(|t| *t))
    }

    /// The pool, for the other parts kept in the same database (records, the Airtable
    /// request budget).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn secs(&self) -> f64 {
        self.lease_for.as_secs_f64()
    }
}

/// A statement's parameters.
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

// Statements are prepared once per connection and cached: unprepared, every query would
// cost an extra round trip to PostgreSQL for its parse.

async fn run(c: &impl GenericClient, sql: &str, p: Params<'_>) -> Result<u64, DbError> {
    c.execute(&c.prepare_cached(sql).await?, p).await
}

async fn rows(c: &impl GenericClient, sql: &str, p: Params<'_>) -> Result<Vec<Row>, DbError> {
    c.query(&c.prepare_cached(sql).await?, p).await
}

async fn row_opt(c: &impl GenericClient, sql: &str, p: Params<'_>) -> Result<Option<Row>, DbError> {
    c.query_opt(&c.prepare_cached(sql).await?, p).await
}

async fn row_one(c: &impl GenericClient, sql: &str, p: Params<'_>) -> Result<Row, DbError> {
    c.query_one(&c.prepare_cached(sql).await?, p).await
}
