//! The state machine: pure functions from (snapshot, event) to a decision.
//!
//! Invariant: nothing in this module performs IO, reads a clock, generates randomness,
//! or knows any wire format (no tokio, warp, reqwest, serde_json). The clock and new ids
//! arrive in [`Ctx`]; side effects leave as [`Effect`] values for the executor.

mod catalogue;
mod decide;
mod effect;
mod event;
mod next;
mod outcome;
mod snapshot;

pub use catalogue::{
    FinalStateRow, JobTransitionRow, TransitionRow, explore, final_state_rows, job_rows, mermaid,
};
pub use decide::{Ctx, Decision, Policy, Rejection, decide};
pub use effect::{Effect, JobPatch, Table, Target, VideoPatch};
pub use event::{
    Event, EventClass, NcaResult, NcaUpdate, RetryFrom, TaskStatus, TaskUpdate, Track, TrackCheck,
    mix_found_no_audio_track,
};
pub use next::next_events;
pub use outcome::Outcome;
pub use snapshot::{Job, JobId, Snapshot, Video, submission_id};
