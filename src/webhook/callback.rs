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
pub const NCA_OPERATION: &str = "add_music";

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
