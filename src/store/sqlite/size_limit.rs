//! A ceiling on the store's file (`REELSTATE_DB_MAX_MB`): SQLite's `max_page_count` on the
//! connection every store write goes through. Past it a write fails with SQLITE_FULL, as
//! on a full disk, so an operator can keep the store from filling a disk it shares, and a
//! test can fill it without a filesystem of its own.

use super::SqliteStore;
use crate::store::StoreError;

impl SqliteStore {
    /// Limits the file to `bytes`, rounded down to whole pages (at least the file's size
    /// now: SQLite never sets the limit below it). Returns the limit in pages.
    pub(crate) fn limit_size(&self, bytes: u64) -> Result<u64, StoreError> {
        let c = self
            .conn
            .lock()
            .map_err(|_| StoreError::Join("store connection poisoned".into()))?;
        let page: i64 = c.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let pages = (bytes / page.max(512) as u64).max(1);
        let set: i64 = c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
            r.get(0)
        })?;
        Ok(set.max(0) as u64)
    }
}
