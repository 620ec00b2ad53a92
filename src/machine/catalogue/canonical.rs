//! The inputs the catalogue explores: a canonical snapshot of each state (with the jobs a
//! video in it carries) and the canonical events of each class, aimed at its jobs.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::EventClass;
use crate::domain::{JobStatus, JobType, MediaUrl, RecordId, VideoStatus};
use crate::machine::{
    Event, Job, JobId, NcaResult, NcaUpdate, RetryFrom, Snapshot, TaskStatus, TaskUpdate, Track,
    TrackCheck, Video, submission_id,
};

fn url(s: &str) -> MediaUrl {
    MediaUrl::parse(s).expect("catalogue URLs are valid")
}

pub(super) fn epoch() -> DateTime<Utc> {
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
        resubmissions: 0,
    }
}

/// A canonical snapshot of each state, including the jobs a video in it has.
pub(crate) fn canonical_snapshots() -> Vec<Snapshot> {
    use JobStatus::{Completed, Failed, Pending, Processing};
    let id = RecordId::parse("recCata1ogue00000").expect("valid id");
    let sid = submission_id(&id, 1);
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
    // The jobs the states carry: the video's music task (job 1) and its mix (job 2), a job
    // an older handler left active (job 3), a retry's new mix (job 4).
    let task = |status: JobStatus, ext: Option<&str>| job(1, gen_.clone(), status, ext, None);
    let music = || task(Completed, Some("task-1"));
    let mix = |status: JobStatus, ext: Option<&str>| job(2, add.clone(), status, ext, Some(&sid));
    let left_over = |kind: &JobType, ext: &str| job(3, kind.clone(), Processing, Some(ext), None);
    let other = |status: &str| base(VideoStatus::Other(status.into()));
    vec![
        with(
            base(VideoStatus::SegmentsCombined),
            false,
            false,
            false,
            vec![],
        ),
        with(other("segments_combining"), false, false, false, vec![]),
        // A job another part of the pipeline started, video status written by it.
        with(
            other("music_requested"),
            false,
            false,
            false,
            vec![task(Processing, None)],
        ),
        with(
            base(VideoStatus::GeneratingMusic),
            false,
            false,
            false,
            vec![task(Pending, None)],
        ),
        with(
            base(VideoStatus::GeneratingMusic),
            false,
            false,
            false,
            vec![task(Processing, Some("task-1"))],
        ),
        with(
            base(VideoStatus::AddingMusic),
            true,
            false,
            false,
            vec![music(), mix(Pending, None)],
        ),
        with(
            base(VideoStatus::AddingMusic),
            true,
            false,
            false,
            vec![music(), mix(Processing, Some("nca-1"))],
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
                music(),
                mix(Failed, Some("nca-1")),
                job(4, add.clone(), Pending, None, Some(&submission_id(&id, 2))),
            ],
        ),
        with(
            base(VideoStatus::Completed),
            true,
            true,
            false,
            vec![music(), mix(Completed, Some("nca-1"))],
        ),
        with(
            base(VideoStatus::MusicGenerationFailed),
            false,
            false,
            true,
            vec![task(Failed, Some("task-1"))],
        ),
        with(
            base(VideoStatus::MusicAdditionFailed),
            true,
            false,
            true,
            vec![music(), mix(Failed, Some("nca-1"))],
        ),
        // Final videos still carrying a job an older handler left active (imported at first
        // contact): nothing but an operator's retry may move them.
        with(
            base(VideoStatus::Completed),
            true,
            true,
            false,
            vec![music(), left_over(&add, "nca-old")],
        ),
        with(
            base(VideoStatus::MusicGenerationFailed),
            false,
            false,
            true,
            vec![left_over(&gen_, "task-1")],
        ),
        with(
            base(VideoStatus::MusicAdditionFailed),
            true,
            false,
            true,
            vec![music(), left_over(&add, "nca-old")],
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
            vec![task(Processing, Some("task-1"))],
        ),
    ]
}

/// The canonical events of a class, aimed at the snapshot's current jobs.
pub(crate) fn canonical_events(class: EventClass, s: &Snapshot) -> Vec<Event> {
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
