//! The embedded system of record: [`RecordBackend`] on SQLite, with Airtable's semantics so
//! that the engine cannot tell the two apart (the contract suite in `tests/support` holds
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
use chrono::{SecondsFormat, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

use super::{Fields, Filter, Mapping, Record, RecordBackend, RecordsError};
use crate::domain::RecordId;

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
}

/// The tables and two-way links the mapping describes; nothing else exists.
struct Schema {
    tables: [String; 3],
    links: Vec<Link>,
}

/// One side of a linked-record field: `table.field` holds ids of `target` records, and
/// (when the base has it) `target.inverse` holds the ids pointing back.
struct Link {
    table: String,
    field: String,
    target: String,
    inverse: Option<String>,
}

impl Schema {
    fn from_mapping(m: &Mapping) -> Self {
        let videos = &m.videos.table;
        let jobs = &m.jobs.table;
        let events = &m.webhook_events.table;
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let jobs_link = non_empty(&m.videos.jobs_link);
        let mut links = vec![Link {
            table: jobs.clone(),
            field: m.jobs.related_video.clone(),
            target: videos.clone(),
            inverse: jobs_link.clone(),
        }];
        if let Some(jobs_link) = jobs_link {
            links.push(Link {
                table: videos.clone(),
                field: jobs_link,
                target: jobs.clone(),
                inverse: Some(m.jobs.related_video.clone()),
            });
        }
        if let Some(related_job) = non_empty(&m.webhook_events.related_job) {
            // The mapping has no name for the Jobs side; Airtable names an inverse link
            // field after the table it links from, so "Webhook Events".
            links.push(Link {
                table: events.clone(),
                field: related_job.clone(),
                target: jobs.clone(),
                inverse: Some(events.clone()),
            });
            links.push(Link {
                table: jobs.clone(),
                field: events.clone(),
                target: events.clone(),
                inverse: Some(related_job),
            });
        }
        Self {
            tables: [videos.clone(), jobs.clone(), events.clone()],
            links,
        }
    }

    fn check_table(&self, table: &str) -> Result<(), RecordsError> {
        if self.tables.iter().any(|t| t == table) {
            Ok(())
        } else {
            // What Airtable answers for a table the base does not have.
            Err(RecordsError::Permanent {
                status: 403,
                kind: "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND".into(),
                message: format!("table {table:?} does not exist in this base"),
            })
        }
    }

    fn link(&self, table: &str, field: &str) -> Option<&Link> {
        self.links
            .iter()
            .find(|l| l.table == table && l.field == field)
    }
}

impl SqliteRecords {
    /// Opens (creating if needed) the records in the database file at `path`.
    pub fn open(path: &Path, mapping: &Mapping) -> Result<Self, RecordsError> {
        let conn = Connection::open(path).map_err(db(&format!(
            "opening the records database {}",
            path.display()
        )))?;
        Self::init(conn, mapping)
    }

    /// A private database that lives as long as this value (and its clones).
    pub fn open_in_memory(mapping: &Mapping) -> Result<Self, RecordsError> {
        let conn =
            Connection::open_in_memory().map_err(db("opening an in-memory records database"))?;
        Self::init(conn, mapping)
    }

    fn init(conn: Connection, mapping: &Mapping) -> Result<Self, RecordsError> {
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
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db("enabling foreign keys"))?;
        conn.execute_batch(SCHEMA)
            .map_err(db("creating the records tables"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                schema: Schema::from_mapping(mapping),
            }),
        })
    }

    /// Runs `work` on a blocking thread with the connection, so that SQLite (and waiting
    /// for the lock) never stalls the async runtime.
    async fn run<T, F>(&self, work: F) -> Result<T, RecordsError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Schema) -> Result<T, RecordsError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave a half-applied write: the open
            // transaction rolls back when it is dropped during unwinding.
            let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut conn, &inner.schema)
        })
        .await
        .map_err(|e| RecordsError::Permanent {
            status: 500,
            kind: "SQLITE_TASK_FAILED".into(),
            message: format!("the records task did not complete: {e}"),
        })?
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
                Filter::RecordIds(ids) => {
                    let mut unique: Vec<String> = Vec::with_capacity(ids.len());
                    for id in ids {
                        if !unique.iter().any(|u| u == id.as_str()) {
                            unique.push(id.as_str().to_owned());
                        }
                    }
                    unique
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

    async fn create(&self, table: &str, fields: Fields) -> Result<Record, RecordsError> {
        let table = table.to_owned();
        self.run(move |conn, schema| {
            schema.check_table(&table)?;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db("starting a write"))?;
            let record = create_in(&tx, schema, &table, fields)?;
            tx.commit().map_err(db("committing a create"))?;
            Ok(record)
        })
        .await
    }

    async fn update(
        &self,
        table: &str,
        id: &RecordId,
        fields: Fields,
    ) -> Result<Record, RecordsError> {
        let table = table.to_owned();
        let id = id.clone();
        self.run(move |conn, schema| {
            schema.check_table(&table)?;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db("starting a write"))?;
            let record = update_in(&tx, schema, &table, id.as_str(), fields)?;
            tx.commit().map_err(db("committing an update"))?;
            Ok(record)
        })
        .await
    }

    async fn upsert(
        &self,
        table: &str,
        merge_on: &str,
        fields: Fields,
    ) -> Result<Record, RecordsError> {
        let table = table.to_owned();
        let merge_on = merge_on.to_owned();
        self.run(move |conn, schema| {
            schema.check_table(&table)?;
            let key = match fields.get(&merge_on) {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => {
                    return Err(unprocessable(
                        "INVALID_VALUE_FOR_COLUMN",
                        format!("an upsert on {merge_on:?} needs a non-empty text value for it"),
                    ));
                }
            };
            // IMMEDIATE takes the write lock before the lookup, so no other connection can
            // create the same key between our lookup and our insert.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db("starting an upsert"))?;
            let matches = find_equals(&tx, &table, &merge_on, &key)?;
            let record = match matches.as_slice() {
                [] => create_in(&tx, schema, &table, fields)?,
                [id] => update_in(&tx, schema, &table, id, fields)?,
                _ => {
                    // Airtable refuses an upsert that matches several records.
                    return Err(unprocessable(
                        "INVALID_RECORDS",
                        format!(
                            "{} records of {table:?} have {merge_on:?} = {key:?}; an upsert needs at most one",
                            matches.len()
                        ),
                    ));
                }
            };
            tx.commit().map_err(db("committing an upsert"))?;
            Ok(record)
        })
        .await
    }
}

fn create_in(
    conn: &Connection,
    schema: &Schema,
    table: &str,
    fields: Fields,
) -> Result<Record, RecordsError> {
    let id = new_id(conn)?;
    let created_time = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    conn.execute(
        "INSERT INTO records (id, tbl, created_time) VALUES (?1, ?2, ?3)",
        params![id, table, created_time],
    )
    .map_err(db("inserting a record"))?;
    apply_fields(conn, schema, table, &id, fields)?;
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
    apply_fields(conn, schema, table, id, fields)?;
    load_in(conn, table, id)?.ok_or_else(|| corrupt(format!("record {id} vanished after update")))
}

/// A fresh Airtable-format id: `rec` and 14 random letters or digits.
fn new_id(conn: &Connection) -> Result<String, RecordsError> {
    // 62^14 ids make a collision practically impossible, but checking costs one lookup.
    for _ in 0..8 {
        let suffix: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(14)
            .map(char::from)
            .collect();
        let id = format!("rec{suffix}");
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

/// Writes each named field; the others stay as they are.
fn apply_fields(
    conn: &Connection,
    schema: &Schema,
    table: &str,
    id: &str,
    fields: Fields,
) -> Result<(), RecordsError> {
    for (field, value) in fields {
        if field.is_empty() {
            return Err(unprocessable(
                "UNKNOWN_FIELD_NAME",
                "a field name cannot be empty".into(),
            ));
        }
        match schema.link(table, &field) {
            Some(link) => write_link(conn, link, id, &value)?,
            None => write_cell(conn, id, &field, &value)?,
        }
    }
    Ok(())
}

/// Airtable omits these, so storing them would only make them come back.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn write_cell(conn: &Connection, id: &str, field: &str, value: &Value) -> Result<(), RecordsError> {
    if is_empty(value) {
        conn.prepare_cached("DELETE FROM records_cells WHERE record_id = ?1 AND field = ?2")
            .and_then(|mut s| s.execute(params![id, field]))
            .map_err(db("clearing a field"))?;
        return Ok(());
    }
    let (text, json) = match value {
        Value::String(s) => (Some(s.clone()), None),
        other => (None, Some(other.to_string())),
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
fn write_link(conn: &Connection, link: &Link, id: &str, value: &Value) -> Result<(), RecordsError> {
    let new = link_ids(link, value)?;
    for target in &new {
        if record_table(conn, target)?.as_deref() != Some(link.target.as_str()) {
            return Err(unprocessable(
                "ROW_DOES_NOT_EXIST",
                format!(
                    "field {:?} links to {target}, which is not a record of {:?}",
                    link.field, link.target
                ),
            ));
        }
    }
    let old = read_links(conn, id, &link.field)?;
    write_cell(conn, id, &link.field, &ids_value(&new))?;
    if let Some(inverse) = &link.inverse {
        for target in old.iter().filter(|t| !new.contains(t)) {
            let mut back = read_links(conn, target, inverse)?;
            back.retain(|b| b != id);
            write_cell(conn, target, inverse, &ids_value(&back))?;
        }
        for target in new.iter().filter(|t| !old.contains(t)) {
            let mut back = read_links(conn, target, inverse)?;
            if !back.iter().any(|b| b == id) {
                back.push(id.to_owned());
            }
            write_cell(conn, target, inverse, &ids_value(&back))?;
        }
    }
    Ok(())
}

/// The ids a caller writes into a link field: an array of record ids (or an empty value).
fn link_ids(link: &Link, value: &Value) -> Result<Vec<String>, RecordsError> {
    let invalid = || {
        unprocessable(
            "INVALID_VALUE_FOR_COLUMN",
            format!(
                "field {:?} is a link to {:?} and takes an array of record ids",
                link.field, link.target
            ),
        )
    };
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err(invalid()),
    };
    let mut ids: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let id = item
            .as_str()
            .and_then(|s| RecordId::parse(s).ok())
            .ok_or_else(invalid)?;
        if !ids.iter().any(|i| i == id.as_str()) {
            ids.push(id.as_str().to_owned());
        }
    }
    Ok(ids)
}

/// The ids in a stored link cell. A cell that is not a list of ids (written before the
/// mapping made it a link) counts as no links, so the next write repairs it.
fn read_links(conn: &Connection, id: &str, field: &str) -> Result<Vec<String>, RecordsError> {
    let json: Option<Option<String>> = conn
        .prepare_cached("SELECT json FROM records_cells WHERE record_id = ?1 AND field = ?2")
        .and_then(|mut s| s.query_row(params![id, field], |r| r.get(0)).optional())
        .map_err(db("reading a link field"))?;
    let Some(Some(json)) = json else {
        return Ok(Vec::new());
    };
    Ok(match serde_json::from_str::<Value>(&json) {
        Ok(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    })
}

fn ids_value(ids: &[String]) -> Value {
    Value::Array(ids.iter().map(|i| Value::String(i.clone())).collect())
}

fn unprocessable(kind: &str, message: String) -> RecordsError {
    RecordsError::Permanent {
        status: 422,
        kind: kind.into(),
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
    use serde_json::json;

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

    #[test]
    fn empties_are_what_airtable_omits() {
        for v in [json!(null), json!(""), json!([]), json!(false)] {
            assert!(is_empty(&v), "{v} should be omitted");
        }
        for v in [json!(" "), json!([""]), json!(true), json!(0), json!({})] {
            assert!(!is_empty(&v), "{v} should be kept");
        }
    }
}
