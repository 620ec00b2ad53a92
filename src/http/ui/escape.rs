//! Escaping for HTML and SVG. Every value that comes from the store (payloads are sent by
//! others, so attacker-controlled) goes through `text` before it is put into markup: the
//! page's fragments, and the lifecycle drawing (`crate::diagram`) that the page inlines.

use std::fmt::Write;

/// Escapes for element content and for double- or single-quoted attribute values.
pub(crate) fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters have no business in a page; show that they were there.
            c if c.is_control() && c != '\n' && c != '\t' && c != '\r' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Escapes a value for a URL query component (then `text` it for the attribute).
pub(crate) fn query(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_characters_are_escaped() {
        assert_eq!(
            text(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(text("a\u{0}b"), "a\\u{0}b");
        assert_eq!(query("a b&c=<d>"), "a+b%26c%3D%3Cd%3E");
    }
}
