//! Text helpers shared by the boundaries.

/// Shortens `s` to at most `max` bytes, keeping the start and the end around a marker.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let marker = format!("\n[… {} bytes cut …]\n", s.len().saturating_sub(max));
    let keep = max.saturating_sub(marker.len()) / 2;
    let mut head = keep;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - keep;
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}{}{}", &s[..head], marker, &s[tail..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_keeps_both_ends_within_the_limit() {
        let s = format!("START{}END", "é".repeat(100_000));
        let out = shorten(&s, 1000);
        assert!(out.len() <= 1000, "{}", out.len());
        assert!(out.starts_with("START") && out.ends_with("END"));
        assert_eq!(shorten("short", 10), "short");
    }
}
