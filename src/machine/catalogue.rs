//! The transition catalogue: every transition the machine can make, found by running
//! decide() itself over a canonical snapshot of each state and a canonical event of each
//! class. `states/` and `reelstate states` are checked against and drawn from this, so
//! the tables can never describe a machine other than the one that runs.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    Ctx, Event, Job, JobId, NcaResult, NcaUpdate, Outcome, Policy, RetryFrom, Snapshot, TaskStatus,
    TaskUpdate, Track, TrackCheck, Video, decide,
};
use crate::domain::{JobStatus, JobType, MediaUrl, RecordId, VideoStatus};

/// Events grouped as the tables name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, strum::EnumIter, strum::AsRefStr)]
#[strum(serialize_all = "snake_case")]
pub enum EventClass {
    MusicRequested,
    RetryRequested,
    RetryFromMusic,
    RetryFromMix,
    GoapiPending,
    GoapiProcessing,
    GoapiStaged,
    GoapiCompleted,
    GoapiCompletedUnusable,
    GoapiFailed,
    NcaSucceeded,
    NcaFailed,
    NcaFailedNoAudio,
    ExternalAccepted,
    EffectFailed,
    JobDeadlinePassed,
    Resubmitting,
    TrackReachable,
    TrackGone,
    TrackUnknown,
}

impl EventClass {
    pub fn of(e: &Event) -> Self {
        match e {
            Event::MusicRequested { .. } => Self::MusicRequested,
            Event::RetryRequested {
                from: Some(RetryFrom::Music),
            } => Self::RetryFromMusic,
            Event::RetryRequested {
                from: Some(RetryFrom::Mix),
            } => Self::RetryFromMix,
            Event::RetryRequested { .. } => Self::RetryRequested,
            Event::GoapiTaskUpdate(u) => match u.status {
                TaskStatus::Pending => Self::GoapiPending,
                TaskStatus::Processing => Self::GoapiProcessing,
                TaskStatus::Staged => Self::GoapiStaged,
                TaskStatus::Failed => Self::GoapiFailed,
                TaskStatus::Completed if u.usable_track().is_some() => Self::GoapiCompleted,
                TaskStatus::Completed => Self::GoapiCompletedUnusable,
            },
            Event::NcaJobFinished(u) => match &u.result {
                NcaResult::Succeeded { .. } => Self::NcaSucceeded,
                NcaResult::Failed { error } if super::mix_found_no_audio_track(error) => {
                    Self::NcaFailedNoAudio
                }
                NcaResult::Failed { .. } => Self::NcaFailed,
            },
            Event::ExternalAccepted { .. } => Self::ExternalAccepted,
            Event::EffectFailed { .. } => Self::EffectFailed,
            Event::JobDeadlinePassed { .. } => Self::JobDeadlinePassed,
            Event::Resubmitting { .. } => Self::Resubmitting,
            Event::TrackChecked { check, .. } => match check {
                TrackCheck::Reachable { .. } => Self::TrackReachable,
                TrackCheck::Gone { .. } => Self::TrackGone,
                TrackCheck::Unknown { .. } => Self::TrackUnknown,
            },
        }
    }

    pub fn label(self) -> &'static str {
        // AsRefStr on a fieldless enum yields 'static strings.
        match self {
            Self::MusicRequested => "music_requested",
            Self::RetryRequested => "retry_requested",
            Self::RetryFromMusic => "retry_from_music",
            Self::RetryFromMix => "retry_from_mix",
            Self::GoapiPending => "goapi_pending",
            Self::GoapiProcessing => "goapi_processing",
            Self::GoapiStaged => "goapi_staged",
            Self::GoapiCompleted => "goapi_completed",
            Self::GoapiCompletedUnusable => "goapi_completed_unusable",
            Self::GoapiFailed => "goapi_failed",
            Self::NcaSucceeded => "nca_succeeded",
            Self::NcaFailed => "nca_failed",
            Self::NcaFailedNoAudio => "nca_failed_no_audio",
            Self::ExternalAccepted => "external_accepted",
            Self::EffectFailed => "effect_failed",
            Self::JobDeadlinePassed => "job_deadline_passed",
            Self::Resubmitting => "resubmitting",
            Self::TrackReachable => "track_reachable",
            Self::TrackGone => "track_gone",
            Self::TrackUnknown => "track_unknown",
        }
    }
}

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
pub const OTHER: &str = "(other)";
/// The label of a job that does not exist yet.
pub const NEW: &str = "(new)";

fn status_label(s: &VideoStatus) -> String {
    match s {
        VideoStatus::Other(_) => OTHER.to_owned(),
        known => known.name().to_owned(),
    }
}

fn url(s: &str) -> MediaUrl {
    MediaUrl::parse(s).expect("catalogue URLs are valid")
}

fn epoch() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

fn job(n: u128, kind: JobType, status: JobStatus, ext: Option<&str>, sid: Option<&str>) -> Job {
    Job {
        id: JobId(Uuid::from_u128(n)),
        kind,
        status,
        external_id: ext.map(str::to_owned),
        submission_id: sid.map(str::to_owned),
        error: status.eq(&JobStatus::Failed).then(|| "failed".to_owned()),
        created_at: epoch(),
        ended_at: None,
    }
}

/// A canonical snapshot of each state, including the jobs a video in it has.
pub fn canonical_snapshots() -> Vec<Snapshot> {
    let id = RecordId::parse("recCata1ogue00000").expect("valid id");
    let sid = super::submission_id(&id, 1);
    let base = |status: VideoStatus| {
        let mut v = Video::new(id.clone(), status);
        v.source_video = Some(url("https://videos.example/combined.mp4"));
        v
    };
    let gen_ = JobType::MusicGeneration;
    let add = JobType::MusicAddition;
    let with = |mut v: Video, music: bool, fin: bool, err: bool, jobs: Vec<Job>| {
        if music {
            v.music = Some(url("https://music.example/track.mp3"));
        }
        if fin {
            v.final_video = Some(url("https://videos.example/final.mp4"));
        }
        if err {
            v.error_details = Some("failed".into());
        }
        Snapshot { video: v, jobs }
    };
    vec![
        with(
            base(VideoStatus::SegmentsCombined),
            false,
            false,
            false,
            vec![],
        ),
        with(
            base(VideoStatus::Other("segments_combining".into())),
            false,
            false,
            false,
            vec![],
        ),
        // A job another part of the pipeline started, video status written by it.
        with(
            base(VideoStatus::Other("music_requested".into())),
            false,
            false,
            false,
            vec![job(1, gen_.clone(), JobStatus::Processing, None, None)],
        ),
        with(
            base(VideoStatus::GeneratingMusic),
            false,
            false,
            false,
            vec![job(1, gen_.clone(), JobStatus::Pending, None, None)],
        ),
        with(
            base(VideoStatus::GeneratingMusic),
            false,
            false,
            false,
            vec![job(
                1,
                gen_.clone(),
                JobStatus::Processing,
                Some("task-1"),
                None,
            )],
        ),
        with(
            base(VideoStatus::AddingMusic),
            true,
            false,
            false,
            vec![
                job(1, gen_.clone(), JobStatus::Completed, Some("task-1"), None),
                job(2, add.clone(), JobStatus::Pending, None, Some(&sid)),
            ],
        ),
        with(
            base(VideoStatus::AddingMusic),
            true,
            false,
            false,
            vec![
                job(1, gen_.clone(), JobStatus::Completed, Some("task-1"), None),
                job(
                    2,
                    add.clone(),
                    JobStatus::Processing,
                    Some("nca-1"),
                    Some(&sid),
                ),
            ],
        ),
        // A retry of a failed mix, its new mix waiting for the check of the track.
        with(
            {
                let mut v = base(VideoStatus::AddingMusic);
                v.checking_track = Some(JobId(Uuid::from_u128(4)));
                v.retries = 1;
                v
            },
            true,
            false,
            false,
            vec![
                job(1, gen_.clone(), JobStatus::Completed, Some("task-1"), None),
                job(2, add.clone(), JobStatus::Failed, Some("nca-1"), Some(&sid)),
                job(
                    4,
                    add.clone(),
                    JobStatus::Pending,
                    None,
                    Some(&super::submission_id(&id, 2)),
                ),
            ],
        ),
        with(
            base(VideoStatus::Completed),
            true,
            true,
            false,
            vec![
                job(1, gen_.clone(), JobStatus::Completed, Some("task-1"), None),
                job(
                    2,
                    add.clone(),
                    JobStatus::Completed,
                    Some("nca-1"),
                    Some(&sid),
                ),
            ],
        ),
        with(
            base(VideoStatus::MusicGenerationFailed),
            false,
            false,
            true,
            vec![job(
                1,
                gen_.clone(),
                JobStatus::Failed,
                Some("task-1"),
                None,
            )],
        ),
        with(
            base(VideoStatus::MusicAdditionFailed),
            true,
            false,
            true,
            vec![
                job(1, gen_.clone(), JobStatus::Completed, Some("task-1"), None),
                job(2, add.clone(), JobStatus::Failed, Some("nca-1"), Some(&sid)),
            ],
        ),
        // Final videos still carrying a job an older handler left active (imported at first
        // contact): nothing but an operator's retry may move them.
        with(
            base(VideoStatus::Completed),
            true,
            true,
            false,
            vec![
                job(1, gen_.clone(), JobStatus::Completed, Some("task-1"), None),
                job(3, add.clone(), JobStatus::Processing, Some("nca-old"), None),
            ],
        ),
        with(
            base(VideoStatus::MusicGenerationFailed),
            false,
            false,
            true,
            vec![job(
                3,
                gen_.clone(),
                JobStatus::Processing,
                Some("task-1"),
                None,
            )],
        ),
        with(
            base(VideoStatus::MusicAdditionFailed),
            true,
            false,
            true,
            vec![
                job(1, gen_.clone(), JobStatus::Completed, Some("task-1"), None),
                job(3, add.clone(), JobStatus::Processing, Some("nca-old"), None),
            ],
        ),
        // A video with nothing to mix the music under.
        with(
            {
                let mut v = base(VideoStatus::GeneratingMusic);
                v.source_video = None;
                v
            },
            false,
            false,
            false,
            vec![job(1, gen_, JobStatus::Processing, Some("task-1"), None)],
        ),
    ]
}

/// The canonical events of a class, aimed at the snapshot's current jobs.
pub fn canonical_events(class: EventClass, s: &Snapshot) -> Vec<Event> {
    let gen_job = s
        .active_job(&JobType::MusicGeneration)
        .or_else(|| s.jobs_of(&JobType::MusicGeneration).last());
    let task_id = gen_job
        .and_then(|j| j.external_id.clone())
        .unwrap_or_else(|| "task-1".into());
    let add_job = s
        .active_job(&JobType::MusicAddition)
        .or_else(|| s.jobs_of(&JobType::MusicAddition).last());
    let goapi = |status, tracks: Vec<Track>, error: Option<&str>| {
        Event::GoapiTaskUpdate(TaskUpdate {
            task_id: task_id.clone(),
            status,
            tracks,
            error: error.map(str::to_owned),
            // Delivered to the URL we signed for the job (GoAPI's webhook_config.endpoint).
            named_job: gen_job.map(|j| j.id),
        })
    };
    let nca = |result| {
        Event::NcaJobFinished(NcaUpdate {
            submission_id: add_job.and_then(|j| j.submission_id.clone()),
            nca_job_id: Some("nca-1".into()),
            result,
            named_job: add_job.map(|j| j.id),
        })
    };
    let good = vec![Track {
        url: Some(url("https://music.example/track.mp3")),
        finished: true,
    }];
    let active: Vec<JobId> = s
        .jobs
        .iter()
        .filter(|j| j.status.is_active())
        .map(|j| j.id)
        .collect();
    let per_job = |f: &dyn Fn(JobId) -> Event| active.iter().map(|j| f(*j)).collect::<Vec<_>>();
    match class {
        EventClass::MusicRequested => vec![Event::MusicRequested { prompt: None }],
        EventClass::RetryRequested => vec![Event::RetryRequested { from: None }],
        EventClass::RetryFromMusic => vec![Event::RetryRequested {
            from: Some(RetryFrom::Music),
        }],
        EventClass::RetryFromMix => vec![Event::RetryRequested {
            from: Some(RetryFrom::Mix),
        }],
        EventClass::GoapiPending => vec![goapi(TaskStatus::Pending, vec![], None)],
        EventClass::GoapiProcessing => vec![goapi(TaskStatus::Processing, vec![], None)],
        EventClass::GoapiStaged => vec![goapi(TaskStatus::Staged, vec![], None)],
        EventClass::GoapiCompleted => vec![goapi(TaskStatus::Completed, good, None)],
        EventClass::GoapiCompletedUnusable => vec![goapi(
            TaskStatus::Completed,
            vec![Track {
                url: None,
                finished: true,
            }],
            None,
        )],
        EventClass::GoapiFailed => vec![goapi(TaskStatus::Failed, vec![], Some("quota"))],
        EventClass::NcaSucceeded => vec![nca(NcaResult::Succeeded {
            output: url("https://videos.example/final.mp4"),
        })],
        EventClass::NcaFailed => vec![nca(NcaResult::Failed {
            error: "ffmpeg failed".into(),
        })],
        EventClass::NcaFailedNoAudio => vec![nca(NcaResult::Failed {
            error:
                "Stream specifier ':a' in filtergraph description [0:a][bg]amix matches no streams."
                    .into(),
        })],
        EventClass::ExternalAccepted => per_job(&|job| Event::ExternalAccepted {
            job,
            external_id: "ext-new".into(),
        }),
        EventClass::EffectFailed => per_job(&|job| Event::EffectFailed {
            job,
            error: "rejected".into(),
        }),
        EventClass::JobDeadlinePassed => per_job(&|job| Event::JobDeadlinePassed { job }),
        EventClass::Resubmitting => per_job(&|job| Event::Resubmitting {
            job,
            reason: "NCA: HTTP 504".into(),
        }),
        EventClass::TrackReachable | EventClass::TrackGone | EventClass::TrackUnknown => {
            let check = match class {
                EventClass::TrackReachable => TrackCheck::Reachable {
                    detail: "HEAD answered 200".into(),
                },
                EventClass::TrackGone => TrackCheck::Gone {
                    detail: "GET answered 404".into(),
                },
                _ => TrackCheck::Unknown {
                    detail: "GET answered 503".into(),
                },
            };
            // The answer for the job whose mix waits for it, else for the video's mix.
            s.video
                .checking_track
                .or(add_job.map(|j| j.id))
                .map(|job| Event::TrackChecked {
                    job,
                    check: check.clone(),
                })
                .into_iter()
                .collect()
        }
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
