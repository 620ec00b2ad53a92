//! Leases as rows: claimed with `FOR UPDATE SKIP LOCKED` (replicas never wait on each
//! other's claims), renewed while held, given back when dropped or at shutdown.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use super::{PgStore, row_opt, rows, run};
use crate::domain::RecordId;
use crate::store::{Lane, Lease, Leases, StoreError};

/// Renewal ticks between two clean-ups of long-expired lease rows.
const CLEANUP_EVERY: u64 = 600;

/// Keeps this process's leases alive, a third of a lease period apart; ends with the
/// store. A renewal that fails is retried at the next tick; a lease that expired meanwhile
/// is not revived (another replica may be taking it): the fencing token then stops this
/// process's writes.
pub(super) async fn renew(
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
        if let Err(e) = renew_held(&held, &pool, &owner, lease_for, None).await {
            tracing::warn!(error = %e, "could not renew this replica's leases");
        }
    }
}

/// One renewal of the leases in `held` that have not expired, at `at` (the server's
/// `now()` when `None`).
pub(super) async fn renew_held(
    held: &Mutex<HashSet<(Lane, RecordId)>>,
    pool: &Pool,
    owner: &str,
    lease_for: Duration,
    at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let (lanes, videos): (Vec<String>, Vec<String>) = match held.lock() {
        Ok(h) => h
            .iter()
            .map(|(l, v)| (l.to_string(), v.to_string()))
            .unzip(),
        Err(_) => return Ok(()),
    };
    if lanes.is_empty() {
        return Ok(());
    }
    let c = pool.get().await?;
    run(
        &c,
        "UPDATE leases SET expires_at = COALESCE($5::timestamptz, now()) + make_interval(secs => $4)
         WHERE owner = $1 AND expires_at > COALESCE($5::timestamptz, now())
           AND (lane, video_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))",
        &[&owner, &lanes, &videos, &lease_for.as_secs_f64(), &at],
    )
    .await?;
    Ok(())
}

impl PgStore {
    /// Renews this process's leases once. A simulated store (`connect_simulated`) runs
    /// no renewal of its own: the simulation calls this on its own clock.
    pub async fn renew_leases(&self) -> Result<(), StoreError> {
        renew_held(
            &self.held,
            &self.pool,
            &self.owner,
            self.lease_for,
            self.at(),
        )
        .await
    }

    /// How many leases this process holds now.
    pub fn leases_held(&self) -> usize {
        self.held.lock().map_or(0, |h| h.len())
    }
}

#[async_trait::async_trait]
impl Leases for PgStore {
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
                           AND (expires_at < COALESCE($5::timestamptz, now()) OR owner = $3)
                         ORDER BY video_id
                         FOR UPDATE SKIP LOCKED
                     )
                     UPDATE leases l SET owner = $3, token = l.token + 1,
                            expires_at = COALESCE($5::timestamptz, now()) + make_interval(secs => $4)
                     FROM free WHERE l.lane = free.lane AND l.video_id = free.video_id
                     RETURNING l.video_id, l.token",
                &[&lane.as_ref(), &ids, &self.owner, &self.secs(), &self.at()],
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
            let sim = self.sim.clone();
            leases.push(Lease::new(lane, video.clone(), token, move || {
                if let Ok(mut h) = held.lock() {
                    h.remove(&(lane, video.clone()));
                }
                let write_back = async move {
                    if let Ok(c) = pool.get().await {
                        let _ = run(
                            &c,
                            "UPDATE leases SET expires_at = '-infinity'
                             WHERE lane = $1 AND video_id = $2 AND token = $3 AND owner = $4",
                            &[&lane.as_ref(), &video.to_string(), &token, &owner],
                        )
                        .await;
                    }
                };
                match &sim {
                    // A simulation waits for it: a seed is one fixed order of events, and
                    // a killed process gives nothing back.
                    Some(sim) => sim.wait_for(write_back),
                    // Written back in the background: until it lands the row still names
                    // this process, which may claim it again; others wait at most one
                    // lease period.
                    None => {
                        if let Ok(rt) = tokio::runtime::Handle::try_current() {
                            rt.spawn(write_back);
                        }
                    }
                }
            }));
        }
        let missed: Vec<RecordId> = wanted.into_iter().filter(|v| !got.contains(v)).collect();
        unclaim(&missed);
        Ok(leases)
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
                 AND owner = $4 AND expires_at > COALESCE($5::timestamptz, now())",
            &[
                &lease.lane().as_ref(),
                &lease.video().to_string(),
                &lease.token(),
                &self.owner,
                &self.at(),
            ],
        )
        .await?;
        Ok(row.is_some())
    }
}
