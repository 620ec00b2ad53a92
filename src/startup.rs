//! Wiring: from validated settings to a bound server with its worker and executor.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::clients::goapi::{GoapiClient, GoapiConfig};
use crate::clients::nca::{NcaClient, NcaConfig};
use crate::configuration::{Database, Settings};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::records::airtable::budget::PgBudget;
use crate::records::airtable::{AirtableBackend, AirtableConfig};
use crate::records::embedded::postgres::PgRecords;
use crate::records::embedded::sqlite::SqliteRecords;
use crate::records::{RecordBackend, Records};
use crate::store::{PgStore, SqliteStore, Store};
use crate::webhook::callback::CallbackSigner;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the store {path}: {source}")]
    Store {
        path: String,
        source: crate::store::StoreError,
    },
    #[error("cannot set up the records: {0}")]
    Records(#[from] crate::records::RecordsError),
    #[error("cannot set up a client: {0}")]
    Client(#[from] crate::clients::ClientError),
    #[error("bad configuration: {0}")]
    Config(String),
}

/// Where the engine's state lives, for the parts kept beside it (records without Airtable,
/// the Airtable request budget).
enum Home {
    /// The store's file, and its write gate, which the embedded records take too.
    File(std::path::PathBuf, crate::store::WriteGate),
    Shared(PgStore),
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    engine: Arc<Engine>,
}

impl Application {
    pub async fn build(mut settings: Settings) -> Result<Self, StartupError> {
        if settings.sandbox {
            crate::sandbox::shorten_deadlines(&mut settings);
            let sandbox = crate::sandbox::Sandbox::start(settings.goapi_webhook_secret.clone())
                .await
                .map_err(|e| StartupError::Config(format!("cannot start the sandbox: {e}")))?;
            let stand_in = crate::configuration::ServiceSettings {
                url: sandbox.url(),
                key: crate::sandbox::SANDBOX_KEY.to_owned(),
            };
            settings.nca = Some(stand_in.clone());
            settings.goapi = Some(stand_in);
        }
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: settings.listen,
            source,
        })?;
        let store_error = |source| StartupError::Store {
            path: settings.db.to_string(),
            source,
        };
        let (store, home): (Arc<dyn Store>, Home) = match &settings.db {
            Database::Sqlite(path) => {
                let sqlite = SqliteStore::open(path).map_err(store_error)?;
                if let Some(bytes) = settings.db_max_bytes {
                    let pages = sqlite.limit_size(bytes).map_err(store_error)?;
                    info!(
                        max_bytes = bytes,
                        max_pages = pages,
                        "the store's size is limited"
                    );
                }
                let gate = sqlite.write_gate();
                (Arc::new(sqlite), Home::File(path.clone(), gate))
            }
            Database::Postgres(url) => {
                let pg = PgStore::connect(url, settings.lease)
                    .await
                    .map_err(store_error)?;
                info!(store = %settings.db, owner = pg.owner(), "shared store on PostgreSQL");
                (Arc::new(pg.clone()), Home::Shared(pg))
            }
        };
        let airtable = match &settings.airtable {
            Some(a) => {
                let cfg = AirtableConfig {
                    api_url: a.api_url.clone(),
                    token: a.token.clone(),
                    base_id: a.base_id.clone(),
                    lockout: a.lockout,
                    ..AirtableConfig::default()
                };
                // Replicas share the base's 5 requests a second through the database;
                // one process keeps the budget in memory.
                let backend = match &home {
                    Home::Shared(pg) => {
                        let budget = PgBudget::for_airtable(pg.pool().clone(), &cfg)
                            .map_err(|e| StartupError::Config(e.to_string()))?;
                        AirtableBackend::with_budget(cfg, Arc::new(budget))?
                    }
                    Home::File(..) => AirtableBackend::new(cfg)?,
                };
                Some(Arc::new(backend))
            }
            None => None,
        };
        let backend: Arc<dyn RecordBackend> = match (&airtable, &home) {
            (Some(a), _) => a.clone(),
            (None, Home::File(path, gate)) => Arc::new(SqliteRecords::open_sharing(
                path,
                &settings.mapping,
                gate.clone(),
            )?),
            (None, Home::Shared(pg)) => {
                Arc::new(PgRecords::new(pg.pool().clone(), &settings.mapping)?)
            }
        };
        let records = Records::new(backend, settings.mapping.clone());
        let base = settings
            .public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let signer = CallbackSigner::new(settings.signing_secret.as_bytes(), &base)
            .map_err(|e| StartupError::Config(e.to_string()))?;
        // A malformed relay secret is a start-up error, not a 401 on every webhook.
        let relay = (!settings.relay_secrets.is_empty())
            .then(|| crate::webhook::auth::StandardWebhooks::new(&settings.relay_secrets))
            .transpose()
            .map_err(|e| StartupError::Config(format!("WEBHOOK_RELAY_SECRETS: {e}")))?;
        let nca = settings
            .nca
            .as_ref()
            .map(|n| {
                NcaClient::new(NcaConfig {
                    api_url: n.url.clone(),
                    api_key: n.key.clone(),
                    timeout: Duration::from_secs(30),
                })
            })
            .transpose()?;
        let goapi = settings
            .goapi
            .as_ref()
            .map(|g| {
                GoapiClient::new(GoapiConfig {
                    api_url: g.url.clone(),
                    api_key: g.key.clone(),
                    model: settings.goapi_model.clone(),
                    timeout: Duration::from_secs(30),
                })
            })
            .transpose()?;
        if settings.dev {
            warn!(
                "development mode: webhook authentication is relaxed; never run this in production"
            );
        }
        let engine = Engine::new(
            store,
            records,
            Arc::new(settings),
            signer,
            relay,
            nca,
            goapi,
            airtable,
            Arc::new(Metrics::default()),
        );
        Ok(Self {
            listener,
            addr,
            engine,
        })
    }

    /// In sandbox mode: a demo video in the embedded records, with music requested, so
    /// that a first run shows the whole lifecycle.
    pub async fn start_demo(&self) -> Result<Option<crate::domain::RecordId>, StartupError> {
        let e = &self.engine;
        let Some(video) = crate::sandbox::create_demo_video(&e.settings, &e.records, None).await?
        else {
            return Ok(None);
        };
        crate::sandbox::request_music(e, &video)
            .await
            .map_err(|source| StartupError::Store {
                path: e.settings.db.to_string(),
                source,
            })?;
        Ok(Some(video))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves; then lets in-flight decisions and effects finish
    /// (at most 30 s; what is left then is stopped) and gives its leases back, and only then stops accepting requests and
    /// returns once the requests in flight are answered.
    ///
    /// Webhooks keep being acknowledged while the work drains: a callback addressed to this
    /// replica (NCA answers the URL it was given, once, and does not retry) is stored and
    /// handled by another replica, or by this store's next start, instead of being refused
    /// and left to the reconciler's next check (minutes later). `/readyz` answers 503
    /// `stopping` meanwhile, so that a load balancer sends new traffic elsewhere.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let engine = self.engine;
        let worker = tokio::spawn(crate::runners::worker::run(engine.clone()));
        let executor = tokio::spawn(crate::runners::executor::run(engine.clone()));
        let reconciler = tokio::spawn(crate::runners::reconciler::run(engine.clone()));
        let pruner = tokio::spawn(crate::runners::pruner::run(engine.clone()));
        let routes = crate::http::routes(engine.clone());
        info!(addr = %self.addr, "serving");
        let (stop_serving, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            warp::serve(routes)
                .incoming(self.listener)
                .graceful(async {
                    let _ = stopped.await;
                })
                .run(),
        );
        shutdown.await;
        info!("finishing in-flight work; webhooks are still acknowledged meanwhile");
        engine.begin_shutdown();
        // The worker and the executor each stop their own tasks after the drain
        // (`engine::drain`), so once they have returned nothing of this process works on
        // a video any more, and its leases can be given back.
        let _ = worker.await;
        let _ = executor.await;
        for side in [reconciler, pruner] {
            let abort = side.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), side)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        // Other replicas take over at once (a rolling deploy), not a lease period later.
        engine.store.release_leases().await;
        info!("stopped working; no longer accepting requests");
        let _ = stop_serving.send(());
        if let Err(e) = server.await {
            warn!(error = %e, "the HTTP server ended abnormally");
        }
        info!("shut down");
    }
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    info!("shutdown signal received");
}
