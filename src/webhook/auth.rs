//! Authentication of incoming webhooks: GoAPI's shared-secret header and Standard
//! Webhooks signatures (<https://www.standardwebhooks.com>).
//!
//! Every comparison of a secret or a MAC is constant-time, and no error message
//! contains a secret, a signature or a token.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// Header GoAPI sends the configured secret in, verbatim.
pub(crate) const GOAPI_SECRET_HEADER: &str = "x-webhook-secret";
/// Standard Webhooks headers.
pub(crate) const HEADER_ID: &str = "webhook-id";
pub(crate) const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub(crate) const HEADER_SIGNATURE: &str = "webhook-signature";

/// Why a request was not authenticated (→ 401). The messages tell an operator which
/// part is wrong without echoing what was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("credentials missing: no secret, signature or token was sent")]
    Missing,
    #[error("credentials do not match the configured secret")]
    Mismatch,
    #[error("webhook timestamp is outside the accepted window (clock skew or a replay)")]
    Timestamp,
    #[error("malformed credentials: {0}")]
    Malformed(String),
}

/// Checks a shared secret (GoAPI's `x-webhook-secret`). Both sides are hashed first so
/// that the comparison takes the same time whatever the lengths; an empty `expected`
/// never matches, so a missing configuration cannot open the door.
pub fn verify_shared_secret(provided: Option<&str>, expected: &str) -> Result<(), AuthError> {
    let provided = provided
        .filter(|p| !p.is_empty())
        .ok_or(AuthError::Missing)?;
    if expected.is_empty() {
        return Err(AuthError::Malformed(
            "no shared secret is configured on this side".into(),
        ));
    }
    let a = Sha256::digest(provided.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Verifier and signer for Standard Webhooks.
///
/// Secrets are strings as the spec's libraries take them: `whsec_<base64>`, and, like
/// those libraries, a string without the prefix is also base64-decoded (so the same
/// configured string works on both sides). Raw key bytes go through
/// [`StandardWebhooks::from_keys`]. Several secrets allow rotation: a message signed
/// with any of them is accepted; [`StandardWebhooks::sign`] uses the first.
#[derive(Clone)]
pub struct StandardWebhooks {
    secrets: Vec<Vec<u8>>,
    tolerance_secs: i64,
}

impl fmt::Debug for StandardWebhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StandardWebhooks")
            .field("secrets", &self.secrets.len())
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

impl StandardWebhooks {
    /// The spec's recommended tolerance, in both directions.
    pub(crate) const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
    /// Entries of a signature header looked at; a sender rotating keys sends two or three.
    const MAX_SIGNATURES: usize = 16;

    /// From `whsec_…` strings (see the type's documentation). Errors name the secret by
    /// position, never by value.
    pub fn new<I, S>(secrets: I) -> Result<Self, AuthError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let keys = secrets
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let s = s.as_ref().trim();
                let b64 = s.strip_prefix("whsec_").unwrap_or(s);
                STANDARD
                    .decode(b64)
                    .or_else(|_| STANDARD_NO_PAD.decode(b64))
                    .map_err(|_| {
                        AuthError::Malformed(format!(
                            "signing secret #{} is not valid base64",
                            i + 1
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_keys(keys)
    }

    /// From a whitespace- or comma-separated list, as an environment variable holds it.
    pub fn from_list(list: &str) -> Result<Self, AuthError> {
        Self::new(
            list.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty()),
        )
    }

    /// From raw key bytes.
    pub fn from_keys(keys: Vec<Vec<u8>>) -> Result<Self, AuthError> {
        if keys.is_empty() {
            return Err(AuthError::Malformed("no signing secret configured".into()));
        }
        if let Some(i) = keys.iter().position(Vec::is_empty) {
            return Err(AuthError::Malformed(format!(
                "signing secret #{} is empty",
                i + 1
            )));
        }
        Ok(Self {
            secrets: keys,
            tolerance_secs: Self::DEFAULT_TOLERANCE.as_secs() as i64,
        })
    }

    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance_secs = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
        self
    }

    /// Verifies `webhook-id`, `webhook-timestamp` and `webhook-signature` against `body`.
    /// The timestamp is checked first, so a correct signature on a stale message reports
    /// [`AuthError::Timestamp`] (what an operator needs to see for clock skew).
    pub fn verify(
        &self,
        msg_id: &str,
        timestamp: &str,
        signature_header: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), AuthError> {
        if msg_id.is_empty() || timestamp.trim().is_empty() || signature_header.trim().is_empty() {
            return Err(AuthError::Missing);
        }
        let ts: i64 = timestamp.trim().parse().map_err(|_| {
            AuthError::Malformed("webhook-timestamp is not an integer number of seconds".into())
        })?;
        if ts.abs_diff(now.timestamp()) > self.tolerance_secs.unsigned_abs() {
            return Err(AuthError::Timestamp);
        }
        let provided: Vec<Vec<u8>> = signature_header
            .split_whitespace()
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .take(Self::MAX_SIGNATURES)
            .filter_map(|(_, sig)| {
                STANDARD
                    .decode(sig)
                    .or_else(|_| STANDARD_NO_PAD.decode(sig))
                    .ok()
            })
            .collect();
        if provided.is_empty() {
            return Err(AuthError::Malformed(
                "webhook-signature has no `v1,<base64>` entry".into(),
            ));
        }
        // The MAC covers the timestamp as sent, not as re-printed from the parsed value.
        let ts_signed = timestamp.trim();
        let mut ok = Choice::from(0);
        for key in &self.secrets {
            let expected = hmac_sha256(
                key,
                &[msg_id.as_bytes(), b".", ts_signed.as_bytes(), b".", body],
            );
            for sig in &provided {
                // ct_eq on slices of different lengths is false without leaking content.
                ok |= expected.as_slice().ct_eq(sig.as_slice());
            }
        }
        if bool::from(ok) {
            Ok(())
        } else {
            Err(AuthError::Mismatch)
        }
    }

    /// The `webhook-signature` value for a message, with the first secret.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = self.secrets.first().map(Vec::as_slice).unwrap_or_default();
        let ts = timestamp.to_string();
        let mac = hmac_sha256(key, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]);
        format!("v1,{}", STANDARD.encode(mac))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    // The example from the Standard Webhooks spec's reference test vectors.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn at(ts: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(ts, 0).single().unwrap()
    }

    #[test]
    fn shared_secret() {
        assert_eq!(verify_shared_secret(Some("s3cret"), "s3cret"), Ok(()));
        assert_eq!(
            verify_shared_secret(Some("s3cre"), "s3cret"),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            verify_shared_secret(Some("s3cret "), "s3cret"),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            verify_shared_secret(None, "s3cret"),
            Err(AuthError::Missing)
        );
        assert_eq!(
            verify_shared_secret(Some(""), "s3cret"),
            Err(AuthError::Missing)
        );
        assert!(matches!(
            verify_shared_secret(Some("x"), ""),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn spec_vector_verifies_and_signs() {
        let wh = StandardWebhooks::new([SPEC_SECRET]).unwrap();
        assert_eq!(wh.sign(SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
        let ts = SPEC_TS.to_string();
        assert_eq!(
            wh.verify(SPEC_ID, &ts, SPEC_SIG, SPEC_BODY, at(SPEC_TS)),
            Ok(())
        );
        // Without the prefix the string is base64 too, as in the spec's libraries.
        let bare = StandardWebhooks::new([&SPEC_SECRET[6..]]).unwrap();
        assert_eq!(
            bare.verify(SPEC_ID, &ts, SPEC_SIG, SPEC_BODY, at(SPEC_TS)),
            Ok(())
        );
    }

    #[test]
    fn rotation_and_multiple_entries() {
        let old = StandardWebhooks::new(["whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0"]).unwrap();
        let both = StandardWebhooks::from_list(&format!(
            "{SPEC_SECRET}, whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0"
        ))
        .unwrap();
        let sig_old = old.sign("m", 100, b"b");
        assert_eq!(both.verify("m", "100", &sig_old, b"b", at(100)), Ok(()));
        // A header with an unknown version, a junk entry and a good one passes.
        let header = format!("v2,abc junk v1,!!! {sig_old}");
        assert_eq!(both.verify("m", "100", &header, b"b", at(100)), Ok(()));
        let only_new = StandardWebhooks::new([SPEC_SECRET]).unwrap();
        assert_eq!(
            only_new.verify("m", "100", &sig_old, b"b", at(100)),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn tampering_and_time() {
        let wh = StandardWebhooks::new([SPEC_SECRET]).unwrap();
        let sig = wh.sign("m", 1000, b"body");
        assert_eq!(
            wh.verify("m", "1000", &sig, b"body!", at(1000)),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            wh.verify("m2", "1000", &sig, b"body", at(1000)),
            Err(AuthError::Mismatch)
        );
        assert_eq!(wh.verify("m", "1000", &sig, b"body", at(1300)), Ok(()));
        assert_eq!(wh.verify("m", "1000", &sig, b"body", at(700)), Ok(()));
        assert_eq!(
            wh.verify("m", "1000", &sig, b"body", at(1301)),
            Err(AuthError::Timestamp)
        );
        assert_eq!(
            wh.verify("m", "1000", &sig, b"body", at(699)),
            Err(AuthError::Timestamp)
        );
        let strict = wh.clone().with_tolerance(Duration::from_secs(10));
        assert_eq!(
            strict.verify("m", "1000", &sig, b"body", at(1011)),
            Err(AuthError::Timestamp)
        );
        // The timestamp is part of the MAC: moving it into the window does not help.
        assert_eq!(
            wh.verify("m", "1001", &sig, b"body", at(1000)),
            Err(AuthError::Mismatch)
        );
        assert!(matches!(
            wh.verify("m", "soon", &sig, b"body", at(1000)),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            wh.verify("m", "1000", "v2,abc", b"body", at(1000)),
            Err(AuthError::Malformed(_))
        ));
        assert_eq!(
            wh.verify("", "1000", &sig, b"body", at(1000)),
            Err(AuthError::Missing)
        );
        assert_eq!(
            wh.verify("m", "", &sig, b"body", at(1000)),
            Err(AuthError::Missing)
        );
        assert_eq!(
            wh.verify("m", "1000", " ", b"body", at(1000)),
            Err(AuthError::Missing)
        );
        assert_eq!(
            wh.verify("m", &i64::MIN.to_string(), &sig, b"body", at(1000)),
            Err(AuthError::Timestamp)
        );
    }

    #[test]
    fn bad_configuration_is_refused_without_echoing_secrets() {
        let err = StandardWebhooks::new(["whsec_not base64!!"]).unwrap_err();
        assert!(!err.to_string().contains("not base64!!"), "{err}");
        assert!(StandardWebhooks::new(Vec::<String>::new()).is_err());
        assert!(StandardWebhooks::from_keys(vec![vec![]]).is_err());
        let wh = StandardWebhooks::new([SPEC_SECRET]).unwrap();
        assert!(!format!("{wh:?}").contains("MfKQ"));
    }
}
