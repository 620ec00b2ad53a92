//! Poison rows: a row the store cannot turn back into an entry or an effect must not stop
//! the scan it is part of (every video would stall behind it). Scans read each row on
//! its own; the unreadable ones are set aside (state `quarantined`, with the reason) and
//! the rest go on.

use super::StoreError;

/// The readable values, and each unreadable row's key with the reason.
pub(crate) type Split<K, T> = (Vec<T>, Vec<(K, String)>);

/// Splits read rows into the readable values and the keys of the unreadable ones, with
/// the reason. Only [`StoreError::Corrupt`] is the row's fault; any other error (the
/// database itself failing) fails the whole scan as before.
pub(crate) fn split_readable<K, T>(
    rows: impl IntoIterator<Item = (K, Result<T, StoreError>)>,
) -> Result<Split<K, T>, StoreError> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (key, row) in rows {
        match row {
            Ok(v) => good.push(v),
            Err(StoreError::Corrupt(why)) => bad.push((key, why)),
            Err(e) => return Err(e),
        }
    }
    Ok((good, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_rows_are_set_aside_and_other_errors_fail_the_scan() {
        let rows = vec![
            (1, Ok("a")),
            (
                2,
                Err(StoreError::Corrupt("payload: unknown variant".into())),
            ),
            (3, Ok("c")),
        ];
        let (good, bad) = split_readable(rows).unwrap();
        assert_eq!(good, vec!["a", "c"]);
        assert_eq!(bad, vec![(2, "payload: unknown variant".to_owned())]);
        let failing: Vec<(i32, Result<&str, StoreError>)> =
            vec![(1, Err(StoreError::Join("gone".into())))];
        assert!(split_readable(failing).is_err());
    }
}
