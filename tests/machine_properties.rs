//! Properties of the pure state machine over arbitrary event sequences: duplicates,
//! reorderings, intermediate statuses, commands, and the engine's own events. Events are
//! generated against the snapshot they are applied to, so sequences really do reach
//! adding_music, completed and the failed states (a coverage test checks that).

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use reelstate::domain::{JobStatus, JobType, MediaUrl, RecordId, VideoStatus};
use reelstate::machine::{
    Ctx, Decision, Effect, Event, Job, JobId, NcaResult, NcaUpdate, Outcome, Policy, Snapshot,
    TaskStatus, TaskUpdate, Track, Video, decide,
};
use uuid::Uuid;

/// An event described relative to whatever snapshot it meets.
#[derive(Debug, Clone)]
enum Abs {
    MusicRequested,
    Retry,
    /// `which`: 0 the current music task, 1 an older one, 2 an unknown task.
    Goapi {
        which: u8,
        status: u8,
        usable: bool,
    },
    /// `which`: 0 the current submission, 1 an older one, 2 unknown, 3 none (legacy).
    Nca {
        which: u8,
        success: bool,
    },
    Accepted {
        job: u8,
        ext: u8,
    },
    EffectFailed {
        job: u8,
    },
    Deadline {
        job: u8,
    },
    /// Deliver the previous event again.
    Repeat,
}

fn abs() -> impl Strategy<Value = Abs> {
    prop_oneof![
        1 => Just(Abs::MusicRequested),
        1 => Just(Abs::Retry),
        6 => (0u8..3, 0u8..5, prop::bool::weighted(0.8))
            .prop_map(|(which, status, usable)| Abs::Goapi { which, status, usable }),
        4 => (0u8..4, prop::bool::weighted(0.7)).prop_map(|(which, success)| Abs::Nca { which, success }),
        2 => (0u8..4, 0u8..3).prop_map(|(job, ext)| Abs::Accepted { job, ext }),
        1 => (0u8..4).prop_map(|job| Abs::EffectFailed { job }),
        1 => (0u8..4).prop_map(|job| Abs::Deadline { job }),
        2 => Just(Abs::Repeat),
    ]
}

fn url(s: &str) -> MediaUrl {
    MediaUrl::parse(s).unwrap()
}

fn video_id() -> RecordId {
    RecordId::parse("recPr0pertyTest01").unwrap()
}

fn job(n: u128, kind: JobType, status: JobStatus, ext: Option<&str>) -> Job {
    Job {
        id: JobId(Uuid::from_u128(n)),
        kind,
        status,
        external_id: ext.map(str::to_owned),
        submission_id: None,
        error: None,
        created_at: DateTime::<Utc>::UNIX_EPOCH,
        ended_at: None,
    }
}

/// Realistic starting points; each carries a job of a type the engine does not own.
fn start(kind: u8) -> Snapshot {
    let mut v = Video::new(video_id(), VideoStatus::SegmentsCombined);
    v.source_video = Some(url("https://videos.example/combined.mp4"));
    let foreign = job(
        99,
        JobType::Other("thumbnail".into()),
        JobStatus::Processing,
        Some("x"),
    );
    let mut s = Snapshot {
        video: v,
        jobs: vec![foreign],
    };
    match kind {
        0 => {}
        1 => {
            s.video.status = VideoStatus::Other("music_requested".into());
            s.jobs.push(job(
                1,
                JobType::MusicGeneration,
                JobStatus::Processing,
                Some("task-a"),
            ));
        }
        2 => {
            s.video.status = VideoStatus::Other("music_requested".into());
            s.jobs.push(job(
                1,
                JobType::MusicGeneration,
                JobStatus::Processing,
                None,
            ));
        }
        _ => {
            s.video.status = VideoStatus::GeneratingMusic;
            s.jobs.push(job(
                1,
                JobType::MusicGeneration,
                JobStatus::Processing,
                Some("task-a"),
            ));
        }
    }
    s
}

fn engine_jobs(s: &Snapshot) -> Vec<&Job> {
    s.jobs
        .iter()
        .filter(|j| !matches!(j.kind, JobType::Other(_)))
        .collect()
}

/// Turns an abstract event into a concrete one against `s`.
fn resolve(a: &Abs, s: &Snapshot, prev: Option<&Event>, n: usize) -> Option<Event> {
    let gen_jobs: Vec<&Job> = s.jobs_of(&JobType::MusicGeneration).collect();
    let add_jobs: Vec<&Job> = s.jobs_of(&JobType::MusicAddition).collect();
    let jobs = engine_jobs(s);
    let pick = |i: u8| (!jobs.is_empty()).then(|| jobs[i as usize % jobs.len()].id);
    Some(match a {
        Abs::MusicRequested => Event::MusicRequested { prompt: None },
        Abs::Retry => Event::RetryRequested,
        Abs::Goapi {
            which,
            status,
            usable,
        } => {
            let task_id = match which {
                0 => gen_jobs
                    .last()
                    .and_then(|j| j.external_id.clone())
                    .unwrap_or_else(|| "task-a".into()),
                1 => gen_jobs
                    .first()
                    .and_then(|j| j.external_id.clone())
                    .unwrap_or_else(|| "task-old".into()),
                _ => format!("task-random-{n}"),
            };
            let status = [
                TaskStatus::Pending,
                TaskStatus::Processing,
                TaskStatus::Staged,
                TaskStatus::Completed,
                TaskStatus::Failed,
            ][*status as usize % 5];
            let tracks = if *usable {
                vec![
                    Track {
                        url: None,
                        finished: true,
                    },
                    Track {
                        url: Some(url("https://music.example/a.mp3")),
                        finished: true,
                    },
                ]
            } else {
                vec![Track {
                    url: Some(url("https://music.example/b.mp3")),
                    finished: false,
                }]
            };
            Event::GoapiTaskUpdate(TaskUpdate {
                task_id,
                status,
                tracks,
                error: (status == TaskStatus::Failed).then(|| "quota".to_owned()),
            })
        }
        Abs::Nca { which, success } => {
            let submission_id = match which {
                0 => add_jobs.last().and_then(|j| j.submission_id.clone()),
                1 => add_jobs.first().and_then(|j| j.submission_id.clone()),
                2 => Some(format!("add_music:{}:99", video_id())),
                _ => None,
            };
            Event::NcaJobFinished(NcaUpdate {
                submission_id,
                nca_job_id: Some(format!("nca-{n}")),
                result: if *success {
                    NcaResult::Succeeded {
                        output: url("https://videos.example/final.mp4"),
                    }
                } else {
                    NcaResult::Failed {
                        error: "ffmpeg failed".into(),
                    }
                },
            })
        }
        Abs::Accepted { job, ext } => Event::ExternalAccepted {
            job: pick(*job)?,
            external_id: format!("ext-{ext}"),
        },
        Abs::EffectFailed { job } => Event::EffectFailed {
            job: pick(*job)?,
            error: "rejected".into(),
        },
        Abs::Deadline { job } => Event::JobDeadlinePassed { job: pick(*job)? },
        Abs::Repeat => prev?.clone(),
    })
}

fn ctx(n: usize) -> Ctx {
    Ctx {
        now: DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(n as i64),
        event_id: Uuid::from_u128(0x1000 + n as u128),
        from_webhook: true,
        policy: Policy {
            volume: 0.2,
            max_retries: 2,
        },
    }
}

fn allowed_job_move(from: JobStatus, to: JobStatus) -> bool {
    use JobStatus::*;
    from == to
        || matches!(
            (from, to),
            (Pending, Processing) | (Pending | Processing, Completed | Failed)
        )
}

/// Checks one step; returns the next snapshot.
fn step(s: &Snapshot, e: &Event, n: usize, seen: &mut Run) -> Result<Snapshot, TestCaseError> {
    let c = ctx(n);
    let result = decide(s, e, &c);
    prop_assert_eq!(&result, &decide(s, e, &c), "decide is deterministic");
    let d: Decision = match result {
        Err(_) => {
            prop_assert!(
                matches!(e, Event::MusicRequested { .. } | Event::RetryRequested),
                "only commands are rejected: {:?}",
                e
            );
            return Ok(s.clone());
        }
        Ok(d) => d,
    };
    let next = &d.next;
    // Applied iff something changed.
    prop_assert_eq!(
        d.outcome == Outcome::Applied,
        next != s,
        "outcome {:?} vs change",
        d.outcome
    );
    // Final states absorb.
    if s.video.status == VideoStatus::Completed {
        prop_assert_eq!(&next.video, &s.video, "completed is absorbing");
    }
    if s.video.status.is_failed() && !matches!(e, Event::RetryRequested) {
        prop_assert_eq!(
            &next.video,
            &s.video,
            "a failed video changes only on retry"
        );
    }
    // What completed and failed states carry.
    if next.video.status == VideoStatus::Completed {
        prop_assert!(next.video.music.is_some() && next.video.final_video.is_some());
        if s.video.status != VideoStatus::Completed {
            prop_assert_eq!(
                &s.video.status,
                &VideoStatus::AddingMusic,
                "completed only from adding_music"
            );
        }
    }
    if next.video.status.is_failed() {
        prop_assert!(
            next.video
                .error_details
                .as_deref()
                .is_some_and(|e| !e.is_empty())
        );
    }
    for j in &next.jobs {
        if j.status == JobStatus::Failed {
            prop_assert!(j.error.is_some(), "a failed job says why");
        }
        match s.job(j.id) {
            Some(old) => {
                prop_assert!(
                    allowed_job_move(old.status, j.status),
                    "job {:?} -> {:?}",
                    old.status,
                    j.status
                );
                if matches!(j.kind, JobType::Other(_)) {
                    prop_assert_eq!(old, j, "foreign jobs are untouched");
                }
            }
            None => prop_assert_eq!(j.status, JobStatus::Pending, "new jobs start pending"),
        }
    }
    for old in &s.jobs {
        prop_assert!(next.job(old.id).is_some(), "jobs never disappear");
    }
    // Effects agree with the change.
    let new_jobs: BTreeSet<JobId> = next
        .jobs
        .iter()
        .filter(|j| s.job(j.id).is_none())
        .map(|j| j.id)
        .collect();
    let created: BTreeSet<JobId> = d
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::CreateJob { job, .. } => Some(*job),
            _ => None,
        })
        .collect();
    prop_assert_eq!(new_jobs, created);
    let status_effect = d.effects.iter().find_map(|e| match e {
        Effect::UpdateVideo(p) => p.status.clone(),
        _ => None,
    });
    let changed = (next.video.status != s.video.status).then(|| next.video.status.clone());
    prop_assert_eq!(status_effect, changed);
    prop_assert!(
        matches!(d.effects.last(), Some(Effect::RecordWebhookOutcome { .. })),
        "a webhook's decision ends by recording its outcome"
    );
    // NCA submissions: unique ids, at most one per completed music_generation job.
    for effect in &d.effects {
        if let Effect::SubmitNcaMix { submission_id, .. } = effect {
            prop_assert!(
                seen.submissions.insert(submission_id.clone()),
                "submission {} twice",
                submission_id
            );
            // Mixes started by GoAPI news (not by a retry): one per generation job.
            if let Event::GoapiTaskUpdate(_) = e {
                let gen_job = d.job.expect("a GoAPI decision names its job");
                prop_assert!(
                    seen.mixed_gen_jobs.insert(gen_job),
                    "two mixes for one generation job"
                );
            }
        }
    }
    // The same news again changes nothing and does nothing but record itself.
    let again = decide(next, e, &ctx(n + 10_000));
    if let Ok(again) = again {
        prop_assert_eq!(&again.next, next, "a second delivery changes nothing");
        prop_assert!(
            again
                .effects
                .iter()
                .all(|e| matches!(e, Effect::RecordWebhookOutcome { .. })),
            "a second delivery has no effect: {:?}",
            again.effects
        );
    }
    seen.statuses.insert(next.video.status.name().to_owned());
    Ok(d.next)
}

#[derive(Default)]
struct Run {
    submissions: HashSet<String>,
    mixed_gen_jobs: HashSet<JobId>,
    statuses: BTreeSet<String>,
}

fn run(kind: u8, events: &[Abs], seen: &mut Run) -> Result<(), TestCaseError> {
    let mut s = start(kind);
    let mut prev: Option<Event> = None;
    for (n, a) in events.iter().enumerate() {
        let Some(e) = resolve(a, &s, prev.as_ref(), n) else {
            continue;
        };
        s = step(&s, &e, n, seen)?;
        prev = Some(e);
    }
    Ok(())
}

fn config() -> Config {
    Config {
        cases: 256,
        failure_persistence: None,
        // Fixed: the suite is deterministic; set PROPTEST_RNG_SEED to explore others.
        rng_seed: RngSeed::Fixed(
            std::env::var("PROPTEST_RNG_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0x5eed_2026),
        ),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_sequence_keeps_the_invariants(kind in 0u8..4, events in prop::collection::vec(abs(), 1..30)) {
        let mut seen = Run::default();
        run(kind, &events, &mut seen)?;
    }
}

#[test]
fn generated_sequences_reach_every_status() {
    let mut runner = TestRunner::new(config());
    let strategy = (0u8..4, prop::collection::vec(abs(), 1..30));
    let mut reached = BTreeSet::new();
    for _ in 0..400 {
        let (kind, events) = strategy.new_tree(&mut runner).unwrap().current();
        let mut seen = Run::default();
        run(kind, &events, &mut seen).unwrap();
        reached.extend(seen.statuses);
    }
    for status in VideoStatus::KNOWN {
        if status == VideoStatus::SegmentsCombined {
            continue;
        }
        assert!(
            reached.contains(status.name()),
            "never reached {}: {reached:?}",
            status.name()
        );
    }
}

/// The machine module stays pure: no IO, clocks, randomness or wire formats.
#[test]
fn the_machine_module_is_pure() {
    let dir = format!("{}/src/machine", env!("CARGO_MANIFEST_DIR"));
    let forbidden = [
        "tokio",
        "warp",
        "reqwest",
        "serde_json",
        "std::fs",
        "std::net",
        "std::io",
        "Utc::now",
        "SystemTime",
        "Instant::now",
        "rand::",
        "new_v4",
        "std::thread",
        "std::env",
    ];
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for f in forbidden {
                if line.contains(f) {
                    found.push(format!("{}:{}: {f}", path.display(), i + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "impure names in src/machine:\n{}",
        found.join("\n")
    );
}
