//! Creating a record exactly once on a base with no writable key field.
//!
//! Where the mapping names a writable `Job ID` / `Event ID`, a write is an upsert on it and
//! repeating it is harmless. Real bases often have neither (a formula Job ID, an autonumber
//! Event ID), and Airtable has no idempotency key for a create, so a create that was sent
//! and whose answer was lost (kill -9, a timeout, a proxy's 504 after Airtable applied it)
//! must not simply be sent again. The rule (ARCHITECTURE.md, "Creating a record without a
//! key"):
//!
//! 1. Before the first create request, the store durably notes the intent (`owner`, now).
//! 2. After it, the store claims the record id for the owner; every later write of the
//!    owner's record is an update of that id.
//! 3. An attempt that finds an intent but no claimed record may have created it: it lists
//!    the table's records created since the intent (less a margin for clock skew), and
//!    claims one whose content is the content it would write and that no other owner has
//!    claimed. Only when there is none does it create.
//!
//! Two unclaimed records of identical content are interchangeable (that is what identical
//! means here), so which one an owner claims does not matter; a record is claimed at most
//! once (a unique index), so two owners never share one.

use chrono::Duration;
use serde_json::Value;

use super::error::EffectError;
use crate::domain::RecordId;
use crate::engine::Engine;
use crate::records::Fields;
use crate::store::Owner;

/// How far before the noted intent the search for an earlier attempt's record starts:
/// `createdTime` is Airtable's clock, the intent this host's.
const CLOCK_MARGIN: Duration = Duration::minutes(5);

/// Creates the record of `owner` in `table` with `fields`, or, when the owner already has
/// one, updates it with them; returns its id. Exactly one record per owner, whatever
/// attempt was interrupted where.
pub(crate) async fn write_once(
    engine: &Engine,
    owner: &Owner,
    table: &str,
    fields: Fields,
) -> Result<RecordId, EffectError> {
    let intent = engine.store.record_intent(owner).await?;
    if let Some(record) = intent.record {
        engine
            .records
            .backend()
            .update(table, &record, fields)
            .await?;
        return Ok(record);
    }
    if !intent.fresh {
        let since = intent.since - CLOCK_MARGIN;
        for candidate in engine.records.created_since(table, since).await? {
            if same_content(&fields, &candidate.fields)
                && engine.store.claim_record(owner, &candidate.id).await?
            {
                tracing::info!(%owner, record = %candidate.id, "an interrupted create had made the record; claimed it");
                return Ok(candidate.id);
            }
        }
    }
    let created = engine.records.create(table, fields).await?;
    if !engine.store.claim_record(owner, &created.id).await? {
        // Cannot happen for a fresh id; say so rather than write twice.
        return Err(EffectError::Permanent(format!(
            "record {} was created for {owner} but could not be claimed",
            created.id
        )));
    }
    Ok(created.id)
}

/// Whether a stored record holds what `written` wrote, as Airtable gives it back:
/// empties are absent, link lists come in any order, attachments are known by file name
/// (their URL is Airtable's copy), dates are normalised.
pub(crate) fn same_content(written: &Fields, stored: &Fields) -> bool {
    written.iter().all(|(name, value)| {
        let have = stored.get(name);
        match (value, have) {
            (Value::Null, _) | (Value::Bool(false), _) => true,
            (Value::String(s), _) if s.is_empty() => true,
            (Value::Array(a), _) if a.is_empty() => true,
            (_, None) => false,
            (Value::String(w), Some(Value::String(h))) => w == h || same_instant(w, h),
            (Value::Array(w), Some(Value::Array(h))) => same_list(w, h),
            (w, Some(h)) => w == h,
        }
    })
}

fn same_instant(a: &str, b: &str) -> bool {
    match (
        chrono::DateTime::parse_from_rfc3339(a),
        chrono::DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Links: the same ids. Attachments: the same file names.
fn same_list(written: &[Value], stored: &[Value]) -> bool {
    let key = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o
            .get("filename")
            .and_then(Value::as_str)
            .map(|f| format!("file:{f}")),
        _ => None,
    };
    let mut w: Vec<Option<String>> = written.iter().map(key).collect();
    let mut h: Vec<Option<String>> = stored.iter().map(key).collect();
    w.sort();
    h.sort();
    w == h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(v: Value) -> Fields {
        match v {
            Value::Object(m) => m,
            _ => Fields::new(),
        }
    }

    #[test]
    fn content_is_compared_as_airtable_gives_it_back() {
        let written = f(json!({
            "Service": "goapi",
            "Processed": true,
            "Success": false,
            "Error Details": "",
            "Related Job": ["recB0000000000000", "recA0000000000000"],
            "When": "2026-11-30T10:00:00.000Z",
            "Music": [{"url": "https://cdn.example/x/track.mp3", "filename": "track.mp3"}],
        }));
        let stored = f(json!({
            "Service": "goapi",
            "Processed": true,
            "Related Job": ["recA0000000000000", "recB0000000000000"],
            "When": "2026-11-30T10:00:00Z",
            "Music": [{"id": "att1", "url": "https://dl.airtable.example/copy", "filename": "track.mp3"}],
            "Event ID": 17,
        }));
        assert!(same_content(&written, &stored));
        let mut other = stored.clone();
        other.insert("Service".into(), json!("nca"));
        assert!(!same_content(&written, &other));
        let mut missing = stored.clone();
        missing.remove("Processed");
        assert!(!same_content(&written, &missing));
        let mut more_links = stored;
        more_links.insert("Related Job".into(), json!(["recA0000000000000"]));
        assert!(!same_content(&written, &more_links));
    }
}
