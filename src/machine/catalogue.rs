//! The transition catalogue: every transition the machine can make, found by running
//! decide() itself over a canonical snapshot of each state and a canonical event of each
//! class. `states/` and `reelstate states` are checked against and drawn from this, so
//! the tables can never describe a machine other than the one that runs.

mod canonical;

use std::collections::BTreeSet;

use uuid::Uuid;

use canonical::epoch;
pub(crate) use canonical::{canonical_events, canonical_snapshots};

use super::{Ctx, EventClass, Outcome, Policy, decide};
use crate::domain::VideoStatus;

/// One row of `states/video.md`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TransitionRow {
    pub from: String,
    pub event: String,
    pub to: String,
    pub effects: String,
}

/// One row of `states/job.md`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct JobTransitionRow {
    pub job_type: String,
    pub from: String,
    pub event: String,
    pub to: String,
}

/// The label under which statuses written by others appear in the tables.
pub(crate) const OTHER: &str = "(other)";
/// The label of a job that does not exist yet.
pub(crate) const NEW: &str = "(new)";

fn status_label(s: &VideoStatus) -> String {
    match s {
        VideoStatus::Other(_) => OTHER.to_owned(),
        known => known.name().to_owned(),
    }
}

fn explore_ctx() -> Ctx {
    Ctx {
        now: epoch(),
        event_id: Uuid::from_u128(0xca7a),
        from_webhook: false,
        policy: Policy::default(),
    }
}

/// Every transition that changes a video's or a job's state, as table rows.
pub fn explore() -> (Vec<TransitionRow>, Vec<JobTransitionRow>) {
    use strum::IntoEnumIterator;
    let ctx = explore_ctx();
    let mut videos = BTreeSet::new();
    let mut jobs = BTreeSet::new();
    for s in canonical_snapshots() {
        for class in EventClass::iter() {
            for e in canonical_events(class, &s) {
                let Ok(d) = decide(&s, &e, &ctx) else {
                    continue;
                };
                if d.outcome != Outcome::Applied {
                    continue;
                }
                let effects: Vec<&str> = d.effects.iter().map(|e| e.kind()).collect();
                videos.insert(TransitionRow {
                    from: status_label(&s.video.status),
                    event: class.label().to_owned(),
                    to: status_label(&d.next.video.status),
                    effects: if effects.is_empty() {
                        "-".into()
                    } else {
                        effects.join(", ")
                    },
                });
                for j in &d.next.jobs {
                    let before = s.job(j.id).map(|o| o.status);
                    if before != Some(j.status) {
                        jobs.insert(JobTransitionRow {
                            job_type: j.kind.name().to_owned(),
                            from: before.map_or(NEW.to_owned(), |b| b.to_string()),
                            event: class.label().to_owned(),
                            to: j.status.to_string(),
                        });
                    }
                }
            }
        }
    }
    (videos.into_iter().collect(), jobs.into_iter().collect())
}

/// One row of the final-state table of `states/video.md`: what an event does to a final
/// video that still carries an active (left-over) job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FinalStateRow {
    pub from: String,
    /// The left-over job: its type and status.
    pub job: String,
    pub event: String,
    /// The decision's outcome, or `rejected`.
    pub outcome: String,
    /// The video's status afterwards.
    pub to: String,
}

/// Every event class on every canonical final video that carries an active job.
pub fn final_state_rows() -> Vec<FinalStateRow> {
    use strum::IntoEnumIterator;
    let ctx = explore_ctx();
    let mut rows = BTreeSet::new();
    for s in canonical_snapshots()
        .into_iter()
        .filter(|s| s.video.status.is_final())
    {
        let Some(left_over) = s.jobs.iter().find(|j| j.status.is_active()) else {
            continue;
        };
        let job = format!("{} {}", left_over.kind.name(), left_over.status);
        for class in EventClass::iter() {
            for e in canonical_events(class, &s) {
                let (outcome, to) = match decide(&s, &e, &ctx) {
                    Ok(d) => (d.outcome.to_string(), status_label(&d.next.video.status)),
                    Err(_) => ("rejected".to_owned(), status_label(&s.video.status)),
                };
                rows.insert(FinalStateRow {
                    from: status_label(&s.video.status),
                    job: job.clone(),
                    event: class.label().to_owned(),
                    outcome,
                    to,
                });
            }
        }
    }
    rows.into_iter().collect()
}

/// The job rows alone.
pub fn job_rows() -> Vec<JobTransitionRow> {
    explore().1
}

/// Mermaid state diagrams of both lifecycles, drawn from [`explore`].
pub fn mermaid() -> String {
    let (videos, jobs) = explore();
    let node = |s: &str| match s {
        OTHER => "other".to_owned(),
        NEW => "[*]".to_owned(),
        s => s.to_owned(),
    };
    let mut out = String::from("%% Video lifecycle (music stage)\nstateDiagram-v2\n");
    out.push_str("    [*] --> segments_combined\n");
    out.push_str("    other : (a status written by another part of the pipeline)\n");
    let mut seen = BTreeSet::new();
    for r in &videos {
        if seen.insert((r.from.clone(), r.event.clone(), r.to.clone())) {
            out.push_str(&format!(
                "    {} --> {} : {}\n",
                node(&r.from),
                node(&r.to),
                r.event
            ));
        }
    }
    out.push_str("    completed --> [*]\n");
    out.push_str("\n%% Job lifecycle\nstateDiagram-v2\n");
    for r in &jobs {
        out.push_str(&format!(
            "    {} --> {} : {} ({})\n",
            node(&r.from),
            node(&r.to),
            r.event,
            r.job_type
        ));
    }
    out.push_str("    completed --> [*]\n    failed --> [*]\n");
    out
}
