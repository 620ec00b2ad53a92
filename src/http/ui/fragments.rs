//! The fragments the page's script swaps in. Each reads the engine's store only: the
//! overview (`overview`), the videos list (`videos`), a video (`video`), the event log and
//! one event (`events`); the rows they share are here.

mod events;
mod overview;
mod video;
mod videos;

use std::sync::Arc;

use super::escape::{query as q, text as esc};
use super::render::{action, opt, pill, pill_as, time, video_link};
use crate::engine::Engine;
use crate::http::{ApiError, Request};
use crate::store::{EffectState, EntryOutcome, InboxEntry, OutboxEntry, Payload};

pub(crate) async fn render(
    engine: &Arc<Engine>,
    req: &Request,
    rest: &[&str],
) -> Result<String, ApiError> {
    match rest {
        ["overview"] => overview::overview(engine).await,
        ["videos"] => videos::videos(engine, req).await,
        ["videos", id] => video::video(engine, id).await,
        ["events"] => events::events(engine, req).await,
        ["events", id] => events::event(engine, id).await,
        _ => Err(ApiError::not_found("no such page")),
    }
}

pub(super) fn entry_kind(e: &InboxEntry) -> &'static str {
    match &e.payload {
        Payload::Event { event } => event.label(),
        Payload::NotMusic { .. } => "not_music",
        Payload::Duplicate { .. } => "duplicate",
    }
}

pub(super) fn effect_row(e: &OutboxEntry, with_video: bool) -> String {
    let retryable = e.state == EffectState::Failed && e.effect.replayable();
    let button = if retryable {
        action(
            "Retry effect",
            "POST",
            &format!("/effects/{}/retry", q(&e.effect_id)),
            &format!("Put effect {} back in the queue?", e.effect_id),
            false,
        )
    } else {
        String::new()
    };
    let next = if e.state == EffectState::Pending {
        time(e.next_attempt_at)
    } else {
        opt(None)
    };
    let state = match (e.state, e.started_at) {
        (EffectState::Pending, Some(_)) => "pending (call interrupted)".to_owned(),
        (EffectState::Pending, None) if e.attempts > 0 => "retrying".to_owned(),
        (s, _) => s.to_string(),
    };
    format!(
        r#"<tr data-effect="{id}">{video}<td><span class="mono">{kind}</span><br><span class="muted mono">{id}</span></td><td>{st}</td><td class="num">{a}</td><td class="err">{err}</td><td>{next}</td><td>{button}</td></tr>"#,
        video = if with_video {
            format!("<td>{}</td>", video_link(e.video_id.as_str()))
        } else {
            String::new()
        },
        id = esc(&e.effect_id),
        kind = esc(e.effect.kind()),
        st = pill(&state),
        a = e.attempts,
        err = opt(e.last_error.as_deref()),
    )
}

pub(super) fn event_row(e: &InboxEntry, with_video: bool) -> String {
    format!(
        r#"<tr data-event="{id}"><td>{t}</td>{video}<td>{src}</td><td class="mono">{kind}</td><td>{out}</td><td class="muted">{note}</td><td><a href="/ui/events/{id}">payload</a></td></tr>"#,
        id = esc(&e.event_id.to_string()),
        t = time(e.received_at),
        video = if with_video {
            format!("<td>{}</td>", video_link(e.video_id.as_str()))
        } else {
            String::new()
        },
        src = esc(e.source.service_name()),
        kind = esc(entry_kind(e)),
        out = outcome_pill(e),
        note = opt(e.note.as_deref()),
    )
}

/// Events that report something going wrong: applied, they are still bad news.
const FAILURE_EVENTS: [&str; 7] = [
    "goapi_failed",
    "goapi_completed_unusable",
    "nca_failed",
    "nca_failed_no_audio",
    "effect_failed",
    "job_deadline_passed",
    "track_gone",
];

/// An entry's outcome coloured by what it means: an applied failure is red, not green.
pub(super) fn outcome_pill(e: &InboxEntry) -> String {
    let state = entry_state(e);
    if state == EntryOutcome::Applied.as_ref() && FAILURE_EVENTS.contains(&entry_kind(e)) {
        pill_as("applied · failure", "failure")
    } else {
        pill(state)
    }
}

/// An entry's outcome once processed, else its state.
pub(super) fn entry_state(e: &InboxEntry) -> &'static str {
    match e.outcome {
        Some(o) => o.into(),
        None => e.state.into(),
    }
}
