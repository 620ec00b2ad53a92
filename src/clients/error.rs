//! The one error type of the outbound clients, split by what the caller should do next.

use std::time::Duration;

/// Longest message kept from a remote body: NCA failures can carry many KB of ffmpeg
/// stderr, and these messages end up in Airtable cells and log lines.
pub(crate) const MAX_MESSAGE: usize = 2000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The request was provably not taken and is worth sending again later: connection
    /// refused, NCA's own queue-full 429.
    #[error("transient: {0}")]
    Transient(String),
    /// The request may have reached the service and done its work (a timeout, a reset
    /// after sending, 408, a gateway's 502/503/504, a 5xx): calling again could start the
    /// job twice, so the caller first finds out (see the executor).
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

    pub(crate) fn is_ambiguous(&self) -> bool {
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

/// Who answered with an error status, as far as the reply shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answered {
    /// The service's own application, recognisable by its body (NCA's JSON envelope,
    /// GoAPI's `{code, data, message}`): its answer is about the request itself.
    App,
    /// The application refusing work it did not queue, in its own words: NCA's
    /// `429 "MAX_QUEUE_LENGTH (N) reached"` is answered before the job is queued
    /// (docs/goapi-and-nca.md, "What proves a call was not taken").
    AppRefusedUnqueued,
    /// Anything else: a reverse proxy, a load balancer, a platform router (an HTML page,
    /// an empty body), which may answer after forwarding the request.
    Unknown,
}

/// Classifies an HTTP status that is not the expected success by what it proves about
/// whether the service took the request (docs/goapi-and-nca.md):
///
/// - 429 that the application itself answered before queueing: not taken, retry later.
/// - 408, any other 429, and every 5xx: ambiguous. A gateway answers 502/503/504 (often as
///   an HTML page) after it forwarded the request, and NCA behind one then still queues
///   the job and calls back; a 408 or a 500 says the answer was lost, not that the work
///   was not done; GoAPI reports some failures as `code: 500` inside an HTTP 200.
/// - every other 4xx: permanent. Whoever answered (the app or a proxy in front of it)
///   refused the request as sent, so the same request cannot succeed and was not taken.
pub(crate) fn from_status(
    service: &str,
    status: u16,
    message: &str,
    answered: Answered,
) -> ClientError {
    let text = if message.is_empty() {
        format!("{service}: HTTP {status}")
    } else {
        format!("{service}: HTTP {status}: {message}")
    };
    match status {
        429 if answered == Answered::AppRefusedUnqueued => ClientError::Transient(text),
        408 | 429 | 500..=599 => ClientError::Ambiguous(text),
        _ => ClientError::permanent(Some(status), text),
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
    fn statuses_are_classified_by_what_they_prove() {
        use Answered::*;
        // Only the app's own refusal before queueing proves the request was not taken.
        assert_eq!(
            from_status(
                "x",
                429,
                "MAX_QUEUE_LENGTH (10) reached",
                AppRefusedUnqueued
            ),
            ClientError::Transient("x: HTTP 429: MAX_QUEUE_LENGTH (10) reached".into())
        );
        for answered in [App, Unknown] {
            for status in [408, 429, 500, 502, 503, 504] {
                assert!(
                    from_status("x", status, "", answered).is_ambiguous(),
                    "{status} {answered:?}"
                );
            }
        }
        assert!(from_status("x", 504, "<html>Gateway Timeout</html>", Unknown).is_ambiguous());
        assert_eq!(
            from_status("x", 401, "Unauthorized", App),
            ClientError::permanent(Some(401), "x: HTTP 401: Unauthorized")
        );
        assert!(!from_status("x", 404, "", Unknown).is_transient());
        assert!(!from_status("x", 400, "Invalid payload", App).is_transient());
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
