//! Plumbing shared by the clients: one configured reqwest client per service.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};

use super::error::{ClientError, from_transport, scrub};

/// Replies larger than this are cut before parsing: nothing these services answer to our
/// calls comes near it, and a misbehaving proxy must not make us buffer gigabytes.
const MAX_BODY: usize = 4 * 1024 * 1024;

pub(crate) struct Http {
    pub(crate) client: reqwest::Client,
    pub(crate) base: url::Url,
    pub(crate) api_key: String,
    pub(crate) timeout: Duration,
    pub(crate) service: &'static str,
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    /// The body as text, possibly cut at MAX_BODY.
    pub(crate) text: String,
    /// The body parsed as JSON, when it is JSON.
    pub(crate) json: Option<serde_json::Value>,
}

impl Http {
    pub(crate) fn new(
        service: &'static str,
        api_url: &str,
        api_key: &str,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let trimmed = api_url.trim().trim_end_matches('/');
        let base = url::Url::parse(trimmed)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                ClientError::permanent(None, format!("{service}: api_url is not an http(s) URL"))
            })?;
        if api_key.trim().is_empty() {
            return Err(ClientError::permanent(
                None,
                format!("{service}: empty API key"),
            ));
        }
        if timeout.is_zero() {
            return Err(ClientError::permanent(
                None,
                format!("{service}: zero timeout"),
            ));
        }
        let mut key = HeaderValue::from_str(api_key).map_err(|_| {
            ClientError::permanent(
                None,
                format!("{service}: API key is not a valid header value"),
            )
        })?;
        // Keeps the key out of reqwest's Debug output of requests and headers.
        key.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", key);
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // A redirect would forward X-API-Key (a custom header, not stripped by
            // reqwest) to whatever host it names. Neither API redirects on purpose.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                ClientError::permanent(None, format!("{service}: cannot build HTTP client: {e}"))
            })?;
        Ok(Self {
            client,
            base,
            api_key: api_key.to_owned(),
            timeout,
            service,
        })
    }

    /// `base` with `segments` appended, each percent-encoded as one path segment.
    pub(crate) fn url(&self, segments: &[&str]) -> Result<url::Url, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| {
                ClientError::permanent(
                    None,
                    format!("{}: api_url cannot take a path", self.service),
                )
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    pub(crate) async fn send(&self, req: reqwest::RequestBuilder) -> Result<Reply, ClientError> {
        let resp = req
            .send()
            .await
            .map_err(|e| from_transport(self.service, e, self.timeout))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| from_transport(self.service, e, self.timeout))?;
        let body = &bytes[..bytes.len().min(MAX_BODY)];
        let json = serde_json::from_slice(body).ok();
        let text = String::from_utf8_lossy(body).into_owned();
        tracing::debug!(service = self.service, status, len = bytes.len(), "reply");
        Ok(Reply { status, text, json })
    }

    /// The most useful human-readable message of a reply: its JSON `message` (a string or
    /// any JSON value) or the raw text, scrubbed of the key and bounded.
    pub(crate) fn message_of(&self, reply: &Reply) -> String {
        let raw = match reply.json.as_ref().and_then(|j| j.get("message")) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => reply.text.trim().to_owned(),
            Some(other) => other.to_string(),
        };
        scrub(&raw, &self.api_key)
    }
}
