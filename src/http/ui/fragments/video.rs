//! One video: its state and facts, the actions it accepts next, its lifecycle diagram, its
//! jobs, effects and timeline.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::render::{action, action_with_body, opt, pill, table, time};
use super::{effect_row, entry_kind, entry_state};
use crate::domain::MediaUrl;
use crate::engine::Engine;
use crate::http::ApiError;
use crate::http::inspect::{handled, service_attempts};
use crate::machine::next_events;
use crate::store::{EntryOutcome, EventQuery, Payload};
use crate::ui::diagram::{Highlight, video_svg};
use crate::ui::escape::text as esc;

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
    let now = crate::clock::now();
    let (video, s, history, effects) = handled(engine, id).await?;
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

    let mut html = format!(
        r#"<h1>Video <span class="mono">{v}</span> <span id="video-status" data-status="{st}">{p}</span></h1>"#,
        st = esc(status),
        p = pill(status),
    );
    html.push_str(&format!(
        r#"<dl class="facts"><dt>retries</dt><dd>{r} of {max}</dd><dt>paid calls</dt><dd id="paid-calls" data-goapi="{pg}" data-nca="{pn}">{pg} GoAPI task(s), {pn} NCA render(s), re-submissions included</dd><dt>combined video</dt><dd>{src}</dd><dt>music</dt><dd>{m}</dd><dt>final video</dt><dd>{f}</dd><dt>error details</dt><dd class="err">{e}</dd><dt>accepts next</dt><dd class="mono">{n}</dd></dl>"#,
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
    // A plain retry of a failed mix mixes the video's music again; new music is the other
    // choice there (a paid GoAPI task), so it is offered only where both are accepted.
    let new_music = if next.contains(&"retry_from_mix") && next.contains(&"retry_from_music") {
        action_with_body(
            "Retry with new music",
            "POST",
            &format!("/videos/{video}/retry"),
            Some(r#"{"from":"music"}"#),
            &format!("Order new music from GoAPI (a paid task) and mix it into video {video}?"),
            false,
        )
    } else {
        String::new()
    };
    html.push_str(&format!(
        r#"<div class="actions">{}{}{new_music}</div>"#,
        action(
            "Request music",
            "POST",
            &format!("/videos/{video}/music"),
            &format!("Ask GoAPI for music for video {video}?"),
            next.contains(&"music_requested"),
        ),
        action(
            "Retry failed stage",
            "POST",
            &format!("/videos/{video}/retry"),
            &format!("Redrive the failed stage of video {video}?"),
            next.contains(&"retry_requested"),
        ),
    ));

    let highlight = Highlight::from_history(
        history
            .iter()
            .filter(|h| h.outcome == EntryOutcome::Applied)
            .map(|h| (h.from.name(), h.to.name())),
        status,
    );
    html.push_str(&format!(
        r#"<h2>Lifecycle</h2><div class="diagram" id="diagram">{}</div><p class="legend"><span class="cur"></span>current state<span class="vis"></span>states this video went through (its transitions in blue)</p>"#,
        video_svg(&highlight)
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
                c = time(j.created_at, now),
                e = j.ended_at.map_or_else(|| opt(None), |t| time(t, now)),
            )
        })
        .collect();
    html.push_str(&format!(
        r#"<h2>Jobs</h2><div id="jobs">{}</div>"#,
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
    let rows: Vec<String> = effects
        .iter()
        .rev()
        .map(|e| effect_row(e, now, false))
        .collect();
    html.push_str(&format!(
        r#"<h2>Effects</h2><div id="effects">{}</div>"#,
        table(
            &[
                "effect",
                "state",
                "#attempts",
                "last error",
                "next attempt",
                ""
            ],
            &rows,
            "No effect yet."
        )
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
                r#"<tr data-event="{id}"><td>{t}</td><td>{src}</td><td class="mono">{kind}</td><td>{out}</td><td class="mono">{step}</td><td class="muted">{note}</td><td><a href="/ui/events/{id}">payload</a></td><td>{replay}</td></tr>"#,
                id = esc(&e.event_id.to_string()),
                t = time(e.received_at, now),
                src = esc(e.source.service_name()),
                kind = esc(entry_kind(e)),
                out = pill(entry_state(e)),
                note = opt(e.note.as_deref()),
            )
        })
        .collect();
    html.push_str(&format!(
        r#"<h2>Timeline</h2><div id="timeline">{}</div>"#,
        table(
            &[
                "received",
                "source",
                "event",
                "outcome",
                "transition",
                "note",
                "",
                ""
            ],
            &rows,
            "No event yet."
        )
    ));
    Ok(html)
}
