//! How SQLite's failures read as [`RecordsError`]s: busy is worth retrying, the rest is not.

use crate::records::RecordsError;

/// A call whose blocking task or batch ended without an answer (a panic).
pub(super) fn task_failed(message: String) -> RecordsError {
    RecordsError::Permanent {
        status: 500,
        kind: "SQLITE_TASK_FAILED".into(),
        message,
    }
}

pub(super) fn corrupt(message: String) -> RecordsError {
    RecordsError::Permanent {
        status: 500,
        kind: "SQLITE_CORRUPT_RECORD".into(),
        message,
    }
}

/// Maps a SQLite error met while doing `what`: a locked database is worth retrying (another
/// writer held it past the busy timeout); anything else will fail again the same way.
pub(super) fn db(what: &str) -> impl Fn(rusqlite::Error) -> RecordsError + '_ {
    move |e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            RecordsError::Transient(format!("records database busy while {what}: {e}"))
        }
        _ => RecordsError::Permanent {
            status: 500,
            kind: "SQLITE_ERROR".into(),
            message: format!("records database error while {what}: {e}"),
        },
    }
}
