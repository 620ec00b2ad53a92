//! Reading records: each read one statement, so one snapshot.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use serde_json::Value;
use tokio_postgres::Row;

use super::error::{Error, corrupt, db, query};
use crate::domain::RecordId;
use crate::records::embedded::rules;
use crate::records::{Fields, Record};

/// The rows `load` and `load_equals` turn into records: one per cell, and one with no cell
/// for a record that has none, grouped by record in `seq` order.
const RECORD_COLUMNS: &str = "SELECT r.id, r.created_at, c.field, c.text, c.json
     FROM records r LEFT JOIN records_cells c ON c.record_id = r.id";

/// The records of `table` among `ids`, oldest first (an id of another table is simply not
/// there: ids are unique per base).
pub(super) async fn load(
    c: &impl GenericClient,
    table: &str,
    ids: &[&str],
) -> Result<Vec<Record>, Error> {
    let sql = format!("{RECORD_COLUMNS} WHERE r.id = ANY($1) AND r.tbl = $2 ORDER BY r.seq");
    let rows = query(c, "reading records", &sql, &[&ids, &table]).await?;
    records(&rows)
}

/// The records of `table` created at or after `since`, oldest first.
pub(super) async fn load_created_since(
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
pub(super) async fn load_equals(
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
pub(super) async fn find_equals(
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
