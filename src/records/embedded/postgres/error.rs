//! Running a statement, and what its failure means: a conflict lost to another writer (run
//! the write again), an outage (transient), or anything else (permanent).

use deadpool_postgres::{GenericClient, PoolError};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::records::RecordsError;

pub(super) async fn query(
    c: &impl GenericClient,
    what: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, Error> {
    let statement = c.prepare_cached(sql).await.map_err(db(what))?;
    c.query(&statement, params).await.map_err(db(what))
}

pub(super) async fn execute(
    c: &impl GenericClient,
    what: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, Error> {
    let statement = c.prepare_cached(sql).await.map_err(db(what))?;
    c.execute(&statement, params).await.map_err(db(what))
}

/// What can go wrong inside this module; [`RecordsError`] is what leaves it.
#[derive(Debug, thiserror::Error)]
pub(super) enum Error {
    #[error(transparent)]
    Records(#[from] RecordsError),
    #[error("records database error while {what}: {}", describe(.source))]
    Db {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("records connection pool: {}", describe_pool(.0))]
    Pool(#[from] PoolError),
}

pub(super) fn db(what: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |source| Error::Db { what, source }
}

impl Error {
    /// Lost to a concurrent write; running the whole write again will do. Deadlocks
    /// should not happen (see the module's notes), but if one does, this is its remedy.
    pub(super) fn is_conflict(&self) -> bool {
        let Error::Db { source, .. } = self else {
            return false;
        };
        source.code().is_some_and(|c| {
            *c == SqlState::LOCK_NOT_AVAILABLE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
        })
    }
}

impl From<Error> for RecordsError {
    fn from(e: Error) -> Self {
        let transient = match &e {
            Error::Records(_) => false,
            Error::Db { source, .. } => match source.code() {
                Some(code) => is_transient_state(code),
                // No SQLSTATE: the connection broke (closed, IO), or a value did not
                // convert, which the fixed schema rules out unless something is broken.
                None => source.is_closed() || has_io_source(source),
            },
            Error::Pool(PoolError::Backend(source)) => {
                // Connecting failed: refused, timed out, or the server said why.
                source.code().is_none_or(is_transient_state)
            }
            Error::Pool(PoolError::Timeout(_) | PoolError::Closed) => true,
            Error::Pool(PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_)) => false,
        };
        match e {
            Error::Records(e) => e,
            e if transient => RecordsError::Transient(e.to_string()),
            e => {
                let missing_tables = matches!(
                    &e,
                    Error::Db { source, .. } if source.code() == Some(&SqlState::UNDEFINED_TABLE)
                );
                let hint = if missing_tables {
                    " (are the migrations applied? crate::pg::migrate)"
                } else {
                    ""
                };
                RecordsError::Permanent {
                    status: 500,
                    kind: "POSTGRES_ERROR".into(),
                    message: format!("{e}{hint}"),
                }
            }
        }
    }
}

/// SQLSTATEs that say "later": the connection or server (08, 57P0x: shutting down or
/// starting), resources (53: too many connections, disk full), lost conflicts (40), and
/// timeouts (57014 statement timeout, 55P03 lock timeout). The rest are constraint,
/// data or schema errors, which the same write will meet again.
fn is_transient_state(code: &SqlState) -> bool {
    let c = code.code();
    c.starts_with("08")
        || c.starts_with("40")
        || c.starts_with("53")
        || c.starts_with("57P0")
        || *code == SqlState::QUERY_CANCELED
        || *code == SqlState::LOCK_NOT_AVAILABLE
}

fn has_io_source(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// tokio-postgres prints a server error as just "db error"; the server's message and
/// SQLSTATE are what say what happened.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{db} (SQLSTATE {})", db.code().code()),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

fn describe_pool(e: &PoolError) -> String {
    match e {
        PoolError::Backend(source) => format!("connecting: {}", describe(source)),
        other => other.to_string(),
    }
}

pub(super) fn corrupt(message: String) -> RecordsError {
    RecordsError::Permanent {
        status: 500,
        kind: "POSTGRES_CORRUPT_RECORD".into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_conflicts_and_outages_are_transient_the_rest_permanent() {
        for code in [
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::CONNECTION_FAILURE,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::QUERY_CANCELED,
        ] {
            assert!(is_transient_state(&code), "{code:?} is worth a retry");
        }
        for code in [
            SqlState::UNIQUE_VIOLATION,
            SqlState::FOREIGN_KEY_VIOLATION,
            SqlState::CHECK_VIOLATION,
            SqlState::CHARACTER_NOT_IN_REPERTOIRE,
            SqlState::UNDEFINED_TABLE,
            SqlState::INVALID_PASSWORD,
        ] {
            assert!(!is_transient_state(&code), "{code:?} will fail again");
        }
    }
}
