//! Job-level events: a deadline passed, an effect given up, a re-submission on record.

use super::jobs::{fail_job, job_mut};
use super::{Ctx, Step};
use crate::domain::JobType;
use crate::machine::{JobId, Outcome, Snapshot};

/// A re-submission is counted on its job (the executor allows one, and reads the count
/// here rather than in a window of recent events), and recorded in the job's history so
/// that it shows every request that may have cost money. Neither status changes.
pub(super) fn resubmitting(next: &mut Snapshot, job: JobId, reason: &str) -> Step {
    match next.job(job) {
        None => Step::new(Outcome::Unmatched, None).note("no such job"),
        Some(j) if j.status.is_final() => {
            Step::new(Outcome::Stale, Some(job)).note(format!("job already {}", j.status))
        }
        Some(_) if next.video.status.is_final() => Step::new(Outcome::Stale, Some(job))
            .note(format!("video is already {}", next.video.status.name())),
        Some(_) => {
            job_mut(next, job).resubmissions += 1;
            Step::new(Outcome::Applied, Some(job))
                .note(format!("sending the request again: {reason}"))
        }
    }
}

/// A job-level failure (deadline, reconciliation, an effect given up). It fails the job and,
/// through it, the video's stage, but never a video that is already final: a completed video
/// stays completed and a failed one leaves its state only through an operator's retry. A job
/// still active on a final video was left behind (an older handler, an import at first
/// contact) and is left as it is, for people to read, not failed into the video.
pub(super) fn give_up(next: &mut Snapshot, job: JobId, error: &str, ctx: &Ctx) -> Step {
    match next.job(job) {
        None => Step::new(Outcome::Unmatched, None).note("no such job"),
        Some(j) if matches!(j.kind, JobType::Other(_)) => {
            Step::new(Outcome::Unmatched, None).note("not a music job")
        }
        Some(j) if j.status.is_final() => {
            Step::new(Outcome::Stale, Some(job)).note(format!("job already {}", j.status))
        }
        Some(_) if next.video.status.is_final() => {
            Step::new(Outcome::Stale, Some(job)).note(format!(
                "video is already {}; its left-over job is not failed into it",
                next.video.status.name()
            ))
        }
        Some(_) => {
            fail_job(next, job, error, ctx);
            Step::new(Outcome::Applied, Some(job))
        }
    }
}
