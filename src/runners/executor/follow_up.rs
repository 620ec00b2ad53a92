//! The events the executor feeds back to the machine about an effect.

use crate::machine::Event;
use crate::store::{NewEntry, OutboxEntry, Payload, Source};

/// An event the engine feeds itself, named after the effect so that storing it twice
/// (a retried commit) stores it once.
pub(super) fn engine_entry(e: &OutboxEntry, what: &str, event: Event) -> NewEntry {
    NewEntry {
        event_id: crate::store::new_event_id(),
        video_id: e.video_id.clone(),
        source: Source::Engine,
        endpoint: format!("effect/{}", e.effect.kind()),
        dedupe_key: Some(format!("effect:{what}:{}", e.effect_id)),
        raw_body: String::new(),
        headers: "{}".into(),
        received_at: crate::clock::now(),
        payload: Payload::Event { event },
    }
}
