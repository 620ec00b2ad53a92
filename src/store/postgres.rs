//! The shared store: PostgreSQL, for several replicas on one database. Same tables and
//! semantics as the embedded store; what differs is who may work on what. Leases are rows
//! claimed with `FOR UPDATE SKIP LOCKED` (replicas never wait on each other's claims),
//! renewed while held, and fenced: a decision commits only under the token its lease was
//! claimed with, so a replica that stalled past its lease cannot overwrite the work of the
//! replica that took over.

mod overview;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{
    Accepted, ActiveJob, Commit, Depths, EffectState, EventQuery, HistoryRow, InboxEntry, Lane,
    Lease, NewEntry, OutboxEntry, Payload, Pruned, Quarantined, Source, Store, StoreError,
    projection_sql, split_readable,
};
use crate::domain::RecordId;
use crate::machine::{Effect, JobId, Snapshot};
use crate::pg::PgError;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(PgError::Db(e))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Postgres(e.into())
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// Connections per replica: intake, the worker, the executor and the API share them.
const POOL_SIZE: usize = 16;

/// Renewal ticks between two clean-ups of long-expired lease rows.
const CLEANUP_EVERY: u64 = 600;

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// This process's name in the leases table: unique per start, so that a restarted
    /// replica never mistakes its dead predecessor's leases for its own.
    owner: String,
    lease_for: Duration,
    /// The leases this process holds, so that it never claims one twice and renews only
    /// what it holds.
    held: Arc<Mutex<HashSet<(Lane, RecordId)>>>,
}

impl PgStore {
    /// Connects, applies the migrations (under their lock) and starts renewing the
    /// leases this process will hold. A lease not renewed for `lease_for` (the process
    /// died or stalled) may be claimed by another replica.
    pub async fn connect(url: &str, lease_for: Duration) -> Result<Self, StoreError> {
        let pool = crate::pg::pool(url, POOL_SIZE)?;
        crate::pg::migrate(&pool).await?;
        // synchronous_commit is the session's (crate::pg::pool); fsync is the server's.
        if let Ok(c) = pool.get().await
            && let Ok(row) = c.query_one("SHOW fsync", &[]).await
            && row.get::<_, String>(0) != "on"
        {
            tracing::warn!(
                "PostgreSQL runs with fsync = off: an acknowledged webhook can be lost on a crash of its machine"
            );
        }
        let store = Self {
            pool,
            owner: format!("{}-{}", std::process::id(), Uuid::new_v4().simple()),
            lease_for: lease_for.max(Duration::from_millis(300)),
            held: Arc::default(),
        };
        tokio::spawn(renew(
            Arc::downgrade(&store.held),
            store.pool.clone(),
            store.owner.clone(),
            store.lease_for,
        ));
        Ok(store)
    }

    /// The pool, for the other parts kept in the same database (records, the Airtable
    /// request budget).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn secs(&self) -> f64 {
        self.lease_for.as_secs_f64()
    }

    /// Sets unreadable rows aside (`table` is `inbox` or `outbox`, keyed by `seq`) with
    /// the reason, so that the scans that found them go on without them.
    async fn quarantine(
        &self,
        table: &'static str,
        rows: Vec<(i64, String)>,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = match table {
            "inbox" => {
                "UPDATE inbox SET state = 'quarantined', note = $2, processed_at = now()
                 WHERE seq = $1 AND state = 'pending'"
            }
            _ => {
                "UPDATE outbox SET state = 'quarantined', last_error = $2, updated_at = now()
                 WHERE seq = $1 AND state = 'pending'"
            }
        };
        let client = self.pool.get().await?;
        for (seq, why) in &rows {
            tracing::error!(table, seq, reason = %why, "unreadable row quarantined");
            run(&client, sql, &[seq, why]).await?;
        }
        Ok(())
    }

    async fn finish_effect(
        &self,
        effect_id: &str,
        state: EffectState,
        error: Option<String>,
        follow_up: Option<NewEntry>,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let changed = run(
            &tx,
            "UPDATE outbox SET state = $2, attempts = attempts + 1, last_error = $3,
                    updated_at = now(), started_at = NULL
             WHERE effect_id = $1 AND state = 'pending'",
            &[&effect_id, &state.as_ref(), &error],
        )
        .await?;
        // A late result of an effect already finished (by another replica, or by the
        // callback that made the call unneeded) stores nothing.
        if changed == 1
            && let Some(entry) = &follow_up
        {
            // Named after the effect: a retried commit stores the event once.
            insert_entry(&tx, entry, true).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Keeps this process's leases alive, a third of a lease period apart; ends with the
/// store. A renewal that fails is retried at the next tick; a lease that expired meanwhile
/// is not revived (another replica may be taking it): the fencing token then stops this
/// process's writes.
async fn renew(
    held: std::sync::Weak<Mutex<HashSet<(Lane, RecordId)>>>,
    pool: Pool,
    owner: String,
    lease_for: Duration,
) {
    let every = lease_for / 3;
    let mut tick: u64 = 0;
    loop {
        tokio::time::sleep(every).await;
        let Some(held) = held.upgrade() else { return };
        let (lanes, videos): (Vec<String>, Vec<String>) = match held.lock() {
            Ok(h) => h
                .iter()
                .map(|(l, v)| (l.to_string(), v.to_string()))
                .unzip(),
            Err(_) => return,
        };
        drop(held);
        tick += 1;
        if tick.is_multiple_of(CLEANUP_EVERY)
            && let Ok(c) = pool.get().await
        {
            // A lease row only matters while it is held; long-expired ones are dropped
            // (a later claim makes the row again).
            let _ = run(
                &c,
                "DELETE FROM leases WHERE expires_at < now() - interval '1 hour'",
                &[],
            )
            .await;
        }
        if lanes.is_empty() {
            continue;
        }
        let renewed = async {
            let c = pool.get().await?;
            run(
                &c,
                "UPDATE leases SET expires_at = now() + make_interval(secs => $4)
                 WHERE owner = $1 AND expires_at > now()
                   AND (lane, video_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))",
                &[&owner, &lanes, &videos, &lease_for.as_secs_f64()],
            )
            .await
            .map_err(StoreError::from)
        }
        .await;
        if let Err(e) = renewed {
            tracing::warn!(error = %e, "could not renew this replica's leases");
        }
    }
}

/// Statements are prepared once per connection and cached: unprepared, every query would
/// cost an extra round trip to PostgreSQL for its parse.
async fn run(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let st = c.prepare_cached(sql).await?;
    c.execute(&st, params).await
}

async fn rows(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let st = c.prepare_cached(sql).await?;
    c.query(&st, params).await
}

async fn row_opt(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
    let st = c.prepare_cached(sql).await?;
    c.query_opt(&st, params).await
}

async fn row_one(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, tokio_postgres::Error> {
    let st = c.prepare_cached(sql).await?;
    c.query_one(&st, params).await
}

const ENTRY_COLS: &str = "seq, event_id, video_id, source, endpoint, raw_body, received_at, payload, state, outcome, note, job_id";
/// The same without the raw body, for lists (a body can be a megabyte).
const LIGHT_ENTRY_COLS: &str = "seq, event_id, video_id, source, endpoint, '' AS raw_body, received_at, payload, state, outcome, note, job_id";
const OUTBOX_COLS: &str = "seq, effect_id, video_id, event_id, effect, state, attempts, next_attempt_at, last_error, started_at";

fn entry_row(r: &Row) -> Result<InboxEntry, StoreError> {
    let event_id: String = r.try_get(1)?;
    let video: String = r.try_get(2)?;
    let source: String = r.try_get(3)?;
    let payload: String = r.try_get(7)?;
    let job: Option<String> = r.try_get(11)?;
    Ok(InboxEntry {
        seq: r.try_get(0)?,
        event_id: Uuid::parse_str(&event_id).map_err(|e| corrupt("event id", e))?,
        video_id: RecordId::parse(&video).map_err(|e| corrupt("video id", e))?,
        source: source.parse::<Source>().map_err(|e| corrupt("source", e))?,
        endpoint: r.try_get(4)?,
        raw_body: r.try_get(5)?,
        received_at: r.try_get(6)?,
        payload: serde_json::from_str(&payload).map_err(|e| corrupt("payload", e))?,
        state: parse(r.try_get(8)?, "entry state")?,
        outcome: r
            .try_get::<_, Option<String>>(9)?
            .map(|o| parse(o, "outcome"))
            .transpose()?,
        note: r.try_get(10)?,
        job: job
            .map(|j| {
                Uuid::parse_str(&j)
                    .map(JobId)
                    .map_err(|e| corrupt("job id", e))
            })
            .transpose()?,
    })
}

/// A state or outcome column, by its strum spelling.
fn parse<T: std::str::FromStr>(text: String, what: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| corrupt(what, e))
}

fn outbox_row(r: &Row) -> Result<OutboxEntry, StoreError> {
    let video: String = r.try_get(2)?;
    let event_id: String = r.try_get(3)?;
    let effect: String = r.try_get(4)?;
    let attempts: i32 = r.try_get(6)?;
    Ok(OutboxEntry {
        seq: r.try_get(0)?,
        effect_id: r.try_get(1)?,
        video_id: RecordId::parse(&video).map_err(|e| corrupt("video id", e))?,
        event_id: Uuid::parse_str(&event_id).map_err(|e| corrupt("event id", e))?,
        effect: serde_json::from_str::<Effect>(&effect).map_err(|e| corrupt("effect", e))?,
        state: parse(r.try_get(5)?, "effect state")?,
        attempts: attempts.max(0) as u32,
        next_attempt_at: r.try_get(7)?,
        last_error: r.try_get(8)?,
        started_at: r.try_get(9)?,
    })
}

/// Inserts an entry. With `skip_repeat`, an entry whose dedupe key is taken is not
/// stored (returns false).
async fn insert_entry(
    c: &impl GenericClient,
    e: &NewEntry,
    skip_repeat: bool,
) -> Result<bool, StoreError> {
    let payload = serde_json::to_string(&e.payload).map_err(|err| corrupt("payload", err))?;
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

#[async_trait::async_trait]
impl Store for PgStore {
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
        let of = Uuid::parse_str(&first).map_err(|e| corrupt("event id", e))?;
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
                    "SELECT {LIGHT_ENTRY_COLS} FROM (
                         SELECT *, ROW_NUMBER() OVER (PARTITION BY video_id ORDER BY seq) AS nth
                         FROM (SELECT * FROM inbox WHERE state = 'pending' ORDER BY seq LIMIT 4096) p
                     ) n WHERE nth <= 16 ORDER BY seq LIMIT $1"
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
        Ok(row.map(|r| r.get::<_, String>(0)).as_deref() == Some("pending"))
    }

    async fn has_pending_entries(&self, video: &RecordId) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let row = row_one(
            &client,
            "SELECT EXISTS (SELECT 1 FROM inbox WHERE video_id = $1 AND state = 'pending')",
            &[&video.to_string()],
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
        match q.outcome.as_deref() {
            // Failed: an effect of the event failed for good (recorded, replayable).
            Some("failed") => sql
                .push_str(" AND event_id IN (SELECT event_id FROM outbox WHERE state = 'failed')"),
            Some(o) => {
                args.push(Box::new(o.to_owned()));
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

    async fn snapshot(&self, video: &RecordId) -> Result<Option<Snapshot>, StoreError> {
        let client = self.pool.get().await?;
        let row = row_opt(
            &client,
            "SELECT snapshot FROM video_state WHERE video_id = $1",
            &[&video.to_string()],
        )
        .await?;
        row.map(|r| {
            let s: String = r.get(0);
            serde_json::from_str(&s).map_err(|e| corrupt("snapshot", e))
        })
        .transpose()
    }

    async fn commit(&self, commit: Commit, lease: &Lease) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let video = commit.video_id.to_string();
        // Fencing: FOR SHARE keeps the lease row from being claimed until this commits,
        // and the token proves nobody claimed it since this holder did.
        let token: Option<(i64, String)> = row_opt(
            &tx,
            "SELECT token, owner FROM leases WHERE lane = $1 AND video_id = $2 FOR SHARE",
            &[&Lane::Worker.as_ref(), &video],
        )
        .await?
        .map(|r| (r.get(0), r.get(1)));
        if lease.lane() != Lane::Worker
            || lease.video() != &commit.video_id
            || token != Some((lease.token(), self.owner.clone()))
        {
            return Err(StoreError::LeaseLost(video));
        }
        let at = commit.at;
        if let Some(s) = &commit.snapshot {
            let json = serde_json::to_string(s).map_err(|e| corrupt("snapshot", e))?;
            run(&tx,
                "INSERT INTO video_state (video_id, snapshot, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (video_id) DO UPDATE SET snapshot = EXCLUDED.snapshot, updated_at = EXCLUDED.updated_at",
                &[&video, &json, &at],
            )
            .await?;
            for j in &s.jobs {
                let job = j.id.to_string();
                run(
                    &tx,
                    "INSERT INTO job_index (job_id, video_id) VALUES ($1, $2)
                     ON CONFLICT (job_id) DO NOTHING",
                    &[&job, &video],
                )
                .await?;
                // The reconciler's worklist: jobs still waiting for their service.
                if j.status.is_active() {
                    run(&tx,
                        "INSERT INTO active_jobs (job_id, video_id, kind, external_id, since, next_check_at)
                         VALUES ($1, $2, $3, $4, $5, $5)
                         ON CONFLICT (job_id) DO UPDATE SET external_id = EXCLUDED.external_id",
                        &[&job, &video, &j.kind.name(), &j.external_id, &at],
                    )
                    .await?;
                } else {
                    run(&tx, "DELETE FROM active_jobs WHERE job_id = $1", &[&job]).await?;
                }
            }
        }
        for (job, record) in &commit.job_records {
            run(
                &tx,
                "UPDATE job_index SET record_id = $2 WHERE job_id = $1",
                &[&job.to_string(), &record.to_string()],
            )
            .await?;
        }
        if let Some(h) = &commit.history {
            run(&tx,
                "INSERT INTO history (video_id, event_id, event, from_status, to_status, outcome, at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&video, &h.event_id.to_string(), &h.event, &h.from, &h.to, &h.outcome.as_ref(), &h.at],
            )
            .await?;
        }
        for (id, effect) in &commit.effects {
            let json = serde_json::to_string(effect).map_err(|e| corrupt("effect", e))?;
            // An effect id names one effect for ever: storing it again is a no-op.
            run(&tx,
                "INSERT INTO outbox (effect_id, video_id, event_id, kind, effect, next_attempt_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (effect_id) DO NOTHING",
                &[id, &video, &commit.event_id.to_string(), &effect.kind(), &json, &at],
            )
            .await?;
        }
        run(&tx,
            "UPDATE inbox SET state = 'done', outcome = $2, note = $3, job_id = $4, processed_at = $5
             WHERE event_id = $1",
            &[
                &commit.event_id.to_string(),
                &commit.outcome.as_ref(),
                &commit.note,
                &commit.job.map(|j| j.to_string()),
                &at,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim(&self, lane: Lane, videos: Vec<RecordId>) -> Result<Vec<Lease>, StoreError> {
        // First among this process's own tasks, then in the database among replicas.
        let wanted: Vec<RecordId> = match self.held.lock() {
            Ok(mut h) => videos
                .into_iter()
                .filter(|v| h.insert((lane, v.clone())))
                .collect(),
            Err(_) => return Ok(Vec::new()),
        };
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let unclaim = |videos: &[RecordId]| {
            if let Ok(mut h) = self.held.lock() {
                for v in videos {
                    h.remove(&(lane, v.clone()));
                }
            }
        };
        // Sorted: two replicas creating the same new lease rows lock them in one order.
        let mut ids: Vec<String> = wanted.iter().map(ToString::to_string).collect();
        ids.sort_unstable();
        let claimed = async {
            let client = self.pool.get().await?;
            run(
                &client,
                "INSERT INTO leases (lane, video_id) SELECT $1, unnest($2::text[])
                     ON CONFLICT DO NOTHING",
                &[&lane.as_ref(), &ids],
            )
            .await?;
            // SKIP LOCKED: a row another replica is claiming (or committing under) right
            // now is simply not this replica's to take. Ours from before (this process,
            // released but not yet written back) may be taken again at once.
            let rows = rows(
                &client,
                "WITH free AS (
                         SELECT lane, video_id FROM leases
                         WHERE lane = $1 AND video_id = ANY($2)
                           AND (expires_at < now() OR owner = $3)
                         ORDER BY video_id
                         FOR UPDATE SKIP LOCKED
                     )
                     UPDATE leases l SET owner = $3, token = l.token + 1,
                            expires_at = now() + make_interval(secs => $4)
                     FROM free WHERE l.lane = free.lane AND l.video_id = free.video_id
                     RETURNING l.video_id, l.token",
                &[&lane.as_ref(), &ids, &self.owner, &self.secs()],
            )
            .await?;
            Ok::<_, StoreError>(rows)
        }
        .await;
        let rows = match claimed {
            Ok(rows) => rows,
            Err(e) => {
                unclaim(&wanted);
                return Err(e);
            }
        };
        let mut leases = Vec::with_capacity(rows.len());
        let mut got = HashSet::new();
        for r in rows {
            let video: String = r.get(0);
            let token: i64 = r.get(1);
            let Ok(video) = RecordId::parse(&video) else {
                continue;
            };
            got.insert(video.clone());
            let (held, pool, owner) = (self.held.clone(), self.pool.clone(), self.owner.clone());
            leases.push(Lease::new(lane, video.clone(), token, move || {
                if let Ok(mut h) = held.lock() {
                    h.remove(&(lane, video.clone()));
                }
                // Written back in the background: until it lands the row still names this
                // process, which may claim it again; others wait at most one lease period.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        if let Ok(c) = pool.get().await {
                            let _ = run(
                                &c,
                                "UPDATE leases SET expires_at = '-infinity'
                                 WHERE lane = $1 AND video_id = $2 AND token = $3 AND owner = $4",
                                &[&lane.as_ref(), &video.to_string(), &token, &owner],
                            )
                            .await;
                        }
                    });
                }
            }));
        }
        let missed: Vec<RecordId> = wanted.into_iter().filter(|v| !got.contains(v)).collect();
        unclaim(&missed);
        Ok(leases)
    }

    async fn due_effects(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let client = self.pool.get().await?;
        let rows = rows(
            &client,
            &format!(
                "SELECT {OUTBOX_COLS} FROM (
                         SELECT DISTINCT ON (video_id, {lane}) * FROM outbox
                         WHERE state = 'pending' ORDER BY video_id, {lane}, seq
                     ) o WHERE o.next_attempt_at <= $1 ORDER BY o.seq LIMIT $2",
                lane = projection_sql("outbox")
            ),
            &[&now, &i64::from(limit)],
        )
        .await?;
        let (good, bad) = split_readable(rows.iter().map(|r| (r.get::<_, i64>(0), outbox_row(r))))?;
        self.quarantine("outbox", bad).await?;
        Ok(good)
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let client = self.pool.get().await?;
        // The first pending effect of a video's lane, unless an executor holds that lane
        // of the video (another replica's, or this one's, which wakes itself when done):
        // counting those would wake this executor for nothing.
        let row = row_one(
            &client,
            &format!(
                "SELECT MIN(o.next_attempt_at) FROM (
                 SELECT DISTINCT ON (video_id, {lane}) video_id, next_attempt_at,
                        CASE WHEN {lane} THEN $2::text ELSE $1::text END AS lane
                 FROM outbox
                 WHERE state = 'pending' ORDER BY video_id, {lane}, seq
             ) o
             WHERE NOT EXISTS (SELECT 1 FROM leases l
                               WHERE l.lane = o.lane AND l.video_id = o.video_id
                                 AND l.expires_at > now())",
                lane = projection_sql("outbox")
            ),
            &[&Lane::Executor.as_ref(), &Lane::Projection.as_ref()],
        )
        .await?;
        Ok(row.try_get(0)?)
    }

    async fn effect_done_with(
        &self,
        effect_id: &str,
        follow_up: Option<NewEntry>,
    ) -> Result<(), StoreError> {
        self.finish_effect(effect_id, EffectState::Done, None, follow_up)
            .await
    }

    async fn effect_failed_with(
        &self,
        effect_id: &str,
        error: &str,
        follow_up: Option<NewEntry>,
    ) -> Result<(), StoreError> {
        self.finish_effect(
            effect_id,
            EffectState::Failed,
            Some(error.to_owned()),
            follow_up,
        )
        .await
    }

    async fn effect_retry_later(
        &self,
        effect_id: &str,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        run(
            &client,
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3,
                        updated_at = now(), started_at = NULL
                 WHERE effect_id = $1 AND state = 'pending'",
            &[&effect_id, &at, &error],
        )
        .await?;
        Ok(())
    }

    async fn outbox_entry(&self, effect_id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        let client = self.pool.get().await?;
        row_opt(
            &client,
            &format!("SELECT {OUTBOX_COLS} FROM outbox WHERE effect_id = $1"),
            &[&effect_id],
        )
        .await?
        .as_ref()
        .map(outbox_row)
        .transpose()
    }

    async fn effect_started(
        &self,
        effect_id: &str,
        lease: &Lease,
        seen: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        if lease.lane() != Lane::Executor {
            return Ok(false);
        }
        let client = self.pool.get().await?;
        // Only under the executor's current lease (a replica that lost it must not start a
        // call the new holder may be starting too), and only if nobody started it since
        // the caller looked: if two race, the second finds `started_at` changed.
        let n = run(
            &client,
            "UPDATE outbox SET started_at = now(), updated_at = now()
             WHERE effect_id = $1 AND state = 'pending' AND video_id = $5
               AND started_at IS NOT DISTINCT FROM $6
               AND EXISTS (SELECT 1 FROM leases
                           WHERE lane = $2 AND video_id = outbox.video_id
                             AND token = $3 AND owner = $4)",
            &[
                &effect_id,
                &Lane::Executor.as_ref(),
                &lease.token(),
                &self.owner,
                &lease.video().to_string(),
                &seen,
            ],
        )
        .await?;
        Ok(n == 1)
    }

    async fn effect_ambiguous(&self, effect_id: &str, error: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        run(
            &client,
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2, updated_at = now()
                 WHERE effect_id = $1 AND state = 'pending'",
            &[&effect_id, &error],
        )
        .await?;
        Ok(())
    }

    async fn effect_defer(&self, effect_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        run(
            &client,
            "UPDATE outbox SET next_attempt_at = $2, updated_at = now() WHERE effect_id = $1 AND state = 'pending'",
            &[&effect_id, &at],
        )
        .await?;
        Ok(())
    }

    async fn requeue_effect(&self, effect_id: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let n = run(
            &client,
            "UPDATE outbox SET state = 'pending', next_attempt_at = now(), updated_at = now(),
                        attempts = 0, last_error = NULL, started_at = NULL
                 WHERE effect_id = $1 AND state = 'failed'",
            &[&effect_id],
        )
        .await?;
        Ok(n == 1)
    }

    async fn pending_effects_of(
        &self,
        video: &RecordId,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let client = self.pool.get().await?;
        let rows = rows(
            &client,
            &format!(
                "SELECT {OUTBOX_COLS} FROM outbox WHERE video_id = $1 AND state = 'pending'
                     ORDER BY seq LIMIT $2"
            ),
            &[&video.to_string(), &i64::from(limit)],
        )
        .await?;
        Ok(split_readable(rows.iter().map(|r| (r.get::<_, i64>(0), outbox_row(r))))?.0)
    }

    async fn effects_of(&self, video: &RecordId) -> Result<Vec<OutboxEntry>, StoreError> {
        let client = self.pool.get().await?;
        let rows = rows(
            &client,
            &format!("SELECT {OUTBOX_COLS} FROM outbox WHERE video_id = $1 ORDER BY seq"),
            &[&video.to_string()],
        )
        .await?;
        Ok(split_readable(rows.iter().map(|r| (r.get::<_, i64>(0), outbox_row(r))))?.0)
    }

    async fn history(&self, video: &RecordId) -> Result<Vec<HistoryRow>, StoreError> {
        let client = self.pool.get().await?;
        let rows = rows(
            &client,
            "SELECT event_id, event, from_status, to_status, outcome, at FROM history
                 WHERE video_id = $1 ORDER BY id",
            &[&video.to_string()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(0)?;
                Ok(HistoryRow {
                    event_id: Uuid::parse_str(&id).map_err(|e| corrupt("event id", e))?,
                    event: r.try_get(1)?,
                    from: r.try_get(2)?,
                    to: r.try_get(3)?,
                    outcome: parse(r.try_get(4)?, "outcome")?,
                    at: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn record_intent(&self, owner: &str) -> Result<super::RecordIntent, StoreError> {
        let client = self.pool.get().await?;
        let inserted = client
            .execute(
                "INSERT INTO record_creations (owner) VALUES ($1) ON CONFLICT (owner) DO NOTHING",
                &[&owner],
            )
            .await?;
        let row = client
            .query_one(
                "SELECT started_at, record_id FROM record_creations WHERE owner = $1",
                &[&owner],
            )
            .await?;
        let since: DateTime<Utc> = row.try_get(0)?;
        let record: Option<String> = row.try_get(1)?;
        Ok(super::RecordIntent {
            since,
            fresh: inserted == 1,
            record: record
                .map(|r| RecordId::parse(&r).map_err(|e| corrupt("record id", e)))
                .transpose()?,
        })
    }

    async fn claim_record(&self, owner: &str, record: &RecordId) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let record = record.to_string();
        // One statement: the unique index on record_id settles a race between two owners.
        let claimed = client
            .query_opt(
                "INSERT INTO record_creations (owner, record_id) VALUES ($1, $2)
                 ON CONFLICT (owner) DO UPDATE SET record_id = excluded.record_id
                 WHERE record_creations.record_id IS NULL
                 RETURNING owner",
                &[&owner, &record],
            )
            .await;
        match claimed {
            Ok(Some(_)) => Ok(true),
            Ok(None) => {
                let row = client
                    .query_opt(
                        "SELECT 1 FROM record_creations WHERE owner = $1 AND record_id = $2",
                        &[&owner, &record],
                    )
                    .await?;
                Ok(row.is_some())
            }
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn set_job_record(&self, job: JobId, record: &RecordId) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        run(
            &client,
            "UPDATE job_index SET record_id = $2 WHERE job_id = $1",
            &[&job.to_string(), &record.to_string()],
        )
        .await?;
        Ok(())
    }

    async fn job_location(
        &self,
        job: JobId,
    ) -> Result<Option<(RecordId, Option<RecordId>)>, StoreError> {
        let client = self.pool.get().await?;
        let row = row_opt(
            &client,
            "SELECT video_id, record_id FROM job_index WHERE job_id = $1",
            &[&job.to_string()],
        )
        .await?;
        row.map(|r| {
            let v: String = r.try_get(0)?;
            let rec: Option<String> = r.try_get(1)?;
            let v = RecordId::parse(&v).map_err(|e| corrupt("video id", e))?;
            let rec = rec
                .map(|r| RecordId::parse(&r).map_err(|e| corrupt("record id", e)))
                .transpose()?;
            Ok((v, rec))
        })
        .transpose()
    }

    async fn depths(&self) -> Result<Depths, StoreError> {
        let client = self.pool.get().await?;
        let r = row_one(
            &client,
            "SELECT (SELECT COUNT(*) FROM inbox WHERE state = 'pending'),
                        (SELECT COUNT(*) FROM outbox WHERE state = 'pending'),
                        (SELECT COUNT(*) FROM outbox WHERE state = 'failed'),
                        (SELECT COUNT(*) FROM inbox WHERE state = 'quarantined')
                          + (SELECT COUNT(*) FROM outbox WHERE state = 'quarantined'),
                        (SELECT received_at FROM inbox WHERE state = 'pending'
                         ORDER BY seq LIMIT 1)",
            &[],
        )
        .await?;
        Ok(Depths {
            inbox_pending: r.try_get(0)?,
            outbox_pending: r.try_get(1)?,
            outbox_failed: r.try_get(2)?,
            quarantined: r.try_get(3)?,
            oldest_pending: r.try_get(4)?,
        })
    }

    async fn overview(&self, limit: u32) -> Result<super::Overview, StoreError> {
        let client = self.pool.get().await?;
        overview::overview(&client, limit).await
    }

    async fn active_jobs_due(&self, now: DateTime<Utc>) -> Result<Vec<ActiveJob>, StoreError> {
        let client = self.pool.get().await?;
        let rows = rows(
            &client,
            "SELECT job_id, video_id, kind, external_id, since, checks FROM active_jobs
                 WHERE next_check_at <= $1 ORDER BY next_check_at LIMIT 500",
            &[&now],
        )
        .await?;
        rows.iter()
            .map(|r| {
                let job: String = r.try_get(0)?;
                let video: String = r.try_get(1)?;
                let kind: String = r.try_get(2)?;
                let checks: i32 = r.try_get(5)?;
                Ok(ActiveJob {
                    job: Uuid::parse_str(&job)
                        .map(JobId)
                        .map_err(|e| corrupt("job id", e))?,
                    video_id: RecordId::parse(&video).map_err(|e| corrupt("video id", e))?,
                    kind: crate::domain::JobType::from(kind),
                    external_id: r.try_get(3)?,
                    since: r.try_get(4)?,
                    checks: checks.max(0) as u32,
                })
            })
            .collect()
    }

    async fn reschedule_check(
        &self,
        job: JobId,
        checks: u32,
        next: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        run(
            &client,
            "UPDATE active_jobs SET checks = $2, next_check_at = $3 WHERE job_id = $1",
            &[
                &job.to_string(),
                &(checks.min(i32::MAX as u32) as i32),
                &next,
            ],
        )
        .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        run(
            &client,
            "INSERT INTO heartbeat (id, at) VALUES (1, now())
                 ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at",
            &[],
        )
        .await?;
        Ok(())
    }

    /// Every lease row this process owns expires now, so that the other replicas claim
    /// the videos at their next pass instead of a lease period later. Leases still held
    /// in memory are forgotten too: their tokens then no longer match anything this
    /// process may write.
    async fn release_leases(&self) {
        if let Ok(mut h) = self.held.lock() {
            h.clear();
        }
        let released = async {
            let client = self.pool.get().await?;
            run(
                &client,
                "UPDATE leases SET expires_at = '-infinity' WHERE owner = $1",
                &[&self.owner],
            )
            .await
            .map_err(StoreError::from)
        }
        .await;
        match released {
            Ok(n) => tracing::info!(leases = n, "gave this replica's leases back"),
            Err(e) => {
                tracing::warn!(error = %e, "could not give the leases back; they expire on their own")
            }
        }
    }

    /// The lease row still names this holder's token and has not expired (PostgreSQL's
    /// clock): another replica cannot have claimed the video.
    async fn holds(&self, lease: &Lease) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let row = row_opt(
            &client,
            "SELECT 1 FROM leases WHERE lane = $1 AND video_id = $2 AND token = $3
                 AND owner = $4 AND expires_at > now()",
            &[
                &lease.lane().as_ref(),
                &lease.video().to_string(),
                &lease.token(),
                &self.owner,
            ],
        )
        .await?;
        Ok(row.is_some())
    }

    async fn quarantined(&self, limit: u32) -> Result<Vec<Quarantined>, StoreError> {
        let client = self.pool.get().await?;
        let rows = rows(
            &client,
            "SELECT * FROM (
                 SELECT 'inbox' AS t, event_id, video_id, COALESCE(note, '') AS why, processed_at AS at
                 FROM inbox WHERE state = 'quarantined'
                 UNION ALL
                 SELECT 'outbox', effect_id, video_id, COALESCE(last_error, ''), updated_at
                 FROM outbox WHERE state = 'quarantined'
             ) q ORDER BY at DESC NULLS LAST LIMIT $1",
            &[&i64::from(limit)],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Quarantined {
                    table: r.try_get(0)?,
                    id: r.try_get(1)?,
                    video_id: r.try_get(2)?,
                    reason: r.try_get(3)?,
                    at: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// One autocommitted statement per table and batch: short transactions, and
    /// `SKIP LOCKED` so a pass never waits on rows a replica is writing.
    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<Pruned, StoreError> {
        let client = self.pool.get().await?;
        let batch = i64::from(batch);
        let inbox = run(
            &client,
            "DELETE FROM inbox WHERE seq IN (
                 SELECT seq FROM inbox i WHERE state = 'done' AND processed_at < $1
                   AND NOT EXISTS (SELECT 1 FROM outbox o
                                   WHERE o.event_id = i.event_id AND o.state <> 'done')
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&before, &batch],
        )
        .await?;
        let history = run(
            &client,
            "DELETE FROM history WHERE id IN (
                 SELECT id FROM history WHERE at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&before, &batch],
        )
        .await?;
        let outbox = run(
            &client,
            "DELETE FROM outbox WHERE seq IN (
                 SELECT seq FROM outbox WHERE state = 'done' AND updated_at < $1
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&before, &batch],
        )
        .await?;
        Ok(Pruned {
            inbox,
            history,
            outbox,
        })
    }
}
