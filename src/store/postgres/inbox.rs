//! The shared inbox: accepts (the unique dedupe key decides between replicas), and the
//! worker's and the API's reads of the entries.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{PgStore, row_one, row_opt, rows, run};
use crate::domain::RecordId;
use crate::store::decode::{EntryColumns, to_row, uuid};
use crate::store::{
    Accepted, EntryState, EventFilter, EventQuery, Inbox, InboxEntry, NewEntry, Payload,
    StoreError, split_readable,
};

#[async_trait::async_trait]
impl Inbox for PgStore {
    async fn accept(&self, entry: NewEntry) -> Result<Accepted, StoreError> {
        let client = self.pool.get().await?;
        // One autocommitted statement for a new delivery. The unique constraint decides,
        // whichever replica a repeat reached: a concurrent first copy makes this insert
        // wait for its commit, then do nothing.
        if insert_entry(&client, &entry, true).await? {
            return Ok(Accepted::New(entry.event_id));
        }
        let first: String = row_one(
            &client,
            "SELECT event_id FROM inbox WHERE dedupe_key = $1",
            &[&entry.dedupe_key],
        )
        .await?
        .try_get(0)?;
        let of = uuid(&first, "event id")?;
        let dup = NewEntry {
            dedupe_key: None,
            payload: Payload::Duplicate { of },
            ..entry
        };
        // On its own: if this process dies first, the repeat was not acknowledged either,
        // and its sender's retry records it.
        insert_entry(&client, &dup, false).await?;
        Ok(Accepted::Duplicate {
            of,
            entry: dup.event_id,
        })
    }

    async fn pending_entries(&self, limit: u32) -> Result<Vec<InboxEntry>, StoreError> {
        let client = self.pool.get().await?;
        let rows = rows(&client,
                &format!(
                    // As the embedded store's scan (`PENDING_SEQS` there): the window
                    // carries only what it sorts on, never whole rows.
                    "SELECT {LIGHT_ENTRY_COLS} FROM inbox WHERE seq IN (
                         SELECT seq FROM (
                             SELECT seq, ROW_NUMBER() OVER (PARTITION BY video_id ORDER BY seq) AS nth
                             FROM (SELECT seq, video_id FROM inbox WHERE state = 'pending'
                                   ORDER BY seq LIMIT 4096) p
                         ) n WHERE nth <= 16 ORDER BY seq LIMIT $1
                     ) ORDER BY seq"
                ),
                &[&i64::from(limit)],
            )
            .await?;
        let (good, bad) = split_readable(rows.iter().map(|r| (r.get::<_, i64>(0), entry_row(r))))?;
        self.quarantine("inbox", bad).await?;
        Ok(good)
    }

    async fn is_pending(&self, event_id: Uuid) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let row = row_opt(
            &client,
            "SELECT state FROM inbox WHERE event_id = $1",
            &[&event_id.to_string()],
        )
        .await?;
        Ok(row.map(|r| r.get::<_, String>(0)).as_deref() == Some(EntryState::Pending.as_ref()))
    }

    async fn has_pending_entries(&self, video: &RecordId) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let row = row_one(
            &client,
            "SELECT EXISTS (SELECT 1 FROM inbox WHERE video_id = $1 AND state = $2)",
            &[&video.to_string(), &EntryState::Pending.as_ref()],
        )
        .await?;
        Ok(row.try_get(0)?)
    }

    async fn entry(&self, event_id: Uuid) -> Result<Option<InboxEntry>, StoreError> {
        let client = self.pool.get().await?;
        row_opt(
            &client,
            &format!("SELECT {ENTRY_COLS} FROM inbox WHERE event_id = $1"),
            &[&event_id.to_string()],
        )
        .await?
        .as_ref()
        .map(entry_row)
        .transpose()
    }

    async fn events(&self, q: EventQuery) -> Result<Vec<InboxEntry>, StoreError> {
        let mut sql = format!("SELECT {LIGHT_ENTRY_COLS} FROM inbox WHERE true");
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        match q.filter {
            Some(EventFilter::EffectFailed) => sql
                .push_str(" AND event_id IN (SELECT event_id FROM outbox WHERE state = 'failed')"),
            Some(EventFilter::Outcome(o)) => {
                args.push(Box::new(o.to_string()));
                sql.push_str(&format!(" AND outcome = ${}", args.len()));
            }
            None => {}
        }
        if let Some(v) = &q.video {
            args.push(Box::new(v.to_string()));
            sql.push_str(&format!(" AND video_id = ${}", args.len()));
        }
        if let Some(source) = q.source {
            args.push(Box::new(source.to_string()));
            sql.push_str(&format!(" AND source = ${}", args.len()));
        }
        if let Some(b) = q.before_seq {
            args.push(Box::new(b));
            sql.push_str(&format!(" AND seq < ${}", args.len()));
        }
        sql.push_str(&format!(
            " ORDER BY seq DESC LIMIT {}",
            q.limit.clamp(1, 500)
        ));
        let params: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let client = self.pool.get().await?;
        let rows = rows(&client, &sql, &params).await?;
        // An unreadable entry is listed by `quarantined`, not here.
        Ok(split_readable(rows.iter().map(|r| (r.get::<_, i64>(0), entry_row(r))))?.0)
    }
}

pub(super) const ENTRY_COLS: &str = "seq, event_id, video_id, source, endpoint, raw_body, received_at, payload, state, outcome, note, job_id";
/// The same without the raw body, for lists (a body can be a megabyte).
pub(super) const LIGHT_ENTRY_COLS: &str = "seq, event_id, video_id, source, endpoint, '' AS raw_body, received_at, payload, state, outcome, note, job_id";

pub(super) fn entry_row(r: &Row) -> Result<InboxEntry, StoreError> {
    EntryColumns {
        seq: r.try_get(0)?,
        event_id: r.try_get(1)?,
        video: r.try_get(2)?,
        source: r.try_get(3)?,
        endpoint: r.try_get(4)?,
        raw_body: r.try_get(5)?,
        received_at: r.try_get(6)?,
        payload: r.try_get(7)?,
        state: r.try_get(8)?,
        outcome: r.try_get(9)?,
        note: r.try_get(10)?,
        job: r.try_get(11)?,
    }
    .decode(Ok)
}

/// Inserts an entry. With `skip_repeat`, an entry whose dedupe key is taken is not
/// stored (returns false).
pub(super) async fn insert_entry(
    c: &impl GenericClient,
    e: &NewEntry,
    skip_repeat: bool,
) -> Result<bool, StoreError> {
    let payload = to_row(&e.payload, "payload")?;
    let on_conflict = if skip_repeat {
        "ON CONFLICT (dedupe_key) DO NOTHING"
    } else {
        ""
    };
    let n = run(
            c,
            &format!(
                "INSERT INTO inbox (event_id, video_id, source, endpoint, dedupe_key, raw_body, headers, received_at, payload)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) {on_conflict}"
            ),
            &[
                &e.event_id.to_string(),
                &e.video_id.to_string(),
                &e.source.to_string(),
                &e.endpoint,
                &e.dedupe_key,
                &e.raw_body,
                &e.headers,
                &e.received_at,
                &payload,
            ],
        )
        .await?;
    Ok(n == 1)
}
