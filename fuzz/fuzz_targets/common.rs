//! Checks shared by the parser targets: what a successful parse must look like, and that
//! what the inbox stores reloads as the same event.

#![allow(dead_code)]

use reelstate::domain::MediaUrl;
use reelstate::machine::{Event, NcaResult, NcaUpdate, TaskUpdate};
use reelstate::store::Payload;
use reelstate::webhook::nca::MAX_MESSAGE_BYTES;
use reelstate::webhook::{GoapiWebhook, NcaWebhook, ParseError};

/// `model`, `task_type`, the raw status (goapi.rs) and NCA ids (nca.rs) are cut to these.
const MAX_LABEL_BYTES: usize = 200;
const MAX_ID_BYTES: usize = 256;

/// An error's text is a short excerpt, whatever the input's size.
pub fn check_error(e: &ParseError) {
    let text = e.to_string();
    assert!(text.len() <= 1024, "error text of {} bytes", text.len());
    assert!(!e.code().is_empty());
}

pub fn check_url(u: &MediaUrl) {
    let s = u.as_str();
    assert!(s.len() <= MediaUrl::MAX_LEN);
    let lower = s.to_ascii_lowercase();
    assert!(
        lower.starts_with("http://") || lower.starts_with("https://"),
        "not an http(s) URL: {s:?}"
    );
    // It is handed to NCA and written to the base as is.
    assert!(
        !s.chars().any(|c| c.is_control() || c.is_whitespace()),
        "URL with control characters or whitespace: {s:?}"
    );
}

fn no_control(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// What the worker will see after the inbox round trip must be what intake parsed.
fn check_inbox_round_trip(event: Event) {
    let payload = Payload::Event { event };
    let stored = serde_json::to_string(&payload).expect("a parsed event serializes");
    let back: Payload = serde_json::from_str(&stored).expect("a stored event reloads");
    assert_eq!(back, payload, "the inbox round trip changed the event");
}

pub fn check_task_update(u: &TaskUpdate) {
    assert!(u.tracks.len() <= reelstate::webhook::goapi::MAX_TRACKS);
    for t in &u.tracks {
        if let Some(url) = &t.url {
            check_url(url);
        }
    }
    if let Some(e) = &u.error {
        assert!(e.len() <= reelstate::webhook::goapi::MAX_ERROR_BYTES);
    }
}

pub fn check_goapi(w: &GoapiWebhook) {
    let id = &w.task_id;
    assert!(!id.is_empty(), "empty task id");
    assert_eq!(id, id.trim(), "task id not trimmed");
    assert!(id.len() <= reelstate::webhook::goapi::MAX_TASK_ID_BYTES);
    assert!(no_control(id), "task id with control characters: {id:?}");
    assert_eq!(&w.update.task_id, id);
    // The raw status is one of the known spellings (it was accepted), so it is short and
    // clean too.
    assert!(!w.raw_status.is_empty() && w.raw_status.len() <= MAX_LABEL_BYTES);
    assert!(no_control(&w.raw_status), "raw status {:?}", w.raw_status);
    for label in [&w.model, &w.task_type].into_iter().flatten() {
        assert!(!label.is_empty() && label.len() <= MAX_LABEL_BYTES);
    }
    // The dedupe key reaches the store and logs.
    let key = w.dedupe_key(None, b"{}");
    assert!(no_control(&key), "dedupe key {key:?}");
    assert!(key.len() <= 64 + MAX_LABEL_BYTES + reelstate::webhook::goapi::MAX_TASK_ID_BYTES);
    check_task_update(&w.update);
    check_inbox_round_trip(Event::GoapiTaskUpdate(w.update.clone()));
}

pub fn check_nca_update(u: &NcaUpdate) {
    for id in [&u.submission_id, &u.nca_job_id].into_iter().flatten() {
        assert!(
            !id.is_empty() && id.len() <= MAX_ID_BYTES,
            "id of {} bytes",
            id.len()
        );
    }
    match &u.result {
        NcaResult::Succeeded { output } => check_url(output),
        NcaResult::Failed { error } => {
            assert!(!error.is_empty(), "a failure without a reason");
            assert!(
                error.len() <= MAX_MESSAGE_BYTES + 512,
                "error of {} bytes",
                error.len()
            );
        }
    }
}

pub fn check_nca(w: &NcaWebhook) {
    assert_ne!(w.code, Some(202), "a 202 acknowledgement taken as a result");
    if matches!(w.update.result, NcaResult::Succeeded { .. }) {
        assert_eq!(w.code, Some(200), "success without code 200");
    }
    if let Some(m) = &w.message {
        assert!(!m.is_empty() && m.len() <= MAX_MESSAGE_BYTES);
    }
    if let Some(e) = &w.endpoint {
        assert!(e.len() <= MAX_ID_BYTES);
    }
    check_nca_update(&w.update);
    check_inbox_round_trip(Event::NcaJobFinished(w.update.clone()));
}
