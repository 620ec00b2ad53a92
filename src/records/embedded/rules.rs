//! Airtable's rules for records, as the embedded backends (SQLite, PostgreSQL) apply them:
//! which tables and two-way links exist, which values are empty, what a link cell holds,
//! what an id looks like and which requests Airtable refuses. Pure functions only, so
//! that the backends differ in storage and locking and in nothing a caller can see.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::domain::RecordId;
use crate::records::{Fields, Mapping, RecordsError, Write, is_empty};

/// The tables and two-way links the mapping describes; nothing else exists.
pub(super) struct Schema {
    tables: [String; 3],
    links: Vec<Link>,
}

/// One side of a linked-record field: `table.field` holds ids of `target` records, and
/// (when the base has it) `target.inverse` holds the ids pointing back.
pub(super) struct Link {
    pub(crate) table: String,
    pub(crate) field: String,
    pub(crate) target: String,
    pub(crate) inverse: Option<String>,
}

impl Schema {
    pub(crate) fn from_mapping(m: &Mapping) -> Self {
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

    pub(crate) fn check_table(&self, table: &str) -> Result<(), RecordsError> {
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

    pub(crate) fn link(&self, table: &str, field: &str) -> Option<&Link> {
        self.links
            .iter()
            .find(|l| l.table == table && l.field == field)
    }

    /// What a write of `fields` to a record of `table` does, field by field, checked as
    /// far as it can be without the stored records: every link value is a list of ids.
    pub(crate) fn plan<'a>(
        &'a self,
        table: &str,
        fields: &'a Fields,
    ) -> Result<Vec<FieldWrite<'a>>, RecordsError> {
        let mut writes = Vec::with_capacity(fields.len());
        for (field, value) in fields {
            if field.is_empty() {
                return Err(unprocessable(
                    "UNKNOWN_FIELD_NAME",
                    "a field name cannot be empty".into(),
                ));
            }
            writes.push(match self.link(table, field) {
                Some(link) => FieldWrite::Link {
                    ids: link_ids(link, value)?,
                    link,
                },
                None => FieldWrite::Cell { field, value },
            });
        }
        Ok(writes)
    }
}

/// One field of a write: a plain cell, or a link field whose other side follows it.
pub(super) enum FieldWrite<'a> {
    Cell { field: &'a str, value: &'a Value },
    Link { link: &'a Link, ids: Vec<String> },
}

/// How a non-empty cell is kept: texts apart, so that `Filter::Equals` is an exact
/// comparison of strings with nothing to escape; anything else as JSON.
pub(super) enum Cell<'v> {
    Empty,
    Text(&'v str),
    Json(&'v Value),
}

pub(super) fn cell(value: &Value) -> Cell<'_> {
    match value {
        v if is_empty(v) => Cell::Empty,
        Value::String(s) => Cell::Text(s),
        other => Cell::Json(other),
    }
}

/// The ids a caller writes into a link field: an array of record ids (or an empty value),
/// each once, in the order given.
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
pub(super) fn stored_links(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

pub(super) fn ids_value(ids: &[String]) -> Value {
    Value::Array(ids.iter().map(|i| Value::String(i.clone())).collect())
}

/// A target's inverse cell after `id` was linked to it (`linked`) or unlinked from it.
pub(super) fn back_links(mut back: Vec<String>, id: &str, linked: bool) -> Vec<String> {
    if linked {
        if !back.iter().any(|b| b == id) {
            back.push(id.to_owned());
        }
    } else {
        back.retain(|b| b != id);
    }
    back
}

/// The records whose inverse cell a link write changes: those no longer linked (`false`:
/// they lose the id), then those newly linked (`true`: they gain it), each in cell order.
pub(super) fn link_changes<'a>(old: &'a [String], new: &'a [String]) -> Vec<(&'a String, bool)> {
    let removed = old.iter().filter(|t| !new.contains(t)).map(|t| (t, false));
    let added = new.iter().filter(|t| !old.contains(t)).map(|t| (t, true));
    removed.chain(added).collect()
}

/// Airtable's answer to a link naming a record that is not in the linked table.
pub(super) fn missing_link_target(link: &Link, target: &str) -> RecordsError {
    unprocessable(
        "ROW_DOES_NOT_EXIST",
        format!(
            "field {:?} links to {target}, which is not a record of {:?}",
            link.field, link.target
        ),
    )
}

/// The ids of a `Filter::RecordIds`, each once, in the order given.
pub(super) fn unique_ids(ids: &[RecordId]) -> Vec<String> {
    let mut unique: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        if !unique.iter().any(|u| u == id.as_str()) {
            unique.push(id.as_str().to_owned());
        }
    }
    unique
}

/// A write checked as far as it can be before the stored records are read: an upsert
/// knows its key.
pub(super) enum Checked<'a> {
    Create,
    Update(&'a RecordId),
    Upsert { merge_on: &'a str, key: String },
}

impl<'a> Checked<'a> {
    pub(crate) fn new(op: &'a Write, fields: &Fields) -> Result<Self, RecordsError> {
        Ok(match op {
            Write::Create => Checked::Create,
            Write::Update(id) => Checked::Update(id),
            Write::Upsert(merge_on) => Checked::Upsert {
                merge_on,
                key: merge_key(fields, merge_on)?,
            },
        })
    }
}

/// The record an upsert updates among those whose key field holds its key (`matches`):
/// none, and it creates one; the one; or, as Airtable, a refusal when several do.
pub(super) fn upsert_target<'m>(
    table: &str,
    merge_on: &str,
    key: &str,
    matches: &'m [String],
) -> Result<Option<&'m str>, RecordsError> {
    match matches {
        [] => Ok(None),
        [id] => Ok(Some(id)),
        _ => Err(ambiguous_upsert(table, merge_on, key, matches.len())),
    }
}

/// The value an upsert merges on: Airtable needs it, as non-empty text.
fn merge_key(fields: &Fields, merge_on: &str) -> Result<String, RecordsError> {
    match fields.get(merge_on) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(unprocessable(
            "INVALID_VALUE_FOR_COLUMN",
            format!("an upsert on {merge_on:?} needs a non-empty text value for it"),
        )),
    }
}

/// Airtable refuses an upsert that matches several records.
fn ambiguous_upsert(table: &str, merge_on: &str, key: &str, n: usize) -> RecordsError {
    unprocessable(
        "INVALID_RECORDS",
        format!(
            "{n} records of {table:?} have {merge_on:?} = {key:?}; an upsert needs at most one"
        ),
    )
}

/// How many fresh ids to draw before giving up: one collision in 62^14 is already
/// practically impossible, so running out means something else is wrong.
pub(super) const ID_ATTEMPTS: usize = 8;

/// A fresh Airtable-format id: `rec` and 14 random letters or digits.
pub(super) fn draw_id() -> String {
    const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let suffix: String = (0..14)
        .map(|_| char::from(ALPHANUMERIC[crate::clock::draw(61) as usize]))
        .collect();
    format!("rec{suffix}")
}

/// Airtable's `createdTime`: UTC, milliseconds, `Z`.
pub(super) fn created_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(super) fn unprocessable(kind: &str, message: String) -> RecordsError {
    RecordsError::Permanent {
        status: 422,
        kind: kind.into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drawn_ids_are_airtable_ids() {
        for _ in 0..100 {
            let id = draw_id();
            assert!(
                RecordId::parse(&id).is_ok(),
                "{id} must parse as a record id"
            );
            assert!(id.len() == 17 && id[3..].bytes().all(|c| c.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn links_are_arrays_of_ids_each_once() {
        let schema = Schema::from_mapping(&Mapping::default());
        let link = schema
            .link("Jobs", "Related Video")
            .expect("the default mapping links Jobs to Videos");
        let a = "recAAAAAAAAAAAAAA";
        let b = "recBBBBBBBBBBBBBB";
        assert_eq!(
            link_ids(link, &json!([a, b, a])).ok(),
            Some(vec![a.to_owned(), b.to_owned()])
        );
        assert_eq!(link_ids(link, &json!(null)).ok(), Some(Vec::new()));
        for bad in [json!(a), json!(["not an id"]), json!([1])] {
            assert!(
                matches!(
                    link_ids(link, &bad),
                    Err(RecordsError::Permanent { status: 422, .. })
                ),
                "{bad} is not a list of record ids"
            );
        }
        assert_eq!(stored_links(&json!("legacy text")), Vec::<String>::new());
    }

    #[test]
    fn link_changes_are_the_removed_then_the_added() {
        let ids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
        let (old, new) = (
            ids(&["recA", "recB", "recC"]),
            ids(&["recD", "recB", "recE"]),
        );
        let changes: Vec<(&str, bool)> = link_changes(&old, &new)
            .into_iter()
            .map(|(t, linked)| (t.as_str(), linked))
            .collect();
        assert_eq!(
            changes,
            [
                ("recA", false),
                ("recC", false),
                ("recD", true),
                ("recE", true)
            ]
        );
    }

    #[test]
    fn an_upsert_creates_updates_the_one_or_is_refused() {
        let one = vec!["recA".to_owned()];
        let two = vec!["recA".to_owned(), "recB".to_owned()];
        assert_eq!(upsert_target("Jobs", "Job ID", "x", &[]), Ok(None));
        assert_eq!(upsert_target("Jobs", "Job ID", "x", &one), Ok(Some("recA")));
        assert!(matches!(
            upsert_target("Jobs", "Job ID", "x", &two),
            Err(RecordsError::Permanent { status: 422, .. })
        ));
        let mut fields = Fields::new();
        fields.insert("Job ID".into(), json!(""));
        let upsert = Write::Upsert("Job ID".into());
        assert!(
            Checked::new(&upsert, &fields).is_err(),
            "an upsert needs its key as non-empty text"
        );
    }

    #[test]
    fn back_links_add_once_and_remove() {
        let back = back_links(vec!["recA".into()], "recB", true);
        let back = back_links(back, "recB", true);
        assert_eq!(back, ["recA", "recB"]);
        assert_eq!(back_links(back, "recA", false), ["recB"]);
    }
}
