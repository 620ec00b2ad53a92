//! The one HTTP bootstrap of the in-process doubles (GoAPI, NCA, and the clients tests'
//! webhook receiver): a warp server on a fresh loopback port that hands every request, whole,
//! to one handler over the double's shared state, and stops when its handle is dropped.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use warp::Filter;
use warp::http::{HeaderMap, Method};

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
