//! Reads: a record by id, its cells, and the two searches the engine makes (an exact
//! text match on one field, and records created since a time).

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::errors::{corrupt, db};
use crate::domain::RecordId;
use crate::records::embedded::rules;
use crate::records::{Fields, Record, RecordsError};

/// Which table a record belongs to, if it exists.
pub(super) fn record_table(conn: &Connection, id: &str) -> Result<Option<String>, RecordsError> {
    conn.prepare_cached("SELECT tbl FROM records WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(db("looking up a record"))
}

/// The record with this id if it belongs to `table` (ids are unique per base, so an id of
/// another table is simply not there).
pub(super) fn load_in(
    conn: &Connection,
    table: &str,
    id: &str,
) -> Result<Option<Record>, RecordsError> {
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
pub(super) const FIND_EQUALS: &str =
    "SELECT r.id FROM records_cells c CROSS JOIN records r ON r.id = c.record_id
     WHERE c.field = ?1 AND c.text = ?2 AND r.tbl = ?3
     ORDER BY r.rowid";

/// Ids of the records of `table` whose text `field` is exactly `value`, oldest first (the
/// order Airtable lists records in without a sort).
pub(super) fn find_equals(
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
pub(super) fn find_created_since(
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

/// The ids in a stored link cell.
pub(super) fn read_links(
    conn: &Connection,
    id: &str,
    field: &str,
) -> Result<Vec<String>, RecordsError> {
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
