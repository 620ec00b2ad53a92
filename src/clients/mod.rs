//! Clients of the external services (NCA Toolkit, GoAPI).

pub mod address;
mod error;
pub mod goapi;
mod http;
pub mod nca;
pub mod services;
pub mod track;

pub use error::ClientError;
pub use goapi::{CreateTask, GoapiClient, GoapiConfig};
pub use nca::{MixRequest, NcaAccepted, NcaClient, NcaConfig, compose_body};
pub use services::{Goapi, Nca, TrackHost};
