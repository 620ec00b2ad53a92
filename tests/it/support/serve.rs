//! The one HTTP bootstrap of the in-process doubles (GoAPI, NCA, and the clients tests'
//! webhook receiver): a warp server on a fresh loopback port that hands every request, whole,
//! to one handler over the double's shared state, and stops when its handle is dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use warp::Filter;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Reply;

/// How a double answers: its state, the request's method, path, headers and body.
pub type Handler<S> = fn(Arc<S>, Method, &str, &HeaderMap, &[u8]) -> warp::reply::Response;

/// A running double's server; aborted when dropped, so a test's doubles end with it.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds 127.0.0.1:0, builds the state from the server's base URL (`http://127.0.0.1:port`,
/// which doubles put in the URLs they hand out), and serves `handle` on it.
pub async fn serve<S>(
    what: &str,
    state: impl FnOnce(String) -> S,
    handle: Handler<S>,
) -> (Arc<S>, Server)
where
    S: Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind {what}: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{what} address: {e}"));
    let shared = Arc::new(state(format!("http://{addr}")));
    let s = shared.clone();
    let route = warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .then(
            move |method: Method,
                  path: warp::path::FullPath,
                  headers: HeaderMap,
                  body: bytes::Bytes| {
                let s = s.clone();
                async move { handle(s, method, path.as_str(), &headers, &body) }
            },
        );
    let task = tokio::spawn(warp::serve(route).incoming(listener).run());
    (shared, Server { addr, task })
}

/// A double's state: what it records behind one lock, the work it still has in flight (so a
/// test can wait for it to be idle), its base URL, and the client it calls back with.
pub struct Shared<I> {
    pub inner: Mutex<I>,
    pub in_flight: AtomicUsize,
    pub base: String,
    pub http: reqwest::Client,
}

impl<I> Shared<I> {
    pub fn new(inner: I, base: String) -> Self {
        Self {
            inner: Mutex::new(inner),
            in_flight: AtomicUsize::new(0),
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("http client"),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, I> {
        // A panicking test thread must not hide the double's records from the others.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running double (GoAPI, NCA): its state behind [`Shared`] and its server, which stops
/// when the double is dropped. What every double does alike is here once; what it records
/// and how it answers is its own.
pub struct Double<I> {
    pub shared: Arc<Shared<I>>,
    _server: Server,
}

impl<I: Send + 'static> Double<I> {
    pub async fn start(what: &str, inner: I, handle: Handler<Shared<I>>) -> Self {
        let (shared, server) = serve(what, |base| Shared::new(inner, base), handle).await;
        Self {
            shared,
            _server: server,
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:12345` (what the client's `api_url` takes).
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    pub fn lock(&self) -> MutexGuard<'_, I> {
        self.shared.lock()
    }

    /// A copy of one of the double's logs (tasks, deliveries, submissions...), as it is now.
    pub fn log<T: Clone>(&self, which: impl FnOnce(&I) -> &Vec<T>) -> Vec<T> {
        which(&*self.lock()).clone()
    }

    /// Waits until the work the double started (webhooks, callbacks) is done; false if it
    /// is still running after `within`.
    pub async fn wait_idle(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.shared.in_flight.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

/// What a service behind a proxy answers while it is down or restarting.
pub fn unavailable() -> warp::reply::Response {
    warp::reply::with_status(
        warp::reply::html("<html><body><h1>503 Service Unavailable</h1></body></html>"),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .into_response()
}

/// Whether an HTTP status a receiver answered took the request in (2xx).
pub fn acknowledged(status: u16) -> bool {
    (200..300).contains(&status)
}
