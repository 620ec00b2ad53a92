//! A TCP proxy on 127.0.0.1 between the replicas and PostgreSQL that can cut the line:
//! while cut, every connection it carried is closed and every new one is reset as soon
//! as it is accepted (what a client sees of a database host that went away and refuses
//! connections). Restored, it carries new connections again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use std::sync::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct CutProxy {
    addr: std::net::SocketAddr,
    inner: Arc<Inner>,
    accept: AbortHandle,
}

#[derive(Default)]
struct Inner {
    cut: AtomicBool,
    carried: Mutex<Vec<AbortHandle>>,
    refused: AtomicUsize,
    closed: AtomicUsize,
}

impl CutProxy {
    /// Listens on a free loopback port and forwards to `upstream` (host:port).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let inner = Arc::new(Inner::default());
        let state = inner.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if state.cut.load(Ordering::SeqCst) {
                    state.refused.fetch_add(1, Ordering::SeqCst);
                    reset(client);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let mut client = client;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                let mut carried = state.carried.lock().unwrap_or_else(|e| e.into_inner());
                carried.retain(|t| !t.is_finished());
                carried.push(task.abort_handle());
            }
        })
        .abort_handle();
        Self {
            addr,
            inner,
            accept,
        }
    }

    /// `url` (a `postgres://` URL) with its host and port replaced by the proxy's.
    pub fn url_through(&self, url: &str) -> String {
        let mut u = url::Url::parse(url).expect("a postgres URL");
        u.set_host(Some("127.0.0.1")).expect("host");
        u.set_port(Some(self.addr.port())).expect("port");
        u.to_string()
    }

    /// Closes every connection carried so far and refuses new ones until [`restore`].
    pub fn cut(&self) {
        self.inner.cut.store(true, Ordering::SeqCst);
        let carried: Vec<AbortHandle> =
            std::mem::take(&mut *self.inner.carried.lock().unwrap_or_else(|e| e.into_inner()));
        for task in carried {
            if !task.is_finished() {
                self.inner.closed.fetch_add(1, Ordering::SeqCst);
            }
            // Dropping the task drops both sockets: each side reads end of file.
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.inner.cut.store(false, Ordering::SeqCst);
    }

    /// Connections reset at accept because the line was cut.
    pub fn refused(&self) -> usize {
        self.inner.refused.load(Ordering::SeqCst)
    }

    /// Open connections closed by a cut.
    pub fn closed(&self) -> usize {
        self.inner.closed.load(Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Closes with a reset rather than an orderly shutdown: a refused connection.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// The `host:port` a `postgres://` URL points at.
pub fn upstream_of(url: &str) -> String {
    let u = url::Url::parse(url).expect("a postgres URL");
    format!(
        "{}:{}",
        u.host_str().unwrap_or("127.0.0.1"),
        u.port().unwrap_or(5432)
    )
}
