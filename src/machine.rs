//! The state machine: pure functions from (snapshot, event) to a decision.
//!
//! Invariant: nothing in this module performs IO, reads a clock, generates randomness,
//! or knows any wire format (no tokio, warp, reqwest, serde_json). The clock and new ids
//! arrive in [`Ctx`]; side effects leave as [`Effect`] values for the executor.
//!
//! Files: `decide.rs` (what a decision is, and the effects a changed snapshot asks for) with
//! its steps per family of events in `decide/`: the operator's `requests`, the services'
//! `answers`, `job_events`, on the shared `jobs` helpers; `effect.rs` (an `Effect` knows what it
//! writes, `target()`, and whether an operator may replay it, `replayable()`); `catalogue.rs`
//! (explores decide() over the canonical snapshots and events of `catalogue/canonical.rs` to
//! produce the `states/` rows and the Mermaid diagram); `next.rs` (`next_events`).

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
pub use effect::{Effect, EffectKind, JobPatch, Table, Target, VideoPatch};
pub use event::{
    Event, EventClass, NcaResult, NcaUpdate, RetryFrom, TaskStatus, TaskUpdate, Track, TrackCheck,
    mix_found_no_audio_track,
};
pub(crate) use next::next_events;
pub use outcome::Outcome;
pub use snapshot::{Job, JobId, Snapshot, Video, submission_id};
