//! The Webhook Events table: one record per delivery, as the mapping names and spells it.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use super::Records;
use super::cells::long_text;
use crate::domain::RecordId;
use crate::records::{Fields, Filter, Record, RecordsError};

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEventRecord {
    pub event_id: String,
    /// The engine's name of the sender (`goapi`, `nca`); the mapping spells it.
    pub service: String,
    pub endpoint: String,
    pub raw_payload: String,
    pub processed: bool,
    pub success: bool,
    pub timestamp: DateTime<Utc>,
    pub related_job: Option<RecordId>,
    pub error_details: Option<String>,
}

impl Records {
    /// Whether Webhook Events records are upserted on a writable `Event ID` field.
    pub fn events_have_key(&self) -> bool {
        self.mapping.webhook_events.event_id.is_some()
    }

    /// The fields of the event's record, as the mapping names and spells them.
    pub fn webhook_event_fields(&self, e: &WebhookEventRecord) -> Fields {
        let m = &self.mapping.webhook_events;
        let mut f = Fields::new();
        if let Some(field) = &m.event_id {
            f.insert(field.clone(), json!(e.event_id));
        }
        f.insert(
            m.service.clone(),
            json!(
                self.mapping
                    .service_value(&e.service, default_service(&e.service))
            ),
        );
        if let Some(field) = &m.endpoint {
            f.insert(field.clone(), json!(e.endpoint));
        }
        f.insert(m.raw_payload.clone(), json!(long_text(&e.raw_payload)));
        f.insert(m.processed.clone(), json!(e.processed));
        f.insert(m.success.clone(), json!(e.success));
        if let Some(field) = &m.timestamp {
            f.insert(
                field.clone(),
                json!(e.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true)),
            );
        }
        if let (Some(j), Some(field)) = (&e.related_job, &m.related_job) {
            f.insert(field.clone(), json!([j.as_str()]));
        }
        if let (Some(d), Some(field)) = (&e.error_details, &m.error_details) {
            f.insert(field.clone(), json!(long_text(d)));
        }
        f
    }

    /// Writes the event's record, once per Event ID whatever its outcome (an upsert, so a
    /// retried write never makes a second record). Only for a mapping with an Event ID
    /// field ([`Records::events_have_key`]).
    pub async fn record_webhook_event(
        &self,
        e: &WebhookEventRecord,
    ) -> Result<RecordId, RecordsError> {
        let m = &self.mapping.webhook_events;
        let f = self.webhook_event_fields(e);
        self.upsert_on_key(&m.table, m.event_id.as_deref(), f).await
    }

    pub async fn find_webhook_event(&self, event_id: &str) -> Result<Option<Record>, RecordsError> {
        let m = &self.mapping.webhook_events;
        let Some(key) = &m.event_id else {
            return Ok(None);
        };
        let found = self
            .backend
            .find(
                &m.table,
                &Filter::Equals {
                    field: key.clone(),
                    value: event_id.to_owned(),
                },
            )
            .await?;
        Ok(found.into_iter().next())
    }
}

/// The reference handler's spelling of a service (`Service` of Webhook Events).
fn default_service(service: &str) -> &str {
    match service {
        "goapi" => "GoAPI",
        "nca" => "NCA Toolkit",
        other => other,
    }
}
