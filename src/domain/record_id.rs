use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An Airtable record id: `rec` followed by exactly 14 ASCII letters or digits.
///
/// Only values of this type ever reach a formula, a URL path or a log line, which is
/// why the parser is strict: anything else a caller sends stays outside.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecordId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an Airtable record id (expected `rec` and 14 letters or digits)")]
pub struct RecordIdError;

impl RecordId {
    pub fn parse(s: &str) -> Result<Self, RecordIdError> {
        let ok = s.len() == 17
            && s.starts_with("rec")
            && s[3..].bytes().all(|b| b.is_ascii_alphanumeric());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(RecordIdError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RecordId {
    type Err = RecordIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for RecordId {
    type Error = RecordIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<RecordId> for String {
    fn from(id: RecordId) -> Self {
        id.0
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_ids() {
        assert!(RecordId::parse("recA1b2C3d4E5f6G7").is_ok());
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "rec",
            "recA1b2C3d4E5f6G",
            "recA1b2C3d4E5f6G78",
            "tblA1b2C3d4E5f6G7",
            "recA1b2C3d4E5f6G'",
            "recA1b2C3d4E5f6\u{e9}",
            "rec') OR TRUE() OR ('",
        ] {
            assert!(RecordId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
