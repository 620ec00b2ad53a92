//! The fragments the page's script swaps in. Each reads the engine's store only.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use strum::IntoEnumIterator;

use super::render::{action, action_with_body, age, opt, pill, table, time, video_link};
use crate::domain::{JobStatus, JobType, MediaUrl, RecordId, VideoStatus};
use crate::engine::Engine;
use crate::http::{ApiError, Request};
use crate::machine::{JobId, next_events};
use crate::store::{
    EffectState, EntryOutcome, EventQuery, InboxEntry, OutboxEntry, Payload, Quarantined, Source,
};
use crate::ui::diagram::{Highlight, video_svg};
use crate::ui::escape::{query as q, text as esc};

pub async fn render(
    engine: &Arc<Engine>,
    req: &Request,
    rest: &[&str],
) -> Result<String, ApiError> {
    match rest {
        ["overview"] => overview(engine).await,
        ["videos", id] => video(engine, id).await,
        ["events"] => events(engine, req).await,
        ["events", id] => event(engine, id).await,
        _ => Err(ApiError::not_found("no such page")),
    }
}

fn record_id(id: &str) -> Result<RecordId, ApiError> {
    RecordId::parse(id).map_err(|_| {
        ApiError::bad_request(
            "invalid_video_id",
            "expected an Airtable record id (rec followed by 14 letters or digits)",
        )
    })
}

fn entry_kind(e: &InboxEntry) -> &'static str {
    match &e.payload {
        Payload::Event { event } => event.label(),
        Payload::NotMusic { .. } => "not_music",
        Payload::Duplicate { .. } => "duplicate",
    }
}

async fn overview(engine: &Arc<Engine>) -> Result<String, ApiError> {
    let now = Utc::now();
    let o = engine.store.overview(50).await?;
    let depths = engine.store.depths().await?;
    let recent = engine
        .store
        .events(EventQuery {
            limit: 12,
            ..EventQuery::default()
        })
        .await?;
    let mut html = String::from("<h1>Overview</h1><div class=\"cards\">");

    let oldest = o.oldest_pending.map(|t| age(now - t));
    html.push_str(&format!(
        r#"<div class="card{warn}" id="inbox"><div class="label">Inbox</div><div class="big" data-count="{n}">{n}</div><div>{what}</div></div>"#,
        warn = if o.inbox_pending > 0 && o.oldest_pending.is_some_and(|t| now - t > chrono::Duration::seconds(60)) { " warn" } else { "" },
        n = o.inbox_pending,
        what = match &oldest {
            Some(a) => format!("waiting for the worker; oldest arrived {}", esc(a)),
            None => "nothing waiting for the worker".into(),
        },
    ));
    html.push_str(&format!(
        r#"<div class="card{bad}" id="outbox"><div class="label">Outbox</div><div class="big">{p}</div><div>effects to run · <strong>{f}</strong> failed for good</div></div>"#,
        bad = if depths.outbox_failed > 0 { " bad" } else { "" },
        p = depths.outbox_pending,
        f = depths.outbox_failed,
    ));
    html.push_str(&airtable_card(engine));
    html.push_str("</div>");

    // Counts per state: every state the engine knows, zeros included, then others.
    let mut rows = Vec::new();
    let count = |name: &str| {
        o.videos
            .iter()
            .find(|(s, _)| s == name)
            .map_or(0, |(_, n)| *n)
    };
    let known: Vec<&str> = VideoStatus::KNOWN.iter().map(|s| s.name()).collect();
    let others = o
        .videos
        .iter()
        .map(|(s, _)| s.as_str())
        .filter(|s| !known.contains(s));
    for name in known.iter().copied().chain(others) {
        let n = count(name);
        rows.push(format!(
            r#"<tr data-state="{s}"><td>{p}</td><td class="num{z}" data-count="{n}">{n}</td></tr>"#,
            s = esc(name),
            p = pill(name),
            z = if n == 0 { " zero" } else { "" },
        ));
    }
    let videos = table(&["video state", "#videos"], &rows, "");
    let statuses: Vec<JobStatus> = JobStatus::iter().collect();
    let mut kinds: Vec<String> = vec![
        JobType::MusicGeneration.name().to_owned(),
        JobType::MusicAddition.name().to_owned(),
    ];
    for (k, _, _) in &o.jobs {
        if !kinds.contains(k) {
            kinds.push(k.clone());
        }
    }
    let mut headers: Vec<String> = vec!["job type".into()];
    headers.extend(statuses.iter().map(|s| format!("#{s}")));
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let rows: Vec<String> = kinds
        .iter()
        .map(|k| {
            let mut r = format!(r#"<tr data-job-type="{k}"><td>{k}</td>"#, k = esc(k));
            for s in &statuses {
                let n = o
                    .jobs
                    .iter()
                    .find(|(kk, ss, _)| kk == k && *ss == s.to_string())
                    .map_or(0, |(_, _, n)| *n);
                r.push_str(&format!(
                    r#"<td class="num{z}" data-status="{s}" data-count="{n}">{n}</td>"#,
                    z = if n == 0 { " zero" } else { "" },
                    s = esc(s.as_ref()),
                ));
            }
            r.push_str("</tr>");
            r
        })
        .collect();
    let jobs = table(&headers, &rows, "");
    html.push_str(&format!(
        r#"<div class="grid2"><section id="video-states"><h2>Videos per state</h2>{videos}</section><section id="job-states"><h2>Jobs per state</h2>{jobs}</section></div>"#
    ));

    let quarantined = engine.store.quarantined(50).await?;
    html.push_str(&attention(engine, &o, &quarantined, now));

    let rows: Vec<String> = recent.iter().map(|e| event_row(e, now, true)).collect();
    html.push_str(&format!(
        r#"<section id="recent"><h2>Latest events <a class="muted" href="/ui/events">(the whole log)</a></h2>{}</section>"#,
        table(
            &["received", "video", "source", "event", "outcome", "note", ""],
            &rows,
            "No event yet."
        )
    ));
    Ok(html)
}

fn airtable_card(engine: &Engine) -> String {
    let Some(a) = &engine.airtable else {
        return r#"<div class="card" id="airtable"><div class="label">Airtable</div><div class="big">–</div><div>not configured: records are kept in the embedded store; no Airtable budget in use</div></div>"#.into();
    };
    let s = a.stats();
    let lockout = engine
        .settings
        .airtable
        .as_ref()
        .map_or(30, |a| a.lockout.as_secs());
    // A lockout this process met and that still runs. Replicas sharing a budget hold back
    // for one another's too, but only the one that met the 429 knows when it ends.
    let now = Utc::now();
    let locked_until = s
        .last_rate_limited
        .map(|at| at + chrono::Duration::seconds(lockout as i64))
        .filter(|until| *until > now);
    let locked = match locked_until {
        Some(until) => format!(
            r#"<div class="err" id="airtable-locked">locked out by Airtable until <time datetime="{full}">{short}</time> (for {left} s more, after a 429): requests wait</div>"#,
            full = esc(&until.to_rfc3339()),
            short = esc(&until.format("%H:%M:%S UTC").to_string()),
            left = (until - now).num_seconds().max(1),
        ),
        None => String::new(),
    };
    format!(
        r#"<div class="card{bad}" id="airtable"><div class="label">Airtable (≤ 5 requests/s per base)</div><div class="big" data-requests="{r}">{r}</div><div>requests sent since start · {rw} records written · {re} retries · <strong>{l}</strong> lockouts (429, {lockout} s each)</div>{locked}<div class="muted" id="airtable-rate"></div></div>"#,
        bad = if locked_until.is_some() {
            " bad"
        } else if s.rate_limited > 0 {
            " warn"
        } else {
            ""
        },
        r = s.requests,
        rw = s.records_written,
        re = s.retries,
        l = s.rate_limited,
    )
}

/// The videos needing attention, one group per kind of trouble; a new kind of trouble
/// the store can list is one more group here.
fn attention(
    engine: &Engine,
    o: &crate::store::Overview,
    quarantined: &[Quarantined],
    now: chrono::DateTime<Utc>,
) -> String {
    let mut groups: Vec<(&str, &str, String)> = Vec::new();
    let failed: Vec<String> = o
        .failed
        .iter()
        .map(|f| {
            format!(
                r#"<tr data-video="{v}"><td>{link}</td><td>{p}</td><td class="err">{err}</td><td>{t}</td><td>{b}</td></tr>"#,
                v = esc(f.video_id.as_str()),
                link = video_link(f.video_id.as_str()),
                p = pill(&f.status),
                err = opt(f.error_details.as_deref()),
                t = time(f.updated_at, now),
                b = action(
                    "Retry",
                    "POST",
                    &format!("/videos/{}/retry", f.video_id),
                    &format!("Redrive the failed stage of video {}?", f.video_id),
                    false
                ),
            )
        })
        .collect();
    groups.push((
        "failed-videos",
        "Failed videos",
        table(
            &["video", "state", "error details", "since", ""],
            &failed,
            "",
        ),
    ));
    let deadline = |kind: &JobType| match kind {
        JobType::MusicAddition => engine.settings.nca_deadline,
        _ => engine.settings.goapi_deadline,
    };
    let late: Vec<String> = o
        .waiting
        .iter()
        .filter(|j| {
            chrono::Duration::from_std(deadline(&j.kind))
                .is_ok_and(|d| now - j.since > d)
        })
        .map(|j| {
            format!(
                r#"<tr><td>{link}</td><td>{k}</td><td class="mono">{ext}</td><td>{t}</td><td class="num">{c}</td></tr>"#,
                link = video_link(j.video_id.as_str()),
                k = esc(j.kind.name()),
                ext = opt(j.external_id.as_deref()),
                t = time(j.since, now),
                c = j.checks,
            )
        })
        .collect();
    groups.push((
        "late-jobs",
        "Jobs waiting past their deadline",
        table(
            &[
                "video",
                "job type",
                "external id",
                "waiting since",
                "#checks",
            ],
            &late,
            "",
        ),
    ));
    let troubled: Vec<String> = o
        .troubled
        .iter()
        .map(|e| effect_row(e, now, true))
        .collect();
    groups.push((
        "troubled-effects",
        "Effects retrying, interrupted or failed",
        table(
            &[
                "video",
                "effect",
                "state",
                "#attempts",
                "last error",
                "next attempt",
                "",
            ],
            &troubled,
            "",
        ),
    ));
    // Rows set aside because this version cannot read them: nothing retries them, so only a
    // person (a fix, then a replay) can; they are listed here until pruned.
    let aside: Vec<String> = quarantined
        .iter()
        .map(|r| {
            let video = if RecordId::parse(&r.video_id).is_ok() {
                video_link(&r.video_id)
            } else {
                esc(&r.video_id)
            };
            format!(
                r#"<tr><td>{video}</td><td>{t}</td><td class="mono">{id}</td><td class="err">{why}</td><td>{at}</td></tr>"#,
                t = esc(&r.table),
                id = esc(&r.id),
                why = esc(&r.reason),
                at = r.at.map_or_else(|| opt(None), |at| time(at, now)),
            )
        })
        .collect();
    groups.push((
        "quarantined-rows",
        "Rows set aside as unreadable (quarantined)",
        table(
            &["video", "table", "entry or effect", "why", "since"],
            &aside,
            "",
        ),
    ));
    let total = failed.len() + late.len() + troubled.len() + aside.len();
    let mut html = format!(
        r#"<section class="attention" id="attention" data-count="{total}"><h2>Needs attention ({total})</h2>"#
    );
    if total == 0 {
        html.push_str(r#"<p class="empty">Nothing needs attention.</p>"#);
    }
    for (id, title, body) in groups {
        if body.contains("<table") {
            html.push_str(&format!(
                r#"<div id="{id}"><h3>{t}</h3>{body}</div>"#,
                t = esc(title)
            ));
        }
    }
    html.push_str("</section>");
    html
}

fn effect_row(e: &OutboxEntry, now: chrono::DateTime<Utc>, with_video: bool) -> String {
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
        time(e.next_attempt_at, now)
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

fn event_row(e: &InboxEntry, now: chrono::DateTime<Utc>, with_video: bool) -> String {
    format!(
        r#"<tr data-event="{id}"><td>{t}</td>{video}<td>{src}</td><td class="mono">{kind}</td><td>{out}</td><td class="muted">{note}</td><td><a href="/ui/events/{id}">payload</a></td></tr>"#,
        id = esc(&e.event_id.to_string()),
        t = time(e.received_at, now),
        video = if with_video {
            format!("<td>{}</td>", video_link(e.video_id.as_str()))
        } else {
            String::new()
        },
        src = esc(e.source.service_name()),
        kind = esc(entry_kind(e)),
        out = pill(entry_state(e)),
        note = opt(e.note.as_deref()),
    )
}

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

async fn video(engine: &Arc<Engine>, id: &str) -> Result<String, ApiError> {
    let now = Utc::now();
    let video = record_id(id)?;
    let Some(s) = engine.store.snapshot(&video).await? else {
        return Err(ApiError::not_found(format!(
            "reelstate has not handled video {video} yet"
        )));
    };
    let history = engine.store.history(&video).await?;
    let effects = engine.store.effects_of(&video).await?;
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
        r#"<dl class="facts"><dt>retries</dt><dd>{r} of {max}</dd><dt>combined video</dt><dd>{src}</dd><dt>music</dt><dd>{m}</dd><dt>final video</dt><dd>{f}</dd><dt>error details</dt><dd class="err">{e}</dd><dt>accepts next</dt><dd class="mono">{n}</dd></dl>"#,
        r = s.video.retries,
        max = engine.settings.max_retries,
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
            .map(|h| (h.from.as_str(), h.to.as_str())),
        status,
    );
    html.push_str(&format!(
        r#"<h2>Lifecycle</h2><div class="diagram" id="diagram">{}</div><p class="legend"><span class="cur"></span>current state<span class="vis"></span>states this video went through (its transitions in blue)</p>"#,
        video_svg(&highlight)
    ));

    let attempts: HashMap<JobId, u32> = effects.iter().fold(HashMap::new(), |mut m, e| {
        if let Some(j) = e.effect.job() {
            *m.entry(j).or_default() += e.attempts;
        }
        m
    });
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
        .map(|h| (h.event_id, (h.from.as_str(), h.to.as_str())))
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

const SOURCES: [Source; 4] = [Source::Goapi, Source::Nca, Source::Api, Source::Engine];

async fn events(engine: &Arc<Engine>, req: &Request) -> Result<String, ApiError> {
    let now = Utc::now();
    let outcomes = crate::http::inspect::outcomes();
    let outcome = req.param("outcome").filter(|o| !o.is_empty());
    if let Some(o) = outcome.as_deref().filter(|o| !outcomes.contains(o)) {
        return Err(ApiError::bad_request(
            "invalid_outcome",
            format!("outcome {o:?} is not one of {}", outcomes.join(", ")),
        ));
    }
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
            outcome: outcome.clone(),
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
    let outcome_options: Vec<(&str, &str)> = outcomes.iter().map(|o| (*o, *o)).collect();
    let source_name = source.map(|s| s.to_string());
    let mut html = String::from("<h1>Event log</h1>");
    html.push_str(&format!(
        r#"<form class="filters" method="get" action="/ui/events"><label>outcome {o}</label><label>service {s}</label><label>video <input name="video_id" id="filter-video" value="{v}" placeholder="rec…" size="20"></label><button type="submit" class="primary">Search</button> <a href="/ui/events">clear</a></form>"#,
        o = select("outcome", outcome.as_deref(), &outcome_options),
        s = select("service", source_name.as_deref(), &services),
        v = esc(video_param.as_deref().unwrap_or("")),
    ));
    let rows: Vec<String> = entries.iter().map(|e| event_row(e, now, true)).collect();
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
        ("outcome", outcome.as_deref()),
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

async fn event(engine: &Arc<Engine>, id: &str) -> Result<String, ApiError> {
    let now = Utc::now();
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
        t = time(e.received_at, now),
        kind = esc(entry_kind(&e)),
        out = pill(entry_state(&e)),
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

/// An entry's outcome once processed, else its state.
fn entry_state(e: &InboxEntry) -> &'static str {
    match e.outcome {
        Some(o) => o.into(),
        None => e.state.into(),
    }
}
