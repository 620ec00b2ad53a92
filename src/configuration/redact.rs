//! What settings look like in a log: every `Debug` shows whether a secret is set, never its
//! value, and a database URL without its password.

use super::{AirtableSettings, Database, ServeArgs, ServiceSettings, Settings};

/// What a secret looks like in every `Debug`: whether it is set, never its value (the
/// derived `Debug` would print API keys and tokens into any log that formats settings).
struct Redacted<'a>(Option<&'a str>);

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Some(\"<redacted>\")"),
            None => f.write_str("None"),
        }
    }
}

fn redacted(s: &Option<String>) -> Redacted<'_> {
    Redacted(s.as_deref())
}

/// A list of secrets (the relay's, rotated), each shown as set.
fn redacted_all(secrets: &[String]) -> Vec<Redacted<'_>> {
    secrets.iter().map(|s| Redacted(Some(s))).collect()
}

impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The database URL may carry a password: shown the way `Database` shows it.
        let db = Database::parse(&self.db)
            .map(|d| d.to_string())
            .unwrap_or_else(|_| "(unparsable)".into());
        f.debug_struct("ServeArgs")
            .field("listen", &self.listen)
            .field("db", &db)
            .field("lease_secs", &self.lease_secs)
            .field(
                "goapi_webhook_secret",
                &redacted(&self.goapi_webhook_secret),
            )
            .field("relay_secrets", &redacted_all(&self.relay_secrets))
            .field("signing_secret", &redacted(&self.signing_secret))
            .field("public_base_url", &self.public_base_url)
            .field("dev", &self.dev)
            .field("sandbox", &self.sandbox)
            .field("allow_private_urls", &self.allow_private_urls)
            .field("admin_token", &redacted(&self.admin_token))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("db_max_mb", &self.db_max_mb)
            .field("airtable_token", &redacted(&self.airtable_token))
            .field("airtable_base_id", &self.airtable_base_id)
            .field("airtable_api_url", &self.airtable_api_url)
            .field("airtable_mapping", &self.airtable_mapping)
            .field("airtable_lockout_secs", &self.airtable_lockout_secs)
            .field("nca_api_url", &self.nca_api_url)
            .field("nca_api_key", &redacted(&self.nca_api_key))
            .field("music_volume", &self.music_volume)
            .field("goapi_api_url", &self.goapi_api_url)
            .field("goapi_api_key", &redacted(&self.goapi_api_key))
            .field("goapi_model", &self.goapi_model)
            .field("default_music_prompt", &self.default_music_prompt)
            .field("max_retries", &self.max_retries)
            .field("effect_max_attempts", &self.effect_max_attempts)
            .field("effect_backoff_ms", &self.effect_backoff_ms)
            .field("interrupted_grace_secs", &self.interrupted_grace_secs)
            .field("goapi_deadline_secs", &self.goapi_deadline_secs)
            .field("nca_deadline_secs", &self.nca_deadline_secs)
            .field("reconcile_interval_secs", &self.reconcile_interval_secs)
            .field("worker_concurrency", &self.worker_concurrency)
            .field("reconcile_checks", &self.reconcile_checks)
            .field("retention_days", &self.retention_days)
            .finish()
    }
}

impl std::fmt::Debug for AirtableSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AirtableSettings")
            .field("api_url", &self.api_url)
            .field("token", &Redacted(Some(&self.token)))
            .field("base_id", &self.base_id)
            .field("lockout", &self.lockout)
            .finish()
    }
}

impl std::fmt::Debug for ServiceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSettings")
            .field("url", &self.url)
            .field("key", &Redacted(Some(&self.key)))
            .finish()
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("db", &self.db)
            .field("lease", &self.lease)
            .field(
                "goapi_webhook_secret",
                &redacted(&self.goapi_webhook_secret),
            )
            .field("relay_secrets", &redacted_all(&self.relay_secrets))
            .field("signing_secret", &Redacted(Some(&self.signing_secret)))
            .field("public_base_url", &self.public_base_url)
            .field("dev", &self.dev)
            .field("sandbox", &self.sandbox)
            .field("admin_token", &redacted(&self.admin_token))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("db_max_bytes", &self.db_max_bytes)
            .field("airtable", &self.airtable)
            .field("mapping", &self.mapping)
            .field("nca", &self.nca)
            .field("goapi", &self.goapi)
            .field("goapi_model", &self.goapi_model)
            .field("default_music_prompt", &self.default_music_prompt)
            .field("volume", &self.volume)
            .field("max_retries", &self.max_retries)
            .field("effect_max_attempts", &self.effect_max_attempts)
            .field("effect_backoff", &self.effect_backoff)
            .field("interrupted_grace", &self.interrupted_grace)
            .field("goapi_deadline", &self.goapi_deadline)
            .field("nca_deadline", &self.nca_deadline)
            .field("reconcile_interval", &self.reconcile_interval)
            .field("reconcile_checks", &self.reconcile_checks)
            .field("worker_concurrency", &self.worker_concurrency)
            .field("retention", &self.retention)
            .field("generated", &self.generated)
            .finish()
    }
}
