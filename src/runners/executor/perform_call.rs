//! The calls to services, one per effect of the call lane (`Lane::Executor`): a GoAPI
//! task, an NCA mix, a track's check, and the event each answer becomes.

use tracing::info;

use super::error::EffectError;
use crate::clients::goapi::CreateTask;
use crate::clients::nca::MixRequest;
use crate::engine::Engine;
use crate::machine::{Effect, Event};
use crate::store::OutboxEntry;

pub(super) async fn perform_call(
    engine: &Engine,
    e: &OutboxEntry,
) -> Result<Option<Event>, EffectError> {
    let video = &e.video_id;
    match &e.effect {
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
        other => Err(EffectError::Permanent(format!(
            "{} is a write to the base, not a call",
            other.kind()
        ))),
    }
}
