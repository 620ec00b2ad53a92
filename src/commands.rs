//! The operator's commands (mini-redis style, one file per command): each has a pure
//! `parse` (what the caller sent, or what the store holds, checked) apart from its
//! `apply` (stores the command, or acts on the store). The HTTP surface only routes to
//! them and shapes their answers; the CLI and the sandbox reach the engine the same way.
//!
//! A command that goes through the machine is stored in the inbox like any webhook and
//! its caller waits, bounded, for the worker's answer ([`Waiters`]).

mod music;
mod replay;
mod retry;
mod retry_effect;
pub(crate) mod waiters;

use uuid::Uuid;

use crate::domain::RecordId;
use crate::engine::Engine;
use crate::store::{EntryOutcome, EntryState, NewEntry, Payload, Source, StoreError};

pub(crate) use music::Music;
pub(crate) use replay::Replay;
pub(crate) use retry::Retry;
pub(crate) use retry_effect::RetryEffect;
pub(crate) use waiters::CommandOutcome;

/// A command stored in the inbox: its event id, and the worker's answer when it came
/// in time (`None`: still queued).
#[derive(Debug, Clone)]
pub(crate) struct Submitted {
    pub(crate) event_id: Uuid,
    pub(crate) answer: Option<CommandOutcome>,
}

/// Why a command was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    /// What the caller sent is not a valid command.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    /// Valid, but the state of things does not allow it.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Stores a command and waits (bounded) for the worker's answer.
async fn submit(
    engine: &Engine,
    video: RecordId,
    event: crate::machine::Event,
    endpoint: &str,
    body: String,
) -> Result<Submitted, StoreError> {
    let event_id = crate::store::new_event_id();
    let rx = engine.commands.register(event_id);
    let entry = NewEntry {
        event_id,
        video_id: video,
        source: Source::Api,
        endpoint: endpoint.to_owned(),
        dedupe_key: None,
        raw_body: body,
        headers: "{}".into(),
        received_at: crate::clock::now(),
        payload: Payload::Event { event },
    };
    if let Err(e) = engine.enqueue(entry).await {
        engine.commands.forget(event_id);
        return Err(e);
    }
    // The worker of this process answers at once; on a shared store another
    // replica's worker may take the command, and then the stored outcome answers.
    let answer = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        tokio::select! {
            local = rx => local.ok(),
            stored = stored_answer(engine, event_id) => Some(stored),
        }
    })
    .await
    .ok()
    .flatten();
    engine.commands.forget(event_id);
    Ok(Submitted { event_id, answer })
}

/// A command's answer read back from the store once its entry is processed.
async fn stored_answer(engine: &Engine, event_id: Uuid) -> CommandOutcome {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let Ok(Some(entry)) = engine.store.entry(event_id).await else {
            continue;
        };
        if entry.state != EntryState::Done {
            continue;
        }
        return match entry.outcome {
            Some(EntryOutcome::Rejected) => {
                CommandOutcome::Rejected(entry.note.unwrap_or_default())
            }
            Some(EntryOutcome::Unmatched) => CommandOutcome::VideoNotFound,
            outcome => {
                let status = match engine.store.snapshot(&entry.video_id).await {
                    Ok(Some(s)) => Some(s.video.status),
                    _ => None,
                };
                CommandOutcome::Done {
                    outcome,
                    status,
                    job: entry.job,
                }
            }
        };
    }
}
