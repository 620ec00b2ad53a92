//! Small HTML pieces shared by the fragments. Every argument is escaped here.

use chrono::{DateTime, Utc};

use crate::ui::escape::text as esc;

/// A timestamp with its age, e.g. `15:04:05 (12 s ago)`; the full time on hover.
pub fn time(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!(
        r#"<time datetime="{full}" title="{full}">{short}</time> <span class="muted">({age})</span>"#,
        full = esc(&t.to_rfc3339()),
        short = esc(&t.format("%Y-%m-%d %H:%M:%S").to_string()),
        age = esc(&age(now - t)),
    )
}

pub fn age(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    match s {
        s if s < 0 => "in the future".into(),
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        7200..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

pub fn pill(value: &str) -> String {
    format!(r#"<span class="pill {v}">{v}</span>"#, v = esc(value))
}

pub fn video_link(id: &str) -> String {
    format!(
        r#"<a class="mono" href="/ui/videos/{v}">{v}</a>"#,
        v = esc(id)
    )
}

pub fn opt(value: Option<&str>) -> String {
    value.map_or_else(|| r#"<span class="muted">–</span>"#.to_owned(), esc)
}

/// A button the page's script runs after a confirmation: `method url` of the admin API.
pub fn action(label: &str, method: &str, url: &str, confirm: &str, primary: bool) -> String {
    action_with_body(label, method, url, None, confirm, primary)
}

/// [`action`] whose request carries `body` (JSON) instead of `{}`: the same endpoint asked
/// for something else, e.g. a retry `{"from": "music"}`.
pub fn action_with_body(
    label: &str,
    method: &str,
    url: &str,
    body: Option<&str>,
    confirm: &str,
    primary: bool,
) -> String {
    format!(
        r#"<button type="button" class="{cls}" data-method="{m}" data-action="{u}"{b} data-confirm="{c}">{l}</button>"#,
        cls = if primary { "primary" } else { "" },
        m = esc(method),
        u = esc(url),
        b = body.map_or_else(String::new, |b| format!(r#" data-body="{}""#, esc(b))),
        c = esc(confirm),
        l = esc(label),
    )
}

pub fn table(headers: &[&str], rows: &[String], empty: &str) -> String {
    if rows.is_empty() {
        return format!(r#"<p class="empty">{}</p>"#, esc(empty));
    }
    let mut out = String::from("<table><thead><tr>");
    for h in headers {
        let num = h.starts_with('#');
        out.push_str(&format!(
            r#"<th{}>{}</th>"#,
            if num { r#" class="num""# } else { "" },
            esc(h.trim_start_matches('#'))
        ));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str(r);
    }
    out.push_str("</tbody></table>");
    out
}
