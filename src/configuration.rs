//! Settings: clap flags backed by environment variables, validated into [`Settings`] at
//! start-up with messages that say what to set. Secrets are never printed: not in `--help`
//! (hide_env_values), nor in any `Debug` (`redact`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::records::Mapping;

mod redact;
#[cfg(test)]
mod tests;

#[derive(Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "REELSTATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The store: a SQLite file (embedded, one process) or a `postgres://` URL (several
    /// replicas sharing one database).
    #[arg(
        long,
        env = "REELSTATE_DB",
        default_value = "./reelstate.db",
        hide_env_values = true
    )]
    pub db: String,
    /// On PostgreSQL: how long a replica's claim on a video outlives the replica (a killed
    /// replica's work is taken over after this); renewed every third of it while alive.
    #[arg(long, env = "REELSTATE_LEASE_SECS", default_value_t = 15.0)]
    pub lease_secs: f64,
    /// Shared secret GoAPI sends in `x-webhook-secret`.
    #[arg(long, env = "GOAPI_WEBHOOK_SECRET", hide_env_values = true)]
    pub goapi_webhook_secret: Option<String>,
    /// Standard Webhooks secrets (`whsec_…`, comma-separated for rotation) of a relay that
    /// signs GoAPI's webhooks.
    #[arg(
        long,
        env = "WEBHOOK_RELAY_SECRETS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub relay_secrets: Vec<String>,
    /// Key that signs the callback URLs handed to NCA and GoAPI.
    #[arg(long, env = "REELSTATE_SIGNING_SECRET", hide_env_values = true)]
    pub signing_secret: Option<String>,
    /// How GoAPI and NCA reach this service, e.g. https://reelstate.example.
    #[arg(long, env = "PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,
    /// Development mode: allows running without webhook secrets (never in production).
    #[arg(long, env = "REELSTATE_DEV_MODE", default_value_t = false)]
    pub dev: bool,
    /// Start clearly labelled in-process stand-ins for GoAPI and NCA (implies --dev).
    #[arg(long, env = "REELSTATE_SANDBOX", default_value_t = false)]
    pub sandbox: bool,
    /// Let the track check reach loopback and private networks (metadata and link-local
    /// addresses stay refused). For hosts on your own network, and implied by --sandbox,
    /// whose stand-ins listen on 127.0.0.1.
    #[arg(long, env = "REELSTATE_ALLOW_PRIVATE_URLS", default_value_t = false)]
    pub allow_private_urls: bool,
    /// Bearer token required by the inspection and operations endpoints.
    #[arg(long, env = "REELSTATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Largest webhook body accepted, in bytes.
    #[arg(long, env = "REELSTATE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: u64,

    #[arg(long, env = "AIRTABLE_TOKEN", hide_env_values = true)]
    pub airtable_token: Option<String>,
    #[arg(long, env = "AIRTABLE_BASE_ID")]
    pub airtable_base_id: Option<String>,
    #[arg(
        long,
        env = "AIRTABLE_API_URL",
        default_value = "https://api.airtable.com"
    )]
    pub airtable_api_url: String,
    /// TOML file naming the base's tables, fields and status values.
    #[arg(long, env = "REELSTATE_AIRTABLE_MAPPING")]
    pub airtable_mapping: Option<PathBuf>,
    /// How long Airtable locks a caller out after a 429.
    #[arg(long, env = "AIRTABLE_LOCKOUT_SECS", default_value_t = 30.0)]
    pub airtable_lockout_secs: f64,

    #[arg(long, env = "NCA_API_URL")]
    pub nca_api_url: Option<String>,
    #[arg(long, env = "NCA_API_KEY", hide_env_values = true)]
    pub nca_api_key: Option<String>,
    /// Music volume under the video's own audio.
    #[arg(long, env = "REELSTATE_MUSIC_VOLUME", default_value_t = 0.2)]
    pub music_volume: f64,

    #[arg(long, env = "GOAPI_API_URL", default_value = "https://api.goapi.ai")]
    pub goapi_api_url: String,
    #[arg(long, env = "GOAPI_API_KEY", hide_env_values = true)]
    pub goapi_api_key: Option<String>,
    #[arg(long, env = "GOAPI_MUSIC_MODEL", default_value = "music-u")]
    pub goapi_model: String,
    /// Prompt used when the video has no Music Prompt.
    #[arg(
        long,
        env = "REELSTATE_DEFAULT_MUSIC_PROMPT",
        default_value = "calm instrumental background music, no vocals"
    )]
    pub default_music_prompt: String,

    /// Redrives a video may have in all.
    #[arg(long, env = "REELSTATE_MAX_RETRIES", default_value_t = 3)]
    pub max_retries: u32,
    /// Attempts of one effect before it is recorded as failed.
    #[arg(long, env = "REELSTATE_EFFECT_MAX_ATTEMPTS", default_value_t = 8)]
    pub effect_max_attempts: u32,
    /// First retry delay of an effect (then exponential, with full jitter).
    #[arg(long, env = "REELSTATE_EFFECT_BACKOFF_MS", default_value_t = 500)]
    pub effect_backoff_ms: u64,
    /// After a crash during a GoAPI/NCA call, how long to wait for that call's callback
    /// before calling again (a second call would be a second job at the service).
    #[arg(
        long,
        env = "REELSTATE_INTERRUPTED_GRACE_SECS",
        default_value_t = 600.0
    )]
    pub interrupted_grace_secs: f64,
    /// A music_generation job still processing this long after it started is checked at
    /// GoAPI (a lost webhook must not leave a video stuck).
    #[arg(long, env = "REELSTATE_GOAPI_DEADLINE_SECS", default_value_t = 900.0)]
    pub goapi_deadline_secs: f64,
    /// The same for music_addition jobs at NCA.
    #[arg(long, env = "REELSTATE_NCA_DEADLINE_SECS", default_value_t = 1800.0)]
    pub nca_deadline_secs: f64,
    /// Time between two checks of the same job.
    #[arg(
        long,
        env = "REELSTATE_RECONCILE_INTERVAL_SECS",
        default_value_t = 300.0
    )]
    pub reconcile_interval_secs: f64,
    /// Videos the worker processes at once. Each takes the store's single writer briefly
    /// per event; more would queue on it and slow intake, which shares that lock.
    #[arg(long, env = "REELSTATE_WORKER_CONCURRENCY", default_value_t = 2)]
    pub worker_concurrency: usize,
    /// Checks of a job before it is failed for want of an answer.
    #[arg(long, env = "REELSTATE_RECONCILE_CHECKS", default_value_t = 3)]
    pub reconcile_checks: u32,
    /// Days processed inbox entries (with their raw bodies), transition history and done
    /// effects are kept before the background pruner deletes them (fractions allowed).
    #[arg(long, env = "REELSTATE_RETENTION_DAYS", default_value_t = 30.0)]
    pub retention_days: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no webhook secret: set GOAPI_WEBHOOK_SECRET (and REELSTATE_SIGNING_SECRET), or run with --dev for local development"
    )]
    NoWebhookSecret,
    #[error(
        "no signing secret: set REELSTATE_SIGNING_SECRET (any long random string) so NCA callback URLs can be authenticated, or run with --dev"
    )]
    NoSigningSecret,
    #[error("PUBLIC_BASE_URL must be an absolute http(s) URL, got {0:?}")]
    BadPublicUrl(String),
    #[error("set both AIRTABLE_TOKEN and AIRTABLE_BASE_ID to use Airtable (only {0} is set)")]
    HalfAirtable(&'static str),
    #[error("{0}")]
    Mapping(#[from] crate::records::MappingError),
    #[error("REELSTATE_MUSIC_VOLUME must be between 0 and 1, got {0}")]
    BadVolume(f64),
    #[error("NCA_API_URL and NCA_API_KEY must be set (or run with --sandbox)")]
    NoNca,
    #[error(
        "no admin token: set REELSTATE_ADMIN_TOKEN (any long random string) so that the inspection and operations endpoints are not open to whoever reaches the port (a reverse proxy on this host included), or run with --dev"
    )]
    NoAdminToken,
    #[error(
        "no public URL: set PUBLIC_BASE_URL to the address GoAPI and NCA reach this service at (e.g. https://reelstate.example), or run with --dev"
    )]
    NoPublicBaseUrl,
    #[error("REELSTATE_DB is not a usable postgres:// URL: {0}")]
    BadDatabaseUrl(String),
}

/// Airtable settings, when the base is the system of record.
#[derive(Clone)]
pub struct AirtableSettings {
    pub api_url: String,
    pub token: String,
    pub base_id: String,
    pub lockout: Duration,
}

/// Where the engine keeps its state (and the records, when no Airtable is configured).
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// The embedded store: one process owns the file.
    Sqlite(PathBuf),
    /// A shared PostgreSQL database: any number of replicas.
    Postgres(String),
}

impl Database {
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let s = s.trim();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            s.parse::<tokio_postgres::Config>()
                .map_err(|e| ConfigError::BadDatabaseUrl(e.to_string()))?;
            Ok(Database::Postgres(s.to_owned()))
        } else if s.is_empty() {
            Err(ConfigError::BadDatabaseUrl("REELSTATE_DB is empty".into()))
        } else {
            Ok(Database::Sqlite(PathBuf::from(s)))
        }
    }
}

/// A URL's password never reaches a log line or an error message.
impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "{}", p.display()),
            Database::Postgres(url) => match url::Url::parse(url) {
                Ok(mut u) => {
                    if u.password().is_some() {
                        let _ = u.set_password(Some("***"));
                    }
                    u.set_query(None);
                    write!(f, "{u}")
                }
                Err(_) => f.write_str("postgres://(unparsable URL)"),
            },
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({self})")
    }
}

#[derive(Clone)]
pub struct ServiceSettings {
    pub url: String,
    pub key: String,
}

/// Validated settings: everything the service needs, nothing left to check later.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub db: Database,
    pub lease: Duration,
    pub goapi_webhook_secret: Option<String>,
    pub relay_secrets: Vec<String>,
    pub signing_secret: String,
    /// None until the sandbox or the listener tells where we are.
    pub public_base_url: Option<String>,
    pub dev: bool,
    pub sandbox: bool,
    /// Whether URLs from webhooks and the base may name loopback and private hosts for
    /// the track check (`clients::address`).
    pub allow_private_urls: bool,
    pub admin_token: Option<String>,
    pub max_body_bytes: u64,
    pub airtable: Option<AirtableSettings>,
    pub mapping: Mapping,
    pub nca: Option<ServiceSettings>,
    pub goapi: Option<ServiceSettings>,
    pub goapi_model: String,
    pub default_music_prompt: String,
    pub volume: f64,
    pub max_retries: u32,
    pub effect_max_attempts: u32,
    pub effect_backoff: Duration,
    pub interrupted_grace: Duration,
    pub goapi_deadline: Duration,
    pub nca_deadline: Duration,
    pub reconcile_interval: Duration,
    pub reconcile_checks: u32,
    pub worker_concurrency: usize,
    /// How long processed entries, history and done effects are kept.
    pub retention: Duration,
}

/// Seconds from a flag, never panicking: NaN and negatives become `floor`, infinity and
/// anything beyond a year become a year.
fn seconds(value: f64, floor: f64) -> Duration {
    const YEAR: f64 = 365.0 * 24.0 * 3600.0;
    Duration::from_secs_f64(value.max(floor).min(YEAR))
}

/// The key used in dev mode when none is set: fine on a laptop, refused in production
/// by requiring REELSTATE_SIGNING_SECRET outside --dev.
const DEV_SIGNING_SECRET: &str = "reelstate-development-signing-key";

impl ServeArgs {
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let dev = self.dev || self.sandbox;
        let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        let goapi_webhook_secret = nonempty(self.goapi_webhook_secret);
        let relay_secrets: Vec<String> = self
            .relay_secrets
            .into_iter()
            .filter(|s| !s.trim().is_empty())
            .collect();
        if !dev && goapi_webhook_secret.is_none() && relay_secrets.is_empty() {
            return Err(ConfigError::NoWebhookSecret);
        }
        let signing_secret = match nonempty(self.signing_secret) {
            Some(s) => s,
            None if dev => DEV_SIGNING_SECRET.to_owned(),
            None => return Err(ConfigError::NoSigningSecret),
        };
        let public_base_url = nonempty(self.public_base_url)
            .map(|u| {
                let trimmed = u.trim_end_matches('/').to_owned();
                match url::Url::parse(&trimmed) {
                    Ok(p) if matches!(p.scheme(), "http" | "https") => Ok(trimmed),
                    _ => Err(ConfigError::BadPublicUrl(u)),
                }
            })
            .transpose()?;
        let airtable = match (
            nonempty(self.airtable_token),
            nonempty(self.airtable_base_id),
        ) {
            (Some(token), Some(base_id)) => Some(AirtableSettings {
                api_url: self.airtable_api_url.trim_end_matches('/').to_owned(),
                token,
                base_id,
                lockout: seconds(self.airtable_lockout_secs, 0.0),
            }),
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::HalfAirtable("AIRTABLE_TOKEN")),
            (None, Some(_)) => return Err(ConfigError::HalfAirtable("AIRTABLE_BASE_ID")),
        };
        let mapping = match &self.airtable_mapping {
            Some(p) => Mapping::load(p)?,
            None => Mapping::default(),
        };
        if !(0.0..=1.0).contains(&self.music_volume) {
            return Err(ConfigError::BadVolume(self.music_volume));
        }
        let nca = match (nonempty(self.nca_api_url), nonempty(self.nca_api_key)) {
            (Some(url), Some(key)) => Some(ServiceSettings {
                url: url.trim_end_matches('/').to_owned(),
                key,
            }),
            _ if self.sandbox || dev => None,
            _ => return Err(ConfigError::NoNca),
        };
        // Whatever the listen address: a reverse proxy on the same host makes loopback
        // as reachable as any other interface.
        let admin_token = nonempty(self.admin_token);
        if !dev && admin_token.is_none() {
            return Err(ConfigError::NoAdminToken);
        }
        // Callback URLs naming the bind address (0.0.0.0, a private IP) never reach us.
        if !dev && public_base_url.is_none() {
            return Err(ConfigError::NoPublicBaseUrl);
        }
        let goapi = nonempty(self.goapi_api_key).map(|key| ServiceSettings {
            url: self.goapi_api_url.trim_end_matches('/').to_owned(),
            key,
        });
        Ok(Settings {
            listen: self.listen,
            db: Database::parse(&self.db)?,
            lease: seconds(self.lease_secs, 1.0).min(Duration::from_secs(3600)),
            goapi_webhook_secret,
            relay_secrets,
            signing_secret,
            public_base_url,
            dev,
            sandbox: self.sandbox,
            allow_private_urls: self.allow_private_urls || self.sandbox,
            admin_token,
            max_body_bytes: self.max_body_bytes,
            airtable,
            mapping,
            nca,
            goapi,
            goapi_model: self.goapi_model,
            default_music_prompt: self.default_music_prompt,
            volume: self.music_volume,
            max_retries: self.max_retries,
            effect_max_attempts: self.effect_max_attempts.max(1),
            effect_backoff: Duration::from_millis(self.effect_backoff_ms),
            interrupted_grace: seconds(self.interrupted_grace_secs, 0.0),
            goapi_deadline: seconds(self.goapi_deadline_secs, 0.0),
            nca_deadline: seconds(self.nca_deadline_secs, 0.0),
            reconcile_interval: seconds(self.reconcile_interval_secs, 0.05),
            reconcile_checks: self.reconcile_checks.max(1),
            worker_concurrency: self.worker_concurrency.clamp(1, 256),
            // At least a minute (a prune racing the worker gains nothing), at most ten years.
            retention: Duration::from_secs_f64(
                (self.retention_days * 24.0 * 3600.0).clamp(60.0, 10.0 * 365.0 * 24.0 * 3600.0),
            ),
        })
    }
}
