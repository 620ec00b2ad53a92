//! The embedded emulations of Airtable: [`RecordBackend`](super::RecordBackend) kept in the
//! service's own database, SQLite (`sqlite`, the default) or PostgreSQL (`postgres`, for
//! replicas sharing a database), both applying Airtable's rules for records (`rules`), so
//! that the engine cannot tell them from Airtable or from each other.

pub mod postgres;
mod rules;
pub mod sqlite;
