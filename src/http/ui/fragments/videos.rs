//! The videos list: filtered (state, job type and status, needs attention, stuck, age),
//! searched (video id, GoAPI task id, NCA job id), paged by last change; failed videos can
//! be selected for one confirmed bulk retry, which the page's script sends as one
//! `POST /videos/{id}/retry` per video.

use std::sync::Arc;

use super::super::render::{opt, pill, table, time, video_link};
use strum::IntoEnumIterator;

use crate::domain::{JobStatus, JobType, VideoStatus};
use crate::engine::Engine;
use crate::http::inspect::video_query;
use crate::http::ui::escape::{query as q, text as esc};
use crate::http::{ApiError, Request};

const PAGE: u32 = 50;

pub(super) async fn videos(engine: &Arc<Engine>, req: &Request) -> Result<String, ApiError> {
    let query = video_query(engine, req, PAGE)?;
    let limit = query.limit;
    let rows = engine.store.videos(query).await?;
    // What the form shows and the pager keeps: the filters as given, not as parsed, so
    // that an age like 2h stays relative to each page's now.
    let given = |name: &str| {
        req.param(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let status = given("status");
    let checked = |name: &str| {
        if matches!(given(name).as_deref(), Some("1" | "true")) {
            " checked"
        } else {
            ""
        }
    };
    let mut states = String::from(r#"<option value="">any</option>"#);
    for s in VideoStatus::KNOWN.iter().map(VideoStatus::name) {
        states.push_str(&format!(
            r#"<option value="{v}"{sel}>{v}</option>"#,
            v = esc(s),
            sel = if status.as_deref() == Some(s) {
                " selected"
            } else {
                ""
            },
        ));
    }
    // A status from another stage (a link from the overview) stays selectable.
    if let Some(s) = status
        .as_deref()
        .filter(|s| !VideoStatus::KNOWN.iter().any(|k| k.name() == *s))
    {
        states.push_str(&format!(
            r#"<option value="{v}" selected>{v}</option>"#,
            v = esc(s)
        ));
    }
    let job_select = |name: &str, options: &[&str]| {
        let current = given(name);
        let mut s = format!(
            r#"<select name="{n}" id="filter-{n}"><option value="">any</option>"#,
            n = esc(name)
        );
        let mut values: Vec<&str> = options.to_vec();
        // A value from elsewhere (a link from the overview) stays selectable.
        if let Some(c) = current.as_deref().filter(|c| !options.contains(c)) {
            values.push(c);
        }
        for v in values {
            s.push_str(&format!(
                r#"<option value="{v}"{sel}>{v}</option>"#,
                v = esc(v),
                sel = if current.as_deref() == Some(v) {
                    " selected"
                } else {
                    ""
                },
            ));
        }
        s.push_str("</select>");
        s
    };
    let statuses: Vec<String> = JobStatus::iter().map(|s| s.to_string()).collect();
    let statuses: Vec<&str> = statuses.iter().map(String::as_str).collect();
    let job_type = job_select(
        "job_type",
        &[
            JobType::MusicGeneration.name(),
            JobType::MusicAddition.name(),
        ],
    );
    let job_status = job_select("job_status", &statuses);
    let mut html = String::from("<h1>Videos</h1>");
    html.push_str(&format!(
        r#"<form class="filters" method="get" action="/ui/videos"><label>state <select name="status" id="filter-status">{states}</select></label><label>with a job of type {job_type}</label><label>in job status {job_status}</label><label>search <input name="q" id="filter-q" value="{qv}" placeholder="video, GoAPI task or NCA job id" size="30"></label><label>changed more than <input name="older_than" id="filter-older" value="{older}" placeholder="e.g. 2h, 7d" size="8"></label><label>changed less than <input name="newer_than" id="filter-newer" value="{newer}" placeholder="e.g. 30m" size="8"></label><label class="check"><span>needs attention</span><input type="checkbox" name="attention" value="1" id="filter-attention"{att}></label><label class="check"><span>stuck</span><input type="checkbox" name="stuck" value="1" id="filter-stuck"{stuck}></label><button type="submit" class="primary">Search</button> <a href="/ui/videos">clear</a></form>"#,
        qv = esc(given("q").as_deref().unwrap_or("")),
        older = esc(given("older_than").as_deref().unwrap_or("")),
        newer = esc(given("newer_than").as_deref().unwrap_or("")),
        att = checked("attention"),
        stuck = checked("stuck"),
    ));
    let failed = rows
        .iter()
        .filter(|v| VideoStatus::from_airtable(&v.status).is_failed())
        .count();
    html.push_str(&format!(
        r#"<div class="actions"><button type="button" id="bulk-retry" data-bulk-retry="1"{dis}>Retry selected failed videos</button><span class="muted">{failed} failed on this page</span></div>"#,
        dis = if failed == 0 { " disabled" } else { "" },
    ));
    let body: Vec<String> = rows
        .iter()
        .map(|v| {
            let id = v.video_id.as_str();
            let select = if VideoStatus::from_airtable(&v.status).is_failed() {
                format!(
                    r#"<input type="checkbox" data-retry="{v}" aria-label="select {v}">"#,
                    v = esc(id)
                )
            } else {
                String::new()
            };
            let ids = if v.external_ids.is_empty() {
                opt(None)
            } else {
                esc(&v.external_ids.join(" "))
            };
            format!(
                r#"<tr data-video="{vid}" data-status="{st}"><td>{select}</td><td>{link}</td><td>{p}</td><td>{t}</td><td class="num">{r}</td><td class="mono">{ids}</td><td>{w}</td><td class="err">{err}</td></tr>"#,
                vid = esc(id),
                st = esc(&v.status),
                link = video_link(id),
                p = pill(&v.status),
                t = time(v.updated_at),
                r = v.retries,
                w = v.waiting_since.map_or_else(|| opt(None), time),
                err = opt(v.error_details.as_deref()),
            )
        })
        .collect();
    html.push_str(&format!(
        r#"<div id="videos" data-count="{n}">{t}</div>"#,
        n = rows.len(),
        t = table(
            &[
                "",
                "video",
                "state",
                "last change",
                "#retries",
                "GoAPI task / NCA job ids",
                "waiting for a service since",
                "error details",
            ],
            &body,
            "No video matches."
        )
    ));
    let mut link = String::new();
    for k in [
        "status",
        "job_type",
        "job_status",
        "q",
        "older_than",
        "newer_than",
        "attention",
        "stuck",
    ] {
        if let Some(v) = given(k) {
            link.push_str(&format!("{k}={}&", q(&v)));
        }
    }
    html.push_str(r#"<div class="pager">"#);
    if given("before").is_some() {
        html.push_str(&format!(
            r#"<a href="/ui/videos?{}">← most recent</a> "#,
            esc(link.trim_end_matches('&'))
        ));
    }
    if rows.len() as u32 == limit
        && let Some(last) = rows.last()
    {
        html.push_str(&format!(
            r#"<a id="older" href="/ui/videos?{}">older changes →</a>"#,
            esc(&format!("{link}before={}", q(&last.cursor().encode())))
        ));
    }
    html.push_str("</div>");
    Ok(html)
}
