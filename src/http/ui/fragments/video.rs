//! One video: its state and facts, the actions the machine accepts from an operator now,
//! its lifecycle (drawn, with its numbered edges and this video's path listed beside), its
//! timeline, jobs and effects. Everything on the page reads oldest first, as the path does.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::render::{action, action_with_body, duration, opt, pill, table, time};
use super::{effect_row, entry_kind, outcome_pill};
use warp::http::StatusCode;

use crate::diagram::{Highlight, OTHER_MEANS, video_edges, video_node, video_svg_compact};
use crate::domain::MediaUrl;
use crate::engine::Engine;
use crate::http::ApiError;
use crate::http::inspect::{handled, service_attempts};
use crate::http::ui::escape::text as esc;
use crate::machine::next_events;
use crate::store::{EffectState, EntryOutcome, EventQuery, HistoryRow, Payload};

fn media(u: Option<&MediaUrl>) -> String {
    match u {
        // MediaUrl admits absolute http(s) URLs only, so the link cannot be javascript:.
        Some(u) => format!(
            r#"<a href="{u}" rel="noopener noreferrer" target="_blank">{u}</a>"#,
            u = esc(u.as_str())
        ),
        None => opt(None),
    }
}

pub(super) async fn video(engine: &Arc<Engine>, id: &str) -> Result<String, ApiError> {
    let (video, s, history, effects) = match handled(engine, id).await {
        Ok(handled) => handled,
        Err(e) if e.status == StatusCode::NOT_FOUND => return Ok(not_handled(id)),
        Err(e) => return Err(e),
    };
    let paid = engine.store.paid_calls(Some(&video)).await?;
    let mut entries = engine
        .store
        .events(EventQuery {
            video: Some(video.clone()),
            limit: 500,
            ..EventQuery::default()
        })
        .await?;
    entries.reverse();
    let next = next_events(&s, engine.policy());
    let status = s.video.status.name();
    let v = esc(video.as_str());
    let path: Vec<&HistoryRow> = history
        .iter()
        .filter(|h| h.outcome == EntryOutcome::Applied && h.from != h.to)
        .collect();
    // How long the video stayed in the state each transition left.
    let mut stayed: HashMap<uuid::Uuid, chrono::Duration> = HashMap::new();
    for pair in path.windows(2) {
        stayed.insert(pair[1].event_id, pair[1].at - pair[0].at);
    }

    let mut html = format!(
        r#"<h1>Video <span class="mono">{v}</span> <span id="video-status" data-status="{st}">{p}</span></h1>"#,
        st = esc(status),
        p = pill(status),
    );
    html.push_str(&format!(
        r#"<dl class="facts"><dt>in this state since</dt><dd id="state-since">{since}</dd><dt>retries</dt><dd>{r} of {max}</dd><dt>paid calls</dt><dd id="paid-calls" data-goapi="{pg}" data-nca="{pn}">{pg} GoAPI task(s), {pn} NCA render(s), re-submissions included</dd><dt>combined video</dt><dd>{src}</dd><dt>music</dt><dd>{m}</dd><dt>final video</dt><dd>{f}</dd><dt>error details</dt><dd class="err">{e}</dd><dt>accepts next</dt><dd class="mono">{n}</dd></dl>"#,
        since = path.last().map_or_else(|| opt(None), |h| time(h.at)),
        r = s.video.retries,
        max = engine.settings.max_retries,
        pg = paid.goapi_tasks,
        pn = paid.nca_renders,
        src = media(s.video.source_video.as_ref()),
        m = media(s.video.music.as_ref()),
        f = media(s.video.final_video.as_ref()),
        e = opt(s.video.error_details.as_deref()),
        n = if next.is_empty() {
            opt(None)
        } else {
            esc(&next.join(", "))
        },
    ));
    html.push_str(&actions(&video.to_string(), status, &next));

    let highlight = Highlight::from_history(
        history
            .iter()
            .filter(|h| h.outcome == EntryOutcome::Applied)
            .map(|h| (h.from.name(), h.to.name())),
        status,
    );
    html.push_str(&format!(
        r#"<h2>Lifecycle</h2><div class="lifecycle"><div class="diagram" id="diagram">{svg}</div><div class="beside"><h3>This video's path, oldest first</h3>{steps}<h3>Every transition (numbers as drawn)</h3><ol class="edges" id="edges">{edges}</ol><p class="muted small">Blue: this video's path; filled: where it is now; red: failed states, left only by an operator's retry; (other): {other}.</p></div></div>"#,
        svg = video_svg_compact(&highlight),
        steps = path_list(&path, &stayed, status),
        edges = edge_list(&highlight),
        other = esc(OTHER_MEANS),
    ));

    let transitions: HashMap<uuid::Uuid, (&str, &str)> = history
        .iter()
        .map(|h| (h.event_id, (h.from.name(), h.to.name())))
        .collect();
    let rows: Vec<String> = entries
        .iter()
        .map(|e| {
            let step = transitions.get(&e.event_id).map_or_else(
                || opt(None),
                |(f, t)| format!("{} → {}", esc(f), esc(t)),
            );
            let spent = match (stayed.get(&e.event_id), transitions.get(&e.event_id)) {
                (Some(d), Some((f, _))) => format!("{} in {}", esc(&duration(*d)), esc(f)),
                _ => opt(None),
            };
            let replay = if matches!(e.payload, Payload::Event { .. }) {
                action(
                    "Replay",
                    "POST",
                    &format!("/events/{}/replay", e.event_id),
                    &format!(
                        "Run event {} through the machine again? (A repeat stays a duplicate.)",
                        e.event_id
                    ),
                    false,
                )
            } else {
                String::new()
            };
            format!(
                r#"<tr data-event="{id}"><td>{t}</td><td>{src}</td><td class="mono">{kind}</td><td>{out}</td><td class="mono">{step}</td><td>{spent}</td><td class="muted">{note}</td><td><a href="/ui/events/{id}">payload</a></td><td>{replay}</td></tr>"#,
                id = esc(&e.event_id.to_string()),
                t = time(e.received_at),
                src = esc(e.source.service_name()),
                kind = esc(entry_kind(e)),
                out = outcome_pill(e),
                note = opt(e.note.as_deref()),
            )
        })
        .collect();
    html.push_str(&format!(
        r#"<h2>Timeline <span class="muted small">oldest first</span></h2><div id="timeline">{}</div>"#,
        table(
            &[
                "received",
                "source",
                "event",
                "outcome",
                "transition",
                "time in the state it left",
                "note",
                "",
                ""
            ],
            &rows,
            "No event yet."
        )
    ));

    let attempts = service_attempts(&effects);
    let jobs: Vec<String> = s
        .jobs
        .iter()
        .map(|j| {
            format!(
                r#"<tr data-job="{id}"><td>{k}<br><span class="muted mono">{id}</span></td><td>{st}</td><td class="mono">{ext}</td><td class="mono">{sub}</td><td class="num">{a}</td><td class="err">{err}</td><td>{c}</td><td>{e}</td></tr>"#,
                id = esc(&j.id.to_string()),
                k = esc(j.kind.name()),
                st = pill(j.status.as_ref()),
                ext = opt(j.external_id.as_deref()),
                sub = opt(j.submission_id.as_deref()),
                a = attempts.get(&j.id).copied().unwrap_or(0),
                err = opt(j.error.as_deref()),
                c = time(j.created_at),
                e = j.ended_at.map_or_else(|| opt(None), time),
            )
        })
        .collect();
    html.push_str(&format!(
        r#"<h2>Jobs <span class="muted small">oldest first</span></h2><div id="jobs">{}</div>"#,
        table(
            &[
                "job",
                "status",
                "external id",
                "submission id",
                "#attempts",
                "error",
                "created",
                "ended"
            ],
            &jobs,
            "No job yet."
        )
    ));
    // Finished writes are history; what is still running or failed is what needs eyes.
    let (done, open): (Vec<_>, Vec<_>) = effects.iter().partition(|e| e.state == EffectState::Done);
    let headers = [
        "effect",
        "state",
        "#attempts",
        "last error",
        "next attempt",
        "",
    ];
    let open_rows: Vec<String> = open.iter().map(|e| effect_row(e, false)).collect();
    let done_rows: Vec<String> = done.iter().map(|e| effect_row(e, false)).collect();
    html.push_str(&format!(
        r#"<h2>Effects <span class="muted small">oldest first</span></h2><div id="effects">{open}{done}</div>"#,
        open = table(&headers, &open_rows, "No effect is waiting or failed."),
        done = if done_rows.is_empty() {
            String::new()
        } else {
            format!(
                r#"<details id="effects-done"><summary>{n} finished effect{s}</summary>{t}</details>"#,
                n = done_rows.len(),
                s = if done_rows.len() == 1 { "" } else { "s" },
                t = table(&headers, &done_rows, ""),
            )
        },
    ));
    Ok(html)
}

/// A video no event has reached the engine about (its id is well formed): what the engine
/// would take is the record's to say, which the page does not read (it never asks
/// Airtable), so it offers what starts the stage and says when it is refused.
fn not_handled(video: &str) -> String {
    format!(
        r#"<h1>Video <span class="mono">{v}</span> <span id="video-status" data-status="not_handled">{p}</span></h1><p id="not-handled">reelstate has not handled this video yet: no event about it has reached the engine. Requesting music starts its music stage; the engine reads the record first and refuses (409) unless its status is segments_combined.</p>{a}"#,
        v = esc(video),
        p = pill("not_handled"),
        a = actions(video, "not_handled", &["music_requested"]),
    )
}

/// The operator's requests the machine accepts now, and only those.
fn actions(video: &str, status: &str, next: &[&str]) -> String {
    let mut out = String::new();
    if next.contains(&"music_requested") {
        out.push_str(&format!(
            r#"<div class="prompt"><label for="music-prompt">Music prompt <span class="muted">(optional: empty uses the video's own)</span></label><textarea id="music-prompt" maxlength="2000" rows="2" placeholder="e.g. calm piano, slow, warm"></textarea>{}</div>"#,
            action(
                "Request music",
                "POST",
                &format!("/videos/{video}/music"),
                &format!("Ask GoAPI for music for video {video}? (a paid task)"),
                true,
            )
            .replace("<button ", r#"<button data-prompt="music-prompt" "#)
        ));
    }
    if next.contains(&"retry_requested") {
        out.push_str(&action(
            "Retry failed stage",
            "POST",
            &format!("/videos/{video}/retry"),
            &format!("Redrive the failed stage of video {video}?"),
            true,
        ));
    }
    // A plain retry of a failed mix mixes the video's music again; new music is the other
    // choice there (a paid GoAPI task), so it is offered only where both are accepted.
    if next.contains(&"retry_from_mix") && next.contains(&"retry_from_music") {
        out.push_str(&action_with_body(
            "Retry with new music",
            "POST",
            &format!("/videos/{video}/retry"),
            Some(r#"{"from":"music"}"#),
            &format!("Order new music from GoAPI (a paid task) and mix it into video {video}?"),
            false,
        ));
    }
    if out.is_empty() {
        out = format!(
            r#"<p class="muted" id="no-action">No operator action applies in {}: the engine is waiting for a service, or the video is done.</p>"#,
            esc(status)
        );
    }
    format!(r#"<div class="actions" id="actions">{out}</div>"#)
}

/// This video's transitions in order, each with when and how long it stayed before.
fn path_list(
    path: &[&HistoryRow],
    stayed: &HashMap<uuid::Uuid, chrono::Duration>,
    status: &str,
) -> String {
    if path.is_empty() {
        return format!(
            r#"<p class="muted" id="path">No transition yet: it is in {}.</p>"#,
            esc(status)
        );
    }
    // Each step names the drawing's number for its edge, so the list reads the drawing.
    let numbers: HashMap<(String, String), usize> = video_edges()
        .into_iter()
        .map(|e| ((e.from, e.to), e.n))
        .collect();
    let mut out = String::from(r#"<ol class="path" id="path">"#);
    for h in path {
        let n = numbers
            .get(&(video_node(h.from.name()), video_node(h.to.name())))
            .map_or_else(String::new, |n| {
                format!(r#" <span class="edge-n" title="edge {n} in the drawing">{n}</span>"#)
            });
        out.push_str(&format!(
            r#"<li data-event="{id}">{t}{n}<br><span class="mono">{ev}</span>: {f} → <strong>{to}</strong>{stay}</li>"#,
            id = esc(&h.event_id.to_string()),
            t = time(h.at),
            ev = esc(&h.event),
            f = esc(h.from.name()),
            to = esc(h.to.name()),
            stay = stayed.get(&h.event_id).map_or_else(String::new, |d| format!(
                r#" <span class="muted">after {} in {}</span>"#,
                esc(&duration(*d)),
                esc(h.from.name())
            )),
        ));
    }
    out.push_str("</ol>");
    out
}

/// The drawing's numbered edges with their events; those this video took marked.
fn edge_list(h: &Highlight) -> String {
    let mut out = String::new();
    for e in video_edges() {
        let taken = h.taken.contains(&(video_node(&e.from), video_node(&e.to)));
        out.push_str(&format!(
            r#"<li value="{n}" data-from="{f}" data-to="{t}"{cls}>{f} → {t}: <span class="mono">{ev}</span></li>"#,
            n = e.n,
            f = esc(&e.from),
            t = esc(&e.to),
            ev = esc(&e.events.join(", ")),
            cls = if taken { r#" class="taken""# } else { "" },
        ));
    }
    out
}
