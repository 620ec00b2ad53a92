//! Writes inside one transaction: creates, updates and upserts, cell by cell, with
//! linked-record fields kept in step on both sides as Airtable keeps them.

use rusqlite::{Connection, TransactionBehavior, params};
use serde_json::Value;

use super::WriteJob;
use super::errors::{corrupt, db};
use super::rows::{find_equals, load_in, read_links, record_table};
use crate::records::embedded::rules::{self, Cell, Checked, FieldWrite, Link, Schema};
use crate::records::{Fields, Record, RecordsError, Write};
use crate::store::{Cached, WriteGate};

/// Applies `jobs` in one transaction, each in a savepoint of its own, and answers each
/// once the transaction is committed (or with the commit's error).
pub(super) fn write_batch(
    conn: &mut Connection,
    schema: &Schema,
    gate: &WriteGate,
    jobs: Vec<WriteJob>,
) {
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
