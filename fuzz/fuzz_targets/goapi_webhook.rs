//! `POST /webhooks/goapi` bodies: `parse_goapi` on arbitrary bytes. No panic; a parse that
//! succeeds has a clean, bounded task id, bounded fields, http(s) track URLs, and survives
//! the inbox's JSON round trip unchanged; the reconciler's entry point agrees with it.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use reelstate::webhook::{parse_goapi, parse_task_object};

fuzz_target!(|body: &[u8]| {
    let parsed = parse_goapi(body);
    match &parsed {
        Ok(w) => common::check_goapi(w),
        Err(e) => common::check_error(e),
    }
    // Pure: the same body gives the same answer.
    assert_eq!(parse_goapi(body), parsed);
    // The reconciler parses GET-task replies with `parse_task_object`: a JSON object must
    // give the same answer through either door.
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && v.is_object()
    {
        assert_eq!(parse_task_object(&v, None), parsed);
    }
});
