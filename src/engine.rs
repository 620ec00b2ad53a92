//! The running engine's shared parts: store, records, clients, settings and the signals
//! that wake the worker and the executor. The API, the worker and the executor all hold
//! one `Arc<Engine>`; none of them owns another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::{Notify, oneshot, watch};
use uuid::Uuid;

use crate::clients::goapi::GoapiClient;
use crate::clients::nca::NcaClient;
use crate::configuration::Settings;
use crate::domain::{JobStatus, JobType, RecordId, VideoStatus};
use crate::machine::{Job, JobId, Policy, Snapshot, Video};
use crate::metrics::Metrics;
use crate::records::airtable::AirtableBackend;
use crate::records::{JobRecord, Records, RecordsError, VideoRecord};
use crate::store::{Accepted, Lane, Lease, NewEntry, Payload, Source, Store, StoreError};
use crate::webhook::callback::CallbackSigner;

/// The problems found in the base's schema (empty: all good), or why it could not be read.
pub type SchemaCheck = Result<Vec<String>, String>;

/// What the worker made of a command, for the caller waiting on it.
#[derive(Debug, Clone)]
pub enum CommandOutcome {
    Done {
        outcome: String,
        status: String,
        job: Option<JobId>,
    },
    Rejected(String),
    VideoNotFound,
}

pub struct Engine {
    pub store: Arc<dyn Store>,
    pub records: Records,
    pub settings: Arc<Settings>,
    pub signer: CallbackSigner,
    /// The Standard Webhooks verifier of WEBHOOK_RELAY_SECRETS, decoded once at start.
    pub relay: Option<crate::webhook::auth::StandardWebhooks>,
    pub nca: Option<NcaClient>,
    pub goapi: Option<GoapiClient>,
    /// The Airtable backend when the base is the system of record (for its counters and
    /// the schema check); `records` wraps the same instance.
    pub airtable: Option<Arc<AirtableBackend>>,
    pub metrics: Arc<Metrics>,
    /// The last schema check, so that a readiness probe does not spend the rate limit.
    schema_check: tokio::sync::Mutex<Option<(std::time::Instant, SchemaCheck)>>,
    pub wake_worker: Notify,
    pub wake_executor: Notify,
    waiters: Mutex<HashMap<Uuid, oneshot::Sender<CommandOutcome>>>,
    shutdown: watch::Sender<bool>,
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
        Arc::new(Self {
            store,
            records,
            settings,
            signer,
            relay,
            nca,
            goapi,
            airtable,
            metrics,
            schema_check: tokio::sync::Mutex::new(None),
            wake_worker: Notify::new(),
            wake_executor: Notify::new(),
            waiters: Mutex::new(HashMap::new()),
            shutdown: watch::channel(false).0,
        })
    }

    pub fn policy(&self) -> Policy {
        Policy {
            volume: self.settings.volume,
            max_retries: self.settings.max_retries,
        }
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
        self.wake_worker.notify_waiters();
        self.wake_executor.notify_waiters();
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The base's schema problems (empty: all good), checked at most once a minute.
    /// `None` when no Airtable is configured.
    pub async fn schema_problems(&self) -> Option<SchemaCheck> {
        let airtable = self.airtable.as_ref()?;
        let mut cached = self.schema_check.lock().await;
        if let Some((_, result)) = cached
            .as_ref()
            .filter(|(at, _)| at.elapsed() < std::time::Duration::from_secs(60))
        {
            return Some(result.clone());
        }
        let result = match airtable.meta_tables().await {
            Ok(meta) => Ok(
                crate::records::schema::problems(&meta, self.records.mapping())
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            ),
            Err(e) => Err(e.to_string()),
        };
        *cached = Some((std::time::Instant::now(), result.clone()));
        Some(result)
    }

    /// Sandbox only: a Videos record whose segments are combined, with a placeholder source
    /// video the sandbox serves. `None` outside the sandbox.
    pub async fn create_demo_video(&self) -> Result<Option<RecordId>, RecordsError> {
        let (Some(stand_in), true) = (&self.settings.goapi, self.settings.sandbox) else {
            return Ok(None);
        };
        let source = crate::domain::MediaUrl::parse(&format!(
            "{}/media/demo_combined_{}.mp4",
            stand_in.url,
            Uuid::new_v4().simple()
        ))
        .map_err(|e| RecordsError::Permanent {
            status: 0,
            kind: "SANDBOX".into(),
            message: e.to_string(),
        })?;
        let video = self
            .records
            .create_video(&crate::records::VideoFields {
                status: Some(VideoStatus::SegmentsCombined),
                combined_segments_video: Some(source),
                music_prompt: Some("gentle lo-fi piano for a product demo".into()),
                ..Default::default()
            })
            .await?;
        Ok(Some(video))
    }

    /// Claims `items`' videos on `lane`, in order, as many at a time as `slots` has free,
    /// waiting for a free slot when there is none; hands each claimed video's item, lease
    /// and slot to `start`. A lease is never held while waiting for a slot: that would be
    /// work other replicas could be doing (and would wait for if this one died). Videos
    /// claimed elsewhere are skipped.
    pub async fn claim_in_order<T>(
        &self,
        lane: Lane,
        slots: &Arc<tokio::sync::Semaphore>,
        items: Vec<(RecordId, T)>,
        mut start: impl FnMut(Lease, tokio::sync::OwnedSemaphorePermit, T),
    ) {
        let mut queue = items.into_iter();
        while queue.len() > 0 && !self.is_shutting_down() {
            let Ok(first) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut permits = vec![first];
            while permits.len() < queue.len() {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let mut chunk: Vec<(RecordId, Option<T>)> = queue
                .by_ref()
                .take(permits.len())
                .map(|(v, t)| (v, Some(t)))
                .collect();
            let videos = chunk.iter().map(|(v, _)| v.clone()).collect();
            let leases = match self.store.claim(lane, videos).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, lane = %lane, "could not claim videos");
                    return;
                }
            };
            for lease in leases {
                let item = chunk
                    .iter_mut()
                    .find(|(v, _)| v == lease.video())
                    .and_then(|(_, t)| t.take());
                if let (Some(item), Some(permit)) = (item, permits.pop()) {
                    start(lease, permit, item);
                }
            }
        }
    }

    /// Stores an entry, then wakes the worker.
    pub async fn enqueue(&self, entry: NewEntry) -> Result<Accepted, StoreError> {
        let accepted = self.store.accept(entry).await?;
        self.wake_worker.notify_one();
        Ok(accepted)
    }

    /// Stores a command and waits (bounded) for the worker's answer.
    pub async fn command(
        &self,
        video: RecordId,
        event: crate::machine::Event,
        endpoint: &str,
        body: String,
    ) -> Result<(Uuid, Option<CommandOutcome>), StoreError> {
        let event_id = Uuid::new_v4();
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(event_id, tx);
        }
        let entry = NewEntry {
            event_id,
            video_id: video,
            source: Source::Api,
            endpoint: endpoint.to_owned(),
            dedupe_key: None,
            raw_body: body,
            headers: "{}".into(),
            received_at: Utc::now(),
            payload: Payload::Event { event },
        };
        if let Err(e) = self.enqueue(entry).await {
            self.forget_waiter(event_id);
            return Err(e);
        }
        // The worker of this process answers at once; on a shared store another
        // replica's worker may take the command, and then the stored outcome answers.
        let answer = tokio::time::timeout(std::time::Duration::from_secs(15), async {
            tokio::select! {
                local = rx => local.ok(),
                stored = self.stored_answer(event_id) => Some(stored),
            }
        })
        .await
        .ok()
        .flatten();
        self.forget_waiter(event_id);
        Ok((event_id, answer))
    }

    /// A command's answer read back from the store once its entry is processed.
    async fn stored_answer(&self, event_id: Uuid) -> CommandOutcome {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let Ok(Some(entry)) = self.store.entry(event_id).await else {
                continue;
            };
            if entry.state != "done" {
                continue;
            }
            return match entry.outcome.as_deref() {
                Some("rejected") => CommandOutcome::Rejected(entry.note.unwrap_or_default()),
                Some("unmatched") => CommandOutcome::VideoNotFound,
                outcome => {
                    let status = match self.store.snapshot(&entry.video_id).await {
                        Ok(Some(s)) => s.video.status.name().to_owned(),
                        _ => String::new(),
                    };
                    CommandOutcome::Done {
                        outcome: outcome.unwrap_or_default().to_owned(),
                        status,
                        job: entry.job,
                    }
                }
            };
        }
    }

    fn forget_waiter(&self, id: Uuid) {
        if let Ok(mut w) = self.waiters.lock() {
            w.remove(&id);
        }
    }

    pub(crate) fn answer(&self, id: Uuid, outcome: CommandOutcome) {
        let tx = self.waiters.lock().ok().and_then(|mut w| w.remove(&id));
        if let Some(tx) = tx {
            let _ = tx.send(outcome);
        }
    }

    /// A video the engine has not handled yet, as the base has it: the only time the
    /// engine reads a video's jobs from the records (what it creates, it remembers).
    pub async fn snapshot_from_records(
        &self,
        video: &RecordId,
    ) -> Result<Option<FirstContact>, RecordsError> {
        let Some(v) = self.records.get_video(video).await? else {
            return Ok(None);
        };
        let jobs = self.records.jobs_of_video(&v).await?;
        Ok(Some(first_contact(&v, jobs)))
    }

    /// [`Engine::snapshot_from_records`] for several videos at once, in two batched reads
    /// (the videos, then all their jobs) instead of two reads per video. Every id asked
    /// for is in the answer: `None` when the Videos table has no such record.
    pub async fn snapshots_from_records(
        &self,
        videos: &[RecordId],
    ) -> Result<HashMap<RecordId, Option<FirstContact>>, RecordsError> {
        let found = self.records.get_videos(videos).await?;
        let mut jobs = self.records.jobs_of_videos(&found).await?;
        let mut out: HashMap<RecordId, Option<FirstContact>> =
            videos.iter().map(|v| (v.clone(), None)).collect();
        for v in &found {
            let of_video = jobs.remove(&v.id).unwrap_or_default();
            out.insert(v.id.clone(), Some(first_contact(v, of_video)));
        }
        Ok(out)
    }

    /// Refreshes what others write on the video (the source video, the prompt) into a
    /// snapshot the engine already has.
    pub async fn refresh_inputs(&self, s: &mut Snapshot) -> Result<bool, RecordsError> {
        let Some(v) = self.records.get_video(&s.video.id).await? else {
            return Ok(false);
        };
        s.video.source_video = v.combined_segments_video;
        s.video.music_prompt = v.music_prompt;
        Ok(true)
    }
}

/// What first contact learns of a video: its snapshot, and the engine's ids for the job
/// records it found (for the store's job index).
pub type FirstContact = (Snapshot, Vec<(JobId, RecordId)>);

fn first_contact(v: &VideoRecord, jobs: Vec<JobRecord>) -> FirstContact {
    let mut known = Vec::new();
    let mut snapshot = Snapshot::new(video_from_record(v));
    for j in jobs {
        if !matches!(
            j.job_type,
            JobType::MusicGeneration | JobType::MusicAddition
        ) {
            continue;
        }
        let id = j
            .job_id
            .as_deref()
            .and_then(|s| Uuid::parse_str(s).ok())
            .map(JobId)
            .unwrap_or_else(|| JobId::for_record(&j.id));
        // A Status this mapping does not know (a spelling another tool uses) says
        // nothing reliable: the job is left out rather than taken as running.
        let status = match (&j.status, &j.status_text) {
            (Some(s), _) => *s,
            (None, None) => JobStatus::Pending,
            (None, Some(text)) => {
                tracing::warn!(job_record = %j.id, status = %text, "job status not in the mapping; job ignored");
                continue;
            }
        };
        known.push((id, j.id.clone()));
        snapshot.jobs.push(Job {
            id,
            kind: j.job_type,
            status,
            external_id: j.external_job_id,
            submission_id: None,
            error: j.error_details,
            created_at: Utc::now(),
            ended_at: None,
        });
    }
    (snapshot, known)
}

fn video_from_record(v: &VideoRecord) -> Video {
    // A base without a Status field still works: infer the stage from the results.
    let status = v.status.clone().unwrap_or(if v.final_video.is_some() {
        VideoStatus::Completed
    } else {
        VideoStatus::SegmentsCombined
    });
    Video {
        id: v.id.clone(),
        status,
        source_video: v.combined_segments_video.clone(),
        music_prompt: v.music_prompt.clone(),
        music: v.music.clone(),
        final_video: v.final_video.clone(),
        error_details: v.error_details.clone(),
        retries: 0,
        requested_prompt: None,
        checking_track: None,
    }
}
