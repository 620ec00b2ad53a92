//! Signed callback URLs. NCA signs nothing and GoAPI's secret header is optional, so
//! every callback URL we hand out carries `token`, an HMAC-SHA256 over the endpoint
//! kind and every parameter; anyone who did not get the URL from us cannot forge one,
//! and a URL for one video, job or endpoint cannot be replayed for another.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::auth::{AuthError, hmac_sha256};
use crate::domain::RecordId;

/// Which route a callback URL points at; part of what the token covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::Display)]
#[strum(serialize_all = "snake_case")]
pub enum CallbackEndpoint {
    /// `/webhooks/goapi`
    Goapi,
    /// `/webhooks/nca-toolkit`
    Nca,
}

impl CallbackEndpoint {
    pub fn path(self) -> &'static str {
        match self {
            CallbackEndpoint::Goapi => "/webhooks/goapi",
            CallbackEndpoint::Nca => "/webhooks/nca-toolkit",
        }
    }
}

/// The query parameters of a callback, as the route receives them
/// (`warp::query::<CallbackParams>()`; unknown parameters are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CallbackParams {
    pub video_id: Option<String>,
    pub operation: Option<String>,
    pub job: Option<String>,
    pub token: Option<String>,
}

/// The operation NCA callbacks carry.
pub(crate) const NCA_OPERATION: &str = "add_music";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackConfigError {
    #[error("callback signing key must be at least {min} bytes", min = CallbackSigner::MIN_KEY_BYTES)]
    ShortKey,
    #[error("public base URL {0:?} is not an absolute http(s) URL without query or fragment")]
    BadBaseUrl(String),
}

#[derive(Clone)]
pub struct CallbackSigner {
    key: Vec<u8>,
    /// Without a trailing slash, so paths append cleanly.
    base: String,
}

impl fmt::Debug for CallbackSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackSigner")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl CallbackSigner {
    /// A short key would make the only protection of the NCA route guessable.
    pub const MIN_KEY_BYTES: usize = 16;

    /// `base_url` is where GoAPI and NCA reach us, e.g. `https://x.example/prefix`.
    pub fn new(key: &[u8], base_url: &str) -> Result<Self, CallbackConfigError> {
        if key.len() < Self::MIN_KEY_BYTES {
            return Err(CallbackConfigError::ShortKey);
        }
        let trimmed = base_url.trim().trim_end_matches('/');
        let bad = || CallbackConfigError::BadBaseUrl(base_url.to_owned());
        let parsed = url::Url::parse(trimmed).map_err(|_| bad())?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(bad());
        }
        Ok(Self {
            key: key.to_vec(),
            base: trimmed.to_owned(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The `webhook_url` for an NCA mix of `video` by our job `job`.
    pub fn nca_url(&self, video: &RecordId, job: &str) -> String {
        self.url(CallbackEndpoint::Nca, video, Some(NCA_OPERATION), job)
    }

    /// The `webhook_config.endpoint` for a GoAPI music task of `video` by our job `job`.
    pub fn goapi_url(&self, video: &RecordId, job: &str) -> String {
        self.url(CallbackEndpoint::Goapi, video, None, job)
    }

    /// The callback URL for people reading the base (a job's Webhook URL): without its
    /// token, so that whoever can read the base cannot forge a callback.
    pub(crate) fn readable_url(
        &self,
        endpoint: CallbackEndpoint,
        video: &RecordId,
        job: &str,
    ) -> String {
        let op = match endpoint {
            CallbackEndpoint::Nca => Some(NCA_OPERATION),
            CallbackEndpoint::Goapi => None,
        };
        without_token(&self.url(endpoint, video, op, job))
    }

    fn url(
        &self,
        endpoint: CallbackEndpoint,
        video: &RecordId,
        op: Option<&str>,
        job: &str,
    ) -> String {
        let token = self.token(endpoint, Some(video.as_str()), op, Some(job));
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("video_id", video.as_str());
        if let Some(op) = op {
            q.append_pair("operation", op);
        }
        q.append_pair("job", job);
        q.append_pair("token", &token);
        format!("{}{}?{}", self.base, endpoint.path(), q.finish())
    }

    /// Checks a callback's token. Any change to the endpoint, `video_id`, `operation` or
    /// `job` (including adding or removing one) gives [`AuthError::Mismatch`]. Passing
    /// says nothing about the values' format: parse `video_id` as a [`RecordId`] after.
    pub fn verify(
        &self,
        endpoint: CallbackEndpoint,
        params: &CallbackParams,
    ) -> Result<(), AuthError> {
        let token = params
            .token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let provided = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| AuthError::Malformed("callback token is not base64url".into()))?;
        let expected = self.mac(
            endpoint,
            params.video_id.as_deref(),
            params.operation.as_deref(),
            params.job.as_deref(),
        );
        if bool::from(expected.as_slice().ct_eq(provided.as_slice())) {
            Ok(())
        } else {
            Err(AuthError::Mismatch)
        }
    }

    fn token(
        &self,
        endpoint: CallbackEndpoint,
        video: Option<&str>,
        op: Option<&str>,
        job: Option<&str>,
    ) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(endpoint, video, op, job))
    }

    /// Canonical input: a version label, then each field as a presence byte and, when
    /// present, its length (u64 big-endian) and bytes. Length prefixes make the encoding
    /// injective whatever the values contain, and the presence byte tells an absent
    /// parameter from an empty one.
    fn mac(
        &self,
        endpoint: CallbackEndpoint,
        video: Option<&str>,
        op: Option<&str>,
        job: Option<&str>,
    ) -> [u8; 32] {
        let kind: &str = match endpoint {
            CallbackEndpoint::Goapi => "goapi",
            CallbackEndpoint::Nca => "nca",
        };
        let mut msg = b"reelstate-callback-v1".to_vec();
        for field in [Some(kind), video, op, job] {
            match field {
                None => msg.push(0),
                Some(v) => {
                    msg.push(1);
                    msg.extend_from_slice(&(v.len() as u64).to_be_bytes());
                    msg.extend_from_slice(v.as_bytes());
                }
            }
        }
        hmac_sha256(&self.key, &[&msg])
    }
}

/// A callback URL with its `token` parameter removed.
fn without_token(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let kept: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| k != "token")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            u.query_pairs_mut().clear().extend_pairs(kept);
            u.to_string()
        }
        Err(_) => String::new(),
    }
}

/// `text` with the value of every `token` query parameter replaced by `***`, wherever a
/// URL of ours is echoed in it: GoAPI's task object repeats our callback URL, and a raw
/// payload copied to the base must not hand whoever reads the base a working token.
/// Works on the text as sent, so the JSON's other bytes stay as they came: the parameter
/// may follow `?` or `&` written plainly, JSON-escaped (`\u0026`, `\u003f`) or as HTML
/// (`&amp;`), and its value ends at the next delimiter, an escape's backslash included.
pub(crate) fn mask_tokens(text: &str) -> String {
    const KEY: &str = "token=";
    const MASK: &str = "***";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(KEY) {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        out.push_str(KEY);
        let after = &after[KEY.len()..];
        let prefix = &out.as_bytes()[..out.len() - KEY.len()];
        let tail = prefix[prefix.len().saturating_sub(6)..].to_ascii_lowercase();
        let is_parameter = ["?", "&", "\\u0026", "\\u003f", "&amp;"]
            .iter()
            .any(|p| tail.ends_with(p.as_bytes()));
        let end = after
            .find(|c: char| {
                c.is_whitespace()
                    || matches!(
                        c,
                        '&' | '#' | '"' | '\'' | '\\' | '<' | '>' | ',' | '}' | ']'
                    )
            })
            .unwrap_or(after.len());
        if is_parameter && end > 0 {
            out.push_str(MASK);
            rest = &after[end..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_masked_in_every_way_a_payload_writes_a_url() {
        let plain = r#"{"webhook_config":{"endpoint":"https://r.example/webhooks/goapi?video_id=recA&job=j-1&token=AbC_d-9","secret":"********"}}"#;
        assert_eq!(
            mask_tokens(plain),
            r#"{"webhook_config":{"endpoint":"https://r.example/webhooks/goapi?video_id=recA&job=j-1&token=***","secret":"********"}}"#
        );
        // serde_json's and Python's escapes: `\/` for the slash, `\u0026` for `&`.
        let escaped = r#"{"endpoint":"https:\/\/r.example\/webhooks\/goapi?video_id=recA\u0026job=j\u0026token=AbC_d-9\u0026x=1"}"#;
        assert_eq!(
            mask_tokens(escaped),
            r#"{"endpoint":"https:\/\/r.example\/webhooks\/goapi?video_id=recA\u0026job=j\u0026token=***\u0026x=1"}"#
        );
        assert_eq!(
            mask_tokens("u=https://r.example/h\\u003Ftoken=Zz9&amp;token=Yy8 and ?token=Xx7#frag"),
            "u=https://r.example/h\\u003Ftoken=***&amp;token=*** and ?token=***#frag"
        );
    }

    #[test]
    fn only_a_parameter_named_token_is_masked() {
        for kept in [
            r#"{"note":"token=abc is not in a URL"}"#,
            "https://r.example/h?webhook_token=abc&access_token=def",
            "https://r.example/h?token=&x=1",
            "",
        ] {
            assert_eq!(mask_tokens(kept), kept);
        }
        // Two URLs, two tokens; a multi-byte neighbour stays whole.
        assert_eq!(
            mask_tokens("é?token=a é&token=b\"é"),
            "é?token=*** é&token=***\"é"
        );
    }

    #[test]
    fn a_signed_url_masked_has_no_token_left() {
        let s = CallbackSigner::new(KEY, "https://x.example").unwrap();
        let url = s.goapi_url(&video(), JOB);
        let token = params(&url).token.unwrap();
        let body =
            serde_json::json!({ "data": { "config": { "webhook_config": { "endpoint": url } } } })
                .to_string();
        assert!(body.contains(&token));
        let masked = mask_tokens(&body);
        assert!(!masked.contains(&token), "{masked}");
        assert!(masked.contains("&token=***"), "{masked}");
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const JOB: &str = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";

    fn video() -> RecordId {
        RecordId::parse("recA1b2C3d4E5f6G7").unwrap()
    }

    /// Reads a URL's query back the way warp does (serde_urlencoded).
    fn params(url: &str) -> CallbackParams {
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let mut p = CallbackParams::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let v = Some(v.into_owned());
            match k.as_ref() {
                "video_id" => p.video_id = v,
                "operation" => p.operation = v,
                "job" => p.job = v,
                "token" => p.token = v,
                _ => {}
            }
        }
        p
    }

    #[test]
    fn readable_urls_are_the_callback_urls_without_their_token() {
        let s = CallbackSigner::new(KEY, "https://x.example/prefix/").unwrap();
        assert_eq!(
            s.readable_url(CallbackEndpoint::Nca, &video(), JOB),
            format!(
                "https://x.example/prefix/webhooks/nca-toolkit?video_id=recA1b2C3d4E5f6G7&operation=add_music&job={JOB}"
            )
        );
        let goapi = s.readable_url(CallbackEndpoint::Goapi, &video(), JOB);
        assert_eq!(
            goapi,
            format!("https://x.example/prefix/webhooks/goapi?video_id=recA1b2C3d4E5f6G7&job={JOB}")
        );
        assert_eq!(
            s.verify(CallbackEndpoint::Goapi, &params(&goapi)),
            Err(AuthError::Missing),
            "a readable URL cannot be used as a callback"
        );
    }

    #[test]
    fn urls_have_the_documented_shape_and_verify() {
        let s = CallbackSigner::new(KEY, "https://x.example/prefix/").unwrap();
        let nca = s.nca_url(&video(), JOB);
        assert!(
            nca.starts_with(&format!(
                "https://x.example/prefix/webhooks/nca-toolkit?video_id=recA1b2C3d4E5f6G7&operation=add_music&job={JOB}&token="
            )),
            "{nca}"
        );
        assert_eq!(s.verify(CallbackEndpoint::Nca, &params(&nca)), Ok(()));
        let goapi = s.goapi_url(&video(), JOB);
        assert!(goapi.starts_with(&format!(
            "https://x.example/prefix/webhooks/goapi?video_id=recA1b2C3d4E5f6G7&job={JOB}&token="
        )));
        assert_eq!(s.verify(CallbackEndpoint::Goapi, &params(&goapi)), Ok(()));
        // 32-byte MAC in base64url without padding.
        assert_eq!(params(&goapi).token.unwrap().len(), 43);
    }

    #[test]
    fn odd_job_strings_round_trip() {
        let s = CallbackSigner::new(KEY, "http://127.0.0.1:8080").unwrap();
        let job = "a b&c=d/é?#+";
        let url = s.goapi_url(&video(), job);
        assert!(!url.contains(' ') && !url.contains('#') && !url.contains('é'));
        let p = params(&url);
        assert_eq!(p.job.as_deref(), Some(job));
        assert_eq!(s.verify(CallbackEndpoint::Goapi, &p), Ok(()));
    }

    #[test]
    fn any_change_is_a_mismatch() {
        let s = CallbackSigner::new(KEY, "http://127.0.0.1:8080").unwrap();
        let good = params(&s.nca_url(&video(), JOB));
        let mut cases = Vec::new();
        let mut p = good.clone();
        p.video_id = Some("recZZZZZZZZZZZZZZ".into());
        cases.push(p);
        let mut p = good.clone();
        p.job = Some(format!("{JOB}x"));
        cases.push(p);
        let mut p = good.clone();
        p.operation = Some("generate_music".into());
        cases.push(p);
        let mut p = good.clone();
        p.operation = None;
        cases.push(p);
        let mut p = good.clone();
        p.operation = Some(String::new());
        cases.push(p);
        let mut p = good.clone();
        p.video_id = None;
        cases.push(p);
        for p in &cases {
            assert_eq!(
                s.verify(CallbackEndpoint::Nca, p),
                Err(AuthError::Mismatch),
                "{p:?}"
            );
        }
        // The token of one endpoint is worthless at the other.
        assert_eq!(
            s.verify(CallbackEndpoint::Goapi, &good),
            Err(AuthError::Mismatch)
        );
        // Another key.
        let other = CallbackSigner::new(b"another key, long enough......", "http://h").unwrap();
        assert_eq!(
            other.verify(CallbackEndpoint::Nca, &good),
            Err(AuthError::Mismatch)
        );
        // A truncated token.
        let mut p = good.clone();
        p.token = p.token.map(|t| t[..20].to_owned());
        assert_eq!(
            s.verify(CallbackEndpoint::Nca, &p),
            Err(AuthError::Mismatch)
        );
        let mut p = good.clone();
        p.token = Some("***".into());
        assert!(matches!(
            s.verify(CallbackEndpoint::Nca, &p),
            Err(AuthError::Malformed(_))
        ));
        let mut p = good;
        p.token = None;
        assert_eq!(s.verify(CallbackEndpoint::Nca, &p), Err(AuthError::Missing));
        p.token = Some(String::new());
        assert_eq!(s.verify(CallbackEndpoint::Nca, &p), Err(AuthError::Missing));
    }

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        let s = CallbackSigner::new(KEY, "http://h").unwrap();
        let a = s.mac(CallbackEndpoint::Nca, Some("ab"), Some("c"), Some("d"));
        let b = s.mac(CallbackEndpoint::Nca, Some("a"), Some("bc"), Some("d"));
        let c = s.mac(CallbackEndpoint::Nca, Some("a"), None, Some("bcd"));
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(b, c);
    }

    #[test]
    fn configuration_is_checked() {
        assert_eq!(
            CallbackSigner::new(b"short", "http://h").unwrap_err(),
            CallbackConfigError::ShortKey
        );
        for bad in [
            "",
            "ftp://h",
            "/relative",
            "http://h/?q=1",
            "http://h/#f",
            "not a url",
        ] {
            assert!(
                matches!(
                    CallbackSigner::new(KEY, bad),
                    Err(CallbackConfigError::BadBaseUrl(_))
                ),
                "{bad}"
            );
        }
        let s = CallbackSigner::new(KEY, "http://127.0.0.1:8080/").unwrap();
        assert_eq!(s.base_url(), "http://127.0.0.1:8080");
        assert!(!format!("{s:?}").contains("0123456789"));
    }
}
