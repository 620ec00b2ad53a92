//! The one error type of the outbound clients, split by what the caller should do next.

use std::time::Duration;

/// Longest message kept from a remote body: NCA failures can carry many KB of ffmpeg
/// stderr, and these messages end up in Airtable cells and log lines.
pub(crate) const MAX_MESSAGE: usize = 2000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Worth retrying later: queue full (429), 5xx, connection refused.
    #[error("transient: {0}")]
    Transient(String),
    /// The request may have reached the service and done its work (a timeout or a reset
    /// after sending): retrying at once could start the job twice.
    #[error("ambiguous: {0}")]
    Ambiguous(String),
    /// Retrying the same request cannot help: wrong key (401), invalid payload (400),
    /// other 4xx, a reply we cannot use. `status` is the HTTP status when there was one.
    #[error("permanent{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Permanent {
        status: Option<u16>,
        message: String,
    },
}

impl ClientError {
    /// Worth retrying (an ambiguous error too, but not at once: see the executor).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_) | Self::Ambiguous(_))
    }

    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Self::Ambiguous(_))
    }

    pub(crate) fn permanent(status: Option<u16>, message: impl Into<String>) -> Self {
        Self::Permanent {
            status,
            message: message.into(),
        }
    }
}

/// Removes the API key from a message (a misconfigured proxy or server may echo request
/// headers into its error body) and bounds its size.
pub(crate) fn scrub(message: &str, api_key: &str) -> String {
    let cleaned = if api_key.is_empty() {
        message.to_owned()
    } else {
        message.replace(api_key, "[redacted]")
    };
    crate::text::shorten(&cleaned, MAX_MESSAGE)
}

/// Classifies a transport error. Everything after the request was built is retryable:
/// the service may be restarting, and the caller owns deduplication of retries.
pub(crate) fn from_transport(service: &str, err: reqwest::Error, timeout: Duration) -> ClientError {
    // The key travels in a header, never in the URL; the URL is dropped anyway because an
    // operator may have put proxy credentials in api_url (`https://user:pass@host`).
    let err = err.without_url();
    if err.is_builder() {
        return ClientError::permanent(None, format!("{service}: cannot build request: {err}"));
    }
    if err.is_timeout() {
        return ClientError::Ambiguous(format!("{service}: no answer within {timeout:?}"));
    }
    if err.is_connect() {
        return ClientError::Transient(format!(
            "{service}: cannot connect: {}",
            source_chain(&err)
        ));
    }
    // Anything else happened after connecting: the request may have been received.
    ClientError::Ambiguous(format!(
        "{service}: transport error: {}",
        source_chain(&err)
    ))
}

/// Classifies an HTTP status that is not the expected success: 408, 429 and 5xx are
/// retryable, every other status is not.
pub(crate) fn from_status(service: &str, status: u16, message: &str) -> ClientError {
    let text = if message.is_empty() {
        format!("{service}: HTTP {status}")
    } else {
        format!("{service}: HTTP {status}: {message}")
    };
    if status == 408 || status == 429 || status >= 500 {
        ClientError::Transient(text)
    } else {
        ClientError::permanent(Some(status), text)
    }
}

/// reqwest's own Display stops at "error sending request"; the cause (refused, reset,
/// DNS) is in the source chain and is what an operator needs.
fn source_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert!(from_status("x", 429, "").is_transient());
        assert!(from_status("x", 503, "").is_transient());
        assert!(from_status("x", 408, "").is_transient());
        assert_eq!(
            from_status("x", 401, "Unauthorized"),
            ClientError::permanent(Some(401), "x: HTTP 401: Unauthorized")
        );
        assert!(!from_status("x", 404, "").is_transient());
    }

    #[test]
    fn scrub_removes_the_key_and_bounds_the_size() {
        let m = scrub("echo: X-API-Key: sekrit-123", "sekrit-123");
        assert!(!m.contains("sekrit-123"));
        assert!(scrub(&"e".repeat(100_000), "k").len() <= MAX_MESSAGE);
    }

    #[test]
    fn display_includes_the_status() {
        let e = ClientError::permanent(Some(400), "bad");
        assert_eq!(e.to_string(), "permanent (HTTP 400): bad");
        assert_eq!(
            ClientError::Transient("t".into()).to_string(),
            "transient: t"
        );
    }
}
