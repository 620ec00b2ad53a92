//! The one HTTP bootstrap of the in-process doubles (GoAPI, NCA, and the clients tests'
//! webhook receiver): a warp server on a fresh loopback port that hands every request, whole,
//! to one handler over the double's shared state, and stops when its handle is dropped.

use std::net::SocketAddr;
use std::sync::Arc;

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
