//! Settings: clap flags backed by environment variables, validated into [`Settings`] at
//! start-up with messages that say what to set. Secrets are never printed: not in `--help`
//! (hide_env_values), nor in any `Debug` (`redact`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::records::Mapping;
use crate::webhook::CallbackSigner;

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
    /// On SQLite: the most the store's file may hold, in MB (no limit by default). Past
    /// it the store's writes fail as on a full disk: webhooks are answered 503 and
    /// retried by their senders, nothing acknowledged is lost, and intake resumes once
    /// pages are free again (retention, or a restart with a higher limit).
    #[arg(long, env = "REELSTATE_DB_MAX_MB")]
    pub db_max_mb: Option<f64>,
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

/// One setting that is missing or invalid. Every message starts with the environment
/// variable and the flag that set it, so that whoever reads it knows what to write where
/// (an env file under systemd, a flag at a terminal).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "GOAPI_WEBHOOK_SECRET (--goapi-webhook-secret) or WEBHOOK_RELAY_SECRETS (--relay-secrets): not set; GoAPI's shared secret (or a signing relay's whsec_ secret) is what authenticates webhooks"
    )]
    NoWebhookSecret,
    #[error(
        "REELSTATE_SIGNING_SECRET (--signing-secret): not set; any long random string (at least {min} bytes), the key of the tokens in the callback URLs handed to NCA",
        min = CallbackSigner::MIN_KEY_BYTES
    )]
    NoSigningSecret,
    #[error(
        "REELSTATE_SIGNING_SECRET (--signing-secret): {0} bytes, at least {min} needed (a short key makes the callback URLs' tokens guessable)",
        min = CallbackSigner::MIN_KEY_BYTES
    )]
    ShortSigningSecret(usize),
    #[error(
        "PUBLIC_BASE_URL (--public-base-url): must be an absolute http(s) URL without query or fragment, got {0:?}"
    )]
    BadPublicUrl(String),
    #[error(
        "{missing} ({missing_flag}): not set, while {set} is: set both to use Airtable, or neither"
    )]
    HalfAirtable {
        missing: &'static str,
        missing_flag: &'static str,
        set: &'static str,
    },
    #[error("REELSTATE_AIRTABLE_MAPPING (--airtable-mapping): {0}")]
    Mapping(#[from] crate::records::MappingError),
    #[error("REELSTATE_MUSIC_VOLUME (--music-volume): must be between 0 and 1, got {0}")]
    BadVolume(f64),
    #[error(
        "{env} ({flag}): not set; the NCA Toolkit's {what}, needed to mix the music (or run with --sandbox)"
    )]
    NoNca {
        env: &'static str,
        flag: &'static str,
        what: &'static str,
    },
    #[error(
        "REELSTATE_ADMIN_TOKEN (--admin-token): not set; any long random string, so that the inspection and operations endpoints are not open to whoever reaches the port (a reverse proxy on this host included)"
    )]
    NoAdminToken,
    #[error(
        "PUBLIC_BASE_URL (--public-base-url): not set; the address GoAPI and NCA reach this service at (e.g. https://reelstate.example)"
    )]
    NoPublicBaseUrl,
    #[error("REELSTATE_DB (--db): not a usable store: {0}")]
    BadDatabaseUrl(String),
    #[error("WEBHOOK_RELAY_SECRETS (--relay-secrets): {0}")]
    BadRelaySecret(String),
}

/// Every problem of a configuration, found in one pass: a newcomer's first `serve` names
/// all the settings to write instead of one per run.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    #[cfg(test)]
    pub(crate) fn problems(&self) -> &[ConfigError] {
        &self.0
    }
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "cannot serve: {n} setting{s} missing or invalid (set each by its environment variable or its flag; for local development only, --dev runs without the secrets, the admin token and PUBLIC_BASE_URL):",
            s = if n == 1 { " is" } else { "s are" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

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
    pub(crate) fn parse(s: &str) -> Result<Self, ConfigError> {
        let s = s.trim();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            s.parse::<tokio_postgres::Config>()
                .map_err(|e| ConfigError::BadDatabaseUrl(e.to_string()))?;
            Ok(Database::Postgres(s.to_owned()))
        } else if s.is_empty() {
            Err(ConfigError::BadDatabaseUrl("empty".into()))
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
    /// The SQLite store's size limit in bytes (`REELSTATE_DB_MAX_MB`).
    pub db_max_bytes: Option<u64>,
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
    /// The secrets `--sandbox` made up for this run because none was set: only these may
    /// be handed out (`GET /sandbox/secrets`); one the operator set never is.
    pub generated: GeneratedSecrets,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GeneratedSecrets {
    pub goapi_webhook_secret: bool,
    pub signing_secret: bool,
}

/// A secret for one sandbox run: 32 random bytes, hex.
fn throwaway_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    /// Checks every setting before returning, so that the error lists all the problems.
    pub fn validate(self) -> Result<Settings, ConfigErrors> {
        let mut problems = Vec::new();
        let dev = self.dev || self.sandbox;
        let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        let mut generated = GeneratedSecrets::default();
        let goapi_webhook_secret = nonempty(self.goapi_webhook_secret).or_else(|| {
            // The sandbox's webhooks are authenticated as production's are, with a secret
            // of its own that `reelstate trigger` can ask it for.
            generated.goapi_webhook_secret = self.sandbox;
            self.sandbox.then(throwaway_secret)
        });
        let relay_secrets: Vec<String> = self
            .relay_secrets
            .into_iter()
            .filter(|s| !s.trim().is_empty())
            .collect();
        if !dev && goapi_webhook_secret.is_none() && relay_secrets.is_empty() {
            problems.push(ConfigError::NoWebhookSecret);
        }
        // Start-up would refuse it anyway; here it joins the other problems.
        if !relay_secrets.is_empty()
            && let Err(e) = crate::webhook::auth::StandardWebhooks::new(&relay_secrets)
        {
            problems.push(ConfigError::BadRelaySecret(e.to_string()));
        }
        let signing_secret = match nonempty(self.signing_secret) {
            Some(s) => {
                if s.len() < CallbackSigner::MIN_KEY_BYTES {
                    problems.push(ConfigError::ShortSigningSecret(s.len()));
                }
                s
            }
            None if self.sandbox => {
                generated.signing_secret = true;
                throwaway_secret()
            }
            None => {
                if !dev {
                    problems.push(ConfigError::NoSigningSecret);
                }
                DEV_SIGNING_SECRET.to_owned()
            }
        };
        let public_base_url = nonempty(self.public_base_url).and_then(|u| {
            let trimmed = u.trim().trim_end_matches('/').to_owned();
            // What the callback signer accepts: a URL that a path can be appended to.
            match url::Url::parse(&trimmed) {
                Ok(p)
                    if matches!(p.scheme(), "http" | "https")
                        && p.host_str().is_some()
                        && p.query().is_none()
                        && p.fragment().is_none() =>
                {
                    Some(trimmed)
                }
                _ => {
                    problems.push(ConfigError::BadPublicUrl(u));
                    None
                }
            }
        });
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
            (Some(_), None) => {
                problems.push(ConfigError::HalfAirtable {
                    missing: "AIRTABLE_BASE_ID",
                    missing_flag: "--airtable-base-id",
                    set: "AIRTABLE_TOKEN",
                });
                None
            }
            (None, Some(_)) => {
                problems.push(ConfigError::HalfAirtable {
                    missing: "AIRTABLE_TOKEN",
                    missing_flag: "--airtable-token",
                    set: "AIRTABLE_BASE_ID",
                });
                None
            }
        };
        let mapping = match &self.airtable_mapping {
            Some(p) => Mapping::load(p).unwrap_or_else(|e| {
                problems.push(e.into());
                Mapping::default()
            }),
            None => Mapping::default(),
        };
        if !(0.0..=1.0).contains(&self.music_volume) {
            problems.push(ConfigError::BadVolume(self.music_volume));
        }
        let nca = match (nonempty(self.nca_api_url), nonempty(self.nca_api_key)) {
            (Some(url), Some(key)) => Some(ServiceSettings {
                url: url.trim_end_matches('/').to_owned(),
                key,
            }),
            _ if dev => None,
            (url, key) => {
                if url.is_none() {
                    problems.push(ConfigError::NoNca {
                        env: "NCA_API_URL",
                        flag: "--nca-api-url",
                        what: "base URL",
                    });
                }
                if key.is_none() {
                    problems.push(ConfigError::NoNca {
                        env: "NCA_API_KEY",
                        flag: "--nca-api-key",
                        what: "API key",
                    });
                }
                None
            }
        };
        // Whatever the listen address: a reverse proxy on the same host makes loopback
        // as reachable as any other interface.
        let admin_token = nonempty(self.admin_token);
        if !dev && admin_token.is_none() {
            problems.push(ConfigError::NoAdminToken);
        }
        // Callback URLs naming the bind address (0.0.0.0, a private IP) never reach us.
        // An invalid one is already on the list.
        if !dev
            && public_base_url.is_none()
            && !problems
                .iter()
                .any(|p| matches!(p, ConfigError::BadPublicUrl(_)))
        {
            problems.push(ConfigError::NoPublicBaseUrl);
        }
        let db = Database::parse(&self.db).unwrap_or_else(|e| {
            problems.push(e);
            Database::Sqlite(PathBuf::new())
        });
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        let goapi = nonempty(self.goapi_api_key).map(|key| ServiceSettings {
            url: self.goapi_api_url.trim_end_matches('/').to_owned(),
            key,
        });
        Ok(Settings {
            listen: self.listen,
            db,
            db_max_bytes: self
                .db_max_mb
                .filter(|mb| mb.is_finite() && *mb > 0.0)
                .map(|mb| (mb * 1024.0 * 1024.0) as u64),
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
            generated,
        })
    }
}
