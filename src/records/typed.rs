//! The engine's view of the three tables, on top of any [`RecordBackend`]: one file per
//! table (`videos`, `jobs`, `events`), and `cells` for the values Airtable keeps in them.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::RecordId;
use crate::records::{Fields, Filter, Mapping, Record, RecordBackend, RecordsError};

mod cells;
mod events;
mod jobs;
mod videos;

pub use events::WebhookEventRecord;
pub use jobs::{JobFields, JobRecord};
pub use videos::{VideoFields, VideoRecord};

/// The typed tables. Cheap to clone.
#[derive(Clone)]
pub struct Records {
    backend: Arc<dyn RecordBackend>,
    mapping: Arc<Mapping>,
}

impl Records {
    pub fn new(backend: Arc<dyn RecordBackend>, mapping: Mapping) -> Self {
        Self {
            backend,
            mapping: Arc::new(mapping),
        }
    }

    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    pub fn backend(&self) -> &Arc<dyn RecordBackend> {
        &self.backend
    }

    /// Creates a record with exactly these fields (no key to merge on); the caller keeps
    /// its id. See `creation` for how a create is made exactly-once without a key.
    pub async fn create(&self, table: &str, fields: Fields) -> Result<Record, RecordsError> {
        self.backend.create(table, fields).await
    }

    /// Records of `table` created at or after `since` (Airtable's `CREATED_TIME()`).
    pub async fn created_since(
        &self,
        table: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Record>, RecordsError> {
        self.backend.find(table, &Filter::CreatedSince(since)).await
    }

    /// Writes a record by upsert on its key field (`key`, when the mapping names one); a
    /// base without one has its records created once by the engine's creation rule.
    async fn upsert_on_key(
        &self,
        table: &str,
        key: Option<&str>,
        fields: Fields,
    ) -> Result<RecordId, RecordsError> {
        let Some(key) = key else {
            return Err(unkeyed(table));
        };
        Ok(self.backend.upsert(table, key, fields).await?.id)
    }
}

fn unkeyed(table: &str) -> RecordsError {
    RecordsError::Permanent {
        status: 0,
        kind: "NO_KEY_FIELD".into(),
        message: format!(
            "the mapping names no key field for {table:?}: records are created once by the \
             engine's creation rule, not upserted"
        ),
    }
}
