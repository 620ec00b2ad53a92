//! GoAPI's `x-webhook-secret` check (also the admin bearer token's). No panic; it passes
//! exactly when the provided secret equals a configured, non-empty one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use reelstate::webhook::{AuthError, verify_shared_secret};

fuzz_target!(|input: (Option<&str>, &str)| {
    let (provided, expected) = input;
    let r = verify_shared_secret(provided, expected);
    let should = matches!(provided, Some(p) if !p.is_empty() && p == expected);
    assert_eq!(r.is_ok(), should, "{provided:?} vs {expected:?}: {r:?}");
    match provided {
        None | Some("") => assert_eq!(r, Err(AuthError::Missing)),
        Some(_) if expected.is_empty() => assert!(matches!(r, Err(AuthError::Malformed(_)))),
        Some(p) if p != expected => assert_eq!(r, Err(AuthError::Mismatch)),
        Some(_) => {}
    }
    // The configured secret against itself, and against itself with one more byte.
    if !expected.is_empty() {
        assert_eq!(verify_shared_secret(Some(expected), expected), Ok(()));
        let longer = format!("{expected}\0");
        assert_eq!(
            verify_shared_secret(Some(&longer), expected),
            Err(AuthError::Mismatch)
        );
    }
});
