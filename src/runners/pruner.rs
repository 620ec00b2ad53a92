//! Retention: what the engine no longer needs (processed inbox entries with their raw
//! bodies, transition history, done effects, the claims of keyless creates whose owner is
//! done, jobs of final videos no longer polled) is deleted once older than
//! `REELSTATE_RETENTION_DAYS`, so that the store's size follows the traffic of the last
//! days, not of all time. Paid calls older than that are folded into per-day, per-video
//! totals, so that what each video and each day cost survives. In small batches with pauses, so that intake, the worker and
//! the executor hardly notice; on every replica (each batch skips rows another holds).

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use crate::engine::Engine;
use crate::metrics::TableLabels;
use crate::store::{Inbox, Maintenance, Pruned, StoreError};

/// Rows per table and statement: a batch's delete holds the writer for milliseconds.
pub(crate) const BATCH: u32 = 500;

/// Between two batches of one pass: intake goes first.
const PAUSE: Duration = Duration::from_millis(20);

/// Time between passes: a tenth of the retention, at least 1 s, at most a minute.
pub(crate) fn interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

pub async fn run(engine: Arc<Engine>) {
    let mut shutdown = engine.shutdown_signal();
    let every = interval(engine.settings.retention);
    loop {
        if engine.is_shutting_down() {
            break;
        }
        pass(&engine).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Deletes batches until one deletes less than a full batch (the backlog is gone).
async fn pass(engine: &Engine) {
    let retention = chrono::Duration::from_std(engine.settings.retention).unwrap_or_default();
    loop {
        if engine.is_shutting_down() {
            return;
        }
        match prune_batch(&*engine.store, retention).await {
            Ok(p) => {
                for (table, n) in p.by_table() {
                    if n > 0 {
                        engine
                            .metrics
                            .pruned_rows
                            .get_or_create(&TableLabels { table })
                            .inc_by(n);
                    }
                }
                if p.total() > 0 {
                    debug!(pruned = ?p, "pruned");
                }
                if !p.any_full(BATCH) {
                    return;
                }
            }
            Err(e) => {
                warn!(error = %e, "pruning failed; trying again at the next pass");
                return;
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// One batch, intake first. The pruner's only use of the store: it yields to intake and
/// deletes what retention allows, nothing else.
async fn prune_batch(
    store: &(impl Inbox + Maintenance + ?Sized),
    retention: chrono::Duration,
) -> Result<Pruned, StoreError> {
    store.yield_to_intake().await;
    store.prune(crate::clock::now() - retention, BATCH).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_are_frequent_enough_and_never_busy() {
        assert_eq!(
            interval(Duration::from_secs(30 * 24 * 3600)),
            Duration::from_secs(60)
        );
        assert_eq!(interval(Duration::from_secs(60)), Duration::from_secs(6));
        assert_eq!(interval(Duration::from_secs(2)), Duration::from_secs(1));
    }
}
