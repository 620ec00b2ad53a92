use strum::IntoEnumIterator;
use uuid::Uuid;

use super::catalogue::canonical_events;
use super::{Ctx, EventClass, Outcome, Policy, Snapshot, decide};

/// The event classes that would change this snapshot now (for the inspection API).
pub(crate) fn next_events(s: &Snapshot, policy: Policy) -> Vec<&'static str> {
    let ctx = Ctx {
        now: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
        event_id: Uuid::nil(),
        from_webhook: false,
        policy,
    };
    EventClass::iter()
        .filter(|class| {
            canonical_events(*class, s)
                .iter()
                .any(|e| matches!(decide(s, e, &ctx), Ok(d) if d.outcome == Outcome::Applied))
        })
        .map(EventClass::label)
        .collect()
}
