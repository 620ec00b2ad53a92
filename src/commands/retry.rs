//! `POST /videos/{id}/retry`: redrive a video whose music stage failed.

use super::{CommandError, Submitted, submit};
use crate::domain::RecordId;
use crate::engine::Engine;
use crate::machine::Event;

#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub video: RecordId,
    /// As sent, for the event log.
    pub body: String,
}

impl Retry {
    pub fn parse(video: RecordId, body: &[u8]) -> Result<Self, CommandError> {
        Ok(Self {
            video,
            body: String::from_utf8_lossy(body).into_owned(),
        })
    }

    pub async fn apply(self, engine: &Engine) -> Result<Submitted, CommandError> {
        let event = Event::RetryRequested;
        Ok(submit(engine, self.video, event, "/videos/retry", self.body).await?)
    }
}
