//! reelstate: the music stage of an Airtable-driven video pipeline, as an explicit
//! state machine. See ARCHITECTURE.md for the map and its invariants.

pub mod backoff;
pub mod clients;
pub mod clock;
pub mod commands;
pub mod configuration;
pub mod diagram;
pub mod domain;
pub mod engine;
pub mod find_out;
pub mod http;
pub mod machine;
pub mod metrics;
pub mod pg;
pub mod records;
pub mod runners;
pub mod sandbox;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod trigger;
pub mod webhook;
