//! Leases: who may work on a video. The worker and the executor each have a [`Lane`]; at
//! most one holder per (lane, video) at a time, across every process sharing the store.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::domain::RecordId;
use crate::machine::EffectKind;

use super::Leases;

/// Whose work a lease covers: the worker's (inbox entries) or the executor's (effects),
/// which has two: its calls to services (`Executor`) and its writes to the base
/// (`Projection`). A video can be in every lane at once: deciding and executing are
/// ordered by the outbox, and a video's effects are ordered within each executor lane,
/// not across them, so that a call never waits for the base's request budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::Display, strum::AsRefStr)]
#[strum(serialize_all = "snake_case")]
pub enum Lane {
    Worker,
    Executor,
    Projection,
}

/// The effect kinds that only write the base: they run in the `Projection` lane, every
/// other kind (a call to a service) in the `Executor` lane.
pub(crate) const PROJECTION_KINDS: [EffectKind; 4] = [
    EffectKind::UpdateVideo,
    EffectKind::CreateJob,
    EffectKind::UpdateJob,
    EffectKind::RecordWebhookOutcome,
];

impl Lane {
    /// The executor lane of an effect of this kind (`Effect::kind`).
    pub(crate) fn of_effect_kind(kind: &str) -> Lane {
        if PROJECTION_KINDS.iter().any(|k| k.as_ref() == kind) {
            Lane::Projection
        } else {
            Lane::Executor
        }
    }
}

/// SQL that is true for an outbox row (`kind` column of `alias`) in the projection lane.
pub fn projection_sql(alias: &str) -> String {
    let kinds = PROJECTION_KINDS
        .iter()
        .map(|k| format!("'{}'", k.as_ref()))
        .collect::<Vec<_>>()
        .join(", ");
    format!("({alias}.kind IN ({kinds}))")
}

/// The right to work on one video in one lane. Given back when dropped (a task that
/// panics gives it back too); a holder that dies without dropping it (kill -9) loses it
/// when it expires.
pub struct Lease {
    lane: Lane,
    video: RecordId,
    /// Grows with every claim of this (lane, video): writes name it, so that a holder
    /// whose lease was taken over writes nothing.
    token: i64,
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Lease {
    pub(crate) fn new(
        lane: Lane,
        video: RecordId,
        token: i64,
        release: impl FnOnce() + Send + Sync + 'static,
    ) -> Self {
        Self {
            lane,
            video,
            token,
            release: Some(Box::new(release)),
        }
    }

    pub fn lane(&self) -> Lane {
        self.lane
    }

    pub fn video(&self) -> &RecordId {
        &self.video
    }

    pub fn token(&self) -> i64 {
        self.token
    }

    /// The same lease as a value to check (`Leases::holds`) from another task: dropping
    /// the witness gives nothing back.
    pub fn witness(&self) -> Lease {
        Lease {
            lane: self.lane,
            video: self.video.clone(),
            token: self.token,
            release: None,
        }
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("lane", &self.lane)
            .field("video", &self.video)
            .field("token", &self.token)
            .finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// Leases of a store only one process uses (the embedded store): a set in memory. Only
/// dropping the lease gives it back, so it never needs renewing and is never lost.
#[derive(Clone, Default)]
pub struct LocalLeases {
    held: Arc<Mutex<HashSet<(Lane, RecordId)>>>,
}

impl LocalLeases {
    pub(crate) fn claim(&self, lane: Lane, videos: Vec<RecordId>) -> Vec<Lease> {
        let Ok(mut held) = self.held.lock() else {
            return Vec::new();
        };
        videos
            .into_iter()
            .filter(|v| held.insert((lane, v.clone())))
            .map(|video| {
                let (set, key) = (self.held.clone(), (lane, video.clone()));
                Lease::new(lane, video, 0, move || {
                    if let Ok(mut s) = set.lock() {
                        s.remove(&key);
                    }
                })
            })
            .collect()
    }
}

/// Claims `items`' videos on `lane`, in order (until `stopping`), as many at a time as
/// `slots` has free, waiting for a free slot when there is none; hands each claimed
/// video's item, lease and slot to `start`. A lease is never held while waiting for a slot: that would be
/// work other replicas could be doing (and would wait for if this one died). Videos
/// claimed elsewhere are skipped.
pub async fn claim_in_order<T>(
    store: &dyn Leases,
    stopping: impl Fn() -> bool,
    lane: Lane,
    slots: &Arc<tokio::sync::Semaphore>,
    items: Vec<(RecordId, T)>,
    mut start: impl FnMut(Lease, tokio::sync::OwnedSemaphorePermit, T),
) {
    let mut queue = items.into_iter();
    while queue.len() > 0 && !stopping() {
        let Ok(first) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut permits = vec![first];
        while permits.len() < queue.len() {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let mut chunk: Vec<(RecordId, Option<T>)> = queue
            .by_ref()
            .take(permits.len())
            .map(|(v, t)| (v, Some(t)))
            .collect();
        let videos = chunk.iter().map(|(v, _)| v.clone()).collect();
        let leases = match store.claim(lane, videos).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, lane = %lane, "could not claim videos");
                return;
            }
        };
        for lease in leases {
            let item = chunk
                .iter_mut()
                .find(|(v, _)| v == lease.video())
                .and_then(|(_, t)| t.take());
            if let (Some(item), Some(permit)) = (item, permits.pop()) {
                start(lease, permit, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(n: u8) -> RecordId {
        RecordId::parse(&format!("recAAAAAAAAAAAAA{n}")).unwrap()
    }

    #[test]
    fn one_holder_per_lane_and_video_until_dropped() {
        let leases = LocalLeases::default();
        let a = leases.claim(Lane::Worker, vec![video(1), video(2)]);
        assert_eq!(a.len(), 2);
        assert!(leases.claim(Lane::Worker, vec![video(1)]).is_empty());
        // Another lane is another lease.
        assert_eq!(leases.claim(Lane::Executor, vec![video(1)]).len(), 1);
        drop(a);
        assert_eq!(leases.claim(Lane::Worker, vec![video(1)]).len(), 1);
    }
}
