//! The reconciler's NCA entry point: `parse_nca_status` on any JSON value. No panic; a
//! `done` job carries a result that passes the callback parser's checks.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use reelstate::webhook::{NcaJobState, parse_nca_status};

fuzz_target!(|body: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    match parse_nca_status(&v) {
        Ok(NcaJobState::Done(w)) => {
            if let Some(m) = &w.message {
                assert!(m.len() <= reelstate::webhook::nca::MAX_MESSAGE_BYTES);
            }
            common::check_nca_update(&w.update);
        }
        Ok(_) => {}
        Err(e) => common::check_error(&e),
    }
});
