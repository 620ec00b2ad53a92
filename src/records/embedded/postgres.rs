//! The records on PostgreSQL: [`RecordBackend`] with the embedded SQLite backend's
//! semantics (the contract suite in `tests/it/support` holds both to the same checks), for a
//! service that runs on PostgreSQL without Airtable, with several replicas writing at once.
//!
//! The tables come from migration 2 (`pg/migrations/0002_records.sql`), SQLite's layout:
//! one row per record, one per non-empty cell. The rules themselves (tables, links,
//! empties, ids, refusals) are `records::embedded::rules`, shared with SQLite. Here: the
//! writes' transactions and the upsert's lock; `write`, cells and links under row locks;
//! `read`, records read in one statement; `error`, what a failed statement means.
//!
//! SQLite makes every call atomic by serialising all writes; here replicas write side by
//! side under READ COMMITTED, and a write locks what it touches:
//! - A record's cells change only while its row in `records` is locked, and a link write
//!   locks the records on the other side too, so that two writers cannot lose each other's
//!   ids from an inverse link field. A write waits for locks only once, in one statement
//!   that takes them in id order, so writers queue instead of deadlocking. A record whose
//!   old links changed between the guess and the lock needs one more lock, which is
//!   taken without waiting; when it is held elsewhere the whole write is run again.
//! - An upsert holds a transaction-scoped advisory lock on its (table, field, value) from
//!   its lookup to its commit, so concurrent upserts of one key make one record. A unique
//!   constraint cannot say this: Airtable lets plain creates repeat a value (and then
//!   refuses an upsert that matches both), and so must we. Like Airtable's, a plain create
//!   racing an upsert of the same value can make a second record; the engine writes keyed
//!   records (jobs, webhook events) only by upsert.
//! - A read is one statement, so it sees one snapshot.
//!
//! One difference PostgreSQL imposes: a text cannot hold a NUL character, so a value with
//! one is refused (permanently) where SQLite would store it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Pool, Transaction};
use sha2::{Digest, Sha256};
use tokio_postgres::IsolationLevel;

use super::rules::{self, Checked, Schema};
use crate::domain::RecordId;
use crate::records::{Fields, Filter, Mapping, Record, RecordBackend, RecordsError, Write};
use error::{Error, corrupt, db, execute};
use read::{find_equals, load, load_created_since, load_equals};
use write::{Wait, current_links, link_targets, lock, write_fields};

mod error;
mod read;
mod write;

/// How often a write that lost to a concurrent one is tried in all. Losing again needs
/// another link change in the moment between a retry's guess and its lock.
const WRITE_ATTEMPTS: usize = 8;

/// The PostgreSQL store of records. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgRecords {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    schema: Schema,
}

impl PgRecords {
    /// The records in the pool's database (in its `search_path` schema), laid out as
    /// `mapping` says. This connects to nothing and creates no table: the caller runs
    /// [`crate::pg::migrate`] on the pool first (migration 2 makes the records' tables);
    /// until then every call fails with a permanent error that says so.
    pub fn new(pool: Pool, mapping: &Mapping) -> Result<Self, RecordsError> {
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                schema: Schema::from_mapping(mapping),
            }),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, Error> {
        Ok(self.inner.pool.get().await?)
    }

    async fn write_once(
        &self,
        table: &str,
        op: &Checked<'_>,
        fields: &Fields,
    ) -> Result<Record, Error> {
        let mut client = self.client().await?;
        // Said explicitly, whatever the server's default: an upsert's lookup must see what
        // was committed while it waited for its key's lock, so each statement needs a
        // snapshot of its own.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(db("starting a write"))?;
        match write_in(&tx, &self.inner.schema, table, op, fields).await {
            Ok(record) => {
                tx.commit().await.map_err(db("committing a write"))?;
                Ok(record)
            }
            Err(e) => {
                // Rolled back here rather than by dropping the transaction, which only
                // queues the rollback: its locks would stay held until the connection is
                // next polled. A rollback that fails leaves the first error the one to
                // report; the server ends the transaction with the broken connection.
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rolling back a failed records write");
                }
                Err(e)
            }
        }
    }
}

async fn write_in(
    tx: &Transaction<'_>,
    schema: &Schema,
    table: &str,
    op: &Checked<'_>,
    fields: &Fields,
) -> Result<Record, Error> {
    match op {
        Checked::Create => create_in(tx, schema, table, fields).await,
        Checked::Update(id) => update_in(tx, schema, table, id.as_str(), fields).await,
        Checked::Upsert { merge_on, key } => {
            execute(
                tx,
                "locking an upsert's key",
                "SELECT pg_advisory_xact_lock($1)",
                &[&upsert_lock(table, merge_on, key)],
            )
            .await?;
            // READ COMMITTED: this lookup sees whatever the previous holder of the lock
            // committed.
            let matches = find_equals(tx, table, merge_on, key).await?;
            match rules::upsert_target(table, merge_on, key, &matches)? {
                None => create_in(tx, schema, table, fields).await,
                Some(id) => update_in(tx, schema, table, id, fields).await,
            }
        }
    }
}

#[async_trait]
impl RecordBackend for PgRecords {
    async fn get(&self, table: &str, id: &RecordId) -> Result<Option<Record>, RecordsError> {
        self.inner.schema.check_table(table)?;
        let client = self.client().await?;
        Ok(load(&client, table, &[id.as_str()]).await?.pop())
    }

    async fn find(&self, table: &str, filter: &Filter) -> Result<Vec<Record>, RecordsError> {
        self.inner.schema.check_table(table)?;
        let client = self.client().await?;
        match filter {
            Filter::Equals { field, value } => Ok(load_equals(&client, table, field, value).await?),
            Filter::CreatedSince(since) => Ok(load_created_since(&client, table, since).await?),
            Filter::RecordIds(ids) => {
                let ids = rules::unique_ids(ids);
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                // `load` skips unknown ids and other tables' ids, like RECORD_ID().
                let mut found = load(&client, table, &refs).await?;
                // In the order asked for, as the SQLite backend answers.
                let position: HashMap<&str, usize> =
                    refs.iter().enumerate().map(|(i, id)| (*id, i)).collect();
                found.sort_by_key(|r| position.get(r.id.as_str()).copied());
                Ok(found)
            }
        }
    }

    /// A write is kept as asked for, so that one that lost to another can run again whole.
    async fn write(&self, table: &str, op: Write, fields: Fields) -> Result<Record, RecordsError> {
        self.inner.schema.check_table(table)?;
        let op = Checked::new(&op, &fields)?;
        let mut attempt = 1;
        loop {
            // Replicas share these tables: a writer that lost its video (paused past its
            // lease) must not land an older value after the new holder's.
            crate::records::fence::check_current().await?;
            match self.write_once(table, &op, &fields).await {
                Err(e) if e.is_conflict() && attempt < WRITE_ATTEMPTS => {
                    tracing::debug!(table, attempt, error = %e, "records write retried");
                    attempt += 1;
                }
                result => return result.map_err(RecordsError::from),
            }
        }
    }
}

async fn create_in(
    tx: &Transaction<'_>,
    schema: &Schema,
    table: &str,
    fields: &Fields,
) -> Result<Record, Error> {
    let writes = schema.plan(table, fields)?;
    let mut locked = lock(tx, &link_targets(&writes), Wait::Yes).await?;
    let id = insert_record(tx, table).await?;
    write_fields(tx, &id, &writes, &mut locked).await?;
    load(tx, table, &[id.as_str()])
        .await?
        .pop()
        .ok_or_else(|| corrupt(format!("record {id} vanished after insert")).into())
}

async fn update_in(
    tx: &Transaction<'_>,
    schema: &Schema,
    table: &str,
    id: &str,
    fields: &Fields,
) -> Result<Record, Error> {
    // Planned before the lock, to lock everything in one ordered statement; its error
    // waits until the record is known to exist, as a NotFound comes first on SQLite.
    let planned = schema.plan(table, fields);
    let mut wanted = BTreeSet::from([id.to_owned()]);
    if let Ok(writes) = &planned {
        wanted.extend(link_targets(writes));
        // A guess, read unlocked: the links this write will undo. `write_link` deals
        // with any that changed before the lock was held.
        wanted.extend(current_links(tx, id, writes).await?);
    }
    let mut locked = lock(tx, &wanted, Wait::Yes).await?;
    if locked.get(id).map(String::as_str) != Some(table) {
        return Err(RecordsError::NotFound(id.to_owned(), table.to_owned()).into());
    }
    let writes = planned?;
    write_fields(tx, id, &writes, &mut locked).await?;
    load(tx, table, &[id])
        .await?
        .pop()
        .ok_or_else(|| corrupt(format!("record {id} vanished after update")).into())
}

/// Inserts an empty record of `table` under a fresh id.
async fn insert_record(tx: &Transaction<'_>, table: &str) -> Result<String, Error> {
    for _ in 0..rules::ID_ATTEMPTS {
        let id = rules::draw_id();
        let inserted = execute(
            tx,
            "inserting a record",
            "INSERT INTO records (id, tbl) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            &[&id, &table],
        )
        .await?;
        if inserted == 1 {
            return Ok(id);
        }
    }
    Err(corrupt("could not draw an unused record id".into()).into())
}

/// The advisory lock an upsert of `key` holds: a hash of the three parts, each prefixed by
/// its length so that no two triples run together into the same bytes. Two keys that
/// share a hash (or another schema's upsert of the same key) only wait for each other.
fn upsert_lock(table: &str, field: &str, key: &str) -> i64 {
    let mut hash = Sha256::new();
    hash.update(b"reelstate records upsert");
    for part in [table, field, key] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_locks_tell_the_parts_apart() {
        let a = upsert_lock("Jobs", "Job ID", "x");
        assert_eq!(a, upsert_lock("Jobs", "Job ID", "x"));
        assert_ne!(a, upsert_lock("Jobs", "Job IDx", ""));
        assert_ne!(a, upsert_lock("Webhook Events", "Job ID", "x"));
    }
}
