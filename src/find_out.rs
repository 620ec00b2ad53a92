//! Finding out, after an answer that did not prove a request was refused (a timeout, a
//! gateway's 504, a kill during the call), whether the service has the work, before anyone
//! pays for it twice. What each service offers (docs/goapi-and-nca.md, "Finding out"):
//!
//! - NCA: the recent-jobs listing (`POST /v1/toolkit/jobs/status`) gives every job whose
//!   status changed lately, without the request's `id`; a done job's status
//!   (`POST /v1/toolkit/job/status`) holds its final payload, `id` included. So a done job
//!   carrying our submission id is found with its result, and a listing with no job queued
//!   or running and none of ours done says this toolkit does not have it. A queued or
//!   running job may be ours: nothing says so until it ends.
//! - GoAPI: a task can be fetched only by the `task_id` its create call returns; there is
//!   no query by our reference. Only its webhook (whose URL names the job) can tell.

use chrono::{DateTime, Utc};

use crate::engine::Engine;
use crate::machine::{Effect, Event};
use crate::webhook::nca::{NcaJobState, parse_nca_job_list, parse_nca_status};

/// At most this many done jobs are opened per look-up to read their `id`: on a busier
/// toolkit the answer is "cannot tell" until later look-ups have read the rest.
const MAX_DONE_JOBS_READ: usize = 50;

/// What the service says about a request that may or may not have reached it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lookup {
    /// The service has done the work: this event is its result (the lost callback).
    Found(Event),
    /// The service answered, and it does not have the work.
    Absent,
    /// Nothing settles it (yet): why, for the log.
    CannotTell(String),
}

/// Asks the service about the work an external effect asked for, sent at `sent`.
pub(crate) async fn look_up(engine: &Engine, effect: &Effect, sent: DateTime<Utc>) -> Lookup {
    match effect {
        Effect::SubmitNcaMix { submission_id, .. } => {
            find_nca_submission(engine, submission_id, sent).await
        }
        Effect::CreateGoapiTask { .. } => Lookup::CannotTell(
            "GoAPI finds tasks only by the task id its create call returns; waiting for its webhook"
                .into(),
        ),
        _ => Lookup::CannotTell("not a call to a service".into()),
    }
}

/// Looks for the NCA job whose request carried `submission_id`, sent at `sent` or later.
pub(crate) async fn find_nca_submission(
    engine: &Engine,
    submission_id: &str,
    sent: DateTime<Utc>,
) -> Lookup {
    let Some(client) = &engine.nca else {
        return Lookup::CannotTell("NCA is not configured".into());
    };
    // The window covers the call and a minute of clock skew between us and the toolkit.
    let since = (crate::clock::now() - sent).num_seconds().max(0) as u64 + 60;
    let listed = match client.recent_jobs(since).await {
        Ok(body) => match parse_nca_job_list(&body) {
            Ok(jobs) => jobs,
            Err(e) => return Lookup::CannotTell(format!("NCA jobs listing: {e}")),
        },
        Err(e) => return Lookup::CannotTell(e.to_string()),
    };
    let (done, open): (Vec<_>, Vec<_>) = listed.into_iter().partition(|j| j.status == "done");
    let mut unread = 0;
    let mut read_now = 0;
    for job in &done {
        let known = engine.nca_done.submission_of(&job.job_id);
        let submission = match known {
            Some(s) => s,
            None if read_now >= MAX_DONE_JOBS_READ => {
                unread += 1;
                continue;
            }
            None => {
                read_now += 1;
                let body = match client.job_status(&job.job_id).await {
                    Ok(body) => body,
                    Err(e) => return Lookup::CannotTell(e.to_string()),
                };
                let submission = match parse_nca_status(&body) {
                    Ok(NcaJobState::Done(hook)) => hook.update.submission_id.clone(),
                    _ => None,
                };
                engine.nca_done.remember(&job.job_id, submission.clone());
                if submission.as_deref() == Some(submission_id)
                    && let Ok(NcaJobState::Done(hook)) = parse_nca_status(&body)
                {
                    return Lookup::Found(Event::NcaJobFinished(hook.update));
                }
                continue;
            }
        };
        if submission.as_deref() == Some(submission_id) {
            // Read before: its result is asked for again rather than kept.
            return match client
                .job_status(&job.job_id)
                .await
                .map(|b| parse_nca_status(&b))
            {
                Ok(Ok(NcaJobState::Done(hook))) => {
                    Lookup::Found(Event::NcaJobFinished(hook.update))
                }
                Ok(_) => Lookup::CannotTell("NCA's done job no longer reads as done".into()),
                Err(e) => Lookup::CannotTell(e.to_string()),
            };
        }
    }
    if unread > 0 {
        Lookup::CannotTell(format!(
            "NCA lists {} finished jobs; {unread} are left to read at the next look",
            done.len()
        ))
    } else if open.is_empty() {
        Lookup::Absent
    } else {
        Lookup::CannotTell(format!(
            "NCA has {} job(s) queued or running, which do not name their request",
            open.len()
        ))
    }
}
