//! What `/readyz` and `/metrics` read from the store, cached. Probes and scrapes come as
//! often as whoever runs them likes (a load balancer every second, several Prometheus
//! replicas): on SQLite the readiness heartbeat is a write, so each probe would queue
//! behind intake on the one writer, and each scrape ran its COUNT queries. Here one
//! refresh at a time asks the store, at most once per [`MAX_AGE`] however many ask, and
//! everyone reads its answer.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::Depths;

/// The oldest figure a probe or a scrape is answered with.
pub const MAX_AGE: Duration = Duration::from_secs(5);

/// How long `/readyz` waits for a refresh before it says the store does not answer: a
/// load balancer's probe has a timeout of its own, and a hung probe says nothing.
pub const READY_WAIT: Duration = Duration::from_secs(1);

/// A store call still running after this is abandoned (its answer an error), so that a
/// hung store does not hold the one refresh forever.
const STORE_TIMEOUT: Duration = Duration::from_secs(4);

type Answer<T> = Option<(Instant, Result<T, String>)>;

/// One cached store answer and the single refresh that renews it.
pub struct Cached<T> {
    latest: Arc<watch::Sender<Answer<T>>>,
    refreshing: Arc<AtomicBool>,
    max_age: Duration,
    store_timeout: Duration,
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Self::new(MAX_AGE, STORE_TIMEOUT)
    }
}

impl<T> Cached<T> {
    fn new(max_age: Duration, store_timeout: Duration) -> Self {
        Self {
            latest: Arc::new(watch::channel(None).0),
            refreshing: Arc::new(AtomicBool::new(false)),
            max_age,
            store_timeout,
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Cached<T> {
    /// The cached answer if it is younger than [`MAX_AGE`]; otherwise the next one,
    /// waited for at most `wait` (`None`: none came in time). `load` runs only when no
    /// other refresh is running, in a task of its own, so a caller that stops waiting
    /// leaves it to finish for the next.
    pub async fn get<F, Fut>(&self, wait: Duration, load: F) -> Option<Result<T, String>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
    {
        let mut rx = self.latest.subscribe();
        if let Some((at, answer)) = &*rx.borrow_and_update()
            && at.elapsed() < self.max_age
        {
            return Some(answer.clone());
        }
        if !self.refreshing.swap(true, Ordering::AcqRel) {
            let (latest, refreshing) = (self.latest.clone(), self.refreshing.clone());
            let limit = self.store_timeout;
            tokio::spawn(async move {
                let answer = tokio::time::timeout(limit, load())
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "the store did not answer within {} ms",
                            limit.as_millis()
                        ))
                    });
                latest.send_replace(Some((Instant::now(), answer)));
                refreshing.store(false, Ordering::Release);
            });
        }
        match tokio::time::timeout(wait, rx.changed()).await {
            Ok(Ok(())) => rx.borrow().as_ref().map(|(_, a)| a.clone()),
            _ => None,
        }
    }
}

/// The caches of the two endpoints, one per server.
#[derive(Default)]
pub struct Probes {
    pub ping: Cached<()>,
    pub depths: Cached<Depths>,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    // The same mechanism on a shorter clock: ages in tenths of a second.
    const AGE: Duration = Duration::from_millis(1000);
    const WAIT: Duration = Duration::from_millis(100);
    const HUNG: Duration = Duration::from_millis(600);

    async fn ask(
        cache: &Arc<Cached<u32>>,
        loads: &Arc<AtomicUsize>,
    ) -> Option<Result<u32, String>> {
        let loads = loads.clone();
        cache
            .get(Duration::from_secs(1), move || async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(loads.fetch_add(1, Ordering::SeqCst) as u32 + 1)
            })
            .await
    }

    #[tokio::test]
    async fn many_callers_share_one_load_until_the_answer_is_older_than_max_age() {
        let cache = Arc::new(Cached::<u32>::new(AGE, HUNG));
        let loads = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..100)
            .map(|_| {
                let (c, l) = (cache.clone(), loads.clone());
                tokio::spawn(async move { ask(&c, &l).await })
            })
            .collect();
        for c in callers {
            assert_eq!(c.await.unwrap(), Some(Ok(1)));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(ask(&cache, &loads).await, Some(Ok(1)), "still young");
        tokio::time::sleep(AGE).await;
        assert_eq!(ask(&cache, &loads).await, Some(Ok(2)), "renewed once old");
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_store_that_does_not_answer_is_told_within_the_wait_and_asked_once() {
        let cache = Cached::<()>::new(AGE, HUNG);
        let loads = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let l = loads.clone();
            let started = Instant::now();
            let got = cache
                .get(WAIT, move || async move {
                    l.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<Result<(), String>>().await
                })
                .await;
            assert_eq!(got, None);
            assert!(started.elapsed() < WAIT * 3, "{:?}", started.elapsed());
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1, "one refresh at a time");
        // The hung refresh is abandoned; its failure is the answer until the next.
        tokio::time::sleep(HUNG).await;
        let got = cache.get(WAIT, || async { Ok(()) }).await.expect("cached");
        assert!(got.unwrap_err().contains("did not answer"));
    }

    #[tokio::test]
    async fn a_failing_store_is_reported_at_once() {
        let cache = Cached::<()>::default();
        let got = cache
            .get(READY_WAIT, || async { Err("disk I/O error".to_owned()) })
            .await;
        assert_eq!(got, Some(Err("disk I/O error".into())));
    }
}
