//! What an event did to a video: the outcome every decision, history row and event-log
//! entry carries. Its own file, below both the decisions and the effects that record it.

use serde::Deserialize;

use crate::domain::snake_case_enum;

snake_case_enum! {
    /// What an event did. Duplicates and stale events are outcomes, not errors: they are
    /// recorded in the event log like any other.
    #[derive(Deserialize)]
    pub enum Outcome {
        /// The state changed.
        Applied,
        /// Valid news that changes nothing (an intermediate status); kept on record only.
        Recorded,
        /// The same news again.
        Duplicate,
        /// News that the video has already moved past (an older task, a late intermediate status).
        Stale,
        /// No job of this video matches the event.
        Unmatched,
    }
}
