//! Whether a music track's URL still serves the track. GoAPI's track URLs are temporary
//! (docs/goapi-and-nca.md, "Track URLs expire"), so a retried mix checks its track first.
//!
//! A HEAD first (no body moves); any answer but a 2xx is confirmed with a one-byte ranged
//! GET, because some hosts refuse HEAD (405) and a URL signed for GET answers a HEAD with
//! 403 while the GET still works. Only the GET's 403, 404 or 410 says the track is gone.
//!
//! The URL comes from a webhook or the base, so it is not trusted to name a host we may
//! reach (`clients::address`): every hop, redirects included, is judged before it is
//! connected to, and the connection goes to the very addresses that were judged.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;

use super::address::{self, Resolver, Rule, Vetted};
use crate::domain::MediaUrl;

/// Per request: the host of a track answers at once or not usefully; the executor's
/// backoff asks again.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// CDNs redirect to their storage, once or twice; more is a loop or a trick.
pub(crate) const MAX_REDIRECTS: usize = 5;

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
    /// The URL, or a redirect it led to, names a host we do not reach (its message names
    /// the host and why). Asking again cannot change that, so it is not inconclusive.
    Refused(String),
}

/// How the check reaches hosts: which addresses it may, and how names resolve.
#[derive(Clone)]
pub(crate) struct TrackChecker {
    rule: Rule,
    resolver: Arc<dyn Resolver>,
}

impl TrackChecker {
    /// `allow_private`: loopback and private networks are reachable (sandbox, tests).
    pub(crate) fn new(allow_private: bool) -> Self {
        Self::with_resolver(allow_private, address::system())
    }

    pub(crate) fn with_resolver(allow_private: bool, resolver: Arc<dyn Resolver>) -> Self {
        Self {
            rule: Rule::Fetch { allow_private },
            resolver,
        }
    }
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

/// Why one request ended without a final status.
enum Stop {
    Refused(String),
    Failed(String),
}

/// A client that reaches `host` only at `addrs` and follows nothing: the pinned
/// addresses are the ones judged, so a second DNS answer (rebinding) cannot redirect it.
fn pinned(url: &url::Url, addrs: &[std::net::SocketAddr]) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(CHECK_TIMEOUT)
        .connect_timeout(CHECK_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would connect wherever it resolves the name, past the check.
        .no_proxy();
    if let Some(url::Host::Domain(name)) = url.host() {
        b = b.resolve_to_addrs(name, addrs);
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

impl TrackChecker {
    /// One request, redirects followed by hand, each hop judged before it is reached.
    async fn fetch(&self, method: reqwest::Method, start: &str) -> Result<StatusCode, Stop> {
        let name = method.as_str().to_owned();
        let mut url =
            url::Url::parse(start).map_err(|_| Stop::Failed(format!("{name}: not a URL")))?;
        for hop in 0..=MAX_REDIRECTS {
            let via = if hop == 0 {
                ""
            } else {
                " (reached by a redirect)"
            };
            let addrs = match address::vet(&url, self.rule, &*self.resolver).await {
                Ok(Vetted::Addresses(a)) => a,
                Ok(Vetted::Unresolved(_)) => {
                    return Err(Stop::Failed(format!(
                        "{name}: the host does not resolve{via}"
                    )));
                }
                Err(refused) => return Err(Stop::Refused(format!("{refused}{via}"))),
            };
            let client = pinned(&url, &addrs).map_err(|e| Stop::Failed(format!("{name}: {e}")))?;
            let mut req = client.request(method.clone(), url.clone());
            if method == reqwest::Method::GET {
                req = req.header(reqwest::header::RANGE, "bytes=0-0");
            }
            // The body is dropped unread: a host that ignores Range sends headers first.
            let resp = req
                .send()
                .await
                .map_err(|e| Stop::Failed(failed(&name, e)))?;
            let status = resp.status();
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_owned);
            match location {
                Some(to) if status.is_redirection() => {
                    url = url
                        .join(&to)
                        .ok()
                        .filter(|u| matches!(u.scheme(), "http" | "https"))
                        .ok_or_else(|| {
                            Stop::Failed(format!("{name}: redirected to a non-http(s) URL"))
                        })?;
                }
                _ => return Ok(status),
            }
        }
        Err(Stop::Failed(format!(
            "{name}: more than {MAX_REDIRECTS} redirects"
        )))
    }

    pub(crate) async fn check(&self, url: &MediaUrl) -> TrackAnswer {
        let refused =
            |why: String| TrackAnswer::Refused(format!("the music's URL is not checked: {why}"));
        let head = match self.fetch(reqwest::Method::HEAD, url.as_str()).await {
            Ok(s) if s.is_success() => return TrackAnswer::Reachable(said("HEAD", s)),
            Ok(s) => said("HEAD", s),
            Err(Stop::Refused(why)) => return refused(why),
            Err(Stop::Failed(why)) => why,
        };
        match self.fetch(reqwest::Method::GET, url.as_str()).await {
            Ok(status) => {
                let detail = format!("{head}; {}", said("GET", status));
                match status {
                    s if s.is_success() => TrackAnswer::Reachable(detail),
                    StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::GONE => {
                        TrackAnswer::Gone(detail)
                    }
                    _ => TrackAnswer::Inconclusive(detail),
                }
            }
            Err(Stop::Refused(why)) => refused(why),
            Err(Stop::Failed(why)) => TrackAnswer::Inconclusive(format!("{head}; {why}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use warp::Filter;
    use warp::http::{Method, StatusCode};

    use super::*;

    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

    /// A track host that answers HEAD with `head` and GET with `get`, except on `/hop`,
    /// which redirects (302) to `hop_to`; it records the requests it got (method and path
    /// or Range header).
    async fn host_redirecting(head: u16, get: u16, hop_to: Option<String>) -> (String, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let route = warp::method()
            .and(warp::path::full())
            .and(warp::header::optional::<String>("range"))
            .map(
                move |m: Method, path: warp::path::FullPath, range: Option<String>| {
                    if path.as_str() == "/hop" {
                        log.lock().unwrap().push((format!("{m} /hop"), range));
                        let to = hop_to.clone().unwrap_or_default();
                        return warp::http::Response::builder()
                            .status(302)
                            .header("location", to)
                            .body(String::new())
                            .unwrap();
                    }
                    log.lock().unwrap().push((m.to_string(), range));
                    let code = if m == Method::HEAD { head } else { get };
                    warp::http::Response::builder()
                        .status(StatusCode::from_u16(code).unwrap())
                        .body("x".to_owned())
                        .unwrap()
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(route).incoming(listener).run());
        (format!("http://{addr}"), seen)
    }

    async fn host(head: u16, get: u16) -> (String, Seen) {
        let (base, seen) = host_redirecting(head, get, None).await;
        (format!("{base}/temp/track.mp3?sig=secret"), seen)
    }

    /// Every double here listens on 127.0.0.1, as the sandbox's and the tests' do.
    fn lax() -> TrackChecker {
        TrackChecker::new(true)
    }

    async fn check(url: &MediaUrl) -> TrackAnswer {
        lax().check(url).await
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

    #[tokio::test]
    async fn a_loopback_track_is_refused_without_a_request_unless_private_urls_are_allowed() {
        let (url, seen) = host(200, 200).await;
        let url = MediaUrl::parse(&url).unwrap();
        let a = TrackChecker::new(false).check(&url).await;
        let TrackAnswer::Refused(detail) = &a else {
            panic!("{a:?}");
        };
        assert!(
            detail.contains("host 127.0.0.1 is a loopback address"),
            "{detail}"
        );
        assert!(!detail.contains("secret"), "{detail}");
        assert!(seen.lock().unwrap().is_empty(), "nothing was sent");
        assert!(matches!(lax().check(&url).await, TrackAnswer::Reachable(_)));
    }

    #[tokio::test]
    async fn each_redirect_hop_is_judged_before_it_is_followed() {
        let (base, seen) = host_redirecting(
            200,
            200,
            Some("http://169.254.169.254/latest/meta-data/".into()),
        )
        .await;
        let url = MediaUrl::parse(&format!("{base}/hop")).unwrap();
        let a = lax().check(&url).await;
        assert_eq!(
            a,
            TrackAnswer::Refused(
                "the music's URL is not checked: host 169.254.169.254 is a cloud metadata address (reached by a redirect)"
                    .into()
            )
        );
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "only the first hop was asked"
        );

        // A redirect to a host the check may reach is followed, and its answer counts.
        let (target, _) = host(404, 200).await;
        let (base, seen) = host_redirecting(200, 200, Some(target)).await;
        let url = MediaUrl::parse(&format!("{base}/hop")).unwrap();
        let a = lax().check(&url).await;
        assert_eq!(
            a,
            TrackAnswer::Reachable("HEAD answered 404; GET answered 200".into())
        );
        assert_eq!(
            seen.lock().unwrap().len(),
            2,
            "HEAD and GET each took the hop"
        );
    }

    #[tokio::test]
    async fn a_redirect_loop_ends_after_the_limit_and_proves_nothing() {
        let (base, seen) = host_redirecting(200, 200, Some("/hop".into())).await;
        let url = MediaUrl::parse(&format!("{base}/hop")).unwrap();
        let a = lax().check(&url).await;
        assert!(
            matches!(&a, TrackAnswer::Inconclusive(d) if d.contains("more than 5 redirects")),
            "{a:?}"
        );
        assert_eq!(seen.lock().unwrap().len(), 2 * (MAX_REDIRECTS + 1));
    }

    #[tokio::test]
    async fn a_name_is_connected_to_at_the_address_it_was_judged_at() {
        use crate::clients::address::StaticResolver;
        let (url, seen) = host(200, 200).await;
        let port = url::Url::parse(&url).unwrap().port().unwrap();
        // No DNS knows tracks.example: only the pinned answer can reach the host.
        let resolver = Arc::new(StaticResolver::default().with("tracks.example", &["127.0.0.1"]));
        let named = MediaUrl::parse(&format!("http://tracks.example:{port}/t.mp3")).unwrap();
        let a = TrackChecker::with_resolver(true, resolver.clone())
            .check(&named)
            .await;
        assert_eq!(a, TrackAnswer::Reachable("HEAD answered 200".into()));
        assert_eq!(seen.lock().unwrap().len(), 1);
        let a = TrackChecker::with_resolver(false, resolver)
            .check(&named)
            .await;
        assert_eq!(
            a,
            TrackAnswer::Refused(
                "the music's URL is not checked: host tracks.example resolves to 127.0.0.1, a loopback address".into()
            )
        );
        let unknown = MediaUrl::parse("http://unknown.example/t.mp3").unwrap();
        let a = TrackChecker::with_resolver(true, Arc::new(StaticResolver::default()))
            .check(&unknown)
            .await;
        assert!(matches!(a, TrackAnswer::Inconclusive(_)), "{a:?}");
    }
}
