//! reelstate: the music stage of an Airtable-driven video pipeline, as an explicit
//! state machine. See ARCHITECTURE.md for the map and its invariants.

pub mod clients;
pub mod domain;
pub mod machine;
pub mod records;
pub mod text;
pub mod webhook;
