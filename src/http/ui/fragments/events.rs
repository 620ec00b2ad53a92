//! The event log (filtered, paged) and one event with its raw payload.

use std::sync::Arc;

use super::super::render::{action, opt, table, time, video_link};
use super::{entry_kind, event_row, outcome_pill};
use crate::domain::RecordId;
use crate::engine::Engine;
use crate::http::inspect::record_id;
use crate::http::ui::escape::{query as q, text as esc};
use crate::http::{ApiError, Request};
use crate::store::{EventFilter, EventQuery, Payload, Source};

const SOURCES: [Source; 4] = [Source::Goapi, Source::Nca, Source::Api, Source::Engine];

pub(super) async fn events(engine: &Arc<Engine>, req: &Request) -> Result<String, ApiError> {
    let filter = crate::http::inspect::event_filter(
        req.param("outcome").filter(|o| !o.is_empty()).as_deref(),
    )?;
    let outcome = filter.map(EventFilter::as_str);
    let source = req
        .param("service")
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<Source>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_service",
                    "service must be one of goapi, nca, api, engine",
                )
            })
        })
        .transpose()?;
    let video_param = req
        .param("video_id")
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    let video = video_param.as_deref().map(record_id).transpose()?;
    let before_seq = req
        .param("before")
        .filter(|b| !b.is_empty())
        .map(|b| b.parse::<i64>())
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid_cursor", "before must be an integer"))?;
    const PAGE: u32 = 50;
    let entries = engine
        .store
        .events(EventQuery {
            filter,
            video: video.clone(),
            source,
            before_seq,
            limit: PAGE,
        })
        .await?;

    // Options are (value, label).
    let select = |name: &str, current: Option<&str>, options: &[(&str, &str)]| {
        let mut s = format!(
            r#"<select name="{n}" id="filter-{n}"><option value="">any</option>"#,
            n = esc(name)
        );
        for (value, label) in options {
            s.push_str(&format!(
                r#"<option value="{v}"{sel}>{l}</option>"#,
                v = esc(value),
                l = esc(label),
                sel = if current == Some(*value) {
                    " selected"
                } else {
                    ""
                }
            ));
        }
        s.push_str("</select>");
        s
    };
    let services: Vec<(String, &str)> = SOURCES
        .iter()
        .map(|s| (s.to_string(), s.service_name()))
        .collect();
    let services: Vec<(&str, &str)> = services.iter().map(|(v, l)| (v.as_str(), *l)).collect();
    let outcome_options: Vec<(&str, &str)> = EventFilter::spellings()
        .into_iter()
        .map(|o| (o, o))
        .collect();
    let source_name = source.map(|s| s.to_string());
    let mut html =
        String::from(r#"<h1>Event log <span class="muted small">newest first</span></h1>"#);
    html.push_str(&format!(
        r#"<form class="filters" method="get" action="/ui/events"><label>outcome {o}</label><label>service {s}</label><label>video <input name="video_id" id="filter-video" value="{v}" placeholder="rec…" size="20"></label><button type="submit" class="primary">Search</button> <a href="/ui/events">clear</a></form>"#,
        o = select("outcome", outcome, &outcome_options),
        s = select("service", source_name.as_deref(), &services),
        v = esc(video_param.as_deref().unwrap_or("")),
    ));
    let rows: Vec<String> = entries.iter().map(|e| event_row(e, true)).collect();
    html.push_str(&format!(
        r#"<div id="events">{}</div>"#,
        table(
            &[
                "received", "video", "source", "event", "outcome", "note", ""
            ],
            &rows,
            "No event matches."
        )
    ));
    let mut link = String::new();
    for (k, v) in [
        ("outcome", outcome),
        ("service", source_name.as_deref()),
        ("video_id", video.as_ref().map(RecordId::as_str)),
    ] {
        if let Some(v) = v {
            link.push_str(&format!("{k}={}&", q(v)));
        }
    }
    html.push_str(r#"<div class="pager">"#);
    if before_seq.is_some() {
        html.push_str(&format!(
            r#"<a href="/ui/events?{}">← newest</a> "#,
            esc(link.trim_end_matches('&'))
        ));
    }
    if entries.len() as u32 == PAGE
        && let Some(last) = entries.last()
    {
        html.push_str(&format!(
            r#"<a id="older" href="/ui/events?{}">older events →</a>"#,
            esc(&format!("{link}before={}", last.seq))
        ));
    }
    html.push_str("</div>");
    Ok(html)
}

pub(super) async fn event(engine: &Arc<Engine>, id: &str) -> Result<String, ApiError> {
    let id = uuid::Uuid::parse_str(id)
        .map_err(|_| ApiError::bad_request("invalid_event_id", "expected a UUID"))?;
    let Some(e) = engine.store.entry(id).await? else {
        return Err(ApiError::not_found(format!("no event {id}")));
    };
    let payload = serde_json::from_str::<serde_json::Value>(&e.raw_body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| e.raw_body.clone());
    let mut html = format!(
        r#"<h1>Event <span class="mono">{id}</span></h1><dl class="facts"><dt>video</dt><dd>{v}</dd><dt>source</dt><dd>{src}</dd><dt>endpoint</dt><dd class="mono">{ep}</dd><dt>received</dt><dd>{t}</dd><dt>event</dt><dd class="mono">{kind}</dd><dt>outcome</dt><dd>{out}</dd><dt>note</dt><dd>{note}</dd><dt>job</dt><dd class="mono">{job}</dd></dl>"#,
        id = esc(&id.to_string()),
        v = video_link(e.video_id.as_str()),
        src = esc(e.source.service_name()),
        ep = esc(&e.endpoint),
        t = time(e.received_at),
        kind = esc(entry_kind(&e)),
        out = outcome_pill(&e),
        note = opt(e.note.as_deref()),
        job = opt(e.job.map(|j| j.to_string()).as_deref()),
    );
    if matches!(e.payload, Payload::Event { .. }) {
        html.push_str(&format!(
            r#"<div class="actions">{}</div>"#,
            action(
                "Replay",
                "POST",
                &format!("/events/{id}/replay"),
                &format!("Run event {id} through the machine again? (A repeat stays a duplicate.)"),
                false
            )
        ));
    }
    html.push_str(&format!(
        r#"<h2>Raw payload</h2><pre class="payload" id="payload">{}</pre>"#,
        esc(&payload)
    ));
    Ok(html)
}
