//! Helpers shared by the integration tests.

pub mod goapi_double;
pub mod nca_double;
