//! Helpers shared by the integration tests.

// Each test binary uses part of the support code.
#![allow(dead_code)]

pub mod airtable_double;
pub mod app;
pub mod goapi_double;
pub mod nca_double;
pub mod pg;
pub mod records_contract;
pub mod store_contract;
pub mod webdriver;
pub mod world;
