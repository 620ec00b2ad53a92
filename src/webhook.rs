//! Webhook payload parsing and authentication: the only place that knows GoAPI's and
//! NCA Toolkit's wire formats. Everything here is pure (no IO, no clock, no async), so
//! the routes stay thin and every format quirk is covered by fixture tests.
//!
//! - [`goapi`]: GoAPI task payloads (webhook envelope, bare task, the reference
//!   handler's flat format, the GET-task reply) → [`goapi::GoapiWebhook`].
//! - [`nca`]: NCA Toolkit job callbacks and job-status replies → [`nca::NcaWebhook`].
//! - [`auth`]: shared-secret headers and Standard Webhooks signatures.
//! - [`callback`]: the signed callback URLs we hand to GoAPI and NCA.

pub mod auth;
pub mod callback;
pub mod goapi;
pub mod nca;

pub use auth::{AuthError, StandardWebhooks, verify_shared_secret};
pub use callback::{CallbackConfigError, CallbackEndpoint, CallbackParams, CallbackSigner};
pub use goapi::{GoapiWebhook, PayloadShape, parse_goapi, parse_task_object};
pub use nca::{NcaJobState, NcaWebhook, parse_nca, parse_nca_status};

/// Why a payload could not be turned into an event. Every variant is a permanent problem
/// with the payload itself, so the route answers 400 (never 5xx: GoAPI retries those).
///
/// Messages never echo more than a short excerpt of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body is JSON but not an object")]
    NotObject,
    #[error("task_id is missing or empty")]
    MissingTaskId,
    #[error("status is missing")]
    MissingStatus,
    #[error("unknown status {0:?}")]
    UnknownStatus(String),
    #[error("invalid payload: {0}")]
    Invalid(String),
}

impl ParseError {
    /// A stable snake_case code for the `error` field of a 400 JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::NotJson(_) => "invalid_json",
            ParseError::NotObject => "not_an_object",
            ParseError::MissingTaskId => "missing_task_id",
            ParseError::MissingStatus => "missing_status",
            ParseError::UnknownStatus(_) => "unknown_status",
            ParseError::Invalid(_) => "invalid_payload",
        }
    }
}

/// A body's SHA-256 in lower-case hex: the key of a delivery that carries no id of its own.
fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Parses a body as JSON, mapping serde's error to [`ParseError::NotJson`]. serde_json's
/// own recursion limit keeps hostile nesting from overflowing the stack.
fn json_object(body: &[u8]) -> Result<serde_json::Value, ParseError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(ParseError::NotObject)
    }
}

/// A trimmed, non-empty string field; any other type counts as absent.
fn opt_str<'a>(obj: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    obj.get(key)
        .and_then(serde_json::Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// An integer field written as a JSON integer, an integral float or a decimal string.
fn opt_int(obj: &serde_json::Value, key: &str) -> Option<i64> {
    let v = obj.get(key)?;
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    if let Some(f) = v.as_f64() {
        // Only exact, in-range integers: `as` would silently saturate anything else.
        return (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64);
    }
    v.as_str().and_then(|s| s.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        assert_eq!(ParseError::NotObject.code(), "not_an_object");
        assert_eq!(ParseError::NotJson("x".into()).code(), "invalid_json");
        assert_eq!(
            ParseError::UnknownStatus("w".into()).code(),
            "unknown_status"
        );
    }

    #[test]
    fn json_object_classifies_bodies() {
        assert!(matches!(json_object(b"{"), Err(ParseError::NotJson(_))));
        assert_eq!(json_object(b"[1]"), Err(ParseError::NotObject));
        assert_eq!(json_object(b"null"), Err(ParseError::NotObject));
        assert!(json_object(b"{}").is_ok());
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            json_object(deep.as_bytes()),
            Err(ParseError::NotJson(_))
        ));
    }

    #[test]
    fn ints_from_every_spelling() {
        let v = serde_json::json!({"a": 5, "b": 5.0, "c": " 5 ", "d": 5.5, "e": true, "f": 1e300});
        assert_eq!(opt_int(&v, "a"), Some(5));
        assert_eq!(opt_int(&v, "b"), Some(5));
        assert_eq!(opt_int(&v, "c"), Some(5));
        assert_eq!(opt_int(&v, "d"), None);
        assert_eq!(opt_int(&v, "e"), None);
        assert_eq!(opt_int(&v, "f"), None);
        assert_eq!(opt_int(&v, "missing"), None);
    }
}
