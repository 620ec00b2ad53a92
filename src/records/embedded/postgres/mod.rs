//! The records on PostgreSQL: [`RecordBackend`] with the embedded SQLite backend's
//! semantics (the contract suite in `tests/it/support` holds both to the same checks), for a
//! service that runs on PostgreSQL without Airtable, with several replicas writing at once.
//!
//! The tables come from migration 2 (`pg/migrations/0002_records.sql`), SQLite's layout:
//! one row per record, one per non-empty cell. The rules themselves (tables, links,
//! empties, ids, refusals) are `records::rules`, shared with SQLite.
//!
//! SQLite makes every call atomic by serialising all writes; here replicas write side by
//! side under READ COMMITTED, and a write locks what it touches:
//! - A record's cells change only while its row in `records` is locked, and a link write
//!   locks the records on the other side too, so that two writers cannot lose each other's
//!   ids from an inverse link field. A write waits for locks only once, in one statement
//!   that takes them in id order, so writers queue instead of deadlocking. A record whose
//!   old links changed between the guess and the lock needs one more lock, which is
//!   taken without waiting; when it is held elsewhere the whole write is run again.
//! - An upsert holds a transaction-scoped advisory lock on its (table, field, value) from
//!   its lookup to its commit, so concurrent upserts of one key make one record. A unique
//!   constraint cannot say this: Airtable lets plain creates repeat a value (and then
//!   refuses an upsert that matches both), and so must we. Like Airtable's, a plain create
//!   racing an upsert of the same value can make a second record; the engine writes keyed
//!   records (jobs, webhook events) only by upsert.
//! - A read is one statement, so it sees one snapshot.
//!
//! One difference PostgreSQL imposes: a text cannot hold a NUL character, so a value with
//! one is refused (permanently) where SQLite would store it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool, PoolError, Transaction};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row};

use super::rules::{self, Cell, Link, Schema, Write};
use crate::records::{Fields, Filter, Mapping, Record, RecordBackend, RecordsError};
use crate::domain::RecordId;

/// How often a write that lost to a concurrent one is tried in all. Losing again needs
/// another link change in the moment between a retry's guess and its lock.
const WRITE_ATTEMPTS: usize = 8;

/// The PostgreSQL store of records. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgRecords {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    schema: Schema,
}

/// One write, as asked for; kept so that a write that lost to another can run again whole.
enum Op<'a> {
    Create,
    Update(&'a RecordId),
    Upsert { merge_on: &'a str, key: String },
}

impl PgRecords {
    /// The records in the pool's database (in its `search_path` schema), laid out as
    /// `mapping` says. This connects to nothing and creates no table: the caller runs
    /// [`crate::pg::migrate`] on the pool first (migration 2 makes the records' tables);
    /// until then every call fails with a permanent error that says so.
    pub fn new(pool: Pool, mapping: &Mapping) -> Result<Self, RecordsError> {
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                schema: Schema::from_mapping(mapping),
            }),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, Error> {
        Ok(self.inner.pool.get().await?)
    }

    async fn write(&self, table: &str, op: Op<'_>, fields: Fields) -> Result<Record, RecordsError> {
        self.inner.schema.check_table(table)?;
        let mut attempt = 1;
        loop {
            match self.write_once(table, &op, &fields).await {
                Err(e) if e.is_conflict() && attempt < WRITE_ATTEMPTS => {
                    tracing::debug!(table, attempt, error = %e, "records write retried");
                    attempt += 1;
                }
                result => return result.map_err(RecordsError::from),
            }
        }
    }

    async fn write_once(&self, table: &str, op: &Op<'_>, fields: &Fields) -> Result<Record, Error> {
        let mut client = self.client().await?;
        // Said explicitly, whatever the server's default: an upsert's lookup must see what
        // was committed while it waited for its key's lock, so each statement needs a
        // snapshot of its own.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(db("starting a write"))?;
        match write_in(&tx, &self.inner.schema, table, op, fields).await {
            Ok(record) => {
                tx.commit().await.map_err(db("committing a write"))?;
                Ok(record)
            }
            Err(e) => {
                // Rolled back here rather than by dropping the transaction, which only
                // queues the rollback: its locks would stay held until the connection is
                // next polled. A rollback that fails leaves the first error the one to
                // report; the server ends the transaction with the broken connection.
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rolling back a failed records write");
                }
                Err(e)
            }
        }
    }
}

async fn write_in(
    tx: &Transaction<'_>,
    schema: &Schema,
    table: &str,
    op: &Op<'_>,
    fields: &Fields,
) -> Result<Record, Error> {
    match op {
        Op::Create => create_in(tx, schema, table, fields).await,
        Op::Update(id) => update_in(tx, schema, table, id.as_str(), fields).await,
        Op::Upsert { merge_on, key } => {
            execute(
                tx,
                "locking an upsert's key",
                "SELECT pg_advisory_xact_lock($1)",
                &[&upsert_lock(table, merge_on, key)],
            )
            .await?;
            // READ COMMITTED: this lookup sees whatever the previous holder of the lock
            // committed.
            let matches = find_equals(tx, table, merge_on, key).await?;
            match matches.as_slice() {
                [] => create_in(tx, schema, table, fields).await,
                [id] => update_in(tx, schema, table, id, fields).await,
                _ => Err(rules::ambiguous_upsert(table, merge_on, key, matches.len()).into()),
            }
        }
    }
}

#[async_trait]
impl RecordBackend for PgRecords {
    async fn get(&self, table: &str, id: &RecordId) -> Result<Option<Record>, RecordsError> {
        self.inner.schema.check_table(table)?;
        let client = self.client().await?;
        Ok(load(&client, table, &[id.as_str()]).await?.pop())
    }

    async fn find(&self, table: &str, filter: &Filter) -> Result<Vec<Record>, RecordsError> {
        self.inner.schema.check_table(table)?;
        let client = self.client().await?;
        match filter {
            Filter::Equals { field, value } => Ok(load_equals(&client, table, field, value).await?),
            Filter::CreatedSince(since) => Ok(load_created_since(&client, table, since).await?),
            Filter::RecordIds(ids) => {
                let ids = rules::unique_ids(ids);
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                // `load` skips unknown ids and other tables' ids, like RECORD_ID().
                let mut found = load(&client, table, &refs).await?;
                // In the order asked for, as the SQLite backend answers.
                let position: HashMap<&str, usize> =
                    refs.iter().enumerate().map(|(i, id)| (*id, i)).collect();
                found.sort_by_key(|r| position.get(r.id.as_str()).copied());
                Ok(found)
            }
        }
    }

    async fn create(&self, table: &str, fields: Fields) -> Result<Record, RecordsError> {
        self.write(table, Op::Create, fields).await
    }

    async fn update(
        &self,
        table: &str,
        id: &RecordId,
        fields: Fields,
    ) -> Result<Record, RecordsError> {
        self.write(table, Op::Update(id), fields).await
    }

    async fn upsert(
        &self,
        table: &str,
        merge_on: &str,
        fields: Fields,
    ) -> Result<Record, RecordsError> {
        self.inner.schema.check_table(table)?;
        let key = rules::merge_key(&fields, merge_on)?;
        self.write(table, Op::Upsert { merge_on, key }, fields)
            .await
    }
}

async fn create_in(
    tx: &Transaction<'_>,
    schema: &Schema,
    table: &str,
    fields: &Fields,
) -> Result<Record, Error> {
    let writes = schema.plan(table, fields)?;
    let mut locked = lock(tx, &link_targets(&writes), Wait::Yes).await?;
    let id = insert_record(tx, table).await?;
    write_fields(tx, &id, &writes, &mut locked).await?;
    load(tx, table, &[id.as_str()])
        .await?
        .pop()
        .ok_or_else(|| corrupt(format!("record {id} vanished after insert")).into())
}

async fn update_in(
    tx: &Transaction<'_>,
    schema: &Schema,
    table: &str,
    id: &str,
    fields: &Fields,
) -> Result<Record, Error> {
    // Planned before the lock, to lock everything in one ordered statement; its error
    // waits until the record is known to exist, as a NotFound comes first on SQLite.
    let planned = schema.plan(table, fields);
    let mut wanted = BTreeSet::from([id.to_owned()]);
    if let Ok(writes) = &planned {
        wanted.extend(link_targets(writes));
        // A guess, read unlocked: the links this write will undo. `write_link` deals
        // with any that changed before the lock was held.
        wanted.extend(current_links(tx, id, writes).await?);
    }
    let mut locked = lock(tx, &wanted, Wait::Yes).await?;
    if locked.get(id).map(String::as_str) != Some(table) {
        return Err(RecordsError::NotFound(id.to_owned(), table.to_owned()).into());
    }
    let writes = planned?;
    write_fields(tx, id, &writes, &mut locked).await?;
    load(tx, table, &[id])
        .await?
        .pop()
        .ok_or_else(|| corrupt(format!("record {id} vanished after update")).into())
}

/// Inserts an empty record of `table` under a fresh id.
async fn insert_record(tx: &Transaction<'_>, table: &str) -> Result<String, Error> {
    for _ in 0..rules::ID_ATTEMPTS {
        let id = rules::draw_id();
        let inserted = execute(
            tx,
            "inserting a record",
            "INSERT INTO records (id, tbl) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            &[&id, &table],
        )
        .await?;
        if inserted == 1 {
            return Ok(id);
        }
    }
    Err(corrupt("could not draw an unused record id".into()).into())
}

/// Every record a write links to.
fn link_targets(writes: &[Write<'_>]) -> BTreeSet<String> {
    writes
        .iter()
        .filter_map(|w| match w {
            Write::Link { ids, .. } => Some(ids.iter().cloned()),
            Write::Cell { .. } => None,
        })
        .flatten()
        .collect()
}

/// The ids now in the link fields that `writes` rewrite.
async fn current_links(
    tx: &Transaction<'_>,
    id: &str,
    writes: &[Write<'_>],
) -> Result<Vec<String>, Error> {
    let fields: Vec<&str> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Link { link, .. } => Some(link.field.as_str()),
            Write::Cell { .. } => None,
        })
        .collect();
    if fields.is_empty() {
        return Ok(Vec::new());
    }
    let rows = query(
        tx,
        "reading link fields",
        "SELECT json FROM records_cells
         WHERE record_id = $1 AND field = ANY($2) AND json IS NOT NULL",
        &[&id, &fields],
    )
    .await?;
    let mut ids = Vec::new();
    for row in rows {
        let json: Value = row.try_get(0).map_err(db("reading link fields"))?;
        ids.extend(rules::stored_links(&json));
    }
    Ok(ids)
}

#[derive(Clone, Copy)]
enum Wait {
    Yes,
    /// Fail at once (lock_not_available, a conflict) if another writer holds one.
    No,
}

/// Locks the existing records among `ids` for writing, in id order (so that two writers
/// wanting the same records queue instead of deadlocking), and says which table each is
/// in. `NO KEY UPDATE`: new cells of a locked record only need their foreign key's share
/// lock, which it does not block.
async fn lock(
    tx: &Transaction<'_>,
    ids: &BTreeSet<String>,
    wait: Wait,
) -> Result<HashMap<String, String>, Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let sql = match wait {
        Wait::Yes => "SELECT id, tbl FROM records WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
        Wait::No => {
            "SELECT id, tbl FROM records WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE NOWAIT"
        }
    };
    let rows = query(tx, "locking records", sql, &[&ids]).await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(db("locking records"))
}

/// Writes each named field; the others stay as they are.
async fn write_fields(
    tx: &Transaction<'_>,
    id: &str,
    writes: &[Write<'_>],
    locked: &mut HashMap<String, String>,
) -> Result<(), Error> {
    for write in writes {
        match write {
            Write::Cell { field, value } => write_cell(tx, id, field, value).await?,
            Write::Link { link, ids } => write_link(tx, link, id, ids, locked).await?,
        }
    }
    Ok(())
}

async fn write_cell(
    tx: &Transaction<'_>,
    id: &str,
    field: &str,
    value: &Value,
) -> Result<(), Error> {
    let (text, json): (Option<&str>, Option<&Value>) = match rules::cell(value) {
        Cell::Empty => {
            execute(
                tx,
                "clearing a field",
                "DELETE FROM records_cells WHERE record_id = $1 AND field = $2",
                &[&id, &field],
            )
            .await?;
            return Ok(());
        }
        Cell::Text(s) => (Some(s), None),
        Cell::Json(v) => (None, Some(v)),
    };
    execute(
        tx,
        "writing a field",
        "INSERT INTO records_cells (record_id, field, text, json) VALUES ($1, $2, $3, $4)
         ON CONFLICT (record_id, field) DO UPDATE SET text = excluded.text, json = excluded.json",
        &[&id, &field, &text, &json],
    )
    .await?;
    Ok(())
}

/// Writes a linked-record field and keeps the other side in step, as Airtable does:
/// records no longer linked lose this id from their inverse field, new ones gain it.
async fn write_link(
    tx: &Transaction<'_>,
    link: &Link,
    id: &str,
    new: &[String],
    locked: &mut HashMap<String, String>,
) -> Result<(), Error> {
    for target in new {
        if locked.get(target) != Some(&link.target) {
            return Err(rules::missing_link_target(link, target).into());
        }
    }
    // Settled: `id` is locked (or not committed yet), and every writer of its cells,
    // inverse writes included, locks it first.
    let old = read_links(tx, id, &link.field).await?;
    write_cell(tx, id, &link.field, &rules::ids_value(new)).await?;
    let Some(inverse) = &link.inverse else {
        return Ok(());
    };
    let removed: Vec<&String> = old.iter().filter(|t| !new.contains(t)).collect();
    let unlocked: BTreeSet<String> = removed
        .iter()
        .filter(|t| !locked.contains_key(t.as_str()))
        .map(|t| (*t).clone())
        .collect();
    if !unlocked.is_empty() {
        // Links made after the guess in `update_in`. Waiting for them here, out of id
        // order, could deadlock; not waiting at worst runs the write again.
        locked.extend(lock(tx, &unlocked, Wait::No).await?);
    }
    let added = new.iter().filter(|t| !old.contains(t));
    for (target, linked) in removed
        .into_iter()
        .map(|t| (t, false))
        .chain(added.map(|t| (t, true)))
    {
        let back = rules::back_links(read_links(tx, target, inverse).await?, id, linked);
        write_cell(tx, target, inverse, &rules::ids_value(&back)).await?;
    }
    Ok(())
}

/// The ids in a stored link cell.
async fn read_links(tx: &Transaction<'_>, id: &str, field: &str) -> Result<Vec<String>, Error> {
    let rows = query(
        tx,
        "reading a link field",
        "SELECT json FROM records_cells WHERE record_id = $1 AND field = $2",
        &[&id, &field],
    )
    .await?;
    let Some(row) = rows.first() else {
        return Ok(Vec::new());
    };
    let json: Option<Value> = row.try_get(0).map_err(db("reading a link field"))?;
    Ok(json.map(|j| rules::stored_links(&j)).unwrap_or_default())
}

/// The rows `load` and `load_equals` turn into records: one per cell, and one with no cell
/// for a record that has none, grouped by record in `seq` order.
const RECORD_COLUMNS: &str = "SELECT r.id, r.created_at, c.field, c.text, c.json
     FROM records r LEFT JOIN records_cells c ON c.record_id = r.id";

/// The records of `table` among `ids`, oldest first (an id of another table is simply not
/// there: ids are unique per base).
async fn load(c: &impl GenericClient, table: &str, ids: &[&str]) -> Result<Vec<Record>, Error> {
    let sql = format!("{RECORD_COLUMNS} WHERE r.id = ANY($1) AND r.tbl = $2 ORDER BY r.seq");
    let rows = query(c, "reading records", &sql, &[&ids, &table]).await?;
    records(&rows)
}

/// The records of `table` created at or after `since`, oldest first.
async fn load_created_since(
    c: &impl GenericClient,
    table: &str,
    since: &DateTime<Utc>,
) -> Result<Vec<Record>, Error> {
    let sql = format!("{RECORD_COLUMNS} WHERE r.tbl = $1 AND r.created_at >= $2 ORDER BY r.seq");
    let rows = query(c, "reading records", &sql, &[&table, since]).await?;
    records(&rows)
}

/// The records of `table` whose text `field` is exactly `value`, oldest first (the order
/// Airtable lists records in without a sort). One statement: one snapshot.
async fn load_equals(
    c: &impl GenericClient,
    table: &str,
    field: &str,
    value: &str,
) -> Result<Vec<Record>, Error> {
    let sql = format!(
        "{RECORD_COLUMNS} WHERE r.tbl = $3 AND r.id IN ({EQUALS}) ORDER BY r.seq",
        EQUALS = "SELECT m.record_id FROM records_cells m WHERE m.field = $1
                  AND m.text IS NOT NULL
                  AND hashtextextended(m.text, 0) = hashtextextended($2, 0) AND m.text = $2"
    );
    let rows = query(c, "searching records", &sql, &[&field, &value, &table]).await?;
    records(&rows)
}

/// Ids only, for an upsert's lookup.
async fn find_equals(
    tx: &Transaction<'_>,
    table: &str,
    field: &str,
    value: &str,
) -> Result<Vec<String>, Error> {
    let rows = query(
        tx,
        "searching records",
        "SELECT r.id FROM records_cells c JOIN records r ON r.id = c.record_id
         WHERE c.field = $1 AND c.text IS NOT NULL
           AND hashtextextended(c.text, 0) = hashtextextended($2, 0) AND c.text = $2
           AND r.tbl = $3
         ORDER BY r.seq",
        &[&field, &value, &table],
    )
    .await?;
    rows.iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(db("searching records"))
}

fn records(rows: &[Row]) -> Result<Vec<Record>, Error> {
    let mut out: Vec<Record> = Vec::new();
    for row in rows {
        let id: &str = row.try_get(0).map_err(db("reading a record"))?;
        if out.last().is_none_or(|r| r.id.as_str() != id) {
            let created_at: DateTime<Utc> = row.try_get(1).map_err(db("reading a record"))?;
            out.push(Record {
                id: RecordId::parse(id).map_err(|_| {
                    corrupt(format!("stored record id {id:?} is not an Airtable id"))
                })?,
                created_time: rules::created_time(created_at),
                fields: Fields::new(),
            });
        }
        let field: Option<String> = row.try_get(2).map_err(db("reading a field"))?;
        let Some(field) = field else {
            continue;
        };
        let text: Option<String> = row.try_get(3).map_err(db("reading a field"))?;
        let json: Option<Value> = row.try_get(4).map_err(db("reading a field"))?;
        let value = match (text, json) {
            (Some(text), _) => Value::String(text),
            (None, Some(json)) => json,
            (None, None) => return Err(corrupt(format!("field {field:?} of {id} is empty")).into()),
        };
        if let Some(record) = out.last_mut() {
            record.fields.insert(field, value);
        }
    }
    Ok(out)
}

/// The advisory lock an upsert of `key` holds: a hash of the three parts, each prefixed by
/// its length so that no two triples run together into the same bytes. Two keys that
/// share a hash (or another schema's upsert of the same key) only wait for each other.
fn upsert_lock(table: &str, field: &str, key: &str) -> i64 {
    let mut hash = Sha256::new();
    hash.update(b"reelstate records upsert");
    for part in [table, field, key] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

async fn query(
    c: &impl GenericClient,
    what: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, Error> {
    let statement = c.prepare_cached(sql).await.map_err(db(what))?;
    c.query(&statement, params).await.map_err(db(what))
}

async fn execute(
    c: &impl GenericClient,
    what: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, Error> {
    let statement = c.prepare_cached(sql).await.map_err(db(what))?;
    c.execute(&statement, params).await.map_err(db(what))
}

/// What can go wrong inside this module; [`RecordsError`] is what leaves it.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Records(#[from] RecordsError),
    #[error("records database error while {what}: {}", describe(.source))]
    Db {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("records connection pool: {}", describe_pool(.0))]
    Pool(#[from] PoolError),
}

fn db(what: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |source| Error::Db { what, source }
}

impl Error {
    /// Lost to a concurrent write; running the whole write again will do. Deadlocks
    /// should not happen (see the module's notes), but if one does, this is its remedy.
    fn is_conflict(&self) -> bool {
        let Error::Db { source, .. } = self else {
            return false;
        };
        source.code().is_some_and(|c| {
            *c == SqlState::LOCK_NOT_AVAILABLE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
        })
    }
}

impl From<Error> for RecordsError {
    fn from(e: Error) -> Self {
        let transient = match &e {
            Error::Records(_) => false,
            Error::Db { source, .. } => match source.code() {
                Some(code) => is_transient_state(code),
                // No SQLSTATE: the connection broke (closed, IO), or a value did not
                // convert, which the fixed schema rules out unless something is broken.
                None => source.is_closed() || has_io_source(source),
            },
            Error::Pool(PoolError::Backend(source)) => {
                // Connecting failed: refused, timed out, or the server said why.
                source.code().is_none_or(is_transient_state)
            }
            Error::Pool(PoolError::Timeout(_) | PoolError::Closed) => true,
            Error::Pool(PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_)) => false,
        };
        match e {
            Error::Records(e) => e,
            e if transient => RecordsError::Transient(e.to_string()),
            e => {
                let missing_tables = matches!(
                    &e,
                    Error::Db { source, .. } if source.code() == Some(&SqlState::UNDEFINED_TABLE)
                );
                let hint = if missing_tables {
                    " (are the migrations applied? crate::pg::migrate)"
                } else {
                    ""
                };
                RecordsError::Permanent {
                    status: 500,
                    kind: "POSTGRES_ERROR".into(),
                    message: format!("{e}{hint}"),
                }
            }
        }
    }
}

/// SQLSTATEs that say "later": the connection or server (08, 57P0x: shutting down or
/// starting), resources (53: too many connections, disk full), lost conflicts (40), and
/// timeouts (57014 statement timeout, 55P03 lock timeout). The rest are constraint,
/// data or schema errors, which the same write will meet again.
fn is_transient_state(code: &SqlState) -> bool {
    let c = code.code();
    c.starts_with("08")
        || c.starts_with("40")
        || c.starts_with("53")
        || c.starts_with("57P0")
        || *code == SqlState::QUERY_CANCELED
        || *code == SqlState::LOCK_NOT_AVAILABLE
}

fn has_io_source(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// tokio-postgres prints a server error as just "db error"; the server's message and
/// SQLSTATE are what say what happened.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{db} (SQLSTATE {})", db.code().code()),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

fn describe_pool(e: &PoolError) -> String {
    match e {
        PoolError::Backend(source) => format!("connecting: {}", describe(source)),
        other => other.to_string(),
    }
}

fn corrupt(message: String) -> RecordsError {
    RecordsError::Permanent {
        status: 500,
        kind: "POSTGRES_CORRUPT_RECORD".into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_locks_tell_the_parts_apart() {
        let a = upsert_lock("Jobs", "Job ID", "x");
        assert_eq!(a, upsert_lock("Jobs", "Job ID", "x"));
        assert_ne!(a, upsert_lock("Jobs", "Job IDx", ""));
        assert_ne!(a, upsert_lock("Webhook Events", "Job ID", "x"));
    }

    #[test]
    fn lost_conflicts_and_outages_are_transient_the_rest_permanent() {
        for code in [
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::CONNECTION_FAILURE,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::QUERY_CANCELED,
        ] {
            assert!(is_transient_state(&code), "{code:?} is worth a retry");
        }
        for code in [
            SqlState::UNIQUE_VIOLATION,
            SqlState::FOREIGN_KEY_VIOLATION,
            SqlState::CHECK_VIOLATION,
            SqlState::CHARACTER_NOT_IN_REPERTOIRE,
            SqlState::UNDEFINED_TABLE,
            SqlState::INVALID_PASSWORD,
        ] {
            assert!(!is_transient_state(&code), "{code:?} will fail again");
        }
    }
}
