//! One request to Airtable, sent well: a slot of the budget first, the answer's error body
//! understood, what is worth retrying retried (429: after the lockout, for everyone sharing
//! the budget; 502/503/504 and network errors: with backoff), a create never repeated when
//! its fate is unknown (any 5xx, a timeout: only a 429 or a refused connection proves it
//! was not applied); and the counters `/metrics` reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::budget::{Priority, RequestBudget, Slot};
use super::config::AirtableConfig;
use crate::backoff::Backoff;
use crate::records::RecordsError;

/// Cap of one backoff sleep, whatever the attempt number.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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
pub(super) struct Counters {
    pub(super) requests: AtomicU64,
    pub(super) rate_limited: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) records_written: AtomicU64,
    pub(super) last_rate_limited: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
}

pub(super) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// What the background tasks share with the backend (but not the queues, so that dropping
/// the backend closes the queues and ends the tasks).
pub(super) struct Shared {
    pub(super) cfg: AirtableConfig,
    pub(super) base_url: Url,
    pub(super) http: reqwest::Client,
    pub(super) budget: Arc<dyn RequestBudget>,
    pub(super) counters: Counters,
}

pub(super) fn config_error(message: impl Into<String>) -> RecordsError {
    RecordsError::Permanent {
        status: 0,
        kind: "INVALID_CONFIG".into(),
        message: message.into(),
    }
}

pub(super) fn unexpected(status: u16, message: impl Into<String>) -> RecordsError {
    RecordsError::Permanent {
        status,
        kind: "UNEXPECTED_RESPONSE".into(),
        message: message.into(),
    }
}

/// Whether a request whose fate is unknown may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Repeat {
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
    pub(super) fn url(&self, segments: &[&str]) -> Result<Url, RecordsError> {
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
    pub(super) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        slot: Option<Slot>,
    ) -> Result<Value, RecordsError> {
        self.send_as(method, url, body, slot, Repeat::Safe).await
    }

    /// [`Shared::send`], saying whether the request may be repeated when its fate is
    /// unknown. A create may not: Airtable has no idempotency key, and a 5xx or a timeout
    /// can come after it was applied (the caller resolves that through the keyless search;
    /// see `executor::creation`). It is resent only after a 429 or a refused connection,
    /// which prove it was not applied.
    pub(super) async fn send_as(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        slot: Option<Slot>,
        repeat: Repeat,
    ) -> Result<Value, RecordsError> {
        self.send_fenced(method, url, body, slot, repeat, &[]).await
    }

    /// [`Self::send_as`] for writes whose writers' `fences` must still allow them before
    /// each retry (the first attempt's check is the caller's, when the slot is granted).
    pub(super) async fn send_fenced(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        mut slot: Option<Slot>,
        repeat: Repeat,
        fences: &[crate::records::fence::Fence],
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
            // A retry may come after a 30 s lockout: the writer may have lost the video.
            if attempt > 1 && !crate::records::fence::all_allow(fences).await {
                return Err(RecordsError::Fenced);
            }
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
                            .unwrap_or_else(|p| p.into_inner()) = Some(crate::clock::now());
                        self.budget.lock_out(self.cfg.lockout).await;
                        tracing::warn!(lockout = ?self.cfg.lockout, "Airtable rate limit reached");
                        Retry::AfterLockout(format!("429 {kind}: {message}"))
                    } else if status.is_server_error() && repeat == Repeat::Unsafe {
                        // Only a 429 or a refused connection proves a create was not
                        // applied: a gateway's 502/503/504 can come after Airtable wrote it.
                        return Err(RecordsError::Transient(format!(
                            "Airtable {} {kind}: {message} (the request may have been applied; \
                             not repeated)",
                            status.as_u16()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::airtable::AirtableBackend;

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
