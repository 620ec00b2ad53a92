//! GoAPI task payloads → [`GoapiWebhook`].
//!
//! Accepted shapes (see docs/goapi-and-nca.md and `tests/fixtures/goapi`):
//! - the webhook envelope `{"timestamp", "data": <task>}`;
//! - the GET-task reply `{"code", "data": <task>, "message"}` (`code != 200` is an error);
//! - a bare task object `{"task_id", "status", ...}`;
//! - the reference handler's flat format `{"task_id", "status", "output": {"url"}}`.
//!
//! Leniency rules, so that a format drift degrades instead of failing:
//! - unknown fields are ignored everywhere;
//! - `task_id` and `status` are required (missing → [`ParseError::MissingTaskId`] /
//!   [`ParseError::MissingStatus`], wrong type → [`ParseError::Invalid`]);
//! - every other field of the wrong type counts as absent (a non-object `output` means
//!   no tracks, a non-string `model` means no model, an unreadable `timestamp` is `None`).

mod music;
#[cfg(test)]
mod tests;

use serde_json::Value;

use super::{ParseError, opt_int, opt_str};
use crate::domain::MediaUrl;
use crate::machine::{TaskStatus, TaskUpdate, Track};
use crate::text::shorten;

pub(crate) use music::is_music;

/// At most this many tracks are kept: music tasks return two, and a hostile payload must
/// not turn into a huge event.
pub const MAX_TRACKS: usize = 50;
/// Error texts are cut (keeping both ends) to this many bytes.
pub const MAX_ERROR_BYTES: usize = 4_000;
/// A task id longer than this is not GoAPI's (they are UUIDs) and is refused.
pub const MAX_TASK_ID_BYTES: usize = 256;
/// `model`, `task_type` and the raw status are informational and cut to this.
const MAX_LABEL_BYTES: usize = 200;

/// One GoAPI report about a task, whatever shape it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoapiWebhook {
    pub task_id: String,
    /// The envelope's `timestamp` (unix seconds): GoAPI repeats it on redeliveries.
    pub timestamp: Option<i64>,
    pub model: Option<String>,
    pub task_type: Option<String>,
    /// Whether this task generates music; see [`is_music`] for the rule. Non-music tasks
    /// reach the same endpoint and should be acknowledged (2xx) and ignored.
    pub is_music: bool,
    /// The status exactly as sent (trimmed, cut), for logs and the raw-event record.
    pub raw_status: String,
    pub shape: PayloadShape,
    pub update: TaskUpdate,
}

/// Which of the accepted shapes the payload had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display)]
#[strum(serialize_all = "snake_case")]
pub enum PayloadShape {
    /// `{"timestamp", "data"}`: what GoAPI's webhook sends.
    Envelope,
    /// `{"code", "data", "message"}`: the reply of `GET /api/v1/task/{id}`.
    TaskReply,
    /// A task object with `model` or `task_type`, without envelope.
    Bare,
    /// No envelope and neither `model` nor `task_type`: the reference handler's format.
    Flat,
}

impl GoapiWebhook {
    /// The inbox's dedupe key of this delivery (`body`, as received): equal for
    /// redeliveries of one report, different for a new one. A relay's `webhook-id` names
    /// the delivery; else GoAPI resends a report with the same task, status and
    /// `timestamp`; else only the same bytes are the same report. The spelling must never
    /// change: stored keys are what an existing database deduplicates on.
    pub fn dedupe_key(&self, webhook_id: Option<&str>, body: &[u8]) -> String {
        match (webhook_id, self.timestamp) {
            (Some(id), _) => format!("goapi:webhook-id:{id}"),
            (None, Some(ts)) => format!("goapi:{}:{}:{ts}", self.task_id, self.update.status),
            (None, None) => format!("goapi:body:{}", super::sha256_hex(body)),
        }
    }
}

/// Parses a body POSTed to the GoAPI webhook route (any accepted shape).
pub fn parse_goapi(body: &[u8]) -> Result<GoapiWebhook, ParseError> {
    let v = super::json_object(body)?;
    parse_value(&v, None)
}

/// Parses a task object fetched for reconciliation. `task` may be the bare task or the
/// whole `{code, data, message}` reply; `timestamp` (if given) replaces any in the payload.
pub fn parse_task_object(task: &Value, timestamp: Option<i64>) -> Result<GoapiWebhook, ParseError> {
    if !task.is_object() {
        return Err(ParseError::NotObject);
    }
    parse_value(task, timestamp)
}

fn parse_value(top: &Value, ts_override: Option<i64>) -> Result<GoapiWebhook, ParseError> {
    // A top-level task_id or status means there is no envelope, even if the task itself
    // happened to carry a `data` field.
    let enveloped =
        top.get("data").is_some() && top.get("task_id").is_none() && top.get("status").is_none();
    let (task, shape) = if enveloped {
        let shape = if top.get("code").is_some() && top.get("timestamp").is_none() {
            PayloadShape::TaskReply
        } else {
            PayloadShape::Envelope
        };
        if let Some(code) = top.get("code").filter(|c| !c.is_null())
            && opt_int(top, "code") != Some(200)
        {
            let msg = opt_str(top, "message").unwrap_or("no message");
            return Err(ParseError::Invalid(format!(
                "GoAPI replied code {}: {}",
                shorten(&code.to_string(), 40),
                shorten(msg, 300)
            )));
        }
        match top.get("data") {
            Some(d) if d.is_object() => (d, shape),
            _ => return Err(ParseError::Invalid("`data` is not a task object".into())),
        }
    } else {
        (top, PayloadShape::Bare)
    };

    let task_id = match task.get("task_id") {
        None | Some(Value::Null) => return Err(ParseError::MissingTaskId),
        Some(Value::String(s)) if s.trim().is_empty() => return Err(ParseError::MissingTaskId),
        Some(Value::String(s)) if s.trim().len() > MAX_TASK_ID_BYTES => {
            return Err(ParseError::Invalid(format!(
                "task_id is longer than {MAX_TASK_ID_BYTES} bytes"
            )));
        }
        // Task ids reach logs and the event log: no control characters (forged log lines).
        Some(Value::String(s)) if s.chars().any(char::is_control) => {
            return Err(ParseError::Invalid(
                "task_id contains control characters".into(),
            ));
        }
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(_) => return Err(ParseError::Invalid("task_id is not a string".into())),
    };

    let raw_status = match task.get("status") {
        None | Some(Value::Null) => return Err(ParseError::MissingStatus),
        Some(Value::String(s)) if s.trim().is_empty() => return Err(ParseError::MissingStatus),
        Some(Value::String(s)) => shorten(s.trim(), MAX_LABEL_BYTES),
        Some(_) => return Err(ParseError::Invalid("status is not a string".into())),
    };
    let status = parse_status(&raw_status)?;

    let model = opt_str(task, "model").map(|s| shorten(s, MAX_LABEL_BYTES));
    let task_type = opt_str(task, "task_type").map(|s| shorten(s, MAX_LABEL_BYTES));
    let shape = if shape == PayloadShape::Bare && model.is_none() && task_type.is_none() {
        PayloadShape::Flat
    } else {
        shape
    };
    let timestamp = ts_override.or_else(|| opt_int(top, "timestamp"));

    let output = task.get("output").unwrap_or(&Value::Null);
    let tracks = tracks(output);
    let error = task.get("error").and_then(error_text);
    let is_music = is_music(model.as_deref(), task_type.as_deref(), output);

    Ok(GoapiWebhook {
        update: TaskUpdate {
            task_id: task_id.clone(),
            status,
            tracks,
            error,
            // The URL it came to is the intake's business, not the payload's.
            named_job: None,
        },
        task_id,
        timestamp,
        model,
        task_type,
        is_music,
        raw_status,
        shape,
    })
}

/// GoAPI documents five lowercase statuses; the synonyms cover other music APIs' and
/// the reference handler's spellings. Anything else is refused rather than guessed.
fn parse_status(raw: &str) -> Result<TaskStatus, ParseError> {
    Ok(match raw.to_ascii_lowercase().as_str() {
        "pending" | "queued" | "submitted" => TaskStatus::Pending,
        "processing" | "running" | "in_progress" => TaskStatus::Processing,
        "staged" => TaskStatus::Staged,
        "completed" | "complete" | "succeeded" | "success" => TaskStatus::Completed,
        "failed" | "failure" | "error" => TaskStatus::Failed,
        _ => return Err(ParseError::UnknownStatus(shorten(raw, 64))),
    })
}

/// Every track in `output`, in payload order, from whichever shape it has:
/// `songs[]` (Udio), `clips{}` (older Suno), a top-level array (newer Suno),
/// `audio_url` (ace-step, diffrhythm) or `url` (flat format).
///
/// `clips` is a JSON object and serde_json's map is sorted by key; GoAPI is written in
/// Go, whose encoder also sorts map keys, so this is the order GoAPI sent.
fn tracks(output: &Value) -> Vec<Track> {
    let items: Vec<&Value> = match output {
        Value::Array(items) => items.iter().collect(),
        Value::Object(o) => {
            if let Some(songs) = o.get("songs") {
                songs
                    .as_array()
                    .map(|a| a.iter().collect())
                    .unwrap_or_default()
            } else if let Some(clips) = o.get("clips") {
                match clips {
                    Value::Object(m) => m.values().collect(),
                    Value::Array(a) => a.iter().collect(),
                    _ => Vec::new(),
                }
            } else if o.contains_key("audio_url") || o.contains_key("url") {
                vec![output]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    };
    items
        .into_iter()
        .take(MAX_TRACKS)
        .filter_map(track)
        .collect()
}

/// Elements that are neither objects nor strings are not tracks and are skipped.
fn track(item: &Value) -> Option<Track> {
    match item {
        Value::String(s) => Some(Track {
            url: MediaUrl::parse(s).ok(),
            finished: true,
        }),
        Value::Object(_) => {
            let url = ["song_path", "audio_url", "url"]
                .iter()
                .find_map(|k| opt_str(item, k))
                .and_then(|s| MediaUrl::parse(s).ok());
            Some(Track {
                url,
                finished: finished(item),
            })
        }
        _ => None,
    }
}

/// `finished: bool` (Udio) wins, then a clip `status` (Suno: only `complete` is final,
/// `streaming` URLs are partial), else the track counts as finished. A `finished` of a
/// type we do not understand counts as unfinished: better no mix than half a song.
fn finished(item: &Value) -> bool {
    match item.get("finished") {
        Some(Value::Bool(b)) => return *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => return true,
        Some(Value::Null) | None => {}
        Some(_) => return false,
    }
    match item.get("status") {
        Some(Value::String(s)) => matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "complete" | "completed" | "succeeded" | "success" | "finished" | "done"
        ),
        Some(Value::Null) | None => true,
        Some(_) => false,
    }
}

/// `{"code", "message", "raw_message"}` (GoAPI), `{"message"}` (flat), or a bare string.
/// Both messages are kept when they differ: GoAPI puts the generic text in `message`
/// and the useful cause (`suno api status: 429`) in `raw_message`. A non-zero code with
/// no text still says which code, as it is all the operator will get.
fn error_text(err: &Value) -> Option<String> {
    let text = match err {
        Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Value::Object(_) => {
            let message = opt_str(err, "message");
            let raw = opt_str(err, "raw_message");
            match (message, raw) {
                (Some(m), Some(r)) if m == r || m.contains(r) => Some(m.to_owned()),
                (Some(m), Some(r)) if r.contains(m) => Some(r.to_owned()),
                (Some(m), Some(r)) => Some(format!("{m} ({r})")),
                (Some(m), None) => Some(m.to_owned()),
                (None, Some(r)) => Some(r.to_owned()),
                (None, None) => match opt_int(err, "code") {
                    Some(code) if code != 0 => Some(format!("GoAPI error code {code}")),
                    _ => None,
                },
            }
        }
        _ => None,
    };
    text.map(|t| shorten(&t, MAX_ERROR_BYTES))
}
