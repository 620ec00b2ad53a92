//! The writes to the base, one per effect of the projection lane (`Lane::Projection`): a
//! video's fields, a job's record, a webhook's record; creates on a base without a key go
//! through `creation`.

use chrono::Utc;

use super::creation;
use super::error::EffectError;
use crate::domain::{JobType, RecordId};
use crate::engine::Engine;
use crate::machine::{Effect, Event, JobId, JobPatch, Outcome};
use crate::records::{JobFields, VideoFields, WebhookEventRecord};
use crate::store::{OutboxEntry, Owner};
use crate::webhook::callback::CallbackEndpoint;

/// `create_extra`: later updates of a job folded into its creation (otherwise empty).
pub(super) async fn perform_write(
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
                creation::write_once(engine, &Owner::Job(*job), jobs_table(engine), f).await?
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
                    let owner = Owner::Job(*job);
                    let record =
                        creation::write_once(engine, &owner, jobs_table(engine), f).await?;
                    engine.store.set_job_record(*job, &record).await?;
                }
            }
            Ok(None)
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
                let owner = Owner::Event(entry.event_id);
                creation::write_once(engine, &owner, &table, fields).await?;
            }
            Ok(None)
        }
        other => Err(EffectError::Permanent(format!(
            "{} is a call, not a write to the base",
            other.kind()
        ))),
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
