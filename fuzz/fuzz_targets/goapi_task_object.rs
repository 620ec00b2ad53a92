//! The reconciler's entry point, `parse_task_object(&Value, Option<i64>)`, on any JSON
//! value (objects or not) and any timestamp override. No panic; the override wins.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use reelstate::webhook::parse_task_object;

fuzz_target!(|data: &[u8]| {
    // `T` and 8 bytes choose a timestamp override; anything else is JSON alone (so the
    // GoAPI fixtures are seeds as they are).
    let (ts, json) = match data {
        [b'T', rest @ ..] if rest.len() >= 8 => {
            let (ts, json) = rest.split_at(8);
            (
                Some(i64::from_le_bytes(ts.try_into().expect("8 bytes"))),
                json,
            )
        }
        _ => (None, data),
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    match parse_task_object(&v, ts) {
        Ok(w) => {
            common::check_goapi(&w);
            if ts.is_some() {
                assert_eq!(w.timestamp, ts, "the override did not win");
            }
        }
        Err(e) => common::check_error(&e),
    }
});
