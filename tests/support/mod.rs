//! Helpers shared by the integration tests.

pub mod airtable_double;
