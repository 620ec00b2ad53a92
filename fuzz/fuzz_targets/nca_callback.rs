//! `POST /webhooks/nca-toolkit` bodies: `parse_nca` on arbitrary bytes. No panic; a result
//! is never taken from a 202; success only with code 200 and an http(s) URL; a failure
//! always has a reason; every field is bounded; the inbox round trip is exact.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use reelstate::webhook::parse_nca;

fuzz_target!(|body: &[u8]| {
    let parsed = parse_nca(body);
    match &parsed {
        Ok(w) => common::check_nca(w),
        Err(e) => common::check_error(e),
    }
    assert_eq!(parse_nca(body), parsed);
});
