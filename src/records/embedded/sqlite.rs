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
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

use super::rules::{self, Cell, Checked, FieldWrite, Link, Schema};
use crate::domain::RecordId;
use crate::records::{Fields, Filter, Mapping, Record, RecordBackend, RecordsError, Write};
use crate::store::{Cached, WriteGate};

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
    pub fn open_sharing(
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
    pub fn autocheckpoint(&self) -> i64 {
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

/// Applies `jobs` in one transaction, each in a savepoint of its own, and answers each
/// once the transaction is committed (or with the commit's error).
fn write_batch(conn: &mut Connection, schema: &Schema, gate: &WriteGate, jobs: Vec<WriteJob>) {
    // IMMEDIATE takes the write lock before an upsert's lookup, so no other connection
    // can create the same key between our lookup and our insert.
    let _held = gate.hold();
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let err = db("starting a write")(e);
            for (.., reply) in jobs {
                let _ = reply.send(Err(err.clone()));
            }
            return;
        }
    };
    let mut done = Vec::with_capacity(jobs.len());
    for (table, op, fields, reply) in jobs {
        let result = tx
            .savepoint()
            .map_err(db("starting a write"))
            .and_then(|sp| {
                let record = write_one(&sp, schema, &table, &op, fields)?;
                sp.commit().map_err(db("committing a write"))?;
                Ok(record)
            });
        done.push((reply, result));
    }
    match tx.commit().map_err(db("committing writes")) {
        Ok(()) => {
            for (reply, result) in done {
                let _ = reply.send(result);
            }
        }
        Err(err) => {
            for (reply, _) in done {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// One create, update or upsert, inside the caller's transaction.
fn write_one(
    conn: &Connection,
    schema: &Schema,
    table: &str,
    op: &Write,
    fields: Fields,
) -> Result<Record, RecordsError> {
    schema.check_table(table)?;
    match Checked::new(op, &fields)? {
        Checked::Create => create_in(conn, schema, table, fields),
        Checked::Update(id) => update_in(conn, schema, table, id.as_str(), fields),
        Checked::Upsert { merge_on, key } => {
            let matches = find_equals(conn, table, merge_on, &key)?;
            match rules::upsert_target(table, merge_on, &key, &matches)? {
                None => create_in(conn, schema, table, fields),
                Some(id) => update_in(conn, schema, table, id, fields),
            }
        }
    }
}

fn create_in(
    conn: &Connection,
    schema: &Schema,
    table: &str,
    fields: Fields,
) -> Result<Record, RecordsError> {
    let writes = schema.plan(table, &fields)?;
    let id = new_id(conn)?;
    let created_time = rules::created_time(crate::clock::now());
    conn.execute_cached(
        "INSERT INTO records (id, tbl, created_time) VALUES (?1, ?2, ?3)",
        params![id, table, created_time],
    )
    .map_err(db("inserting a record"))?;
    apply_fields(conn, &id, writes)?;
    load_in(conn, table, &id)?.ok_or_else(|| corrupt(format!("record {id} vanished after insert")))
}

fn update_in(
    conn: &Connection,
    schema: &Schema,
    table: &str,
    id: &str,
    fields: Fields,
) -> Result<Record, RecordsError> {
    if record_table(conn, id)?.as_deref() != Some(table) {
        return Err(RecordsError::NotFound(id.to_owned(), table.to_owned()));
    }
    let writes = schema.plan(table, &fields)?;
    apply_fields(conn, id, writes)?;
    load_in(conn, table, id)?.ok_or_else(|| corrupt(format!("record {id} vanished after update")))
}

/// A fresh Airtable-format id that no record has.
fn new_id(conn: &Connection) -> Result<String, RecordsError> {
    // A collision is practically impossible, but checking costs one lookup.
    for _ in 0..rules::ID_ATTEMPTS {
        let id = rules::draw_id();
        if record_table(conn, &id)?.is_none() {
            return Ok(id);
        }
    }
    Err(corrupt("could not draw an unused record id".into()))
}

/// Which table a record belongs to, if it exists.
fn record_table(conn: &Connection, id: &str) -> Result<Option<String>, RecordsError> {
    conn.prepare_cached("SELECT tbl FROM records WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(db("looking up a record"))
}

/// The record with this id if it belongs to `table` (ids are unique per base, so an id of
/// another table is simply not there).
fn load_in(conn: &Connection, table: &str, id: &str) -> Result<Option<Record>, RecordsError> {
    let row: Option<(String, String)> = conn
        .prepare_cached("SELECT tbl, created_time FROM records WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(db("reading a record"))?;
    let Some((tbl, created_time)) = row else {
        return Ok(None);
    };
    if tbl != table {
        return Ok(None);
    }
    let record_id = RecordId::parse(id)
        .map_err(|_| corrupt(format!("stored record id {id:?} is not an Airtable id")))?;
    Ok(Some(Record {
        id: record_id,
        created_time,
        fields: load_fields(conn, id)?,
    }))
}

fn load_fields(conn: &Connection, id: &str) -> Result<Fields, RecordsError> {
    let mut stmt = conn
        .prepare_cached("SELECT field, text, json FROM records_cells WHERE record_id = ?1")
        .map_err(db("reading fields"))?;
    let rows = stmt
        .query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .map_err(db("reading fields"))?;
    let mut fields = Fields::new();
    for row in rows {
        let (field, text, json) = row.map_err(db("reading a field"))?;
        let value = match (text, json) {
            (Some(text), _) => Value::String(text),
            (None, Some(json)) => serde_json::from_str(&json)
                .map_err(|e| corrupt(format!("field {field:?} of {id} is not valid JSON: {e}")))?,
            (None, None) => return Err(corrupt(format!("field {field:?} of {id} is empty"))),
        };
        fields.insert(field, value);
    }
    Ok(fields)
}

/// `CROSS JOIN` makes SQLite start from the cells, through the (field, text) index, and
/// look each match's record up by id. With a plain JOIN and no statistics its planner
/// walked every record of the table (by `records_by_table`, in rowid order, to skip the
/// sort) and probed the index once per record: one Webhook Events upsert per webhook
/// then cost as much as all the webhooks before it.
const FIND_EQUALS: &str =
    "SELECT r.id FROM records_cells c CROSS JOIN records r ON r.id = c.record_id
     WHERE c.field = ?1 AND c.text = ?2 AND r.tbl = ?3
     ORDER BY r.rowid";

/// Ids of the records of `table` whose text `field` is exactly `value`, oldest first (the
/// order Airtable lists records in without a sort).
fn find_equals(
    conn: &Connection,
    table: &str,
    field: &str,
    value: &str,
) -> Result<Vec<String>, RecordsError> {
    let mut stmt = conn
        .prepare_cached(FIND_EQUALS)
        .map_err(db("searching records"))?;
    stmt.query_map(params![field, value, table], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(db("searching records"))
}

/// Ids of the records of `table` created at or after `since` (both `createdTime` texts,
/// which sort as they compare), oldest first.
fn find_created_since(
    conn: &Connection,
    table: &str,
    since: &str,
) -> Result<Vec<String>, RecordsError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id FROM records WHERE tbl = ?1 AND created_time >= ?2 ORDER BY rowid",
        )
        .map_err(db("searching records"))?;
    stmt.query_map(params![table, since], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(db("searching records"))
}

/// Writes each named field; the others stay as they are.
fn apply_fields(
    conn: &Connection,
    id: &str,
    writes: Vec<FieldWrite<'_>>,
) -> Result<(), RecordsError> {
    for write in writes {
        match write {
            FieldWrite::Link { link, ids } => write_link(conn, link, id, ids)?,
            FieldWrite::Cell { field, value } => write_cell(conn, id, field, value)?,
        }
    }
    Ok(())
}

fn write_cell(conn: &Connection, id: &str, field: &str, value: &Value) -> Result<(), RecordsError> {
    let (text, json) = match rules::cell(value) {
        Cell::Empty => {
            conn.prepare_cached("DELETE FROM records_cells WHERE record_id = ?1 AND field = ?2")
                .and_then(|mut s| s.execute(params![id, field]))
                .map_err(db("clearing a field"))?;
            return Ok(());
        }
        Cell::Text(s) => (Some(s.to_owned()), None),
        Cell::Json(other) => (None, Some(other.to_string())),
    };
    conn.prepare_cached(
        "INSERT INTO records_cells (record_id, field, text, json) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (record_id, field) DO UPDATE SET text = excluded.text, json = excluded.json",
    )
    .and_then(|mut s| s.execute(params![id, field, text, json]))
    .map_err(db("writing a field"))?;
    Ok(())
}

/// Writes a linked-record field and keeps the other side in step, as Airtable does:
/// records no longer linked lose this id from their inverse field, new ones gain it.
fn write_link(
    conn: &Connection,
    link: &Link,
    id: &str,
    new: Vec<String>,
) -> Result<(), RecordsError> {
    for target in &new {
        if record_table(conn, target)?.as_deref() != Some(link.target.as_str()) {
            return Err(rules::missing_link_target(link, target));
        }
    }
    let old = read_links(conn, id, &link.field)?;
    write_cell(conn, id, &link.field, &rules::ids_value(&new))?;
    if let Some(inverse) = &link.inverse {
        for (target, linked) in rules::link_changes(&old, &new) {
            let back = rules::back_links(read_links(conn, target, inverse)?, id, linked);
            write_cell(conn, target, inverse, &rules::ids_value(&back))?;
        }
    }
    Ok(())
}

/// The ids in a stored link cell.
fn read_links(conn: &Connection, id: &str, field: &str) -> Result<Vec<String>, RecordsError> {
    let json: Option<Option<String>> = conn
        .prepare_cached("SELECT json FROM records_cells WHERE record_id = ?1 AND field = ?2")
        .and_then(|mut s| s.query_row(params![id, field], |r| r.get(0)).optional())
        .map_err(db("reading a link field"))?;
    let Some(Some(json)) = json else {
        return Ok(Vec::new());
    };
    // Unparseable JSON counts as no links, like any other cell that is not a list of ids.
    Ok(serde_json::from_str::<Value>(&json)
        .map(|v| rules::stored_links(&v))
        .unwrap_or_default())
}

/// A call whose blocking task or batch ended without an answer (a panic).
fn task_failed(message: String) -> RecordsError {
    RecordsError::Permanent {
        status: 500,
        kind: "SQLITE_TASK_FAILED".into(),
        message,
    }
}

fn corrupt(message: String) -> RecordsError {
    RecordsError::Permanent {
        status: 500,
        kind: "SQLITE_CORRUPT_RECORD".into(),
        message,
    }
}

/// Maps a SQLite error met while doing `what`: a locked database is worth retrying (another
/// writer held it past the busy timeout); anything else will fail again the same way.
fn db(what: &str) -> impl Fn(rusqlite::Error) -> RecordsError + '_ {
    move |e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            RecordsError::Transient(format!("records database busy while {what}: {e}"))
        }
        _ => RecordsError::Permanent {
            status: 500,
            kind: "SQLITE_ERROR".into(),
            message: format!("records database error while {what}: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records tables from before they were versioned take the first migration as a
    /// no-op and keep their rows; a newer records schema is refused, naming both versions.
    #[test]
    fn records_tables_are_versioned_and_a_newer_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(SCHEMA).unwrap();
        old.execute_batch("INSERT INTO records VALUES ('recA1b2C3d4E5f6G7', 'Videos', 'then')")
            .unwrap();
        drop(old);
        let records = SqliteRecords::open(&path, &Mapping::default()).unwrap();
        drop(records);
        let conn = Connection::open(&path).unwrap();
        let (version, kept): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT MAX(version) FROM records_migrations), (SELECT COUNT(*) FROM records)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((version, kept), (RECORDS_SCHEMA, 1));
        conn.execute(
            "INSERT INTO records_migrations VALUES (?1, 'later', 'then')",
            [RECORDS_SCHEMA + 1],
        )
        .unwrap();
        drop(conn);
        let refused = SqliteRecords::open(&path, &Mapping::default())
            .err()
            .expect("refused")
            .to_string();
        assert!(
            refused.contains(&format!("version {}", RECORDS_SCHEMA + 1))
                && refused.contains(&format!("up to version {RECORDS_SCHEMA}")),
            "{refused}"
        );
    }

    fn fields(v: Value) -> Fields {
        match v {
            Value::Object(map) => map,
            other => panic!("fields must be an object: {other}"),
        }
    }

    /// Writes that arrive while the file's lock is taken go in together, one transaction for
    /// all of them; one refused halfway (its record row written, its link not) leaves no
    /// trace, and the others are committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_writes_share_a_transaction_and_a_refused_one_undoes_only_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gate = WriteGate::default();
        let records = SqliteRecords::open_sharing(
            &dir.path().join("r.db"),
            &Mapping::default(),
            gate.clone(),
        )
        .expect("open");
        let (release, held) = std::sync::mpsc::channel::<()>();
        let holder = {
            let gate = gate.clone();
            let (taken, is_taken) = std::sync::mpsc::channel();
            let t = std::thread::spawn(move || {
                let _g = gate.hold();
                taken.send(()).expect("taken");
                held.recv().ok();
            });
            is_taken.recv().expect("the gate is held");
            t
        };
        let queued = |r: &SqliteRecords| r.inner.writes.lock().expect("queue").len();
        let spawn = |i: usize| {
            let r = records.clone();
            let f = if i == 4 {
                fields(serde_json::json!({"Job ID": "bad", "Related Video": ["recNoSuchVideo000"]}))
            } else {
                fields(serde_json::json!({"Job ID": format!("job-{i}")}))
            };
            tokio::spawn(async move { r.write("Jobs", Write::Create, f).await })
        };
        // The first write takes its batch (itself) and waits for the gate, holding the
        // connection; the nine after it queue.
        let mut writes = vec![spawn(0)];
        for _ in 0..500 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            let connection_held = records.inner.conn.try_lock().is_err();
            if connection_held && queued(&records) == 0 {
                break;
            }
        }
        writes.extend((1..10).map(spawn));
        for _ in 0..500 {
            if queued(&records) == 9 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            queued(&records),
            9,
            "writes behind the held lock wait to go together"
        );
        release.send(()).expect("release");
        holder.join().expect("holder");
        let mut ok = 0;
        let mut refused = 0;
        for w in writes {
            match w.await.expect("task") {
                Ok(_) => ok += 1,
                Err(_) => refused += 1,
            }
        }
        assert_eq!((ok, refused), (9, 1));
        let all = records
            .find("Jobs", &Filter::CreatedSince(chrono::DateTime::UNIX_EPOCH))
            .await
            .expect("find");
        assert_eq!(all.len(), 9, "the refused create left no record behind");
    }

    #[test]
    fn busy_is_transient_and_the_rest_permanent() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(db("writing")(busy).is_transient());
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            None,
        );
        assert!(matches!(
            db("writing")(full),
            RecordsError::Permanent { status: 500, .. }
        ));
    }

    /// Virtual-machine steps SQLite takes to find one record by a text field among `n`
    /// records of the same table.
    fn find_steps(conn: &Connection) -> i32 {
        let mut st = conn.prepare(FIND_EQUALS).unwrap();
        let ids: Vec<String> = st
            .query_map(params!["Event ID", "ev-7", "Webhook Events"], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids.len(), 1);
        st.get_status(rusqlite::StatementStatus::VmStep)
    }

    fn add_events(conn: &Connection, from: usize, to: usize) {
        let tx = conn.unchecked_transaction().unwrap();
        for i in from..to {
            let id = format!("rec{i:014}");
            tx.execute(
                "INSERT INTO records (id, tbl, created_time) VALUES (?1, 'Webhook Events', '')",
                [&id],
            )
            .unwrap();
            for (field, text) in [
                ("Event ID", format!("ev-{i}")),
                (
                    "Raw Payload",
                    format!("{{\"n\": {i}, \"pad\": \"{}\"}}", "x".repeat(500)),
                ),
            ] {
                tx.execute(
                    "INSERT INTO records_cells (record_id, field, text) VALUES (?1, ?2, ?3)",
                    params![id, field, text],
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }

    /// Every Webhook Events upsert looks its Event ID up: the lookup must go through the
    /// (field, text) index, not walk the table's records, or each webhook costs more than
    /// the one before (the 30-minute soak fell behind that way).
    #[test]
    fn a_lookup_by_field_does_not_grow_with_the_table() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        add_events(&conn, 0, 100);
        let small = find_steps(&conn);
        add_events(&conn, 100, 10_000);
        let large = find_steps(&conn);
        assert!(
            large <= small * 2,
            "{small} steps among 100 records, {large} among 10,000"
        );
    }
}
