//! Performing one effect: the write to the base or the call to a service, and the event
//! its answer becomes.

use chrono::Utc;
use tracing::info;

use super::creation;
use super::error::EffectError;
use crate::clients::goapi::CreateTask;
use crate::clients::nca::MixRequest;
use crate::domain::{JobType, RecordId};
use crate::engine::Engine;
use crate::machine::{Effect, Event, JobId, JobPatch, Outcome};
use crate::records::{JobFields, VideoFields, WebhookEventRecord};
use crate::store::OutboxEntry;
use crate::webhook::callback::CallbackEndpoint;

/// `create_extra`: later updates of a job folded into its creation (otherwise empty).
pub(super) async fn perform(
    engine: &Engine,
    e: &OutboxEntry,
    create_extra: &JobPatch,
) -> Result<Option<Event>, EffectError> {
    let video = &e.video_id;
    match &e.effect {
        Effect::UpdateVideo(p) => {
            let fields = VideoFields {
                status: p.status.clone(),
                music: p.music.clone(),
                final_video: p.final_video.clone(),
                error_details: p.error_details.clone(),
                ..VideoFields::default()
            };
            engine.records.update_video(video, &fields).await?;
            Ok(None)
        }
        Effect::CreateJob { job, kind, status } => {
            let endpoint = match kind {
                JobType::MusicAddition => Some(CallbackEndpoint::Nca),
                JobType::MusicGeneration => Some(CallbackEndpoint::Goapi),
                JobType::Other(_) => None,
            };
            let webhook_url =
                endpoint.map(|at| engine.signer.readable_url(at, video, &job.to_string()));
            let fields = JobFields {
                job_id: job.to_string(),
                job_type: Some(kind.clone()),
                status: Some(create_extra.status.unwrap_or(*status)),
                related_video: Some(video.clone()),
                external_job_id: create_extra.external_id.clone(),
                webhook_url,
                error_details: create_extra.error.clone(),
                timestamps: Some(job_timestamps(engine, e, *job).await?),
            };
            let record = if engine.records.jobs_have_key() {
                engine.records.write_job(&fields).await?
            } else {
                let f = engine.records.job_fields_with_id(&fields);
                creation::write_once(engine, &format!("job:{job}"), jobs_table(engine), f).await?
            };
            engine.store.set_job_record(*job, &record).await?;
            Ok(None)
        }
        Effect::UpdateJob { job, patch } => {
            let mut fields = JobFields {
                job_id: job.to_string(),
                job_type: None,
                status: patch.status,
                related_video: None,
                external_job_id: patch.external_id.clone(),
                webhook_url: None,
                error_details: patch.error.clone(),
                timestamps: None,
            };
            // Jobs another part of the pipeline created are named after their record and
            // updated by record id, as is every job on a base without a Job ID to write.
            // With one, the engine's own jobs are upserted on it, which lets this write
            // share one request with the video's job creation. A job with no record yet
            // on a base without a key is written as its creation would be.
            let keyed = engine.records.jobs_have_key();
            match engine.store.job_location(*job).await?.and_then(|(_, r)| r) {
                Some(record) if !keyed || JobId::for_record(&record) == *job => {
                    engine.records.update_job(&record, &fields).await?
                }
                _ if keyed => {
                    let record = engine.records.write_job(&fields).await?;
                    engine.store.set_job_record(*job, &record).await?;
                }
                _ => {
                    fields.related_video = Some(video.clone());
                    let f = engine.records.job_fields_with_id(&fields);
                    let owner = format!("job:{job}");
                    let record =
                        creation::write_once(engine, &owner, jobs_table(engine), f).await?;
                    engine.store.set_job_record(*job, &record).await?;
                }
            }
            Ok(None)
        }
        Effect::CreateGoapiTask { job, prompt } => {
            let client = engine.goapi.as_ref().ok_or_else(|| {
                EffectError::Permanent("GoAPI is not configured: set GOAPI_API_KEY".into())
            })?;
            let secret = engine
                .settings
                .goapi_webhook_secret
                .clone()
                .unwrap_or_default();
            let task = CreateTask {
                prompt: prompt
                    .clone()
                    .filter(|p| !p.trim().is_empty())
                    .unwrap_or_else(|| engine.settings.default_music_prompt.clone()),
                webhook_url: engine.signer.goapi_url(video, &job.to_string()),
                webhook_secret: secret,
            };
            let task_id = client.create_task(&task).await?;
            info!(job_id = %job, task_id = %task_id, "GoAPI task created");
            Ok(Some(Event::ExternalAccepted {
                job: *job,
                external_id: task_id,
            }))
        }
        Effect::SubmitNcaMix {
            job,
            submission_id,
            video: source,
            music,
            volume,
            voice,
        } => {
            let client = engine.nca.as_ref().ok_or_else(|| {
                EffectError::Permanent(
                    "NCA is not configured: set NCA_API_URL and NCA_API_KEY".into(),
                )
            })?;
            // An attachment's URL is Airtable's copy and expires: read the current one.
            let source = if engine.records.source_video_expires() {
                engine
                    .records
                    .current_source_video(video)
                    .await?
                    .ok_or_else(|| {
                        EffectError::Permanent(
                            "the video has no Combined Segments Video any more".into(),
                        )
                    })?
            } else {
                source.clone()
            };
            let req = MixRequest {
                video_url: source,
                music_url: music.clone(),
                volume: *volume,
                webhook_url: engine.signer.nca_url(video, &job.to_string()),
                id: submission_id.clone(),
                voice: *voice,
            };
            let accepted = client.submit_mix(&req).await?;
            info!(job_id = %job, nca_job_id = %accepted.job_id, "NCA mix submitted");
            // NCA ran the job in the request and answered its final envelope (200 with
            // `response`): no callback will follow, so this answer is the callback.
            if let Some(envelope) = &accepted.finished {
                let mut update = match crate::webhook::nca::parse_nca_value(envelope) {
                    Ok(hook) => hook.update,
                    // It took the job: calling again would mix twice. Fail it, with why.
                    Err(err) => crate::machine::NcaUpdate {
                        submission_id: None,
                        nca_job_id: None,
                        result: crate::machine::NcaResult::Failed {
                            error: format!(
                                "NCA answered the mix synchronously with a result we cannot read: {err}"
                            ),
                        },
                        named_job: None,
                    },
                };
                update.submission_id = Some(submission_id.clone());
                update.named_job = Some(*job);
                update.nca_job_id.get_or_insert(accepted.job_id);
                info!(job_id = %job, "NCA answered with the finished mix: taken as its callback");
                return Ok(Some(Event::NcaJobFinished(update)));
            }
            Ok(Some(Event::ExternalAccepted {
                job: *job,
                external_id: accepted.job_id,
            }))
        }
        Effect::CheckTrack { job, music } => {
            use crate::clients::track::TrackAnswer;
            use crate::machine::TrackCheck;
            let attempt = e.attempts + 1;
            let check = match engine.tracks.check(music).await {
                TrackAnswer::Reachable(detail) => TrackCheck::Reachable { detail },
                TrackAnswer::Gone(detail) => TrackCheck::Gone { detail },
                // Not Unknown, which mixes anyway (handing NCA the very URL refused here),
                // nor Gone, which buys music on no proof, nor a retry, which cannot change
                // the answer: the job fails with the refusal in Error Details, and the
                // operator retries `from: music` once the URL is dealt with.
                TrackAnswer::Refused(error) => {
                    info!(job_id = %job, %error, "track check refused");
                    return Ok(Some(Event::EffectFailed { job: *job, error }));
                }
                // Asked again with backoff; after the last attempt the machine hears that
                // nothing could be told (it mixes anyway: only proof buys new music).
                TrackAnswer::Inconclusive(detail)
                    if attempt >= engine.settings.effect_max_attempts =>
                {
                    TrackCheck::Unknown {
                        detail: format!("{detail} (attempt {attempt} of {attempt})"),
                    }
                }
                TrackAnswer::Inconclusive(detail) => {
                    return Err(EffectError::Transient(format!(
                        "the track's host did not say whether it has the track: {detail}"
                    )));
                }
            };
            info!(job_id = %job, answer = ?check, "track checked");
            Ok(Some(Event::TrackChecked { job: *job, check }))
        }
        Effect::RecordWebhookOutcome {
            outcome,
            job,
            detail,
        } => {
            let Some(entry) = engine.store.entry(e.event_id).await? else {
                return Err(EffectError::Permanent(format!(
                    "event {} is not in the inbox",
                    e.event_id
                )));
            };
            let related_job = match job {
                Some(j) => job_record(engine, *j).await?,
                None => None,
            };
            let success = matches!(outcome, Outcome::Applied | Outcome::Recorded);
            let error_details = (!success).then(|| match detail {
                Some(d) => format!("{outcome}: {d}"),
                None => outcome.to_string(),
            });
            let record = WebhookEventRecord {
                event_id: entry.event_id.to_string(),
                service: entry.source.to_string(),
                endpoint: entry.endpoint.clone(),
                raw_payload: crate::webhook::callback::mask_tokens(&entry.raw_body),
                processed: true,
                success,
                timestamp: entry.received_at,
                related_job,
                error_details,
            };
            if engine.records.events_have_key() {
                engine.records.record_webhook_event(&record).await?;
            } else {
                let fields = engine.records.webhook_event_fields(&record);
                let table = engine.records.mapping().webhook_events.table.clone();
                let owner = format!("event:{}", entry.event_id);
                creation::write_once(engine, &owner, &table, fields).await?;
            }
            Ok(None)
        }
    }
}

/// The Timestamps of a job's record: when the machine created the job. Never the time of
/// the attempt: on a base without a key field an interrupted create is found again by
/// its content (`creation::write_once`), so every attempt of one create must send the
/// same fields.
async fn job_timestamps(
    engine: &Engine,
    e: &OutboxEntry,
    job: JobId,
) -> Result<String, EffectError> {
    let created = engine
        .store
        .snapshot(&e.video_id)
        .await?
        .and_then(|s| s.job(job).map(|j| j.created_at))
        .or_else(|| uuid_time(e.event_id))
        .ok_or_else(|| {
            EffectError::Permanent(format!("job {job} is not in its video's snapshot"))
        })?;
    Ok(serde_json::json!({ "created": created.to_rfc3339() }).to_string())
}

/// The instant a time-ordered (v7) event id was made, the deciding event's arrival.
fn uuid_time(id: uuid::Uuid) -> Option<chrono::DateTime<Utc>> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    chrono::DateTime::from_timestamp(secs as i64, nanos)
}

fn jobs_table(engine: &Engine) -> &str {
    &engine.records.mapping().jobs.table
}

async fn job_record(engine: &Engine, job: JobId) -> Result<Option<RecordId>, EffectError> {
    Ok(engine.store.job_location(job).await?.and_then(|(_, r)| r))
}
