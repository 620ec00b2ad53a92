//! A PostgreSQL schema of its own for each test, in the database named by
//! `REELSTATE_TEST_DATABASE_URL` (CI sets it to the machine's local PostgreSQL). Tests
//! that need PostgreSQL call [`database`] and return early when it gives `None`, which it
//! never does under `CI=true`: there it fails instead.

use tokio_postgres::NoTls;

/// The test database's URL, when PostgreSQL tests are enabled.
pub fn base_url() -> Option<String> {
    std::env::var("REELSTATE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// A fresh, empty schema; dropped (with everything in it) when this value is dropped.
pub struct TestDatabase {
    /// Connects to the test database with the schema first on the search path.
    pub url: String,
    pub schema: String,
    base: String,
}

/// A new schema in the test database, or `None` (and a note on stderr) when
/// `REELSTATE_TEST_DATABASE_URL` is not set.
pub async fn database() -> Option<TestDatabase> {
    let Some(base) = base_url() else {
        // CI runs every PostgreSQL test: one that passed by returning early there would
        // be a test that cannot fail.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and REELSTATE_TEST_DATABASE_URL is not set: the PostgreSQL tests must run in CI"
        );
        eprintln!("REELSTATE_TEST_DATABASE_URL is not set: skipping a PostgreSQL test");
        return None;
    };
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let (client, conn) = tokio_postgres::connect(&base, NoTls)
        .await
        .unwrap_or_else(|e| panic!("REELSTATE_TEST_DATABASE_URL={base} does not connect: {e}"));
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create the test schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
    Some(TestDatabase { url, schema, base })
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // A blocking drop on its own thread: Drop cannot await, and the test's runtime
        // may be shutting down.
        let (base, schema) = (self.base.clone(), self.schema.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&base, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}
