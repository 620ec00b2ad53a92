//! `POST /videos/{id}/retry`: redrive a video whose music stage failed, from where the
//! engine sees fit (a failed mix whose track is still there is mixed again) or, with
//! `{"from": "music"}`, from new music.

use serde_json::Value;

use super::{CommandError, Submitted, submit};
use crate::domain::RecordId;
use crate::engine::Engine;
use crate::machine::{Event, RetryFrom};

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Retry {
    pub(crate) video: RecordId,
    pub(crate) from: Option<RetryFrom>,
    /// As sent, for the event log.
    pub(crate) body: String,
}

impl Retry {
    pub(crate) fn parse(video: RecordId, body: &[u8]) -> Result<Self, CommandError> {
        Ok(Self {
            video,
            from: retry_from(body)?,
            body: String::from_utf8_lossy(body).into_owned(),
        })
    }

    pub(crate) async fn apply(self, engine: &Engine) -> Result<Submitted, CommandError> {
        let event = Event::RetryRequested { from: self.from };
        Ok(submit(engine, self.video, event, "/videos/retry", self.body).await?)
    }
}

/// A retry's body: none, or `{"from": "music" | "mix"}` (`null` is none). Anything else is
/// refused rather than read as a plain retry: a misspelt key must not decide what is paid
/// for.
fn retry_from(body: &[u8]) -> Result<Option<RetryFrom>, CommandError> {
    let invalid = |code, message: String| CommandError::Invalid { code, message };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| invalid("invalid_json", "body must be JSON".into()))?;
    let Value::Object(fields) = v else {
        return Err(invalid(
            "invalid_body",
            "body must be a JSON object such as {\"from\": \"music\"}".into(),
        ));
    };
    if let Some(other) = fields.keys().find(|k| k.as_str() != "from") {
        return Err(invalid(
            "invalid_body",
            format!("unknown key {other:?}: a retry takes only \"from\""),
        ));
    }
    match fields.get("from") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "music" => Ok(Some(RetryFrom::Music)),
        Some(Value::String(s)) if s == "mix" => Ok(Some(RetryFrom::Mix)),
        Some(_) => Err(invalid(
            "invalid_from",
            "from must be \"music\" (new music) or \"mix\" (mix the video's music again)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_body_names_where_to_start_or_nothing() {
        for (body, want) in [
            ("", None),
            ("  \n", None),
            ("{}", None),
            (r#"{"from": null}"#, None),
            (r#"{"from": "music"}"#, Some(RetryFrom::Music)),
            (r#"{"from": "mix"}"#, Some(RetryFrom::Mix)),
        ] {
            assert_eq!(retry_from(body.as_bytes()).ok(), Some(want), "{body:?}");
        }
    }

    #[test]
    fn a_retry_body_that_says_anything_else_is_refused() {
        for (body, code) in [
            (r#"{"from": "lyrics"}"#, "invalid_from"),
            (r#"{"from": "Music"}"#, "invalid_from"),
            (r#"{"from": 1}"#, "invalid_from"),
            (r#"{"from": ["music"]}"#, "invalid_from"),
            (r#"{"form": "music"}"#, "invalid_body"),
            (r#"{"from": "music", "prompt": "x"}"#, "invalid_body"),
            (r#"["music"]"#, "invalid_body"),
            (r#""music""#, "invalid_body"),
            ("from=music", "invalid_json"),
            (r#"{"from": "music""#, "invalid_json"),
        ] {
            match retry_from(body.as_bytes()) {
                Err(CommandError::Invalid { code: got, .. }) => assert_eq!(got, code, "{body:?}"),
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }
}
