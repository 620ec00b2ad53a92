//! What `/readyz` and `/metrics` read from the store, cached. Probes and scrapes come as
//! often as whoever runs them likes (a load balancer every second, several Prometheus
//! replicas): on SQLite the readiness heartbeat is a write, so each probe would queue
//! behind intake on the one writer, and each scrape ran its COUNT queries. Here one
//! refresh at a time asks the store, at most once per [`REFRESH_AFTER`] however many ask,
//! and everyone reads its answer.
//!
//! The refresh starts a second before the answer is too old to serve, so that under
//! steady probing a store that stopped answering is told by the time the old answer
//! expires ([`MAX_AGE`]): a refresh outstanding longer than the caller's wait is itself
//! the answer "the store does not answer".

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::Depths;

/// The oldest figure a probe or a scrape is answered with.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(5);

/// The age at which a caller starts the refresh (and is still answered from the cache).
pub(crate) const REFRESH_AFTER: Duration = Duration::from_secs(4);

/// How long `/readyz` waits for a refresh before it says the store does not answer: a
/// load balancer's probe has a timeout of its own, and a hung probe says nothing.
pub(crate) const READY_WAIT: Duration = Duration::from_secs(1);

/// A store call still running after this is abandoned (its answer an error), so that a
/// hung store does not hold the one refresh forever.
const STORE_TIMEOUT: Duration = Duration::from_secs(4);

type Answer<T> = Option<(Instant, Result<T, String>)>;

/// One cached store answer and the single refresh that renews it.
pub(crate) struct Cached<T> {
    latest: Arc<watch::Sender<Answer<T>>>,
    /// When the refresh in flight started; `None` when there is none.
    refreshing: Arc<Mutex<Option<Instant>>>,
    max_age: Duration,
    refresh_after: Duration,
    store_timeout: Duration,
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Self::new(MAX_AGE, REFRESH_AFTER, STORE_TIMEOUT)
    }
}

impl<T> Cached<T> {
    fn new(max_age: Duration, refresh_after: Duration, store_timeout: Duration) -> Self {
        Self {
            latest: Arc::new(watch::channel(None).0),
            refreshing: Arc::new(Mutex::new(None)),
            max_age,
            refresh_after: refresh_after.min(max_age),
            store_timeout,
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Cached<T> {
    /// The cached answer while it is younger than `max_age` (starting the refresh once it
    /// is older than `refresh_after`); otherwise the refresh's answer, waited for until
    /// `wait` after that refresh started (`None`: none came in time). `load` runs only
    /// when no other refresh is running, in a task of its own, so a caller that stops
    /// waiting leaves it to finish for the next.
    pub(crate) async fn get<F, Fut>(&self, wait: Duration, load: F) -> Option<Result<T, String>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
    {
        let mut rx = self.latest.subscribe();
        let (age, cached) = match &*rx.borrow_and_update() {
            Some((at, answer)) => (Some(at.elapsed()), Some(answer.clone())),
            None => (None, None),
        };
        let started = self.refresh_if(age.is_none_or(|a| a >= self.refresh_after), load);
        if let (Some(age), Some(answer)) = (age, cached)
            && age < self.max_age
        {
            return Some(answer);
        }
        let left = wait.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, rx.changed()).await {
            Ok(Ok(())) => rx.borrow().as_ref().map(|(_, a)| a.clone()),
            _ => None,
        }
    }

    /// Starts the refresh when `due` and none is running; when the one running started.
    fn refresh_if<F, Fut>(&self, due: bool, load: F) -> Instant
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
    {
        let mut running = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = *running {
            return since;
        }
        let now = Instant::now();
        if !due {
            return now;
        }
        *running = Some(now);
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
            // Cleared first: a caller woken by the answer may start the next refresh.
            *refreshing.lock().unwrap_or_else(|e| e.into_inner()) = None;
            latest.send_replace(Some((Instant::now(), answer)));
        });
        now
    }
}

/// How long the Airtable schema check may run before it is abandoned: it waits for the
/// base's request budget like any other request, so it is given longer than a store call.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(30);

/// The caches of `/readyz` and `/metrics`, one per server.
pub(crate) struct Probes {
    pub(crate) ping: Cached<()>,
    pub(crate) depths: Cached<Depths>,
    /// The Airtable schema's problems: the check calls Airtable (through the request
    /// budget, which lives in the store on PostgreSQL), so a probe never waits on it
    /// longer than [`READY_WAIT`].
    pub(crate) schema: Cached<Vec<String>>,
}

impl Default for Probes {
    fn default() -> Self {
        Self {
            ping: Cached::default(),
            depths: Cached::default(),
            schema: Cached::new(MAX_AGE, REFRESH_AFTER, SCHEMA_TIMEOUT),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

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
        let cache = Arc::new(Cached::<u32>::new(AGE, AGE, HUNG));
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
        let cache = Cached::<()>::new(AGE, AGE, HUNG);
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

    #[tokio::test]
    async fn under_steady_probing_a_store_that_stops_answering_is_told_as_the_answer_expires() {
        const SOON: Duration = Duration::from_millis(600);
        let cache = Cached::<()>::new(AGE, SOON, Duration::from_secs(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let probe = || {
            let calls = calls.clone();
            cache.get(Duration::from_millis(300), move || async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Ok(())
                } else {
                    std::future::pending().await
                }
            })
        };
        let start = Instant::now();
        assert_eq!(probe().await, Some(Ok(())));
        tokio::time::sleep(SOON + Duration::from_millis(100)).await;
        // Old enough to refresh, young enough to serve: the refresh starts and hangs.
        assert_eq!(probe().await, Some(Ok(())));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "the refresh started");
        tokio::time::sleep(AGE.saturating_sub(start.elapsed())).await;
        // Expired, and the refresh has been out longer than the wait: told at once.
        let asked = Instant::now();
        assert_eq!(probe().await, None);
        assert!(
            asked.elapsed() < Duration::from_millis(100),
            "{:?}",
            asked.elapsed()
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "no second refresh while one hangs"
        );
    }
}
