//! The Airtable implementation of [`RecordBackend`], over reqwest.
//!
//! Airtable's 5 requests/second per base (then a 30-second lockout) is this service's
//! throughput ceiling, so everything here is about spending requests well:
//!
//! - every request spends from a [`RequestBudget`]: a slot is busy until one window after
//!   its response arrived, so that however the network delays requests, Airtable never sees
//!   more than the budget in any window. By default each backend has its own
//!   ([`LocalBudget`]); replicas sharing a base share a [`PgBudget`](budget::PgBudget)
//!   ([`AirtableBackend::with_budget`]);
//! - writes go through a per-table queue drained by a background task, which puts whatever
//!   is queued when the next slot is granted into one request (up to 10 records);
//! - 429s wait out the lockout for everyone sharing the budget; 502/503/504 and network errors are
//!   retried with exponential backoff and full jitter, except for creates, whose fate they
//!   leave unknown (the caller finds out; see `executor::creation`).
//!
//! Only this module knows Airtable's JSON. Its parts: `config`; `budget`; `request` (one
//! request: a slot, retries, error bodies, the counters); `read` (`listRecords` and the
//! record JSON); `formula` (the one function that writes formulas, from the closed
//! [`Filter`] type: no caller ever writes one); `write` (the per-table queues and their
//! batches). Beside the client, the tools that read the base's schema: `schema` (does the
//! base fit the mapping) and `guess` (a mapping written from the base).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use reqwest::{Method, Url};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{Fields, Filter, Record, RecordBackend, RecordsError, Write};
use crate::domain::RecordId;
use budget::{LocalBudget, RequestBudget};
use formula::formulas;
use request::{Counters, Shared, config_error};
use write::WriteOp;

pub mod budget;
mod config;
mod formula;
pub mod guess;
mod read;
mod request;
pub mod schema;
mod write;

pub use config::AirtableConfig;
pub(crate) use request::AirtableStats;

pub struct AirtableBackend {
    shared: Arc<Shared>,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<WriteOp>>>,
}

impl AirtableBackend {
    /// A backend with a budget of its own: right when it is the only client of the base.
    pub fn new(cfg: AirtableConfig) -> Result<Self, RecordsError> {
        let budget = Arc::new(LocalBudget::new(cfg.requests_per_second));
        Self::with_budget(cfg, budget)
    }

    /// A backend spending from `budget`, which others may share (replicas sharing a base
    /// share a [`PgBudget`](budget::PgBudget)). `cfg.requests_per_second` is then the
    /// budget's business, not this backend's.
    pub fn with_budget(
        cfg: AirtableConfig,
        budget: Arc<dyn RequestBudget>,
    ) -> Result<Self, RecordsError> {
        if cfg.token.is_empty() {
            return Err(config_error("the Airtable token is empty"));
        }
        if cfg.base_id.is_empty() {
            return Err(config_error("the Airtable base id is empty"));
        }
        let base_url = Url::parse(&cfg.api_url)
            .map_err(|e| config_error(format!("api_url {:?}: {e}", cfg.api_url)))?;
        if base_url.cannot_be_a_base() {
            return Err(config_error(format!(
                "api_url {:?} is not a base URL",
                cfg.api_url
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .build()
            .map_err(|e| config_error(format!("HTTP client: {e}")))?;
        Ok(Self {
            shared: Arc::new(Shared {
                budget,
                cfg,
                base_url,
                http,
                counters: Counters::default(),
            }),
            queues: Mutex::new(HashMap::new()),
        })
    }

    pub fn stats(&self) -> AirtableStats {
        let c = &self.shared.counters;
        AirtableStats {
            requests: c.requests.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            records_written: c.records_written.load(Ordering::Relaxed),
            last_rate_limited: *c
                .last_rate_limited
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// `GET /v0/meta/bases/{base}/tables`, for the schema check.
    pub async fn meta_tables(&self) -> Result<Value, RecordsError> {
        let s = &self.shared;
        let url = s.url(&["v0", "meta", "bases", &s.cfg.base_id, "tables"])?;
        s.send(Method::GET, url, None, None).await
    }
}

#[async_trait]
impl RecordBackend for AirtableBackend {
    async fn get(&self, table: &str, id: &RecordId) -> Result<Option<Record>, RecordsError> {
        // `GET /{table}/{id}` ignores the table; asking the table itself answers "is this
        // record in that table" in the same single request.
        let Some(formula) = formulas(&Filter::RecordIds(vec![id.clone()])).pop() else {
            return Ok(None);
        };
        match self.shared.list(table, Some(&formula)).await {
            Ok(records) => Ok(records.into_iter().find(|r| &r.id == id)),
            Err(RecordsError::Permanent { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn find(&self, table: &str, filter: &Filter) -> Result<Vec<Record>, RecordsError> {
        let mut out = Vec::new();
        for formula in formulas(filter) {
            out.extend(self.shared.list(table, Some(&formula)).await?);
        }
        Ok(out)
    }

    async fn write(&self, table: &str, op: Write, fields: Fields) -> Result<Record, RecordsError> {
        self.enqueue(table, op, fields).await
    }
}
