//! Writing cells and links under the records' row locks: what a write will lock, the locks
//! taken in id order, and a link's other side kept in step.

use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::Transaction;
use serde_json::Value;

use super::error::{Error, db, execute, query};
use crate::records::embedded::rules::{self, Cell, FieldWrite, Link};

/// Every record a write links to.
pub(super) fn link_targets(writes: &[FieldWrite<'_>]) -> BTreeSet<String> {
    writes
        .iter()
        .filter_map(|w| match w {
            FieldWrite::Link { ids, .. } => Some(ids.iter().cloned()),
            FieldWrite::Cell { .. } => None,
        })
        .flatten()
        .collect()
}

/// The ids now in the link fields that `writes` rewrite.
pub(super) async fn current_links(
    tx: &Transaction<'_>,
    id: &str,
    writes: &[FieldWrite<'_>],
) -> Result<Vec<String>, Error> {
    let fields: Vec<&str> = writes
        .iter()
        .filter_map(|w| match w {
            FieldWrite::Link { link, .. } => Some(link.field.as_str()),
            FieldWrite::Cell { .. } => None,
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
pub(super) enum Wait {
    Yes,
    /// Fail at once (lock_not_available, a conflict) if another writer holds one.
    No,
}

/// Locks the existing records among `ids` for writing, in id order (so that two writers
/// wanting the same records queue instead of deadlocking), and says which table each is
/// in. `NO KEY UPDATE`: new cells of a locked record only need their foreign key's share
/// lock, which it does not block.
pub(super) async fn lock(
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
pub(super) async fn write_fields(
    tx: &Transaction<'_>,
    id: &str,
    writes: &[FieldWrite<'_>],
    locked: &mut HashMap<String, String>,
) -> Result<(), Error> {
    for write in writes {
        match write {
            FieldWrite::Cell { field, value } => write_cell(tx, id, field, value).await?,
            FieldWrite::Link { link, ids } => write_link(tx, link, id, ids, locked).await?,
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
    let changes = rules::link_changes(&old, new);
    let unlocked: BTreeSet<String> = changes
        .iter()
        .filter(|(t, linked)| !linked && !locked.contains_key(t.as_str()))
        .map(|(t, _)| (*t).clone())
        .collect();
    if !unlocked.is_empty() {
        // Links made after the guess in `update_in`. Waiting for them here, out of id
        // order, could deadlock; not waiting at worst runs the write again.
        locked.extend(lock(tx, &unlocked, Wait::No).await?);
    }
    for (target, linked) in changes {
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
