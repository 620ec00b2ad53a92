//! The embedded system of record: [`RecordBackend`] on SQLite, with Airtable's semantics so
//! that the engine cannot tell the two apart (the contract suite in `tests/it/support` holds
//! both to the same checks).
//!
//! Storage is one row per record (`records`) and one row per non-empty cell
//! (`records_cells`). A text cell is kept in `text`, any other cell as JSON in `json`:
//! `Filter::Equals` is then an indexed exact match on `text`, with no JSON path to escape
//! and no second copy of long texts (raw payloads, ffmpeg errors). The tables are prefixed
//! `records` because the engine's own tables may live in the same database file.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::Connection;

use super::rules::{self, Schema};
use crate::domain::RecordId;
use crate::records::{Fields, Filter, Mapping, Record, RecordBackend, RecordsError, Write};
use crate::store::WriteGate;

use errors::{db, task_failed};
use rows::{find_created_since, find_equals, load_in};
use writes::write_batch;

mod errors;
mod rows;
#[cfg(test)]
mod tests;
mod writes;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    id           TEXT PRIMARY KEY NOT NULL,
    tbl          TEXT NOT NULL,
    created_time TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_table ON records (tbl);
CREATE TABLE IF NOT EXISTS records_cells (
    record_id TEXT NOT NULL REFERENCES records (id),
    field     TEXT NOT NULL,
    text      TEXT,
    json      TEXT,
    PRIMARY KEY (record_id, field),
    CHECK ((text IS NULL) <> (json IS NULL))
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_cells_by_text
    ON records_cells (field, text) WHERE text IS NOT NULL;
";

/// The records' migrations, in order. Append only. Versioned apart from the store's
/// (`records_migrations`, not `store_migrations`): the tables are the records' own, and a
/// records-only file has no store. The first one's statements are all `IF NOT EXISTS`, so
/// files written before the records were versioned take it as a no-op.
const MIGRATIONS: &[(i64, &str, &str)] = &[(1, "records and cells", SCHEMA)];

/// The newest records schema this binary knows.
pub const RECORDS_SCHEMA: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The SQLite store of records. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct SqliteRecords {
    inner: Arc<Inner>,
}

struct Inner {
    /// One connection, used from blocking threads only. Serialising the calls of one
    /// process costs little (each is a few indexed statements) and makes every call,
    /// upserts included, atomic; `BEGIN IMMEDIATE` covers other processes on the file.
    conn: Mutex<Connection>,
    schema: Schema,
    /// The store's write gate when the file is the store's (else one of its own): writes
    /// take it, so that this connection and the store's writer never poll each other for
    /// the file's lock.
    gate: WriteGate,
    /// Writes waiting for the connection. Whichever call gets the connection applies all
    /// that wait, in one transaction (a savepoint each, so that one refused write does
    /// not undo the others): under load the file's write lock is taken once for many
    /// writes instead of once each.
    writes: Mutex<Vec<WriteJob>>,
    /// Calls run on the calling thread, not the blocking pool (the simulation's mode).
    inline: bool,
}

/// A write waiting for its batch, with the reply to its caller.
type WriteJob = (
    String,
    Write,
    Fields,
    tokio::sync::oneshot::Sender<Result<Record, RecordsError>>,
);

impl SqliteRecords {
    /// Opens (creating if needed) the records in the database file at `path`. Other
    /// connections writing the file wait for SQLite's lock (`busy_wait`).
    pub fn open(path: &Path, mapping: &Mapping) -> Result<Self, RecordsError> {
        Self::init(Self::connect(path)?, mapping, None)
    }

    /// [`Self::open`] for the store's own file: writes take the store's `gate`
    /// ([`SqliteStore::write_gate`]), so that this connection and the store's writer take
    /// turns in-process instead of polling each other for the file's lock, and the
    /// store's checkpointer checkpoints what this connection writes.
    ///
    /// [`SqliteStore::write_gate`]: crate::store::SqliteStore::write_gate
    pub(crate) fn open_sharing(
        path: &Path,
        mapping: &Mapping,
        gate: WriteGate,
    ) -> Result<Self, RecordsError> {
        Self::init(Self::connect(path)?, mapping, Some(gate))
    }

    fn connect(path: &Path) -> Result<Connection, RecordsError> {
        Connection::open(path).map_err(db(&format!(
            "opening the records database {}",
            path.display()
        )))
    }

    /// A private database that lives as long as this value (and its clones).
    pub fn open_in_memory(mapping: &Mapping) -> Result<Self, RecordsError> {
        let conn =
            Connection::open_in_memory().map_err(db("opening an in-memory records database"))?;
        Self::init(conn, mapping, None)
    }

    /// `store_gate`: the file is the store's (see [`Self::open_sharing`]).
    fn init(
        mut conn: Connection,
        mapping: &Mapping,
        store_gate: Option<WriteGate>,
    ) -> Result<Self, RecordsError> {
        // Short waits for the other connections' write lock (see store::sqlite::busy_wait).
        conn.busy_handler(Some(crate::store::busy_wait))
            .map_err(db("setting the busy handler"))?;
        // WAL lets readers run beside the one writer; an in-memory database answers
        // "memory" and stays so, which is fine.
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
            .map_err(db("enabling WAL"))?;
        // NORMAL is durable across application crashes in WAL mode; only a power loss
        // can lose the last commits, which is the usual trade for a service store.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db("setting synchronous"))?;
        if store_gate.is_some() {
            // The store's checkpointer checkpoints the file off every commit
            // (store::sqlite::checkpoint); one run inside a records write would hold it.
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(db("leaving checkpoints to the store"))?;
        }
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db("enabling foreign keys"))?;
        crate::store::tune(&conn).map_err(db("tuning the connection"))?;
        crate::store::migrate_file(
            &mut conn,
            "records_migrations",
            "records schema",
            MIGRATIONS,
        )
        .map_err(|e| match e {
            crate::store::StoreError::Sqlite(e) => db("creating the records tables")(e),
            newer => RecordsError::Permanent {
                status: 500,
                kind: "SQLITE_SCHEMA".into(),
                message: newer.to_string(),
            },
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                schema: Schema::from_mapping(mapping),
                gate: store_gate.unwrap_or_default(),
                writes: Mutex::default(),
                inline: false,
            }),
        })
    }

    /// In memory, every call run on the calling thread: for the deterministic simulation,
    /// which runs the whole engine on one thread (`crate::clock::simulate`).
    pub fn open_simulated(mapping: &Mapping) -> Result<Self, RecordsError> {
        let mut records = Self::open_in_memory(mapping)?;
        Arc::get_mut(&mut records.inner)
            .expect("a new store is not shared yet")
            .inline = true;
        Ok(records)
    }

    /// The connection's `wal_autocheckpoint` (0: checkpoints are left to the store).
    #[cfg(test)]
    pub(crate) fn autocheckpoint(&self) -> i64 {
        let conn = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        conn.pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .unwrap_or(-1)
    }

    /// Runs `work` on a blocking thread with the connection, so that SQLite (and waiting
    /// for the lock) never stalls the async runtime.
    async fn run<T, F>(&self, work: F) -> Result<T, RecordsError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Schema) -> Result<T, RecordsError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        if inner.inline {
            let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            return work(&mut conn, &inner.schema);
        }
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave a half-applied write: the open
            // transaction rolls back when it is dropped during unwinding.
            let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut conn, &inner.schema)
        })
        .await
        .map_err(|e| task_failed(format!("the records task did not complete: {e}")))?
    }
}

#[async_trait]
impl RecordBackend for SqliteRecords {
    async fn get(&self, table: &str, id: &RecordId) -> Result<Option<Record>, RecordsError> {
        let table = table.to_owned();
        let id = id.clone();
        self.run(move |conn, schema| {
            schema.check_table(&table)?;
            // A read transaction: the record row and its cells come from one snapshot.
            let tx = conn.transaction().map_err(db("starting a read"))?;
            load_in(&tx, &table, id.as_str())
        })
        .await
    }

    async fn find(&self, table: &str, filter: &Filter) -> Result<Vec<Record>, RecordsError> {
        let table = table.to_owned();
        let filter = filter.clone();
        self.run(move |conn, schema| {
            schema.check_table(&table)?;
            let tx = conn.transaction().map_err(db("starting a read"))?;
            let ids: Vec<String> = match &filter {
                Filter::Equals { field, value } => find_equals(&tx, &table, field, value)?,
                Filter::RecordIds(ids) => rules::unique_ids(ids),
                Filter::CreatedSince(since) => {
                    find_created_since(&tx, &table, &rules::created_time(*since))?
                }
            };
            let mut found = Vec::with_capacity(ids.len());
            for id in &ids {
                // `load_in` drops ids of other tables and unknown ids, like RECORD_ID().
                if let Some(r) = load_in(&tx, &table, id)? {
                    found.push(r);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn write(&self, table: &str, op: Write, fields: Fields) -> Result<Record, RecordsError> {
        crate::records::fence::check_current().await?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inner
            .writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((table.to_owned(), op, fields, reply));
        let inner = Arc::clone(&self.inner);
        self.run(move |conn, schema| {
            let jobs =
                std::mem::take(&mut *inner.writes.lock().unwrap_or_else(PoisonError::into_inner));
            // Empty when an earlier call's batch took this one along.
            if !jobs.is_empty() {
                write_batch(conn, schema, &inner.gate, jobs);
            }
            Ok(())
        })
        .await?;
        answer
            .await
            .map_err(|_| task_failed("the records write was dropped unanswered".into()))?
    }
}
