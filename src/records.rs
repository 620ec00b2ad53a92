//! The system of record: the Videos, Jobs and Webhook Events tables.
//!
//! Two layers. [`RecordBackend`] is the narrow, Airtable-shaped interface that every
//! implementation provides (Airtable over HTTP in production, SQLite embedded by default,
//! PostgreSQL for replicas that share a database without Airtable):
//! records with Airtable-format ids, field maps with empties omitted, linked fields as
//! arrays of record ids. [`Records`] is the typed layer on top that the engine uses; it
//! applies the [`Mapping`] (table, field and status names) and nothing else.
//!
//! Files: `typed/` (one file per table, `cells` for the values) and `mapping.rs` (TOML; `""`
//! switches an optional field off; select values spelled per base). `airtable/`: the client
//! (`request`: budget slot, retries, error bodies; `read`; `formula`, the one escaping formula
//! builder; `write`: per-table queues and batches of up to 10), `budget` (the slots, reads first:
//! `LocalBudget` in `budget.rs`, `PgBudget` shared by replicas in `budget/pg.rs`), `config`
//! (read by both, so the budget does not import the client), `schema` (a base checked against the
//! mapping for `check-airtable` and `/readyz` through `SchemaCache`, at most once a minute, naming
//! the mapping line that fixes each problem) and `guess` (`reelstate mapping --from-base`).
//! `fence.rs`: the writer's right to write (the executor's lease), asked as each write request
//! goes out, after the wait for a budget slot and before each retry (`RecordsError::Fenced`).
//! `embedded/`: Airtable emulated in the service's own database, `sqlite` and `postgres` (row
//! locks, and an advisory lock per upserted key), both applying `rules` (tables and links,
//! empties, ids, what Airtable refuses, which record an upsert writes).

pub mod airtable;
pub mod embedded;
pub mod fence;
mod mapping;
mod typed;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::domain::RecordId;

pub use mapping::{Mapping, MappingError, MediaKind, Spellings};
pub use typed::{JobFields, JobRecord, Records, VideoFields, VideoRecord, WebhookEventRecord};

/// A record's fields, as Airtable has them: empty values (`""`, `[]`, `false`) are absent.
pub type Fields = Map<String, Value>;

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: RecordId,
    /// ISO 8601, as Airtable's `createdTime`.
    pub created_time: String,
    pub fields: Fields,
}

/// The only filters the engine needs. Backends render them (Airtable: a formula built by
/// one escaping function); no caller ever writes a formula.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// A text field equals a value exactly.
    Equals { field: String, value: String },
    /// The records with these ids (`RECORD_ID()` in Airtable).
    RecordIds(Vec<RecordId>),
    /// The records created at or after this instant (`CREATED_TIME()` in Airtable): how
    /// an interrupted create finds what it may have made on a base with no key field.
    CreatedSince(chrono::DateTime<chrono::Utc>),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordsError {
    /// Worth retrying later: rate limits, 5xx, timeouts, connection errors.
    #[error("transient records error: {0}")]
    Transient(String),
    /// Retrying will not help: bad field, unknown select option, no permission.
    #[error("records error {status} {kind}: {message}")]
    Permanent {
        status: u16,
        kind: String,
        message: String,
    },
    #[error("record {0} not found in {1}")]
    NotFound(String, String),
    /// The writer lost its right to write (its lease on the video) before the request
    /// went out: nothing was sent, and the new holder writes instead.
    #[error("not written: the writer no longer holds the video")]
    Fenced,
}

impl RecordsError {
    pub fn is_transient(&self) -> bool {
        matches!(self, RecordsError::Transient(_))
    }
}

/// One write, as a value: what every backend implements once ([`RecordBackend::write`]),
/// and what Airtable's client queues and batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A new record with exactly these fields.
    Create,
    /// Partial update: fields not named are left as they are; `Value::Null` clears one.
    Update(RecordId),
    /// Updates the record whose field of this name equals the one in the fields, or creates
    /// it.
    Upsert(String),
}

/// What both stores of records provide. Implementations may batch concurrent calls
/// (Airtable: up to 10 records a request per table) but must apply each call exactly as
/// if it had been made alone.
#[async_trait]
pub trait RecordBackend: Send + Sync {
    /// One record by id; `None` when it does not exist or belongs to another table.
    async fn get(&self, table: &str, id: &RecordId) -> Result<Option<Record>, RecordsError>;
    /// Every record matching the filter (following pagination to the end).
    async fn find(&self, table: &str, filter: &Filter) -> Result<Vec<Record>, RecordsError>;
    /// Applies one write to `table`; the record as written comes back.
    async fn write(&self, table: &str, op: Write, fields: Fields) -> Result<Record, RecordsError>;

    async fn create(&self, table: &str, fields: Fields) -> Result<Record, RecordsError> {
        self.write(table, Write::Create, fields).await
    }

    /// Partial update: fields not named are left as they are; `Value::Null` clears one.
    async fn update(
        &self,
        table: &str,
        id: &RecordId,
        fields: Fields,
    ) -> Result<Record, RecordsError> {
        self.write(table, Write::Update(id.clone()), fields).await
    }

    /// Updates the record whose `merge_on` field equals the one in `fields`, or creates it.
    async fn upsert(
        &self,
        table: &str,
        merge_on: &str,
        fields: Fields,
    ) -> Result<Record, RecordsError> {
        self.write(table, Write::Upsert(merge_on.to_owned()), fields)
            .await
    }
}

/// Whether Airtable leaves this value out of a record's fields (`null`, `false`, `""`,
/// `[]`): no backend stores or returns one.
pub(crate) fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
