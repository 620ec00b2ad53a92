//! The projection lane: a video's writes to the base. Consecutive writes to one table run
//! together so that they share an Airtable request, a record's later writes fold into its
//! write, and a job's writes wait, briefly, for the job's call to be answered.

use std::time::Duration;

use super::attempt::run_one;
use super::calls::external_job;
use crate::engine::Engine;
use crate::machine::{Effect, JobId, Table, Target};
use crate::store::{Lane, Lease, OutboxEntry};

/// How long after its cause was received a video's job writes wait for that job's call
/// to be answered, so that the job's record is written once with its external id
/// (issue 17: one write per record) rather than created, then updated.
const GATHER_CALLS: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// Runs the next effect of the video's lane, together with the writes right after it in
/// that lane that go to the same table and touch other records: run concurrently, they
/// share one Airtable request (the backend coalesces up to 10 records), while the lane's
/// order holds. Later writes of a record in the group are folded into its write (the
/// newest value of each field wins, so the record never shows an older state than one
/// already written) and done with it.
pub(super) async fn run_video(engine: &Engine, lease: &Lease, first: OutboxEntry) {
    let lane = lease.lane();
    let Some(target) = first.effect.target() else {
        run_one(engine, lease, first, Vec::new()).await;
        return;
    };
    let table = target.table();
    if table == Table::Jobs {
        gather_calls(engine, &first).await;
    }
    let pending = engine
        .store
        .pending_effects_of(&first.video_id, 20)
        .await
        .unwrap_or_default();
    let after = first.seq;
    let fold_jobs = engine.records.jobs_have_key();
    let mut group: Vec<(OutboxEntry, Vec<OutboxEntry>)> = vec![(first, Vec::new())];
    let mut targets: Vec<Target> = vec![target];
    let mut open = true;
    for e in pending
        .into_iter()
        .filter(|e| e.seq > after && Lane::of_effect_kind(e.effect.kind()) == lane)
    {
        let Some(t) = e.effect.target() else {
            break;
        };
        // A later write of a record already in the group folds into it, when it can.
        let foldable = |head: &OutboxEntry, folded: &[OutboxEntry]| {
            t.table() == table
                && match (&head.effect, &e.effect) {
                    (Effect::UpdateVideo(_), Effect::UpdateVideo(_)) => true,
                    (
                        Effect::CreateJob { job: a, .. } | Effect::UpdateJob { job: a, .. },
                        Effect::UpdateJob { job: b, .. },
                    ) => fold_jobs && a == b,
                    _ => false,
                }
                && folded.iter().all(|f| f.seq < e.seq)
        };
        if let Some(member) = group.iter_mut().find(|(h, f)| foldable(h, f)) {
            member.1.push(e);
            continue;
        }
        if targets.iter().any(|g| g.same_record(t)) {
            // Not foldable: this record's later writes wait for the next pass, in order.
            open = false;
            continue;
        }
        // One write per record in a group: two writes of one record keep their order.
        if open && t.table() == table && table != Table::Videos {
            targets.push(t);
            group.push((e, Vec::new()));
        } else {
            open = false;
        }
    }
    futures::future::join_all(
        group
            .into_iter()
            .map(|(e, folded)| run_one(engine, lease, e, folded)),
    )
    .await;
}

/// Before a video's job writes: while one of those jobs is still waiting for its call's
/// answer (the call about to go or in flight, or its answer not yet decided), and the
/// writes' cause arrived less than `GATHER_CALLS` ago, waits for it. Bounded, and only the
/// projection waits: the call itself never waits for a write.
async fn gather_calls(engine: &Engine, first: &OutboxEntry) {
    let Ok(Some(cause)) = engine.store.entry(first.event_id).await else {
        return;
    };
    let until = cause.received_at + GATHER_CALLS;
    while crate::clock::now() < until && !engine.is_shutting_down() {
        let Ok(pending) = engine.store.pending_effects_of(&first.video_id, 20).await else {
            return;
        };
        let Ok(Some(snapshot)) = engine.store.snapshot(&first.video_id).await else {
            return;
        };
        let unanswered = |job: JobId| {
            snapshot.job(job).is_some_and(|j| {
                j.status == crate::domain::JobStatus::Pending && j.external_id.is_none()
            })
        };
        let written: Vec<JobId> = pending
            .iter()
            .filter_map(|e| match &e.effect {
                Effect::CreateJob { job, .. } | Effect::UpdateJob { job, .. } => Some(*job),
                _ => None,
            })
            .filter(|j| unanswered(*j))
            .collect();
        if written.is_empty() {
            return;
        }
        let call_due = pending.iter().any(|e| {
            external_job(&e.effect).is_some_and(|j| written.contains(&j))
                && e.attempts == 0
                && e.next_attempt_at <= crate::clock::now()
        });
        let answer_undecided = engine
            .store
            .has_pending_entries(&first.video_id)
            .await
            .unwrap_or(false);
        if !call_due && !answer_undecided {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
