//! Checks that an Airtable base has the tables, fields, types and select options the
//! [`Mapping`] needs, before the first write fails on them, and says how to fix each one.
//!
//! `required` says what the mapping needs, `check` compares the base with it, `report` words
//! each problem to name the mapping line that fixes it; here the schema is read, and the
//! readiness probe's answer cached.

use super::{AirtableBackend, AirtableConfig};
use crate::records::{Mapping, RecordsError};

mod check;
mod report;
mod required;

pub(crate) use check::problems;
pub use report::SchemaProblem;
pub(crate) use required::is_computed;

/// Reads the base's schema (`GET /v0/meta/bases/{base}/tables`, one request; the token needs
/// `schema.bases:read`) and lists every problem; an empty list means the mapping fits.
pub async fn check_schema(
    backend_cfg: &AirtableConfig,
    mapping: &Mapping,
) -> Result<Vec<SchemaProblem>, RecordsError> {
    let backend = AirtableBackend::new(backend_cfg.clone())?;
    let meta = backend.meta_tables().await?;
    Ok(problems(&meta, mapping))
}

/// The problems found in the base's schema (empty: all good), or why it could not be read.
pub(crate) type SchemaCheck = Result<Vec<String>, String>;

/// The last schema check, so that a readiness probe does not spend the rate limit.
#[derive(Default)]
pub struct SchemaCache(tokio::sync::Mutex<Option<(std::time::Instant, SchemaCheck)>>);

impl SchemaCache {
    /// The base's schema problems (empty: all good), checked at most once a minute.
    pub(crate) async fn problems(
        &self,
        airtable: &AirtableBackend,
        mapping: &Mapping,
    ) -> SchemaCheck {
        let mut cached = self.0.lock().await;
        if let Some((_, result)) = cached
            .as_ref()
            .filter(|(at, _)| at.elapsed() < std::time::Duration::from_secs(60))
        {
            return result.clone();
        }
        let result = match airtable.meta_tables().await {
            Ok(meta) => Ok(problems(&meta, mapping)
                .iter()
                .map(ToString::to_string)
                .collect()),
            Err(e) => Err(e.to_string()),
        };
        *cached = Some((std::time::Instant::now(), result.clone()));
        result
    }
}
