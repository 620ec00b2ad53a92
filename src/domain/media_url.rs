use std::fmt;

use serde::{Deserialize, Serialize};

/// An absolute http(s) URL of a media file (a track, a video): the only kind of URL the
/// engine hands to NCA or writes into a media field.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MediaUrl(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaUrlError {
    #[error("empty URL")]
    Empty,
    #[error("URL longer than {0} characters")]
    TooLong(usize),
    #[error("not an absolute http(s) URL")]
    NotHttp,
}

impl MediaUrl {
    /// Long enough for signed CDN URLs, short enough to keep a hostile payload small.
    pub const MAX_LEN: usize = 4096;

    pub fn parse(s: &str) -> Result<Self, MediaUrlError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(MediaUrlError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(MediaUrlError::TooLong(Self::MAX_LEN));
        }
        // The string is handed on as sent, so it must already be in the plain form: the
        // URL parser (WHATWG) also accepts `https:/host`, `https:\\host`, and tabs,
        // newlines or control characters that it silently drops, none of which NCA or the
        // base would read as the URL we checked.
        let starts = |p: &str| {
            s.as_bytes()
                .get(..p.len())
                .is_some_and(|b| b.eq_ignore_ascii_case(p.as_bytes()))
        };
        let plain = (starts("http://") || starts("https://"))
            && !s
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '\\');
        if !plain {
            return Err(MediaUrlError::NotHttp);
        }
        let parsed = url::Url::parse(s).map_err(|_| MediaUrlError::NotHttp)?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(MediaUrlError::NotHttp);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MediaUrl {
    type Error = MediaUrlError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<MediaUrl> for String {
    fn from(u: MediaUrl) -> Self {
        u.0
    }
}

impl fmt::Display for MediaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MediaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MediaUrl({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_and_https() {
        assert!(MediaUrl::parse("https://cdn.example/a.mp3").is_ok());
        assert!(MediaUrl::parse("http://127.0.0.1:9/a.mp4").is_ok());
        assert!(MediaUrl::parse("HTTPS://CDN.example/A.mp3").is_ok());
        assert_eq!(
            MediaUrl::parse("  https://cdn.example/a.mp3\n").map(|u| u.as_str().to_owned()),
            Ok("https://cdn.example/a.mp3".to_owned())
        );
    }

    #[test]
    fn rejects_non_media_urls() {
        for bad in [
            "",
            "   ",
            "ftp://x/a.mp3",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "/relative.mp3",
            // Forms the URL parser repairs but that are not the URL as sent.
            "https:/cdn.example/a.mp3",
            "https:cdn.example/a.mp3",
            "https:\\\\cdn.example\\a.mp3",
            "https://cdn.example\\a.mp3",
            "https://cdn.example/a\nb.mp3",
            "https://cdn.example/a\tb.mp3",
            "https://cdn.example/a b.mp3",
            "\u{1}https://cdn.example/a.mp3",
            "https://cdn.example/a.mp3\u{7f}",
        ] {
            assert!(MediaUrl::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            MediaUrl::parse(&format!("https://x/{}", "a".repeat(5000))),
            Err(MediaUrlError::TooLong(MediaUrl::MAX_LEN))
        );
    }
}
