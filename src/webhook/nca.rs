//! NCA Toolkit job callbacks and job-status replies → [`NcaWebhook`] / [`NcaJobState`].
//!
//! NCA POSTs its callback once, unsigned, and never retries, so the parser turns every
//! recognisable callback into a result: whatever is not a clear success (code 200 with a
//! usable `file_url`) becomes `Failed` with the most useful text available, so a job
//! never hangs on a payload we half understand.

use serde_json::Value;

use super::{ParseError, opt_int, opt_str};
use crate::domain::{MediaUrl, RecordId};
use crate::machine::{NcaResult, NcaUpdate};
use crate::text::shorten;

/// NCA's `message` on failure is ffmpeg's stderr (many KB): both ends are kept, as the
/// start says what ran and the end says why it stopped.
pub const MAX_MESSAGE_BYTES: usize = 8_000;
/// Ids we put in the request (`id`) or NCA generates (`job_id`, a UUID).
const MAX_ID_BYTES: usize = 256;

/// One NCA job result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NcaWebhook {
    pub update: NcaUpdate,
    /// `endpoint` as echoed by NCA, e.g. `/v1/ffmpeg/compose`.
    pub endpoint: Option<String>,
    /// NCA's `code` (200 on success), when it was an integer.
    pub code: Option<i64>,
    /// NCA's `message`, cut to [`MAX_MESSAGE_BYTES`].
    pub message: Option<String>,
    /// Read when it fits a u64 (it is a Python `id()`, so it usually does); else `None`.
    pub queue_id: Option<u64>,
    pub build_number: Option<i64>,
}

/// The state of a job as `POST /v1/toolkit/job/status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NcaJobState {
    Queued,
    Running,
    Done(NcaWebhook),
    /// NCA does not know the job: it never got it, or it restarted (its queue is in memory).
    Unknown,
}

/// Parses the body NCA POSTs to our callback URL.
/// The inbox's dedupe key of a callback for `video` (`body`, as received): NCA sends no
/// delivery id, so only the same bytes are the same callback. Scoped to the video: two
/// videos' id-less failure callbacks can be byte for byte the same (same ffmpeg error),
/// and neither is a repeat of the other. The spelling must never change: stored keys are
/// what an existing database deduplicates on.
pub(crate) fn dedupe_key(video: &RecordId, body: &[u8]) -> String {
    format!("nca:body:{video}:{}", super::sha256_hex(body))
}

pub fn parse_nca(body: &[u8]) -> Result<NcaWebhook, ParseError> {
    let v = super::json_object(body)?;
    parse_value(&v)
}

/// Parses NCA's final payload when it is already JSON: the body of the callback, or the
/// reply of a compose call that NCA ran synchronously (200 with `response`), which is the
/// same envelope.
pub(crate) fn parse_nca_value(v: &Value) -> Result<NcaWebhook, ParseError> {
    parse_value(v)
}

fn parse_value(v: &Value) -> Result<NcaWebhook, ParseError> {
    if !v.is_object() {
        return Err(ParseError::NotObject);
    }
    // An object with none of these is some other JSON (our own request, say), not a job
    // result: refusing it keeps a stray POST from failing a job.
    if !["code", "response", "message"]
        .iter()
        .any(|k| v.get(k).is_some())
    {
        return Err(ParseError::Invalid(
            "not an NCA job result (none of code, response, message)".into(),
        ));
    }
    let code = opt_int(v, "code");
    // 202 is NCA's "queued" acknowledgement: the result is still to come.
    if code == Some(202) {
        return Err(ParseError::Invalid(
            "NCA code 202 acknowledges a queued job; it is not a job result".into(),
        ));
    }
    let message = message_text(v.get("message"));
    let result = match code {
        Some(200) => match file_url(v.get("response")) {
            Ok(output) => NcaResult::Succeeded { output },
            Err(why) => NcaResult::Failed {
                error: format!("NCA reported success but {why}"),
            },
        },
        _ => NcaResult::Failed {
            error: match (&message, code) {
                (Some(m), _) => m.clone(),
                (None, Some(c)) => format!("NCA job failed with code {c} and no message"),
                (None, None) => "NCA job ended without a code or a message".into(),
            },
        },
    };
    Ok(NcaWebhook {
        update: NcaUpdate {
            submission_id: id_field(v, "id"),
            nca_job_id: id_field(v, "job_id"),
            result,
            // The URL it came to is the intake's business, not the payload's.
            named_job: None,
        },
        endpoint: opt_str(v, "endpoint").map(|s| shorten(s, MAX_ID_BYTES)),
        code,
        message,
        queue_id: v.get("queue_id").and_then(Value::as_u64),
        build_number: opt_int(v, "build_number"),
    })
}

/// The output URL. Compose answers a list of `{file_url, filesize, duration}`; other NCA
/// endpoints answer a bare URL string or a single object, accepted for the same price.
fn file_url(response: Option<&Value>) -> Result<MediaUrl, String> {
    let first = match response {
        None | Some(Value::Null) => return Err("returned no response".into()),
        Some(Value::Array(a)) => a.first().ok_or("returned an empty response list")?,
        Some(other) => other,
    };
    let raw = match first {
        Value::String(s) => s.as_str(),
        Value::Object(_) => first
            .get("file_url")
            .and_then(Value::as_str)
            .ok_or("returned no file_url")?,
        _ => return Err("returned a response of an unexpected type".into()),
    };
    MediaUrl::parse(raw).map_err(|e| format!("its file_url is unusable: {e}"))
}

/// NCA's `message` is a string, except on some errors where it is an object
/// (`{"error": "Job not found", ...}`): those are kept as compact JSON.
fn message_text(m: Option<&Value>) -> Option<String> {
    let text = match m? {
        Value::String(s) => s.trim().to_owned(),
        Value::Null => return None,
        other => other.to_string(),
    };
    (!text.is_empty()).then(|| shorten(&text, MAX_MESSAGE_BYTES))
}

/// An id is ours to match on only if it is a reasonable string: a huge one is cut, so
/// it will simply not match any job.
fn id_field(v: &Value, key: &str) -> Option<String> {
    opt_str(v, key).map(|s| shorten(s, MAX_ID_BYTES))
}

/// A job of NCA's recent-jobs listing, by its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedJob {
    pub(crate) job_id: String,
    /// `queued`, `running` or `done` (lowercased); anything else is kept as it came.
    pub(crate) status: String,
}

/// Parses the reply of `POST /v1/toolkit/jobs/status` (toolkit build 209): the envelope's
/// `response` maps NCA job ids to their `job_status`, for the jobs whose status file
/// changed in the window asked for. Entries whose value is not a string (a newer build
/// may give objects) are kept with the object's `job_status`, or as `unknown`.
pub(crate) fn parse_nca_job_list(body: &Value) -> Result<Vec<ListedJob>, ParseError> {
    if !body.is_object() {
        return Err(ParseError::NotObject);
    }
    if let Some(c) = opt_int(body, "code").filter(|c| *c != 200) {
        let msg = message_text(body.get("message")).unwrap_or_else(|| "no message".into());
        return Err(ParseError::Invalid(format!(
            "NCA replied code {c}: {}",
            shorten(&msg, 300)
        )));
    }
    let Some(map) = body.get("response").and_then(Value::as_object) else {
        return Err(ParseError::Invalid(
            "jobs status reply has no response object".into(),
        ));
    };
    Ok(map
        .iter()
        .map(|(id, v)| {
            let status = match v {
                Value::String(s) => s.as_str(),
                other => opt_str(other, "job_status").unwrap_or("unknown"),
            };
            ListedJob {
                job_id: shorten(id, MAX_ID_BYTES),
                status: shorten(&status.to_ascii_lowercase(), 64),
            }
        })
        .collect())
}

/// Parses the reply of `POST /v1/toolkit/job/status` (already decoded as JSON; the HTTP
/// status 404 also means [`NcaJobState::Unknown`], whatever the body).
pub fn parse_nca_status(body: &Value) -> Result<NcaJobState, ParseError> {
    if !body.is_object() {
        return Err(ParseError::NotObject);
    }
    let code = opt_int(body, "code");
    let not_found = code == Some(404)
        || body
            .get("message")
            .is_some_and(|m| m.to_string().to_ascii_lowercase().contains("job not found"));
    if not_found {
        return Ok(NcaJobState::Unknown);
    }
    if let Some(c) = code.filter(|c| *c != 200) {
        let msg = message_text(body.get("message")).unwrap_or_else(|| "no message".into());
        return Err(ParseError::Invalid(format!(
            "NCA replied code {c}: {}",
            shorten(&msg, 300)
        )));
    }
    let inner = match body.get("response") {
        Some(r) if r.is_object() => r,
        _ => {
            return Err(ParseError::Invalid(
                "job status reply has no response object".into(),
            ));
        }
    };
    let status = opt_str(inner, "job_status").ok_or(ParseError::MissingStatus)?;
    match status.to_ascii_lowercase().as_str() {
        "queued" => Ok(NcaJobState::Queued),
        "running" => Ok(NcaJobState::Running),
        "done" => {
            let outer_job = id_field(inner, "job_id");
            // Done with the result lost or unreadable: failing the job lets an operator
            // retry it, where waiting would wait forever.
            let mut done = inner
                .get("response")
                .filter(|p| p.is_object())
                .and_then(|p| parse_value(p).ok())
                .unwrap_or_else(|| NcaWebhook {
                    update: NcaUpdate {
                        submission_id: None,
                        nca_job_id: None,
                        result: NcaResult::Failed {
                            error: "NCA reports the job done but returned no result".into(),
                        },
                        named_job: None,
                    },
                    endpoint: None,
                    code: None,
                    message: None,
                    queue_id: inner.get("queue_id").and_then(Value::as_u64),
                    build_number: None,
                });
            if done.update.nca_job_id.is_none() {
                done.update.nca_job_id = outer_job;
            }
            Ok(NcaJobState::Done(done))
        }
        other => Err(ParseError::UnknownStatus(shorten(other, 64))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<NcaWebhook, ParseError> {
        parse_nca(v.to_string().as_bytes())
    }

    fn failed(w: &NcaWebhook) -> &str {
        match &w.update.result {
            NcaResult::Failed { error } => error,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn success_with_list() {
        let w = parse(
            json!({"code": 200, "id": "add_music:recA1b2C3d4E5f6G7:1", "job_id": "j",
            "response": [{"file_url": "https://s/o.mp4"}], "message": "success",
            "queue_id": 139652379057488u64, "build_number": 209}),
        )
        .unwrap();
        assert_eq!(
            w.update.result,
            NcaResult::Succeeded {
                output: MediaUrl::parse("https://s/o.mp4").unwrap()
            }
        );
        assert_eq!(
            w.update.submission_id.as_deref(),
            Some("add_music:recA1b2C3d4E5f6G7:1")
        );
        assert_eq!(w.update.nca_job_id.as_deref(), Some("j"));
        assert_eq!(
            (w.queue_id, w.build_number),
            (Some(139652379057488), Some(209))
        );
    }

    #[test]
    fn success_code_without_usable_url_is_a_failure() {
        for (resp, needle) in [
            (json!(null), "no response"),
            (json!([]), "empty response list"),
            (json!([{"filesize": 1}]), "no file_url"),
            (json!([{"file_url": ""}]), "unusable"),
            (json!([{"file_url": "file:///etc/passwd"}]), "unusable"),
            (json!(5), "unexpected type"),
        ] {
            let w = parse(json!({"code": 200, "response": resp})).unwrap();
            let e = failed(&w);
            assert!(
                e.starts_with("NCA reported success but") && e.contains(needle),
                "{e}"
            );
        }
        let w = parse(json!({"code": 200, "response": "https://s/o.mp4"})).unwrap();
        assert!(matches!(w.update.result, NcaResult::Succeeded { .. }));
        let w = parse(json!({"code": "200", "response": {"file_url": "https://s/o.mp4"}})).unwrap();
        assert!(matches!(w.update.result, NcaResult::Succeeded { .. }));
    }

    #[test]
    fn failures_keep_the_message_bounded() {
        let stderr = format!("HEAD{}TAIL", "ffmpeg noise\n".repeat(10_000));
        let w = parse(json!({"code": 500, "response": null, "message": stderr})).unwrap();
        let e = failed(&w);
        assert!(e.len() <= MAX_MESSAGE_BYTES && e.starts_with("HEAD") && e.ends_with("TAIL"));
        let w = parse(json!({"code": 500})).unwrap();
        assert_eq!(failed(&w), "NCA job failed with code 500 and no message");
        let w = parse(json!({"id": "x", "message": {"error": "boom"}})).unwrap();
        assert_eq!(failed(&w), r#"{"error":"boom"}"#);
        let w = parse(json!({"job_id": "x", "response": null})).unwrap();
        assert_eq!(failed(&w), "NCA job ended without a code or a message");
        assert!(matches!(
            parse(json!({"job_id": "x"})),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            parse(json!({"code": 202, "message": "processing"})),
            Err(ParseError::Invalid(_))
        ));
    }

    #[test]
    fn odd_fields_do_not_fail() {
        let w = parse(json!({"code": 500, "message": "m", "id": 7, "job_id": null,
            "queue_id": 1e30, "build_number": "x", "endpoint": ["x"]}))
        .unwrap();
        assert_eq!(w.update.submission_id, None);
        assert_eq!(w.update.nca_job_id, None);
        assert_eq!((w.queue_id, w.build_number, w.endpoint), (None, None, None));
        // Beyond u64: serde_json reads it as a float rather than failing.
        let body = br#"{"code": 500, "message": "m", "queue_id": 123456789012345678901234567890}"#;
        assert_eq!(parse_nca(body).unwrap().queue_id, None);
        assert!(matches!(
            parse(json!({"hello": 1})),
            Err(ParseError::Invalid(_))
        ));
        assert_eq!(parse_nca(b"[]"), Err(ParseError::NotObject));
    }

    #[test]
    fn job_status_replies() {
        let env = |r: Value| json!({"code": 200, "message": "success", "response": r});
        assert_eq!(
            parse_nca_status(&env(json!({"job_status": "queued", "job_id": "j"}))),
            Ok(NcaJobState::Queued)
        );
        assert_eq!(
            parse_nca_status(&env(json!({"job_status": "RUNNING"}))),
            Ok(NcaJobState::Running)
        );
        let done = parse_nca_status(&env(json!({"job_status": "done", "job_id": "j",
            "response": {"code": 200, "id": "s", "response": [{"file_url": "https://s/o.mp4"}]}})))
        .unwrap();
        match done {
            NcaJobState::Done(w) => {
                assert!(matches!(w.update.result, NcaResult::Succeeded { .. }));
                assert_eq!(w.update.nca_job_id.as_deref(), Some("j"));
                assert_eq!(w.update.submission_id.as_deref(), Some("s"));
            }
            other => panic!("{other:?}"),
        }
        match parse_nca_status(&env(
            json!({"job_status": "done", "job_id": "j", "response": null}),
        )) {
            Ok(NcaJobState::Done(w)) => assert!(failed(&w).contains("no result")),
            other => panic!("{other:?}"),
        }
        let gone = json!({"code": 404, "response": null,
            "message": {"error": "Job not found", "job_id": "j"}});
        assert_eq!(parse_nca_status(&gone), Ok(NcaJobState::Unknown));
        assert!(matches!(
            parse_nca_status(&env(json!({"job_status": "exploded"}))),
            Err(ParseError::UnknownStatus(_))
        ));
        assert_eq!(
            parse_nca_status(&env(json!({}))),
            Err(ParseError::MissingStatus)
        );
        assert!(matches!(
            parse_nca_status(&env(json!(null))),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            parse_nca_status(&json!({"code": 401, "message": "Unauthorized"})),
            Err(ParseError::Invalid(_))
        ));
        assert_eq!(parse_nca_status(&json!([])), Err(ParseError::NotObject));
    }

    #[test]
    fn the_dedupe_key_keeps_its_stored_spelling() {
        let video = RecordId::parse("recA1b2C3d4E5f6G7").unwrap();
        assert_eq!(
            dedupe_key(&video, b"abc"),
            "nca:body:recA1b2C3d4E5f6G7:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
