//! The Airtable implementation of [`RecordBackend`], over reqwest.
//!
//! Airtable's 5 requests/second per base (then a 30-second lockout) is this service's
//! throughput ceiling, so everything here is about spending requests well:
//!
//! - every request spends from a [`RequestBudget`]: a slot is busy until one window after
//!   its response arrived, so that however the network delays requests, Airtable never sees
//!   more than the budget in any window. By default each backend has its own
//!   ([`LocalBudget`]); replicas sharing a base share a [`PgBudget`](super::budget::PgBudget)
//!   ([`AirtableBackend::with_budget`]);
//! - writes go through a per-table queue drained by a background task, which puts whatever
//!   is queued when the next slot is granted into one request (up to 10 records);
//! - 429s wait out the lockout for everyone sharing the budget; 502/503/504 and network errors are
//!   retried with exponential backoff and full jitter.
//!
//! Only this module knows Airtable's JSON. Formulas are written by one function,
//! [`formulas`], from the closed [`Filter`] type; no caller ever writes one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::budget::{LocalBudget, Priority, RequestBudget, Slot};
use super::{Fields, Filter, Record, RecordBackend, RecordsError};
use crate::backoff::Backoff;
use crate::domain::RecordId;

/// Airtable accepts at most this many records per create/update request.
pub const MAX_RECORDS_PER_WRITE: usize = 10;
/// The largest page Airtable serves.
const PAGE_SIZE: u32 = 100;
/// Record ids per `OR(RECORD_ID()=…)` formula: one page (100 records) answers each, so a
/// batch of first-contact reads costs one request per 100 ids. The formula is about
/// 3,300 characters; it travels in a `POST …/listRecords` body (every list here does), so
/// Airtable's 16,000-character URL limit never applies.
const IDS_PER_FORMULA: usize = PAGE_SIZE as usize;
/// Cap of one backoff sleep, whatever the attempt number.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct AirtableConfig {
    /// `https://api.airtable.com` in production; a double's address in tests.
    pub api_url: String,
    /// Personal access token. Never logged: `Debug` redacts it.
    pub token: String,
    pub base_id: String,
    /// Airtable allows 5 per base.
    pub requests_per_second: u32,
    /// How long Airtable refuses every request after a 429 (30 s).
    pub lockout: Duration,
    /// Attempts per request, the first one included, before giving up with `Transient`.
    pub max_attempts: u32,
    pub request_timeout: Duration,
    /// The first retry waits up to this long; each further one up to twice as long.
    pub backoff_base: Duration,
}

impl Default for AirtableConfig {
    fn default() -> Self {
        Self {
            api_url: "https://api.airtable.com".into(),
            token: String::new(),
            base_id: String::new(),
            requests_per_second: 5,
            lockout: Duration::from_secs(30),
            max_attempts: 6,
            request_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_millis(500),
        }
    }
}

impl fmt::Debug for AirtableConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AirtableConfig")
            .field("api_url", &self.api_url)
            .field("token", &"<redacted>")
            .field("base_id", &self.base_id)
            .field("requests_per_second", &self.requests_per_second)
            .field("lockout", &self.lockout)
            .field("max_attempts", &self.max_attempts)
            .field("request_timeout", &self.request_timeout)
            .field("backoff_base", &self.backoff_base)
            .finish()
    }
}

/// Counters for /metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AirtableStats {
    /// HTTP requests sent (every attempt counts).
    pub requests: u64,
    /// 429 responses received.
    pub rate_limited: u64,
    /// Attempts after the first, for any reason.
    pub retries: u64,
    /// Records created or updated successfully.
    pub records_written: u64,
    /// When this process last met a 429 (the base is locked out for the lockout after it).
    pub last_rate_limited: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    rate_limited: AtomicU64,
    retries: AtomicU64,
    records_written: AtomicU64,
    last_rate_limited: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// One pending write and the caller waiting for its outcome.
struct WriteOp {
    kind: OpKind,
    fields: Fields,
    reply: oneshot::Sender<Result<Record, RecordsError>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum OpKind {
    Create,
    Update(RecordId),
    Upsert(String),
}

/// Writes that can share one request: the same HTTP shape.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BatchKind {
    Create,
    Update,
    Upsert(String),
}

impl WriteOp {
    fn batch_kind(&self) -> BatchKind {
        match &self.kind {
            OpKind::Create => BatchKind::Create,
            OpKind::Update(_) => BatchKind::Update,
            OpKind::Upsert(m) => BatchKind::Upsert(m.clone()),
        }
    }

    /// Two writes with the same key must not share a request: their order would be lost
    /// (and Airtable may reject duplicate ids in one request).
    fn conflict_key(&self) -> Option<String> {
        match &self.kind {
            OpKind::Create => None,
            OpKind::Update(id) => Some(format!("id:{}", id.as_str())),
            OpKind::Upsert(m) => self.fields.get(m).map(|v| format!("key:{v}")),
        }
    }
}

impl BatchKind {
    /// The kind of a request holding writes of `self`'s kind and `op`, if one can. An
    /// update by record id rides in an upsert request: Airtable updates a record that
    /// carries an `id` as a plain update there, ignoring `fieldsToMergeOn` (docs/airtable.md).
    fn with(&self, op: &WriteOp) -> Option<BatchKind> {
        match (self, op.batch_kind()) {
            (a, b) if *a == b => Some(b),
            (BatchKind::Update, up @ BatchKind::Upsert(_)) => Some(up),
            (up @ BatchKind::Upsert(_), BatchKind::Update) => Some(up.clone()),
            _ => None,
        }
    }
}

/// The kind of request that sends `ops` (as `take_batch` put them together).
fn kind_of(ops: &[&WriteOp]) -> Option<BatchKind> {
    let first = ops.first()?.batch_kind();
    ops.iter().try_fold(first, |k, op| k.with(op))
}

/// Takes the next request's worth of writes from the queue: those that can share the
/// first write's request (its kind; updates and upserts together), in queue order, up to
/// 10, leaving a write whose record is already in the batch (and everything of another
/// kind) for a later request, in order.
fn take_batch(pending: &mut VecDeque<WriteOp>) -> Vec<WriteOp> {
    let Some(mut kind) = pending.front().map(WriteOp::batch_kind) else {
        return Vec::new();
    };
    let mut batch = Vec::new();
    let mut keys = HashSet::new();
    let mut rest = VecDeque::new();
    while let Some(op) = pending.pop_front() {
        let joined = kind
            .with(&op)
            .filter(|_| batch.len() < MAX_RECORDS_PER_WRITE);
        match joined {
            Some(k) if op.conflict_key().is_none_or(|key| keys.insert(key)) => {
                kind = k;
                batch.push(op);
            }
            _ => rest.push_back(op),
        }
    }
    *pending = rest;
    batch
}

/// What the background tasks share with the backend (but not the queues, so that dropping
/// the backend closes the queues and ends the tasks).
struct Shared {
    cfg: AirtableConfig,
    base_url: Url,
    http: reqwest::Client,
    budget: Arc<dyn RequestBudget>,
    counters: Counters,
}

pub struct AirtableBackend {
    shared: Arc<Shared>,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<WriteOp>>>,
}

fn config_error(message: impl Into<String>) -> RecordsError {
    RecordsError::Permanent {
        status: 0,
        kind: "INVALID_CONFIG".into(),
        message: message.into(),
    }
}

fn unexpected(status: u16, message: impl Into<String>) -> RecordsError {
    RecordsError::Permanent {
        status,
        kind: "UNEXPECTED_RESPONSE".into(),
        message: message.into(),
    }
}

impl AirtableBackend {
    /// A backend with a budget of its own: right when it is the only client of the base.
    pub fn new(cfg: AirtableConfig) -> Result<Self, RecordsError> {
        let budget = Arc::new(LocalBudget::new(cfg.requests_per_second));
        Self::with_budget(cfg, budget)
    }

    /// A backend spending from `budget`, which others may share (replicas sharing a base
    /// share a [`PgBudget`](super::budget::PgBudget)). `cfg.requests_per_second` is then the
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

    async fn enqueue(
        &self,
        table: &str,
        kind: OpKind,
        fields: Fields,
    ) -> Result<Record, RecordsError> {
        let (reply, answer) = oneshot::channel();
        let mut op = WriteOp {
            kind,
            fields,
            reply,
        };
        {
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            // A queue whose task ended (it only does if it panicked) is replaced once.
            for _ in 0..2 {
                let sender = queues.entry(table.to_owned()).or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(drain(self.shared.clone(), table.to_owned(), rx));
                    tx
                });
                match sender.send(op) {
                    Ok(()) => break,
                    Err(mpsc::error::SendError(back)) => {
                        op = back;
                        queues.remove(table);
                    }
                }
            }
        }
        answer
            .await
            .map_err(|_| RecordsError::Transient(format!("the write queue of {table} stopped")))?
    }
}

/// How long a write waits for others to share its request.
const GATHER: Duration = Duration::from_millis(10);

/// The background task of one table's write queue.
async fn drain(shared: Arc<Shared>, table: String, mut rx: mpsc::UnboundedReceiver<WriteOp>) {
    let mut pending: VecDeque<WriteOp> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(op) => pending.push_back(op),
                None => return,
            }
        }
        let slot = shared.budget.acquire_for(Priority::Write).await;
        // Writes started together with this one get to join its request: a few
        // milliseconds are nothing next to Airtable's round trip, and a request saved is
        // a fifth of a second of the base's budget.
        tokio::time::sleep(GATHER).await;
        while let Ok(op) = rx.try_recv() {
            pending.push_back(op);
        }
        let batch = take_batch(&mut pending);
        shared.write_batch(&table, batch, slot).await;
    }
}

/// Whether a request whose fate is unknown may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Reads, updates and upserts: applying one twice is applying it once.
    Safe,
    /// Creates: a second one is a second record.
    Unsafe,
}

enum Retry {
    /// 429: the budget holds everyone back until the lockout is over.
    AfterLockout(String),
    Backoff(String),
}

impl Shared {
    fn url(&self, segments: &[&str]) -> Result<Url, RecordsError> {
        let mut url = self.base_url.clone();
        // Percent-encodes each segment ("Webhook Events" → "Webhook%20Events").
        url.path_segments_mut()
            .map_err(|()| config_error("api_url is not a base URL"))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends one request, waiting for a slot (or using `slot`), retrying what is worth
    /// retrying; returns the parsed 2xx body or the error.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        slot: Option<Slot>,
    ) -> Result<Value, RecordsError> {
        self.send_as(method, url, body, slot, Repeat::Safe).await
    }

    /// [`Shared::send`], saying whether the request may be repeated when its fate is
    /// unknown. A create may not: Airtable has no idempotency key, and a 504 or a timeout
    /// can come after it was applied (the caller resolves that; see `creation`).
    async fn send_as(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        mut slot: Option<Slot>,
        repeat: Repeat,
    ) -> Result<Value, RecordsError> {
        let max_attempts = self.cfg.max_attempts.max(1);
        // A read's answer is waited for (a decision, a call); a write is a projection.
        let priority = if method == Method::GET || url.path().ends_with("/listRecords") {
            Priority::Read
        } else {
            Priority::Write
        };
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let granted = match slot.take() {
                Some(s) => s,
                None => self.budget.acquire_for(priority).await,
            };
            bump(&self.counters.requests, 1);
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(&self.cfg.token);
            if let Some(b) = body {
                request = request.json(b);
            }
            let sent = std::time::Instant::now();
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    response.text().await.map(|text| (status, text))
                }
                Err(e) => Err(e),
            };
            crate::metrics::observe_airtable_request(sent.elapsed());
            // The slot's window starts now that the response is in.
            drop(granted);
            let retry = match outcome {
                Ok((status, text)) if status.is_success() => {
                    return serde_json::from_str(&text).map_err(|e| {
                        unexpected(status.as_u16(), format!("response is not JSON: {e}"))
                    });
                }
                Ok((status, text)) => {
                    let (kind, message) = parse_error_body(status.as_u16(), &text);
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        bump(&self.counters.rate_limited, 1);
                        *self
                            .counters
                            .last_rate_limited
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = Some(chrono::Utc::now());
                        self.budget.lock_out(self.cfg.lockout).await;
                        tracing::warn!(lockout = ?self.cfg.lockout, "Airtable rate limit reached");
                        Retry::AfterLockout(format!("429 {kind}: {message}"))
                    } else if status == StatusCode::GATEWAY_TIMEOUT && repeat == Repeat::Unsafe {
                        return Err(RecordsError::Transient(format!(
                            "Airtable 504 {kind}: {message} (the request may have been applied; \
                             not repeated)"
                        )));
                    } else if matches!(status.as_u16(), 502..=504) {
                        Retry::Backoff(format!("{} {kind}: {message}", status.as_u16()))
                    } else if status.is_server_error() {
                        // Not documented as safe to retry: a write may have been applied.
                        return Err(RecordsError::Transient(format!(
                            "Airtable {} {kind}: {message}",
                            status.as_u16()
                        )));
                    } else {
                        return Err(RecordsError::Permanent {
                            status: status.as_u16(),
                            kind,
                            message,
                        });
                    }
                }
                // A refused connection never reached Airtable; a timeout or a connection
                // lost later may have.
                Err(e) if repeat == Repeat::Unsafe && !e.is_connect() => {
                    return Err(RecordsError::Transient(format!(
                        "{} (the request may have been applied; not repeated)",
                        e.without_url()
                    )));
                }
                // Timeouts, refused or reset connections, a body cut short.
                Err(e) => Retry::Backoff(e.without_url().to_string()),
            };
            let (reason, lockout) = match retry {
                Retry::AfterLockout(r) => (r, true),
                Retry::Backoff(r) => (r, false),
            };
            if attempt >= max_attempts {
                return Err(RecordsError::Transient(format!(
                    "Airtable {method} {}: gave up after {attempt} attempts: {reason}",
                    url.path()
                )));
            }
            bump(&self.counters.retries, 1);
            tracing::debug!(attempt, %reason, "retrying Airtable request");
            if !lockout {
                let backoff = Backoff::new(self.cfg.backoff_base, MAX_BACKOFF);
                tokio::time::sleep(backoff.jittered(attempt.saturating_sub(1))).await;
            }
        }
    }

    /// Every record of `table` matching `formula`, following `offset` to the end.
    async fn list(&self, table: &str, formula: Option<&str>) -> Result<Vec<Record>, RecordsError> {
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

    /// One write request for `ops` (all of one kind); the records come back in order.
    async fn request_writes(
        &self,
        table: &str,
        kind: &BatchKind,
        ops: &[&WriteOp],
        slot: Option<Slot>,
    ) -> Result<Vec<Record>, RecordsError> {
        let url = self.url(&["v0", &self.cfg.base_id, table])?;
        let records: Vec<Value> = ops
            .iter()
            .map(|op| match &op.kind {
                OpKind::Update(id) => json!({ "id": id.as_str(), "fields": op.fields }),
                OpKind::Create | OpKind::Upsert(_) => json!({ "fields": op.fields }),
            })
            .collect();
        let (method, body) = match kind {
            BatchKind::Create => (Method::POST, json!({ "records": records })),
            BatchKind::Update => (Method::PATCH, json!({ "records": records })),
            BatchKind::Upsert(merge_on) => (
                Method::PATCH,
                json!({
                    "performUpsert": { "fieldsToMergeOn": [merge_on] },
                    "records": records,
                }),
            ),
        };
        let repeat = match kind {
            BatchKind::Create => Repeat::Unsafe,
            BatchKind::Update | BatchKind::Upsert(_) => Repeat::Safe,
        };
        let response = self.send_as(method, url, Some(&body), slot, repeat).await?;
        let written = parse_records(&response)?;
        if written.len() != ops.len() {
            return Err(unexpected(
                200,
                format!("{} records written, {} returned", ops.len(), written.len()),
            ));
        }
        bump(&self.counters.records_written, written.len() as u64);
        Ok(written)
    }

    /// Sends one batch and answers each caller. A batch refused because of one of its
    /// records (422, or 404 for an update of a missing record) is resent record by record,
    /// so that only the bad record's caller gets the error.
    async fn write_batch(&self, table: &str, batch: Vec<WriteOp>, slot: Slot) {
        let refs: Vec<&WriteOp> = batch.iter().collect();
        let Some(kind) = kind_of(&refs) else {
            return;
        };
        match self.request_writes(table, &kind, &refs, Some(slot)).await {
            Ok(records) => {
                for (op, record) in batch.into_iter().zip(records) {
                    // The caller may have gone away; its write is applied all the same.
                    let _ = op.reply.send(Ok(record));
                }
            }
            Err(RecordsError::Permanent { status, .. })
                if batch.len() > 1 && matches!(status, 404 | 422) =>
            {
                for op in batch {
                    let result = self
                        .request_writes(table, &op.batch_kind(), &[&op], None)
                        .await
                        .and_then(|r| {
                            r.into_iter()
                                .next()
                                .ok_or_else(|| unexpected(200, "no record returned"))
                        });
                    let result = result.map_err(|e| not_found(e, &op.kind, table));
                    let _ = op.reply.send(result);
                }
            }
            Err(e) => {
                for op in batch {
                    let err = not_found(e.clone(), &op.kind, table);
                    let _ = op.reply.send(Err(err));
                }
            }
        }
    }
}

/// An update of a record that does not exist is `NotFound`, not an Airtable error.
fn not_found(e: RecordsError, kind: &OpKind, table: &str) -> RecordsError {
    match (&e, kind) {
        (RecordsError::Permanent { status: 404, .. }, OpKind::Update(id)) => {
            RecordsError::NotFound(id.to_string(), table.to_owned())
        }
        _ => e,
    }
}

/// Airtable's error bodies: `{"error":{"type","message"}}`, the bare `{"error":"NOT_FOUND"}`,
/// and the 429's `{"errors":[{"error","message"}]}`; anything else (a proxy's HTML page) is
/// reported by status with the start of its text.
fn parse_error_body(status: u16, text: &str) -> (String, String) {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Some(first) = v
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        let kind = first.get("error").or_else(|| first.get("type"));
        return (s(kind), s(first.get("message")));
    }
    match v.get("error") {
        Some(Value::String(kind)) => (kind.clone(), s(v.get("message"))),
        Some(Value::Object(e)) => (s(e.get("type")), s(e.get("message"))),
        _ => {
            let snippet: String = text.chars().take(200).collect();
            (format!("HTTP_{status}"), snippet)
        }
    }
}

fn parse_records(body: &Value) -> Result<Vec<Record>, RecordsError> {
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

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The one function that writes formulas. Values are escaped as string literals (`\` and
/// `'`), field names as field references (`}`); record ids are validated [`RecordId`]s and
/// are split so that each formula stays short. An empty id list gives no formula at all.
fn formulas(filter: &Filter) -> Vec<String> {
    let field_ref = |name: &str| format!("{{{}}}", name.replace('}', "\\}"));
    let literal = |value: &str| format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"));
    match filter {
        Filter::Equals { field, value } => vec![format!("{}={}", field_ref(field), literal(value))],
        // IS_AFTER is strict; a millisecond earlier makes it "at or after".
        Filter::CreatedSince(since) => {
            let at = (*since - chrono::Duration::milliseconds(1))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            vec![format!(
                "IS_AFTER(CREATED_TIME(),DATETIME_PARSE({}))",
                literal(&at)
            )]
        }
        Filter::RecordIds(ids) => {
            let mut seen = HashSet::new();
            let unique: Vec<&RecordId> = ids.iter().filter(|id| seen.insert(*id)).collect();
            unique
                .chunks(IDS_PER_FORMULA)
                .map(|chunk| {
                    let terms: Vec<String> = chunk
                        .iter()
                        .map(|id| format!("RECORD_ID()={}", literal(id.as_str())))
                        .collect();
                    format!("OR({})", terms.join(","))
                })
                .collect()
        }
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

    async fn create(&self, table: &str, fields: Fields) -> Result<Record, RecordsError> {
        self.enqueue(table, OpKind::Create, fields).await
    }

    async fn update(
        &self,
        table: &str,
        id: &RecordId,
        fields: Fields,
    ) -> Result<Record, RecordsError> {
        self.enqueue(table, OpKind::Update(id.clone()), fields)
            .await
    }

    async fn upsert(
        &self,
        table: &str,
        merge_on: &str,
        fields: Fields,
    ) -> Result<Record, RecordsError> {
        self.enqueue(table, OpKind::Upsert(merge_on.to_owned()), fields)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(s: &str) -> RecordId {
        RecordId::parse(s).unwrap()
    }

    #[test]
    fn formulas_escape_values_and_field_names() {
        let f = formulas(&Filter::Equals {
            field: "Odd}Name".into(),
            value: r"it's a \ back}slash".into(),
        });
        assert_eq!(f, vec![r"{Odd\}Name}='it\'s a \\ back}slash'".to_owned()]);
    }

    #[test]
    fn record_id_formulas_are_deduplicated_and_chunked() {
        let a = rid("recAAAAAAAAAAAAAA");
        let f = formulas(&Filter::RecordIds(vec![a.clone(), a.clone()]));
        assert_eq!(f, vec!["OR(RECORD_ID()='recAAAAAAAAAAAAAA')".to_owned()]);
        // One formula per 100 ids: one page of listRecords answers each.
        let many: Vec<RecordId> = (0..250).map(|i| rid(&format!("rec{i:014}"))).collect();
        let f = formulas(&Filter::RecordIds(many));
        assert_eq!(f.len(), 3);
        let terms = |x: &str| x.matches("RECORD_ID()").count();
        assert_eq!(
            f.iter().map(|x| terms(x)).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        assert!(f.iter().all(|x| x.len() < 16_000));
        assert!(formulas(&Filter::RecordIds(vec![])).is_empty());
    }

    #[test]
    fn every_error_body_shape_is_understood() {
        let cases = [
            (
                429,
                r#"{"errors":[{"error":"RATE_LIMIT_REACHED","message":"Rate limit exceeded. Please try again later"}]}"#,
                "RATE_LIMIT_REACHED",
                "Rate limit exceeded. Please try again later",
            ),
            (
                401,
                r#"{"error":{"type":"AUTHENTICATION_REQUIRED","message":"Authentication required"}}"#,
                "AUTHENTICATION_REQUIRED",
                "Authentication required",
            ),
            (404, r#"{"error":"NOT_FOUND"}"#, "NOT_FOUND", ""),
            (
                404,
                r#"{"error":{"type":"MODEL_ID_NOT_FOUND","message":"Record not found"}}"#,
                "MODEL_ID_NOT_FOUND",
                "Record not found",
            ),
            (
                422,
                r#"{"error":{"type":"INVALID_FILTER_BY_FORMULA"}}"#,
                "INVALID_FILTER_BY_FORMULA",
                "",
            ),
            (
                502,
                "<html>Bad Gateway</html>",
                "HTTP_502",
                "<html>Bad Gateway</html>",
            ),
        ];
        for (status, body, kind, message) in cases {
            assert_eq!(
                parse_error_body(status, body),
                (kind.to_owned(), message.to_owned()),
                "{body}"
            );
        }
    }

    fn op(kind: OpKind, fields: Value) -> WriteOp {
        let (reply, _) = oneshot::channel();
        let Value::Object(fields) = fields else {
            panic!("fields must be an object")
        };
        WriteOp {
            kind,
            fields,
            reply,
        }
    }

    #[test]
    fn batches_keep_one_write_per_record_and_one_kind() {
        let a = rid("recAAAAAAAAAAAAAA");
        let b = rid("recBBBBBBBBBBBBBB");
        let mut q: VecDeque<WriteOp> = VecDeque::from(vec![
            op(OpKind::Update(a.clone()), json!({"n": 1})),
            op(OpKind::Create, json!({})),
            op(OpKind::Update(b.clone()), json!({"n": 2})),
            op(OpKind::Update(a.clone()), json!({"n": 3})),
            op(OpKind::Upsert("K".into()), json!({"K": "x"})),
            op(OpKind::Upsert("K".into()), json!({"K": "x"})),
        ]);
        let first = take_batch(&mut q);
        assert_eq!(
            first.iter().map(|o| o.kind.clone()).collect::<Vec<_>>(),
            vec![
                OpKind::Update(a.clone()),
                OpKind::Update(b),
                OpKind::Upsert("K".into())
            ]
        );
        // The second write of `a` (and of key x) waits for the next request, ahead of
        // other kinds' order.
        assert_eq!(q.len(), 3);
        assert_eq!(take_batch(&mut q).len(), 1); // the create
        let again = take_batch(&mut q);
        assert_eq!(again[0].fields["n"], json!(3));
        assert_eq!(again.len(), 2, "with the other upsert of key x");
        assert!(q.is_empty());
    }

    /// Updates by id share a request with upserts (one upsert request: Airtable updates
    /// the records that carry an id), never with creates or another merge field's upserts.
    #[test]
    fn updates_ride_in_upsert_requests() {
        let a = rid("recAAAAAAAAAAAAAA");
        let b = rid("recBBBBBBBBBBBBBB");
        let mut q: VecDeque<WriteOp> = VecDeque::from(vec![
            op(OpKind::Update(a.clone()), json!({"n": 1})),
            op(OpKind::Create, json!({})),
            op(OpKind::Upsert("K".into()), json!({"K": "x"})),
            op(OpKind::Upsert("L".into()), json!({"L": "y"})),
            op(OpKind::Update(b.clone()), json!({"n": 2})),
        ]);
        let first = take_batch(&mut q);
        assert_eq!(
            first.iter().map(|o| o.kind.clone()).collect::<Vec<_>>(),
            vec![
                OpKind::Update(a),
                OpKind::Upsert("K".into()),
                OpKind::Update(b)
            ]
        );
        let refs: Vec<&WriteOp> = first.iter().collect();
        assert_eq!(kind_of(&refs), Some(BatchKind::Upsert("K".into())));
        assert_eq!(take_batch(&mut q)[0].kind, OpKind::Create);
        assert_eq!(take_batch(&mut q)[0].kind, OpKind::Upsert("L".into()));
        assert!(q.is_empty());
    }

    #[test]
    fn batches_hold_at_most_ten() {
        let mut q: VecDeque<WriteOp> = (0..25).map(|_| op(OpKind::Create, json!({}))).collect();
        assert_eq!(take_batch(&mut q).len(), 10);
        assert_eq!(take_batch(&mut q).len(), 10);
        assert_eq!(take_batch(&mut q).len(), 5);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let cfg = AirtableConfig {
            token: "patSECRET".into(),
            ..AirtableConfig::default()
        };
        assert!(!format!("{cfg:?}").contains("patSECRET"));
    }

    #[test]
    fn paths_are_percent_encoded() {
        let backend = AirtableBackend::new(AirtableConfig {
            token: "t".into(),
            base_id: "appXXXXXXXXXXXXXX".into(),
            ..AirtableConfig::default()
        })
        .unwrap();
        let url = backend
            .shared
            .url(&["v0", "appXXXXXXXXXXXXXX", "Webhook Events", "listRecords"])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://api.airtable.com/v0/appXXXXXXXXXXXXXX/Webhook%20Events/listRecords"
        );
    }
}
