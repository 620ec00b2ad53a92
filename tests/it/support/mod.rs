//! Helpers shared by the integration tests.

pub mod airtable_double;
pub mod app;
pub mod cut_proxy;
pub mod goapi_double;
pub mod nca_double;
pub mod pg;
pub mod records_contract;
pub mod seed;
pub mod serve;
pub mod store_contract;
pub mod webdriver;
pub mod world;

use std::path::PathBuf;

use reelstate::records::Fields;
use serde_json::Value;

/// `tests/fixtures/`: captured and documented payloads of GoAPI and NCA.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A fixture's bytes, by its path under `tests/fixtures/` (`"goapi/udio_completed.json"`).
pub fn fixture(path: &str) -> Vec<u8> {
    let path = fixtures_dir().join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fixture as JSON.
pub fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// Record fields written as a JSON object literal.
pub fn fields(v: Value) -> Fields {
    match v {
        Value::Object(map) => map,
        other => panic!("test fields must be a JSON object, got {other}"),
    }
}
