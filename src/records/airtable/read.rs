//! Reading records: `listRecords`, followed page by page, and Airtable's record JSON.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};

use super::request::{Shared, unexpected};
use crate::domain::RecordId;
use crate::records::{Fields, Record, RecordsError, is_empty};

/// The largest page Airtable serves.
pub(super) const PAGE_SIZE: u32 = 100;

impl Shared {
    /// Every record of `table` matching `formula`, following `offset` to the end.
    pub(super) async fn list(
        &self,
        table: &str,
        formula: Option<&str>,
    ) -> Result<Vec<Record>, RecordsError> {
        let url = self.url(&["v0", &self.cfg.base_id, table, "listRecords"])?;
        let mut out = Vec::new();
        let mut seen_offsets = HashSet::new();
        let mut offset: Option<String> = None;
        loop {
            let mut body = json!({ "pageSize": PAGE_SIZE });
            if let Some(f) = formula {
                body["filterByFormula"] = json!(f);
            }
            if let Some(o) = &offset {
                body["offset"] = json!(o);
            }
            let page = self
                .send(Method::POST, url.clone(), Some(&body), None)
                .await?;
            out.extend(parse_records(&page)?);
            match page.get("offset").and_then(Value::as_str) {
                Some(next) => {
                    // A cursor that comes back would loop forever.
                    if !seen_offsets.insert(next.to_owned()) {
                        return Err(unexpected(
                            200,
                            "listRecords returned the same offset twice",
                        ));
                    }
                    offset = Some(next.to_owned());
                }
                None => return Ok(out),
            }
        }
    }
}

pub(super) fn parse_records(body: &Value) -> Result<Vec<Record>, RecordsError> {
    body.get("records")
        .and_then(Value::as_array)
        .ok_or_else(|| unexpected(200, "response has no records array"))?
        .iter()
        .map(parse_record)
        .collect()
}

fn parse_record(v: &Value) -> Result<Record, RecordsError> {
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .and_then(|s| RecordId::parse(s).ok())
        .ok_or_else(|| unexpected(200, "record without a valid id"))?;
    let created_time = v
        .get("createdTime")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut fields = match v.get("fields") {
        Some(Value::Object(f)) => f.clone(),
        _ => Fields::new(),
    };
    // Airtable omits empties; keep that true even if a response carries one.
    fields.retain(|_, value| !is_empty(value));
    Ok(Record {
        id,
        created_time,
        fields,
    })
}
