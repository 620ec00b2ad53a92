//! The overview: counts per state, the Airtable budget, what needs attention, the latest
//! events.

use std::sync::Arc;

use chrono::Utc;
use strum::IntoEnumIterator;

use super::super::render::{action, action_with_body, opt, pill, table, time, video_link};
use super::{effect_row, event_row};
use crate::domain::{JobStatus, JobType, RecordId, VideoStatus};
use crate::engine::Engine;
use crate::http::ApiError;
use crate::http::ui::escape::{query as q, text as esc};
use crate::store::{EventQuery, Quarantined};

pub(super) async fn overview(engine: &Arc<Engine>) -> Result<String, ApiError> {
    let now = crate::clock::now();
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

    html.push_str(&format!(
        r#"<div class="card{warn}" id="inbox"><div class="label">Inbox</div><div class="big" data-count="{n}">{n}</div><div>{what}</div></div>"#,
        warn = if o.inbox_pending > 0 && o.oldest_pending.is_some_and(|t| now - t > chrono::Duration::seconds(60)) { " warn" } else { "" },
        n = o.inbox_pending,
        what = match o.oldest_pending {
            Some(t) => format!("waiting for the worker; oldest arrived {}", time(t)),
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
    let (paid_card, paid_days) = paid_calls(engine, now).await?;
    html.push_str(&paid_card);
    html.push_str("</div>");
    if engine.settings.sandbox {
        html.push_str(&sandbox_panel());
    }

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
            r#"<tr data-state="{s}"><td>{p}</td><td class="num{z}" data-count="{n}"><a href="/ui/videos?status={link}">{n}</a></td></tr>"#,
            s = esc(name),
            p = pill(name),
            z = if n == 0 { " zero" } else { "" },
            link = esc(&q(name)),
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
                    r#"<td class="num{z}" data-status="{s}" data-count="{n}"><a href="/ui/videos?job_type={lk}&amp;job_status={ls}">{n}</a></td>"#,
                    z = if n == 0 { " zero" } else { "" },
                    s = esc(s.as_ref()),
                    lk = esc(&q(k)),
                    ls = esc(&q(s.as_ref())),
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
    html.push_str(&paid_days);

    let rows: Vec<String> = recent.iter().map(|e| event_row(e, true)).collect();
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

/// Under `--sandbox` only: demo videos made from the page, each planned to succeed or to
/// fail at one point, so that a newcomer sees every path the console shows without a
/// terminal. The buttons are ordinary confirmed actions (`POST /sandbox/videos`).
fn sandbox_panel() -> String {
    let kinds: [(&str, Option<crate::sandbox::Failure>); 4] = [
        ("Demo video", None),
        ("…that fails at music", Some(crate::sandbox::Failure::Music)),
        ("…that fails at the mix", Some(crate::sandbox::Failure::Mix)),
        (
            "…whose callback is lost",
            Some(crate::sandbox::Failure::CallbackLost),
        ),
    ];
    let buttons: String = kinds
        .iter()
        .map(|(label, fail)| match fail {
            None => action(
                label,
                "POST",
                "/sandbox/videos",
                "Make a demo video? It waits in segments_combined until you request its music on its page.",
                true,
            ),
            Some(f) => {
                let (reaches, how) = f.promise();
                let body = serde_json::json!({ "fail": f }).to_string();
                action_with_body(
                    label,
                    "POST",
                    "/sandbox/videos",
                    Some(&body),
                    &format!("Make a demo video that ends in {reaches}? {how}."),
                    false,
                )
            }
        })
        .collect();
    format!(
        r#"<section id="sandbox" class="sandbox"><h2>Sandbox</h2><p class="muted">This server runs with --sandbox: stand-ins play GoAPI, NCA and Airtable. Make a demo video that succeeds, or one that fails at one point, and follow the link to watch it.</p><div class="actions">{buttons}</div></section>"#
    )
}

/// Today's paid calls (a card) and the last 7 days' (a table, zeros included), by UTC day:
/// what the pipeline spent at GoAPI and NCA, re-submissions included.
async fn paid_calls(
    engine: &Engine,
    now: chrono::DateTime<Utc>,
) -> Result<(String, String), ApiError> {
    let today = now.date_naive();
    let first = today - chrono::Days::new(6);
    let days = engine
        .store
        .paid_calls_by_day(first.and_time(chrono::NaiveTime::MIN).and_utc())
        .await?;
    let on = |day: chrono::NaiveDate| {
        days.iter()
            .find(|d| d.day == day)
            .map(|d| d.calls)
            .unwrap_or_default()
    };
    let t = on(today);
    let card = format!(
        r#"<div class="card" id="paid-today"><div class="label">Paid calls today (UTC)</div><div class="big" data-goapi="{g}" data-nca="{n}">{total}</div><div>{g} GoAPI tasks · {n} NCA renders, re-submissions included</div></div>"#,
        g = t.goapi_tasks,
        n = t.nca_renders,
        total = t.goapi_tasks + t.nca_renders,
    );
    let rows: Vec<String> = (0..7u64)
        .map(|back| {
            let day = today - chrono::Days::new(back);
            let c = on(day);
            format!(
                r#"<tr data-day="{d}"><td>{d}</td><td class="num{zg}" data-goapi="{g}">{g}</td><td class="num{zn}" data-nca="{n}">{n}</td></tr>"#,
                d = esc(&day.to_string()),
                g = c.goapi_tasks,
                n = c.nca_renders,
                zg = if c.goapi_tasks == 0 { " zero" } else { "" },
                zn = if c.nca_renders == 0 { " zero" } else { "" },
            )
        })
        .collect();
    let table = table(&["day (UTC)", "#GoAPI tasks", "#NCA renders"], &rows, "");
    Ok((
        card,
        format!(
            r#"<section id="paid-days"><h2>Paid calls, last 7 days (re-submissions included)</h2>{table}</section>"#
        ),
    ))
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
    let now = crate::clock::now();
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
                t = time(f.updated_at),
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
                t = time(j.since),
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
    let troubled: Vec<String> = o.troubled.iter().map(|e| effect_row(e, true)).collect();
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
                at = r.at.map_or_else(|| opt(None), time),
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
        r#"<section class="attention" id="attention" data-count="{total}"><h2>Needs attention ({total}) <a class="muted" href="/ui/videos?attention=1">(failed and stuck videos in the list)</a></h2>"#
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
