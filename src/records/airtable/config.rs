//! Where the Airtable backend sends its requests and how hard it tries: the one setting
//! both the client and the request budget it spends from ([`super::budget`]) read, so that
//! neither has to import the other.

use std::fmt;
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let cfg = AirtableConfig {
            token: "patSECRET".into(),
            ..AirtableConfig::default()
        };
        assert!(!format!("{cfg:?}").contains("patSECRET"));
    }
}
