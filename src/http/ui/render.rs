//! Small HTML pieces shared by the fragments. Every argument is escaped here.

use chrono::{DateTime, Utc};

use super::escape::text as esc;

/// A timestamp in UTC, saying so. The page's script shows it in the reader's zone (named)
/// with its age, UTC on hover; the age is not rendered here so that a fragment's HTML only
/// changes when the store does, and a refresh can leave an unchanged section alone.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    let utc = t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    format!(
        r#"<time datetime="{full}" title="{utc}">{utc}</time>"#,
        full = esc(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        utc = esc(&utc),
    )
}

/// A span of time, e.g. `2 min 5 s`.
pub(crate) fn duration(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=172_799 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} days {} h", s / 86_400, s % 86_400 / 3600),
    }
}

pub(crate) fn pill(value: &str) -> String {
    format!(r#"<span class="pill {v}">{v}</span>"#, v = esc(value))
}

/// A pill whose colour says what `value` means here rather than what it is called.
pub(crate) fn pill_as(value: &str, meaning: &str) -> String {
    format!(
        r#"<span class="pill {m}">{v}</span>"#,
        v = esc(value),
        m = esc(meaning)
    )
}

pub(crate) fn video_link(id: &str) -> String {
    format!(
        r#"<a class="mono" href="/ui/videos/{v}">{v}</a>"#,
        v = esc(id)
    )
}

pub(crate) fn opt(value: Option<&str>) -> String {
    value.map_or_else(|| r#"<span class="muted">–</span>"#.to_owned(), esc)
}

/// A button the page's script runs after a confirmation: `method url` of the admin API.
pub(crate) fn action(label: &str, method: &str, url: &str, confirm: &str, primary: bool) -> String {
    action_with_body(label, method, url, None, confirm, primary)
}

/// [`action`] whose request carries `body` (JSON) instead of `{}`: the same endpoint asked
/// for something else, e.g. a retry `{"from": "music"}`.
pub(crate) fn action_with_body(
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

/// A table; on a narrow screen the rows of a wide one stack (the page's script labels each
/// stacked cell with its column's name).
pub(crate) fn table(headers: &[&str], rows: &[String], empty: &str) -> String {
    if rows.is_empty() {
        return format!(r#"<p class="empty">{}</p>"#, esc(empty));
    }
    // Two or three columns fit a phone as they are; wider tables stack.
    let mut out = String::from(if headers.len() > 3 {
        r#"<table class="stack"><thead><tr>"#
    } else {
        "<table><thead><tr>"
    });
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
