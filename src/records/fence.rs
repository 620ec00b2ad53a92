//! Writes the base cannot fence itself. Airtable checks no lease: a replica that lost a
//! video (paused past its lease, cut off from the database) must not land an older value
//! on top of the new owner's. So the writer's right is checked at the moment each write
//! request is sent (after the wait for a budget slot, which a 429 lockout can stretch to
//! 30 s, and again before each of the client's retries), not once before the write is
//! queued.
//!
//! The executor runs a write inside [`fenced`]; the Airtable client picks the fence up
//! when the write is queued ([`current`]) and asks it just before sending. A write whose
//! fence says no is answered [`super::RecordsError::Fenced`] and never sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Whether the writer may still write (for the executor: it still holds the video's lease).
pub type Fence = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

tokio::task_local! {
    static FENCE: Fence;
}

/// Runs `f` with `fence` guarding every write it queues.
pub async fn fenced<F: Future>(fence: Fence, f: F) -> F::Output {
    FENCE.scope(fence, f).await
}

/// The fence of the task queuing a write, if it runs inside [`fenced`].
pub(crate) fn current() -> Option<Fence> {
    FENCE.try_with(Fence::clone).ok()
}

/// For a backend that sends its write at once: refuses it when the calling task's fence
/// (if any) no longer allows it.
pub(crate) async fn check_current() -> Result<(), super::RecordsError> {
    match current() {
        Some(f) if !all_allow(std::slice::from_ref(&f)).await => Err(super::RecordsError::Fenced),
        _ => Ok(()),
    }
}

/// Whether every fence still allows the write (a failing check answers no: a write
/// that cannot prove its right is not sent).
pub(crate) async fn all_allow(fences: &[Fence]) -> bool {
    for f in fences {
        if !f().await {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn the_fence_is_the_running_tasks_and_is_asked_each_time() {
        assert!(current().is_none(), "no fence outside `fenced`");
        let open = Arc::new(AtomicBool::new(true));
        let o = open.clone();
        let fence: Fence = Arc::new(move || {
            let o = o.clone();
            Box::pin(async move { o.load(Ordering::SeqCst) })
        });
        fenced(fence, async {
            let f = current().expect("the scope's fence");
            assert!(all_allow(std::slice::from_ref(&f)).await);
            open.store(false, Ordering::SeqCst);
            assert!(!all_allow(&[f]).await, "asked again, not remembered");
        })
        .await;
    }
}
