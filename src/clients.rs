//! Clients of the external services (NCA Toolkit, GoAPI).
//!
//! `track`: whether a music track's URL still serves it (HEAD, then a one-byte ranged GET:
//! reachable, gone on 403/404/410, or inconclusive), for a retried mix (`Effect::CheckTrack`).
//! `address`: which hosts a URL from outside may make us reach (the track check: no loopback,
//! private, link-local or metadata address, every redirect hop judged and the connection pinned
//! to the judged addresses) or NCA reach (no link-local or metadata address), behind a resolver
//! seam the tests fill in.

pub(crate) mod address;
mod error;
pub(crate) mod goapi;
mod http;
pub mod nca;
pub mod services;
pub mod track;

pub use error::ClientError;
pub use goapi::{CreateTask, GoapiClient, GoapiConfig};
pub use nca::{MixRequest, NcaAccepted, NcaClient, NcaConfig, compose_body};
pub use services::{Goapi, Nca, TrackHost};
