//! Cells as Airtable has them, read into the engine's values and written back: texts,
//! media of either kind, links, long texts cut to Airtable's limit.

use serde_json::{Value, json};

use crate::domain::{MediaUrl, RecordId};
use crate::records::{Fields, MediaKind};
use crate::text::shorten;

/// Airtable's long text limit; longer values are cut, keeping start and end.
pub(crate) const LONG_TEXT_MAX: usize = 100_000;

/// A text cell; absent and empty are the same (Airtable omits empties).
pub(super) fn text(f: &Fields, name: &str) -> Option<String> {
    match f.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        // A single select read through some APIs, or a lookup: take the first text.
        Value::Array(items) => items.iter().find_map(|v| v.as_str().map(str::to_owned)),
        _ => None,
    }
}

/// A media cell of either kind: a URL string, or attachments `[{"url": ...}]` (the newest,
/// last, one: earlier ones are kept on update), or a lookup's list of URLs.
pub(super) fn media(f: &Fields, name: &str) -> Option<MediaUrl> {
    match f.get(name)? {
        Value::String(s) => MediaUrl::parse(s).ok(),
        Value::Array(items) => items
            .iter()
            .rev()
            .find_map(|a| a.get("url").and_then(Value::as_str).or_else(|| a.as_str()))
            .and_then(|u| MediaUrl::parse(u).ok()),
        _ => None,
    }
}

pub(super) fn media_value(u: &MediaUrl, kind: MediaKind) -> Value {
    match kind {
        MediaKind::Url => json!(u.as_str()),
        MediaKind::Attachment => json!([{ "url": u.as_str(), "filename": file_name(u) }]),
    }
}

/// The file name an attachment is written with (and later recognised by): the URL's last
/// path segment, or `media` when it has none.
fn file_name(u: &MediaUrl) -> String {
    url::Url::parse(u.as_str())
        .ok()
        .and_then(|p| {
            p.path_segments()
                .and_then(|mut s| s.next_back().map(str::to_owned))
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "media".into())
}

pub(super) fn links(f: &Fields, name: &str) -> Vec<RecordId> {
    f.get(name)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .filter_map(|s| RecordId::parse(s).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Cuts text to Airtable's long text limit, keeping its start and its end, where an
/// ffmpeg error usually says what went wrong.
pub(crate) fn long_text(s: &str) -> String {
    shorten(s, LONG_TEXT_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_reads_both_kinds() {
        let mut f = Fields::new();
        f.insert("A".into(), json!("https://x.example/a.mp3"));
        f.insert(
            "B".into(),
            json!([{"id": "att1", "url": "https://x.example/b.mp4"}]),
        );
        f.insert("C".into(), json!("not a url"));
        assert_eq!(media(&f, "A").unwrap().as_str(), "https://x.example/a.mp3");
        assert_eq!(media(&f, "B").unwrap().as_str(), "https://x.example/b.mp4");
        assert_eq!(media(&f, "C"), None);
        assert_eq!(media(&f, "D"), None);
    }
}
