//! `POST /events/{id}/replay`: runs a stored webhook through the machine again, as a new
//! entry. Safe: the machine sees a duplicate for what was already applied.

use uuid::Uuid;

use super::{CommandError, Submitted, submit};
use crate::domain::RecordId;
use crate::engine::Engine;
use crate::machine::Event;
use crate::store::{InboxEntry, Payload};

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Replay {
    pub(crate) of: Uuid,
    pub(crate) video: RecordId,
    pub(crate) event: Event,
    pub(crate) body: String,
}

impl Replay {
    /// The replay of a stored entry: only one that went through the machine.
    pub(crate) fn parse(stored: &InboxEntry) -> Result<Self, CommandError> {
        let Payload::Event { event } = stored.payload.clone() else {
            return Err(CommandError::Conflict {
                code: "not_replayable",
                message: "only events that went through the machine can be replayed".into(),
            });
        };
        Ok(Self {
            of: stored.event_id,
            video: stored.video_id.clone(),
            event,
            body: stored.raw_body.clone(),
        })
    }

    /// Replays the stored entry `id`.
    pub(crate) async fn apply_to(engine: &Engine, id: Uuid) -> Result<Submitted, CommandError> {
        let Some(stored) = engine.store.entry(id).await? else {
            return Err(CommandError::NotFound(format!("no event {id}")));
        };
        Self::parse(&stored)?.apply(engine).await
    }

    pub(crate) async fn apply(self, engine: &Engine) -> Result<Submitted, CommandError> {
        let endpoint = format!("/events/{}/replay", self.of);
        Ok(submit(engine, self.video, self.event, &endpoint, self.body).await?)
    }
}
