//! Whether a music track's URL still serves the track. GoAPI's track URLs are temporary
//! (docs/goapi-and-nca.md, "Track URLs expire"), so a retried mix checks its track first.
//!
//! A HEAD first (no body moves); any answer but a 2xx is confirmed with a one-byte ranged
//! GET, because some hosts refuse HEAD (405) and a URL signed for GET answers a HEAD with
//! 403 while the GET still works. Only the GET's 403, 404 or 410 says the track is gone.

use std::sync::OnceLock;
use std::time::Duration;

use reqwest::StatusCode;

use crate::domain::MediaUrl;

/// Per request: the host of a track answers at once or not usefully; the executor's
/// backoff asks again.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What a track's host answered. Each carries a short description for the job's history:
/// methods and statuses only, never the URL (a signed URL's query is a credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackAnswer {
    /// 2xx to the HEAD or to the ranged GET.
    Reachable(String),
    /// 403, 404 or 410 to the ranged GET: the host no longer serves the track.
    Gone(String),
    /// Nothing that says either way: a timeout, a refused connection, a 5xx, a 429, any
    /// other status. Worth asking again later.
    Inconclusive(String),
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(CHECK_TIMEOUT)
            .connect_timeout(CHECK_TIMEOUT)
            // CDNs redirect to their storage; no credential of ours travels with it.
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .unwrap_or_default()
    })
}

/// The status line of an answer, as the history shows it.
fn said(method: &str, status: StatusCode) -> String {
    format!("{method} answered {}", status.as_u16())
}

/// What went wrong with a request that got no answer, without its URL.
fn failed(method: &str, e: reqwest::Error) -> String {
    let why = if e.is_timeout() {
        format!("no answer within {} s", CHECK_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        e.without_url().to_string()
    };
    format!("{method}: {why}")
}

pub async fn check(url: &MediaUrl) -> TrackAnswer {
    let http = client();
    let head = match http.head(url.as_str()).send().await {
        Ok(r) if r.status().is_success() => {
            return TrackAnswer::Reachable(said("HEAD", r.status()));
        }
        Ok(r) => said("HEAD", r.status()),
        Err(e) => failed("HEAD", e),
    };
    // The body is dropped unread: a host that ignores Range sends headers first anyway.
    let get = http
        .get(url.as_str())
        .header(reqwest::header::RANGE, "bytes=0-0")
        .send()
        .await;
    match get {
        Ok(r) => {
            let status = r.status();
            let detail = format!("{head}; {}", said("GET", status));
            match status {
                s if s.is_success() => TrackAnswer::Reachable(detail),
                StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::GONE => {
                    TrackAnswer::Gone(detail)
                }
                _ => TrackAnswer::Inconclusive(detail),
            }
        }
        Err(e) => TrackAnswer::Inconclusive(format!("{head}; {}", failed("GET", e))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use warp::Filter;
    use warp::http::{Method, StatusCode};

    use super::*;

    /// A track host that answers HEAD with `head` and GET with `get`, and records the
    /// requests it got (method, Range header).
    async fn host(head: u16, get: u16) -> (String, Arc<Mutex<Vec<(String, Option<String>)>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let route = warp::method()
            .and(warp::header::optional::<String>("range"))
            .map(move |m: Method, range: Option<String>| {
                log.lock().unwrap().push((m.to_string(), range));
                let code = if m == Method::HEAD { head } else { get };
                warp::reply::with_status("x", StatusCode::from_u16(code).unwrap())
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(route).incoming(listener).run());
        (format!("http://{addr}/temp/track.mp3?sig=secret"), seen)
    }

    async fn answer(head: u16, get: u16) -> (TrackAnswer, Vec<(String, Option<String>)>) {
        let (url, seen) = host(head, get).await;
        let a = check(&MediaUrl::parse(&url).unwrap()).await;
        let seen = seen.lock().unwrap().clone();
        (a, seen)
    }

    #[tokio::test]
    async fn a_track_that_answers_head_is_reachable_without_a_get() {
        let (a, seen) = answer(200, 500).await;
        assert_eq!(a, TrackAnswer::Reachable("HEAD answered 200".into()));
        assert_eq!(seen, vec![("HEAD".to_owned(), None)]);
    }

    #[tokio::test]
    async fn a_refused_head_is_confirmed_with_a_one_byte_get() {
        let (a, seen) = answer(405, 206).await;
        assert_eq!(
            a,
            TrackAnswer::Reachable("HEAD answered 405; GET answered 206".into())
        );
        assert_eq!(seen[1], ("GET".to_owned(), Some("bytes=0-0".to_owned())));
        // A URL signed for GET refuses HEAD with 403 and still serves the GET.
        let (a, _) = answer(403, 200).await;
        assert!(matches!(a, TrackAnswer::Reachable(_)), "{a:?}");
    }

    #[tokio::test]
    async fn only_the_gets_403_404_or_410_say_the_track_is_gone() {
        for code in [403, 404, 410] {
            let (a, _) = answer(code, code).await;
            assert_eq!(
                a,
                TrackAnswer::Gone(format!("HEAD answered {code}; GET answered {code}"))
            );
        }
        for code in [401, 408, 429, 500, 502, 503, 504] {
            let (a, _) = answer(404, code).await;
            assert!(matches!(a, TrackAnswer::Inconclusive(_)), "{code}: {a:?}");
        }
    }

    #[tokio::test]
    async fn a_host_that_cannot_be_reached_proves_nothing_and_the_url_is_not_repeated() {
        // Nothing listens on port 9 of the loopback.
        let url = MediaUrl::parse("http://127.0.0.1:9/temp/track.mp3?sig=secret").unwrap();
        let a = check(&url).await;
        let TrackAnswer::Inconclusive(detail) = &a else {
            panic!("{a:?}");
        };
        assert!(!detail.contains("secret"), "{detail}");
    }
}
