//! `POST /effects/{id}/retry`: puts an effect that failed for good back in the queue,
//! when running it again cannot undo something newer.

use super::CommandError;
use crate::engine::Engine;
use crate::machine::Effect;
use crate::store::{EffectState, OutboxEntry};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RetryEffect {
    pub(crate) effect_id: String,
}

impl RetryEffect {
    /// Whether `failed` may run again, given the video's effects (`effects_of`).
    pub(crate) fn parse(
        failed: &OutboxEntry,
        effects: &[OutboxEntry],
    ) -> Result<Self, CommandError> {
        let conflict = |message: String| CommandError::Conflict {
            code: "not_replayable",
            message,
        };
        if !failed.effect.replayable() {
            return Err(conflict(format!(
                "this effect started a job that has failed; redrive the stage with POST /videos/{}/retry",
                failed.video_id
            )));
        }
        // A later write of the same record has been applied: replaying this older one would
        // put stale values back.
        let same_record = |e: &Effect| match (failed.effect.target(), e.target()) {
            (Some(a), Some(b)) => a.same_record(b),
            _ => false,
        };
        if effects
            .iter()
            .any(|e| e.seq > failed.seq && e.state == EffectState::Done && same_record(&e.effect))
        {
            return Err(conflict(
                "a later write of the same record has been applied since; nothing to replay".into(),
            ));
        }
        Ok(Self {
            effect_id: failed.effect_id.clone(),
        })
    }

    /// Requeues the failed effect `id`.
    pub(crate) async fn apply_to(engine: &Engine, id: &str) -> Result<Self, CommandError> {
        let not_found = || CommandError::NotFound(format!("no failed effect {id}"));
        let Some(failed) = engine
            .store
            .outbox_entry(id)
            .await?
            .filter(|e| e.state == EffectState::Failed)
        else {
            return Err(not_found());
        };
        let effects = engine.store.effects_of(&failed.video_id).await?;
        let command = Self::parse(&failed, &effects)?;
        if engine.store.requeue_effect(&command.effect_id).await? {
            engine.wake_executor.notify_one();
            Ok(command)
        } else {
            Err(not_found())
        }
    }
}
