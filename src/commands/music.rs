//! `POST /videos/{id}/music`: ask for music (an optional prompt of up to 2000 characters).

use serde_json::Value;

use super::{CommandError, Submitted, submit};
use crate::domain::RecordId;
use crate::engine::Engine;
use crate::machine::Event;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Music {
    pub(crate) video: RecordId,
    pub(crate) prompt: Option<String>,
    /// As sent, for the event log.
    pub(crate) body: String,
}

impl Music {
    pub(crate) fn parse(video: RecordId, body: &[u8]) -> Result<Self, CommandError> {
        let invalid = |code, message: &str| CommandError::Invalid {
            code,
            message: message.to_owned(),
        };
        let prompt = if body.is_empty() {
            None
        } else {
            let v: Value = serde_json::from_slice(body)
                .map_err(|_| invalid("invalid_json", "body must be JSON"))?;
            match v.get("prompt") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.len() <= 2000 => Some(s.clone()),
                Some(_) => {
                    return Err(invalid(
                        "invalid_prompt",
                        "prompt must be a string of at most 2000 characters",
                    ));
                }
            }
        };
        Ok(Self {
            video,
            prompt,
            body: String::from_utf8_lossy(body).into_owned(),
        })
    }

    pub(crate) async fn apply(self, engine: &Engine) -> Result<Submitted, CommandError> {
        let event = Event::MusicRequested {
            prompt: self.prompt,
        };
        Ok(submit(engine, self.video, event, "/videos/music", self.body).await?)
    }
}
