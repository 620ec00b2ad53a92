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

use serde_json::Value;

use super::{ParseError, opt_int, opt_str};
use crate::domain::MediaUrl;
use crate::machine::{TaskStatus, TaskUpdate, Track};
use crate::text::shorten;

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

const MUSIC_WORDS: &[&str] = &[
    "music",
    "audio",
    "song",
    "suno",
    "diffrhythm",
    "ace-step",
    "acestep",
    "lyric",
];
/// A token, not a substring: "udio" is inside "studio".
const MUSIC_TOKENS: &[&str] = &["udio"];
const VISUAL_WORDS: &[&str] = &[
    "video",
    "image",
    "img",
    "kling",
    "hailuo",
    "luma",
    "midjourney",
    "flux",
    "imagine",
    "upscale",
    "faceswap",
    "hunyuan",
    "seedance",
    "skyreels",
    "framepack",
    "trellis",
    "dall",
    "sora",
];
const VISUAL_TOKENS: &[&str] = &[
    "wan",
    "veo",
    "i2v",
    "t2v",
    "pan",
    "zoom",
    "outpaint",
    "inpaint",
    "reroll",
    "variation",
    "describe",
    "blend",
];

/// Whether a task is a music task.
///
/// Rule, biased towards "music" because mistaking one of our music tasks for a video
/// task would drop its result silently, while mistaking a video task for music only
/// makes the machine reject an unknown task id:
/// 1. music if `model` or `task_type` names audio/music (`music-u`, `suno`, `udio`,
///    `Qubico/ace-step`, `Qubico/diffrhythm`, `txt2audio*`, `generate_music*`, `music`…)
///    or `output` has an audio shape (`songs`, `clips`, `audio_url`);
/// 2. otherwise not music if `model`/`task_type` name an image/video product or task
///    (`kling`, `hailuo`, `luma`, `midjourney`, `Qubico/flux…`, `txt2img`, `img2video`,
///    `video_generation`, `imagine`, `upscale`…), or `output` only has image/video keys;
/// 3. otherwise music (the flat format, which has no model, and models we do not know).
pub fn is_music(model: Option<&str>, task_type: Option<&str>, output: &Value) -> bool {
    let labels: Vec<String> = [model, task_type]
        .into_iter()
        .flatten()
        .map(str::to_ascii_lowercase)
        .collect();
    let tokens: Vec<&str> = labels
        .iter()
        .flat_map(|l| l.split(|c: char| !c.is_ascii_alphanumeric()))
        .filter(|t| !t.is_empty())
        .collect();
    let says = |words: &[&str], toks: &[&str]| {
        labels.iter().any(|l| words.iter().any(|w| l.contains(w)))
            || tokens.iter().any(|t| toks.contains(t))
    };
    if says(MUSIC_WORDS, MUSIC_TOKENS) || has_audio_shape(output) {
        return true;
    }
    !(says(VISUAL_WORDS, VISUAL_TOKENS) || has_only_visual_shape(output))
}

fn has_audio_shape(output: &Value) -> bool {
    let audio_keys = |v: &Value| {
        ["songs", "clips", "audio_url", "song_path"]
            .iter()
            .any(|k| v.get(k).is_some_and(|x| !x.is_null()))
    };
    match output {
        Value::Object(_) => audio_keys(output),
        Value::Array(items) => items.iter().take(MAX_TRACKS).any(audio_keys),
        _ => false,
    }
}

fn has_only_visual_shape(output: &Value) -> bool {
    const VISUAL_KEYS: &[&str] = &[
        "video_url",
        "video_urls",
        "image_url",
        "image_urls",
        "images",
        "video",
        "works",
        "temporary_image_urls",
    ];
    output
        .as_object()
        .is_some_and(|o| VISUAL_KEYS.iter().any(|k| o.contains_key(*k)) && !o.contains_key("url"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<GoapiWebhook, ParseError> {
        parse_goapi(v.to_string().as_bytes())
    }

    fn envelope(task: Value) -> Value {
        json!({"timestamp": 1_700_000_000, "data": task})
    }

    fn udio(status: &str, output: Value, error: Value) -> Value {
        envelope(json!({
            "task_id": "t-1", "model": "music-u", "task_type": "generate_music",
            "status": status, "output": output, "error": error,
        }))
    }

    fn no_error() -> Value {
        json!({"code": 0, "raw_message": "", "message": "", "detail": null})
    }

    fn urls(w: &GoapiWebhook) -> Vec<Option<&str>> {
        w.update
            .tracks
            .iter()
            .map(|t| t.url.as_ref().map(MediaUrl::as_str))
            .collect()
    }

    #[test]
    fn envelope_with_songs() {
        let w = parse(udio(
            "completed",
            json!({"songs": [
                {"song_path": "https://a/1.mp3", "finished": true},
                {"song_path": "https://a/2.mp3", "finished": true},
            ]}),
            no_error(),
        ))
        .unwrap();
        assert_eq!(w.task_id, "t-1");
        assert_eq!(w.timestamp, Some(1_700_000_000));
        assert_eq!(w.shape, PayloadShape::Envelope);
        assert_eq!(w.update.status, TaskStatus::Completed);
        assert_eq!(
            urls(&w),
            vec![Some("https://a/1.mp3"), Some("https://a/2.mp3")]
        );
        assert_eq!(w.update.error, None);
        assert!(w.is_music);
        assert_eq!(
            w.dedupe_key(None, b"ignored"),
            "goapi:t-1:completed:1700000000"
        );
    }

    #[test]
    fn unfinished_and_empty_tracks_are_kept_but_not_chosen() {
        let w = parse(udio(
            "completed",
            json!({"songs": [
                {"song_path": "https://a/1.mp3", "finished": false},
                {"song_path": "", "finished": true},
                {"song_path": "ftp://a/2.mp3", "finished": true},
                {"song_path": "https://a/3.mp3", "finished": true},
            ]}),
            no_error(),
        ))
        .unwrap();
        assert_eq!(w.update.tracks.len(), 4);
        assert!(!w.update.tracks[0].finished);
        assert_eq!(w.update.tracks[1].url, None);
        assert_eq!(w.update.tracks[2].url, None);
        assert_eq!(
            w.update.usable_track().map(MediaUrl::as_str),
            Some("https://a/3.mp3")
        );
    }

    #[test]
    fn songs_null_or_wrong_type_means_no_tracks() {
        for songs in [json!(null), json!("x"), json!(7), json!({}), json!([])] {
            let w = parse(udio("processing", json!({"songs": songs}), no_error())).unwrap();
            assert!(w.update.tracks.is_empty());
            assert!(w.is_music);
        }
    }

    #[test]
    fn clips_status_decides_finished() {
        let w = parse(envelope(json!({
            "task_id": "t", "model": "suno", "status": "processing",
            "output": {"clips": {
                "a": {"audio_url": "https://a/1.mp3", "status": "streaming"},
                "b": {"audio_url": "https://a/2.mp3", "status": "complete"},
                "c": {"audio_url": "https://a/3.mp3"},
            }},
        })))
        .unwrap();
        let f: Vec<bool> = w.update.tracks.iter().map(|t| t.finished).collect();
        assert_eq!(f, vec![false, true, true]);
    }

    #[test]
    fn odd_finished_values() {
        let t = |v: Value| finished(&json!({ "finished": v }));
        assert!(t(json!(true)));
        assert!(!t(json!(false)));
        assert!(t(json!("TRUE")));
        assert!(!t(json!("false")));
        assert!(!t(json!(1)));
        assert!(t(json!(null)));
    }

    #[test]
    fn array_output_and_string_items() {
        let w = parse(envelope(json!({
            "task_id": "t", "model": "suno", "task_type": "music", "status": "completed",
            "output": [{"audio_url": "https://a/1.mp3"}, "https://a/2.mp3", 3, null],
        })))
        .unwrap();
        assert_eq!(
            urls(&w),
            vec![Some("https://a/1.mp3"), Some("https://a/2.mp3")]
        );
    }

    #[test]
    fn tracks_are_capped() {
        let many: Vec<Value> = (0..500)
            .map(|i| json!({"audio_url": format!("https://a/{i}.mp3")}))
            .collect();
        let w = parse(envelope(json!({
            "task_id": "t", "model": "suno", "status": "completed", "output": many,
        })))
        .unwrap();
        assert_eq!(w.update.tracks.len(), MAX_TRACKS);
    }

    #[test]
    fn statuses_case_insensitive_and_synonyms() {
        for (s, want) in [
            ("PENDING", TaskStatus::Pending),
            ("Processing", TaskStatus::Processing),
            ("staged", TaskStatus::Staged),
            ("Completed", TaskStatus::Completed),
            ("complete", TaskStatus::Completed),
            ("SUCCESS", TaskStatus::Completed),
            (" failed ", TaskStatus::Failed),
            ("error", TaskStatus::Failed),
        ] {
            let w = parse(json!({"task_id": "t", "status": s})).unwrap();
            assert_eq!(w.update.status, want, "{s}");
            assert_eq!(w.raw_status, s.trim());
        }
        assert_eq!(
            parse(json!({"task_id": "t", "status": "cancelled"})),
            Err(ParseError::UnknownStatus("cancelled".into()))
        );
        let long = "x".repeat(10_000);
        match parse(json!({"task_id": "t", "status": long})) {
            Err(ParseError::UnknownStatus(s)) => assert!(s.len() <= 64),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn required_fields() {
        assert_eq!(
            parse(json!({"status": "pending"})),
            Err(ParseError::MissingTaskId)
        );
        assert_eq!(
            parse(json!({"task_id": "  ", "status": "pending"})),
            Err(ParseError::MissingTaskId)
        );
        assert_eq!(
            parse(json!({"task_id": null, "status": "pending"})),
            Err(ParseError::MissingTaskId)
        );
        assert!(matches!(
            parse(json!({"task_id": 12, "status": "pending"})),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            parse(json!({"task_id": "x".repeat(300), "status": "pending"})),
            Err(ParseError::Invalid(_))
        ));
        assert_eq!(
            parse(json!({"task_id": "t"})),
            Err(ParseError::MissingStatus)
        );
        assert!(matches!(
            parse(json!({"task_id": "t", "status": ["completed"]})),
            Err(ParseError::Invalid(_))
        ));
        assert_eq!(
            parse(json!({"timestamp": 1, "data": {"status": "pending"}})),
            Err(ParseError::MissingTaskId)
        );
        assert!(matches!(
            parse(json!({"timestamp": 1, "data": "nope"})),
            Err(ParseError::Invalid(_))
        ));
        assert_eq!(parse_goapi(b"[]"), Err(ParseError::NotObject));
        assert!(matches!(parse_goapi(b"nope"), Err(ParseError::NotJson(_))));
    }

    #[test]
    fn wrong_types_elsewhere_are_ignored() {
        let w = parse(json!({
            "timestamp": "soon", "data": {
                "task_id": "t", "status": "completed", "model": 5, "task_type": [],
                "output": "https://a/1.mp3", "error": 42,
            }
        }))
        .unwrap();
        assert_eq!(w.timestamp, None);
        assert_eq!(w.model, None);
        assert!(w.update.tracks.is_empty());
        assert_eq!(w.update.error, None);
    }

    #[test]
    fn errors_combined_and_bounded() {
        let e = |v: Value| error_text(&v);
        assert_eq!(
            e(
                json!({"code": 10000, "message": "failed to generate music", "raw_message": "suno api status: 429"})
            ),
            Some("failed to generate music (suno api status: 429)".into())
        );
        assert_eq!(
            e(json!({"code": 1, "message": "same", "raw_message": "same"})),
            Some("same".into())
        );
        assert_eq!(
            e(json!({"raw_message": "only raw"})),
            Some("only raw".into())
        );
        assert_eq!(
            e(json!({"code": 0, "message": "", "raw_message": ""})),
            None
        );
        assert_eq!(
            e(json!({"code": 7, "message": ""})),
            Some("GoAPI error code 7".into())
        );
        assert_eq!(e(json!("plain")), Some("plain".into()));
        assert_eq!(e(json!(null)), None);
        let big = e(json!({"message": "x".repeat(100_000)})).unwrap();
        assert!(big.len() <= MAX_ERROR_BYTES);
    }

    #[test]
    fn task_reply_envelope() {
        let reply = json!({"code": 200, "message": "success", "data": {
            "task_id": "t", "model": "music-u", "status": "pending", "output": null,
        }});
        let w = parse(reply.clone()).unwrap();
        assert_eq!(w.shape, PayloadShape::TaskReply);
        let w = parse_task_object(&reply, Some(9)).unwrap();
        assert_eq!(w.timestamp, Some(9));
        let w = parse_task_object(&reply["data"], None).unwrap();
        assert_eq!((w.shape, w.timestamp), (PayloadShape::Bare, None));
        let bad = json!({"code": 404, "message": "task not found", "data": null});
        match parse(bad) {
            Err(ParseError::Invalid(m)) => assert!(m.contains("404") && m.contains("not found")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_task_object(&json!("x"), None),
            Err(ParseError::NotObject)
        );
    }

    #[test]
    fn music_classification() {
        let m = |model: Option<&str>, tt: Option<&str>, out: Value| is_music(model, tt, &out);
        assert!(m(Some("music-u"), Some("generate_music"), json!(null)));
        assert!(m(Some("suno"), Some("music"), json!(null)));
        assert!(m(Some("Qubico/ace-step"), Some("txt2audio"), json!(null)));
        assert!(m(
            Some("Qubico/diffrhythm"),
            Some("txt2audio-base"),
            json!(null)
        ));
        assert!(m(Some("udio"), None, json!(null)));
        assert!(m(None, None, json!({"url": "https://a/x.mp3"})));
        assert!(m(Some("mystery"), None, json!(null)));
        assert!(m(
            Some("kling"),
            Some("video_generation"),
            json!({"audio_url": "https://a"})
        ));
        assert!(!m(Some("kling"), Some("video_generation"), json!(null)));
        assert!(!m(Some("hailuo"), Some("img2video"), json!(null)));
        assert!(!m(Some("luma"), Some("video_generation"), json!(null)));
        assert!(!m(Some("midjourney"), Some("imagine"), json!(null)));
        assert!(!m(Some("midjourney"), Some("upscale"), json!(null)));
        assert!(!m(Some("Qubico/flux1-dev"), Some("txt2img"), json!(null)));
        assert!(!m(Some("Qubico/wanx"), Some("txt2video-14b"), json!(null)));
        assert!(!m(
            Some("Qubico/studio"),
            None,
            json!({"image_url": "https://a"})
        ));
        assert!(!m(None, None, json!({"video_url": "https://a/v.mp4"})));
    }

    /// Stored keys are what existing databases deduplicate on: their spelling is fixed.
    #[test]
    fn dedupe_keys_keep_their_stored_spelling() {
        let body = br#"{"task_id": "t-9", "status": "pending"}"#;
        let w = parse_goapi(body).unwrap();
        assert_eq!(w.timestamp, None);
        assert_eq!(w.dedupe_key(Some("msg_1"), body), "goapi:webhook-id:msg_1");
        assert_eq!(
            w.dedupe_key(None, body),
            format!("goapi:body:{}", crate::webhook::sha256_hex(body))
        );
        assert_eq!(
            crate::webhook::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
