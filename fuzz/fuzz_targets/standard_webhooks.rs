//! The Standard Webhooks verifier with arbitrary secrets, headers, body, clock and
//! tolerance. No panic; arbitrary input never verifies; what `sign` produces verifies,
//! and stops verifying when the body changes or the clock moves past the tolerance.

#![no_main]

use std::time::Duration;

use chrono::DateTime;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use reelstate::webhook::{AuthError, StandardWebhooks};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// `whsec_…` strings as configured, or raw keys.
    secrets: Vec<&'a str>,
    keys: Vec<Vec<u8>>,
    raw_keys: bool,
    msg_id: &'a str,
    timestamp: &'a str,
    signature: &'a str,
    body: &'a [u8],
    now: i64,
    tolerance: Option<u32>,
}

fuzz_target!(|input: Input| {
    // Configuration parsing: never panics, whatever the strings.
    let from_list = StandardWebhooks::from_list(&input.secrets.join(","));
    let verifier = if input.raw_keys {
        StandardWebhooks::from_keys(input.keys.clone())
    } else {
        StandardWebhooks::new(&input.secrets)
    };
    let Ok(mut verifier) = verifier else {
        return;
    };
    let _ = from_list;
    if let Some(t) = input.tolerance {
        verifier = verifier.with_tolerance(Duration::from_secs(u64::from(t)));
    }
    let tolerance = i64::from(input.tolerance.unwrap_or(300));
    // Any instant chrono can hold (±262,000 years); others fall back to a fixed one.
    let now = DateTime::from_timestamp(input.now, 0)
        .unwrap_or_else(|| DateTime::from_timestamp(1_765_000_000, 0).expect("valid"));

    // Arbitrary headers never verify: forging an HMAC-SHA256 is not something a fuzzer
    // does, so a success here would be a hole in the verifier.
    let r = verifier.verify(
        input.msg_id,
        input.timestamp,
        input.signature,
        input.body,
        now,
    );
    assert!(r.is_err(), "arbitrary input verified");

    // What we sign verifies, among other (junk) entries too.
    if input.msg_id.is_empty() {
        return;
    }
    let ts = now.timestamp();
    let sig = verifier.sign(input.msg_id, ts, input.body);
    let ts_text = ts.to_string();
    assert_eq!(
        verifier.verify(input.msg_id, &ts_text, &sig, input.body, now),
        Ok(())
    );
    let header = format!(
        "{} {sig}",
        input
            .signature
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert_eq!(
        verifier.verify(input.msg_id, &ts_text, &header, input.body, now),
        Ok(()),
        "a valid signature among others was refused"
    );
    // A changed body does not.
    let mut other = input.body.to_vec();
    other.push(b'x');
    assert_eq!(
        verifier.verify(input.msg_id, &ts_text, &sig, &other, now),
        Err(AuthError::Mismatch)
    );
    // Nor does a changed id.
    let other_id = format!("{}x", input.msg_id);
    assert_eq!(
        verifier.verify(&other_id, &ts_text, &sig, input.body, now),
        Err(AuthError::Mismatch)
    );
    // Nor a signature checked after the tolerance has passed.
    if let Some(later) = now
        .timestamp()
        .checked_add(tolerance + 1)
        .and_then(|t| DateTime::from_timestamp(t, 0))
    {
        assert_eq!(
            verifier.verify(input.msg_id, &ts_text, &sig, input.body, later),
            Err(AuthError::Timestamp)
        );
    }
});
