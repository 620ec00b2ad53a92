//! PostgreSQL plumbing shared by the PostgreSQL store, records and request budget: one
//! connection pool per process, and the schema's versioned migrations.
//!
//! Invariants: every table lives in the connection's `search_path` schema (so a test, or
//! a second deployment, can own a schema of its own in one database); migrations are
//! applied in version order, each exactly once per schema, inside one transaction that
//! holds a transaction-scoped advisory lock, so replicas starting together do not race and
//! a failed migration leaves nothing half-applied.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use sha2::{Digest, Sha256};
use tokio_postgres::NoTls;

/// The schema's migrations, embedded in the binary. Append only: an applied migration is
/// never edited (start-up refuses a database whose applied migration differs).
pub const MIGRATIONS: &[Migration] = &[
    Migration::new(
        1,
        "engine store",
        include_str!("pg/migrations/0001_engine_store.sql"),
    ),
    Migration::new(2, "records", include_str!("pg/migrations/0002_records.sql")),
    Migration::new(
        3,
        "airtable budget",
        include_str!("pg/migrations/0003_airtable_budget.sql"),
    ),
    Migration::new(
        4,
        "record creations",
        include_str!("pg/migrations/0004_record_creations.sql"),
    ),
    Migration::new(
        5,
        "retention and quarantine",
        include_str!("pg/migrations/0005_retention_quarantine.sql"),
    ),
    Migration::new(
        6,
        "airtable budget readers",
        include_str!("pg/migrations/0006_airtable_budget_readers.sql"),
    ),
    Migration::new(
        7,
        "videos list and external id search",
        include_str!("pg/migrations/0007_videos_list.sql"),
    ),
    Migration::new(
        8,
        "paid calls",
        include_str!("pg/migrations/0008_paid_calls.sql"),
    ),
    Migration::new(
        9,
        "paid call totals and creation claims by age",
        include_str!("pg/migrations/0009_retained_totals.sql"),
    ),
];

#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    const fn new(version: i32, name: &'static str, sql: &'static str) -> Self {
        Self { version, name, sql }
    }

    fn checksum(&self) -> String {
        let digest = Sha256::digest(self.sql.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("PostgreSQL connection pool: {0}")]
    Pool(String),
    #[error(
        "migration {version} ({name}) applied to this database differs from this binary's; refusing to start"
    )]
    MigrationChanged { version: i32, name: String },
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => PgError::Db(e),
            other => PgError::Pool(other.to_string()),
        }
    }
}

/// A pool of connections to `url` (a `postgres://` URL; `?options=-csearch_path%3D…`
/// selects a schema). Connections are made lazily; [`migrate`] makes the first.
pub fn pool(url: &str, max_size: usize) -> Result<Pool, PgError> {
    let mut cfg = tokio_postgres::Config::from_str(url).map_err(|e| PgError::Url(e.to_string()))?;
    // A database that stops answering must fail requests within seconds (a webhook then
    // gets a 503 and is retried by its sender), not after TCP gives up minutes later.
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(TIMEOUT);
    }
    // Acknowledged means on disk: a webhook's 202 and an external call's start are
    // answered only once PostgreSQL has flushed their commit to its WAL. The session asks
    // for it whatever the server or role default (a database tuned with
    // synchronous_commit = off would lose the last acknowledged commits on a crash).
    // Appended last, so it wins over the same option in the URL.
    let options = match cfg.get_options() {
        Some(o) if !o.trim().is_empty() => format!("{o} -c synchronous_commit=on"),
        _ => "-c synchronous_commit=on".to_owned(),
    };
    cfg.options(&options);
    cfg.keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .tcp_user_timeout(Duration::from_secs(30));
    let manager = Manager::from_config(
        cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(TIMEOUT))
        .create_timeout(Some(TIMEOUT))
        .recycle_timeout(Some(TIMEOUT))
        .build()
        .map_err(|e| PgError::Pool(e.to_string()))
}

/// How long getting a connection may take: waiting for a free one, or making one.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Applies the migrations this database lacks, under a lock shared by every replica that
/// uses the same schema. Returns the versions it applied.
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, PgError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Transaction-scoped: released by the commit (or the rollback of a failed migration),
    // and by PostgreSQL itself if this process dies holding it.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('reelstate migrations ' || current_schema()))",
        &[],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             checksum   TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Vec<(i32, String)> = tx
        .query("SELECT version, checksum FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut done = Vec::new();
    for m in MIGRATIONS {
        match applied.iter().find(|(v, _)| *v == m.version) {
            Some((_, sum)) if *sum == m.checksum() => {}
            Some(_) => {
                return Err(PgError::MigrationChanged {
                    version: m.version,
                    name: m.name.to_owned(),
                });
            }
            None => {
                tx.batch_execute(m.sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    &[&m.version, &m.name, &m.checksum()],
                )
                .await?;
                tracing::info!(version = m.version, name = m.name, "applied migration");
                done.push(m.version);
            }
        }
    }
    if let Some((newest, _)) = applied.iter().max_by_key(|(v, _)| *v)
        && MIGRATIONS.iter().all(|m| m.version < *newest)
    {
        // A rolling deploy: a newer replica migrated first. Migrations only add, so an
        // older binary keeps working; say so rather than refuse.
        tracing::warn!(
            database = newest,
            binary = MIGRATIONS.last().map_or(0, |m| m.version),
            "the database has migrations newer than this binary"
        );
    }
    tx.commit().await?;
    Ok(done)
}
