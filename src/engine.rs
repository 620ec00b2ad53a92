//! The running engine's shared parts: store, records, clients, settings, the callers
//! waiting on commands and the signals that wake the worker and the executor. The API,
//! the worker and the executor all hold one `Arc<Engine>`; none of them owns another.
//! It holds; it runs no errand of its own (commands are in `commands`, scheduling with
//! the leases, first contact in the worker, the demo video in the sandbox).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::clients::goapi::GoapiClient;
use crate::clients::nca::NcaClient;
use crate::clients::track::TrackChecker;
use crate::clients::{Goapi, Nca, TrackHost};
use crate::commands::waiters::Waiters;
use crate::configuration::Settings;
use crate::machine::Policy;
use crate::metrics::Metrics;
use crate::records::Records;
use crate::records::airtable::AirtableBackend;
use crate::records::airtable::schema::SchemaCache;
use crate::store::{Accepted, NewEntry, Store, StoreError};
use crate::webhook::callback::CallbackSigner;

pub struct Engine {
    pub store: Arc<dyn Store>,
    pub records: Records,
    pub settings: Arc<Settings>,
    pub signer: CallbackSigner,
    /// The Standard Webhooks verifier of WEBHOOK_RELAY_SECRETS, decoded once at start.
    pub relay: Option<crate::webhook::auth::StandardWebhooks>,
    pub nca: Option<Arc<dyn Nca>>,
    pub goapi: Option<Arc<dyn Goapi>>,
    /// Whether a track's host still serves it (a retried mix's check).
    pub tracks: Arc<dyn TrackHost>,
    /// The Airtable backend when the base is the system of record (for its counters and
    /// the schema check); `records` wraps the same instance.
    pub airtable: Option<Arc<AirtableBackend>>,
    pub metrics: Arc<Metrics>,
    /// The last schema check of the base (`/readyz`).
    pub schema: SchemaCache,
    /// Callers waiting for the worker's answer to their command.
    pub commands: Waiters,
    pub wake_worker: Notify,
    pub wake_executor: Notify,
    /// When this replica last found its store unreachable.
    pub store_outage: StoreOutage,
    /// What the finished NCA jobs it has read were submitted as.
    pub nca_done: DoneJobs,
    shutdown: watch::Sender<bool>,
}

/// When the store was last found unreachable here (a request refused with 503, a
/// reconciliation pass that failed). A callback refused meanwhile is not sent again (NCA
/// sends one), so once the store answers the reconciler asks the services about the jobs
/// still waiting instead of leaving them to their deadlines.
#[derive(Default)]
pub struct StoreOutage(std::sync::Mutex<Option<chrono::DateTime<chrono::Utc>>>);

impl StoreOutage {
    pub(crate) fn note(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(crate::clock::now());
    }

    /// The last outage noted since the previous call, cleared.
    pub(crate) fn take(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        records: Records,
        settings: Arc<Settings>,
        signer: CallbackSigner,
        relay: Option<crate::webhook::auth::StandardWebhooks>,
        nca: Option<NcaClient>,
        goapi: Option<GoapiClient>,
        airtable: Option<Arc<AirtableBackend>>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let tracks = Arc::new(TrackChecker::new(settings.allow_private_urls));
        Arc::new(Self {
            store,
            records,
            settings,
            signer,
            relay,
            nca: nca.map(|c| Arc::new(c) as Arc<dyn Nca>),
            goapi: goapi.map(|c| Arc::new(c) as Arc<dyn Goapi>),
            tracks,
            airtable,
            metrics,
            schema: SchemaCache::default(),
            commands: Waiters::default(),
            wake_worker: Notify::new(),
            wake_executor: Notify::new(),
            store_outage: StoreOutage::default(),
            nca_done: Default::default(),
            shutdown: watch::channel(false).0,
        })
    }

    /// This engine with other services behind its traits (the simulation's).
    pub fn with_services(
        self: Arc<Self>,
        nca: Arc<dyn Nca>,
        goapi: Arc<dyn Goapi>,
        tracks: Arc<dyn TrackHost>,
    ) -> Arc<Self> {
        let mut engine = Arc::into_inner(self).expect("a new engine is not shared yet");
        engine.nca = Some(nca);
        engine.goapi = Some(goapi);
        engine.tracks = tracks;
        Arc::new(engine)
    }

    pub(crate) fn policy(&self) -> Policy {
        Policy {
            volume: self.settings.volume,
            max_retries: self.settings.max_retries,
        }
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub(crate) fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
        self.wake_worker.notify_waiters();
        self.wake_executor.notify_waiters();
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Stores an entry, then wakes the worker.
    pub(crate) async fn enqueue(&self, entry: NewEntry) -> Result<Accepted, StoreError> {
        let accepted = self.store.accept(entry).await?;
        self.wake_worker.notify_one();
        Ok(accepted)
    }
}

/// How long a stopping process lets its work in flight finish before it stops it.
pub(crate) const DRAIN: Duration = Duration::from_secs(30);

/// At shutdown, for the worker's and the executor's tasks: lets them finish for at most
/// [`DRAIN`], then aborts the rest and waits until they have stopped. Only then may the
/// process give its leases back: a task still running (a write held by a slow base) would
/// otherwise work on a video another replica already holds. True when all finished.
pub(crate) async fn drain<T: 'static>(tasks: &mut JoinSet<T>) -> bool {
    let finished =
        tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_ok();
    if !finished {
        tracing::warn!(
            tasks = tasks.len(),
            "work in flight did not finish within the drain; stopped, it resumes on another replica or at the next start"
        );
        tasks.shutdown().await;
    }
    finished
}

/// The submission id each finished NCA job carried, as read from its status: a done job's
/// payload never changes, so a look-up reads each one once, however many look-ups a busy
/// toolkit's listing takes part in.
#[derive(Default)]
pub struct DoneJobs(std::sync::Mutex<std::collections::HashMap<String, Option<String>>>);

/// Past this many jobs the memory starts afresh (they are read again if listed).
const DONE_JOBS_KEPT: usize = 20_000;

impl DoneJobs {
    /// `Some(submission)` when the job was read (`submission` `None`: it named none).
    pub(crate) fn submission_of(&self, job_id: &str) -> Option<Option<String>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(job_id)
            .cloned()
    }

    pub(crate) fn remember(&self, job_id: &str, submission: Option<String>) {
        let mut jobs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if jobs.len() >= DONE_JOBS_KEPT {
            jobs.clear();
        }
        jobs.insert(job_id.to_owned(), submission);
    }
}
