//! Properties of `decide()` over whole event sequences.
//!
//! A sequence starts from a realistic snapshot and is a list of abstract actions that are
//! resolved against the snapshot at the time they are delivered: "GoAPI reports on the
//! current task", "NCA answers an older submission", "the deadline of the 2nd job passed",
//! "the previous event again". That keeps events relevant (they hit real jobs, tasks and
//! submissions, so sequences do reach adding_music, completed and the failed states) while
//! still mixing in duplicates, reorderings, stale and unknown ids. It also shrinks well:
//! removing an action never makes the others meaningless.
//!
//! The runs are deterministic (fixed seed, no failure files), so a failure here is a
//! failure everywhere.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use reelstate::domain::{JobStatus, JobType, MediaUrl, RecordId, VideoStatus};
use reelstate::machine::{
    Ctx, Decision, Effect, Event, Job, JobId, NcaResult, NcaUpdate, Outcome, Policy, Rejection,
    RetryFrom, Snapshot, TaskStatus, TaskUpdate, Track, TrackCheck, Video, decide,
};
use uuid::Uuid;

const CASES: u32 = 256;
const MAX_EVENTS: usize = 30;
/// The seed CI runs: fixed, so a failure here is a failure everywhere.
const SEED: u64 = 0x5eed_f00d;

/// Fixed seed and case count unless asked: `REELSTATE_PROPTEST_SEED=N` replays a seed
/// (a fresh one is printed by `REELSTATE_PROPTEST_SEED=fresh`), and
/// `REELSTATE_PROPTEST_CASES=N` explores further.
fn config() -> Config {
    let seed = match std::env::var("REELSTATE_PROPTEST_SEED").ok().as_deref() {
        None | Some("") => SEED,
        Some("fresh") => {
            let seed = rand_seed();
            eprintln!("machine_properties: REELSTATE_PROPTEST_SEED={seed}");
            seed
        }
        Some(n) => n
            .parse()
            .expect("REELSTATE_PROPTEST_SEED is a number or `fresh`"),
    };
    let cases = std::env::var("REELSTATE_PROPTEST_CASES")
        .ok()
        .map(|n| n.parse().expect("REELSTATE_PROPTEST_CASES is a number"))
        .unwrap_or(CASES);
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    }
}

/// A seed nobody chose, for exploring beyond CI's fixed one.
fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

// ---------------------------------------------------------------------------------------
// Starting snapshots

#[derive(Debug, Clone, Copy)]
enum Start {
    /// Segments combined, a source video, no music job yet.
    SegmentsCombined,
    /// A status another part of the pipeline wrote, with the processing music_generation
    /// job it created (with or without GoAPI's task id recorded).
    OtherWithPipelineJob { task_id_known: bool },
    /// The engine already asked for music (job accepted by GoAPI or not yet).
    GeneratingMusic { accepted: bool },
    /// Generating music for a video that has no Combined Segments Video to mix under.
    GeneratingWithoutSource,
    /// A video already final in the base (completed, or one of the failed states) that
    /// still carries an active job an older handler left behind: its deadline, its
    /// reconciliation and any late callback must leave the video as it is.
    FinalWithLeftOverJob { status: FinalStatus, kind: LeftOver },
}

#[derive(Debug, Clone, Copy)]
enum FinalStatus {
    Completed,
    GenerationFailed,
    AdditionFailed,
}

#[derive(Debug, Clone, Copy)]
enum LeftOver {
    /// A processing music_addition job bound to an NCA job.
    Mix,
    /// A processing music_generation job bound to a GoAPI task.
    Task,
    /// A pending music_addition job that never got an NCA id.
    PendingMix,
}

const VIDEO: &str = "recPropTest000001";

fn rec(s: &str) -> RecordId {
    RecordId::parse(s).expect("test record ids are valid")
}

fn url(s: &str) -> MediaUrl {
    MediaUrl::parse(s).expect("test URLs are valid")
}

fn epoch() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

fn existing_job(record: &str, kind: JobType, status: JobStatus, ext: Option<&str>) -> Job {
    Job {
        id: JobId::for_record(&rec(record)),
        kind,
        status,
        external_id: ext.map(str::to_owned),
        submission_id: None,
        error: None,
        created_at: epoch(),
        ended_at: None,
        resubmissions: 0,
    }
}

fn start_snapshot(start: Start, foreign_jobs: bool) -> Snapshot {
    let mut video = Video::new(rec(VIDEO), VideoStatus::SegmentsCombined);
    video.source_video = Some(url("https://videos.example/combined.mp4"));
    video.music_prompt = Some("calm piano".into());
    let gen_job =
        |status, ext| existing_job("recPipelineJob001", JobType::MusicGeneration, status, ext);
    let mut jobs = Vec::new();
    match start {
        Start::SegmentsCombined => {}
        Start::OtherWithPipelineJob { task_id_known } => {
            video.status = VideoStatus::Other("music_requested".into());
            jobs.push(gen_job(
                JobStatus::Processing,
                task_id_known.then_some("task-pipeline"),
            ));
        }
        Start::GeneratingMusic { accepted } => {
            video.status = VideoStatus::GeneratingMusic;
            jobs.push(if accepted {
                gen_job(JobStatus::Processing, Some("task-pipeline"))
            } else {
                gen_job(JobStatus::Pending, None)
            });
        }
        Start::GeneratingWithoutSource => {
            video.status = VideoStatus::GeneratingMusic;
            video.source_video = None;
            jobs.push(gen_job(JobStatus::Processing, Some("task-pipeline")));
        }
        Start::FinalWithLeftOverJob { status, kind } => {
            video.music = Some(url("https://music.example/old.mp3"));
            video.status = match status {
                FinalStatus::Completed => {
                    video.final_video = Some(url("https://videos.example/final.mp4"));
                    VideoStatus::Completed
                }
                FinalStatus::GenerationFailed => VideoStatus::MusicGenerationFailed,
                FinalStatus::AdditionFailed => VideoStatus::MusicAdditionFailed,
            };
            if status_is_failed(status) {
                video.error_details = Some("failed earlier".into());
            }
            let mix = |status, ext: Option<&str>| {
                existing_job("recLeftOverMix001", JobType::MusicAddition, status, ext)
            };
            match kind {
                LeftOver::Mix => jobs.push(mix(JobStatus::Processing, Some("nca-left-over"))),
                LeftOver::PendingMix => jobs.push(mix(JobStatus::Pending, None)),
                LeftOver::Task => jobs.push(gen_job(JobStatus::Processing, Some("task-pipeline"))),
            }
        }
    }
    if foreign_jobs {
        // Jobs of other stages, linked to the same video: the engine must leave them be,
        // even when an event names them.
        let other = |s: &str| JobType::Other(s.into());
        jobs.insert(
            0,
            existing_job(
                "recThumbnailJob01",
                other("thumbnail"),
                JobStatus::Pending,
                None,
            ),
        );
        jobs.push(existing_job(
            "recVoiceoverJob01",
            other("voiceover"),
            JobStatus::Completed,
            Some("vo-1"),
        ));
    }
    Snapshot { video, jobs }
}

// ---------------------------------------------------------------------------------------
// Actions, resolved into events against the current snapshot

/// Which task, submission or external id an event carries.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// The latest job's (its recorded id, or the id the service would give it).
    Current,
    /// Any job's of that type, older ones included.
    Older(Index),
    /// An id no job of this video has (a small pool, so unknown ids recur).
    Unknown(u8),
    /// No id at all (NCA's legacy callbacks).
    Absent,
}

/// Which job the callback URL it came to names (only URLs we signed name one).
#[derive(Debug, Clone, Copy)]
enum Named {
    /// The latest job of the event's type (the URL we handed out for it).
    Current,
    /// Any job of the video (an older job's URL, or another type's).
    Any(Index),
    /// No job: a URL configured elsewhere, or a development-mode callback.
    Nothing,
}

#[derive(Debug, Clone, Copy)]
enum Tracks {
    Usable,
    UsableAfterUnfinished,
    Empty,
    UnfinishedOnly,
    NoUrl,
}

#[derive(Debug, Clone)]
enum Action {
    MusicRequested {
        prompt: Option<String>,
    },
    Retry {
        from: Option<RetryFrom>,
    },
    Goapi {
        task: Pick,
        status: TaskStatus,
        tracks: Tracks,
        error: Option<String>,
        n: u8,
        named: Named,
    },
    Nca {
        submission: Pick,
        nca_job: Pick,
        succeeded: bool,
        n: u8,
        named: Named,
    },
    Deadline {
        job: Option<Index>,
    },
    Accepted {
        job: Option<Index>,
        own_id: bool,
        n: u8,
    },
    EffectFailed {
        job: Option<Index>,
        error: String,
    },
    /// The executor's answer to a track check: for the job a check waits for (`None`), or
    /// for any job of the video.
    TrackChecked {
        job: Option<Index>,
        verdict: u8,
    },
    /// The previous event delivered again.
    Redeliver,
    /// An earlier event delivered again, late.
    Replay(Index),
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        6 => Just(Pick::Current),
        2 => any::<Index>().prop_map(Pick::Older),
        1 => any::<u8>().prop_map(Pick::Unknown),
    ]
}

fn pick_or_absent() -> impl Strategy<Value = Pick> {
    prop_oneof![9 => pick(), 1 => Just(Pick::Absent)]
}

fn named() -> impl Strategy<Value = Named> {
    prop_oneof![
        6 => Just(Named::Current),
        2 => any::<Index>().prop_map(Named::Any),
        2 => Just(Named::Nothing),
    ]
}

fn job_pick() -> impl Strategy<Value = Option<Index>> {
    prop_oneof![9 => any::<Index>().prop_map(Some), 1 => Just(None)]
}

fn action() -> impl Strategy<Value = Action> {
    let status = prop_oneof![
        1 => Just(TaskStatus::Pending),
        2 => Just(TaskStatus::Processing),
        1 => Just(TaskStatus::Staged),
        4 => Just(TaskStatus::Completed),
        1 => Just(TaskStatus::Failed),
    ];
    let tracks = prop_oneof![
        6 => Just(Tracks::Usable),
        1 => Just(Tracks::UsableAfterUnfinished),
        1 => Just(Tracks::Empty),
        1 => Just(Tracks::UnfinishedOnly),
        1 => Just(Tracks::NoUrl),
    ];
    let error = proptest::option::of(prop_oneof![Just(String::new()), "[a-z ]{1,12}"]);
    prop_oneof![
        2 => proptest::option::of("[a-z]{1,8}").prop_map(|prompt| Action::MusicRequested { prompt }),
        3 => prop_oneof![
            4 => Just(None),
            1 => Just(Some(RetryFrom::Music)),
            1 => Just(Some(RetryFrom::Mix)),
        ].prop_map(|from| Action::Retry { from }),
        3 => (proptest::option::weighted(0.2, any::<Index>()), 0..3u8)
            .prop_map(|(job, verdict)| Action::TrackChecked { job, verdict }),
        8 => (pick(), status, tracks, error, any::<u8>(), named()).prop_map(
            |(task, status, tracks, error, n, named)| Action::Goapi { task, status, tracks, error, n, named }
        ),
        8 => (pick_or_absent(), pick_or_absent(), proptest::bool::weighted(0.7), any::<u8>(), named()).prop_map(
            |(submission, nca_job, succeeded, n, named)| Action::Nca { submission, nca_job, succeeded, n, named }
        ),
        1 => job_pick().prop_map(|job| Action::Deadline { job }),
        3 => (job_pick(), proptest::bool::weighted(0.8), any::<u8>())
            .prop_map(|(job, own_id, n)| Action::Accepted { job, own_id, n }),
        1 => (job_pick(), prop_oneof![Just(String::new()), "[a-z ]{1,12}"])
            .prop_map(|(job, error)| Action::EffectFailed { job, error }),
        3 => Just(Action::Redeliver),
        2 => any::<Index>().prop_map(Action::Replay),
    ]
}

#[derive(Debug, Clone)]
struct Scenario {
    start: Start,
    foreign_jobs: bool,
    actions: Vec<Action>,
}

fn status_is_failed(s: FinalStatus) -> bool {
    !matches!(s, FinalStatus::Completed)
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let final_status = prop_oneof![
        Just(FinalStatus::Completed),
        Just(FinalStatus::GenerationFailed),
        Just(FinalStatus::AdditionFailed),
    ];
    let left_over = prop_oneof![
        Just(LeftOver::Mix),
        Just(LeftOver::Task),
        Just(LeftOver::PendingMix)
    ];
    let start = prop_oneof![
        3 => Just(Start::SegmentsCombined),
        3 => any::<bool>().prop_map(|task_id_known| Start::OtherWithPipelineJob { task_id_known }),
        3 => any::<bool>().prop_map(|accepted| Start::GeneratingMusic { accepted }),
        1 => Just(Start::GeneratingWithoutSource),
        2 => (final_status, left_over)
            .prop_map(|(status, kind)| Start::FinalWithLeftOverJob { status, kind }),
    ];
    (
        start,
        any::<bool>(),
        proptest::collection::vec(action(), 1..=MAX_EVENTS),
    )
        .prop_map(|(start, foreign_jobs, actions)| Scenario {
            start,
            foreign_jobs,
            actions,
        })
}

/// The id a service would give the job at `pos` in the snapshot.
fn service_id(s: &Snapshot, pos: usize) -> String {
    match s.jobs[pos].kind {
        JobType::MusicGeneration => format!("task-{pos}"),
        JobType::MusicAddition => format!("nca-{pos}"),
        JobType::Other(_) => format!("ext-{pos}"),
    }
}

fn positions(s: &Snapshot, kind: &JobType) -> Vec<usize> {
    (0..s.jobs.len())
        .filter(|&p| &s.jobs[p].kind == kind)
        .collect()
}

/// The external id a `pick` names among the jobs of `kind`.
fn external_id(s: &Snapshot, kind: &JobType, p: Pick, unknown: &str) -> Option<String> {
    let ps = positions(s, kind);
    let chosen = match p {
        Pick::Absent => return None,
        Pick::Unknown(n) => return Some(format!("{unknown}-{}", n % 3)),
        Pick::Current => ps.last().copied(),
        Pick::Older(i) if !ps.is_empty() => Some(ps[i.index(ps.len())]),
        Pick::Older(_) => None,
    };
    Some(match chosen {
        Some(pos) => s.jobs[pos]
            .external_id
            .clone()
            .unwrap_or_else(|| service_id(s, pos)),
        None => format!("{unknown}-0"),
    })
}

fn submission(s: &Snapshot, p: Pick) -> Option<String> {
    let subs: Vec<String> = s
        .jobs_of(&JobType::MusicAddition)
        .filter_map(|j| j.submission_id.clone())
        .collect();
    let other_video = |n: u8| Some(format!("add_music:recSomeOtherVid01:{}", n % 3 + 1));
    match p {
        Pick::Absent => None,
        Pick::Unknown(n) => other_video(n),
        Pick::Current => subs.last().cloned().or_else(|| other_video(0)),
        Pick::Older(i) if !subs.is_empty() => Some(subs[i.index(subs.len())].clone()),
        Pick::Older(_) => other_video(0),
    }
}

fn named_job(s: &Snapshot, kind: &JobType, named: Named) -> Option<JobId> {
    match named {
        Named::Current => positions(s, kind).last().map(|&p| s.jobs[p].id),
        Named::Any(i) if !s.jobs.is_empty() => Some(s.jobs[i.index(s.jobs.len())].id),
        Named::Any(_) | Named::Nothing => None,
    }
}

fn job_id(s: &Snapshot, job: Option<Index>) -> (JobId, Option<usize>) {
    match job {
        Some(i) if !s.jobs.is_empty() => {
            let pos = i.index(s.jobs.len());
            (s.jobs[pos].id, Some(pos))
        }
        _ => (JobId(Uuid::from_u128(0xdead)), None),
    }
}

fn tracks(t: Tracks, n: u8) -> Vec<Track> {
    let good = |k: u8| Track {
        url: Some(url(&format!(
            "https://music.example/track-{}-{k}.mp3",
            n % 4
        ))),
        finished: true,
    };
    let unfinished = Track {
        url: Some(url("https://music.example/partial.mp3")),
        finished: false,
    };
    match t {
        Tracks::Usable => vec![good(1), good(2)],
        Tracks::UsableAfterUnfinished => vec![unfinished, good(1)],
        Tracks::Empty => vec![],
        Tracks::UnfinishedOnly => vec![unfinished],
        Tracks::NoUrl => vec![Track {
            url: None,
            finished: true,
        }],
    }
}

/// The event an action stands for in snapshot `s`, given the events delivered so far.
fn resolve(a: &Action, s: &Snapshot, delivered: &[Event]) -> Option<Event> {
    Some(match a {
        Action::MusicRequested { prompt } => Event::MusicRequested {
            prompt: prompt.clone(),
        },
        Action::Retry { from } => Event::RetryRequested { from: *from },
        Action::TrackChecked { job, verdict } => {
            let job = match job {
                None => s.video.checking_track.unwrap_or(job_id(s, None).0),
                Some(_) => job_id(s, *job).0,
            };
            let detail = format!("verdict {verdict}");
            let check = match verdict {
                0 => TrackCheck::Reachable { detail },
                1 => TrackCheck::Gone { detail },
                _ => TrackCheck::Unknown { detail },
            };
            Event::TrackChecked { job, check }
        }
        Action::Goapi {
            task,
            status,
            tracks: t,
            error,
            n,
            named,
        } => Event::GoapiTaskUpdate(TaskUpdate {
            task_id: external_id(s, &JobType::MusicGeneration, *task, "task-r")
                .expect("GoAPI picks are never Absent"),
            status: *status,
            tracks: if *status == TaskStatus::Completed {
                tracks(*t, *n)
            } else {
                vec![]
            },
            error: error.clone(),
            named_job: named_job(s, &JobType::MusicGeneration, *named),
        }),
        Action::Nca {
            submission: sub,
            nca_job,
            succeeded,
            n,
            named,
        } => Event::NcaJobFinished(NcaUpdate {
            submission_id: submission(s, *sub),
            nca_job_id: external_id(s, &JobType::MusicAddition, *nca_job, "nca-r"),
            result: if *succeeded {
                NcaResult::Succeeded {
                    output: url(&format!("https://videos.example/final-{}.mp4", n % 4)),
                }
            } else {
                NcaResult::Failed {
                    error: format!("ffmpeg exited with {}", n % 4),
                }
            },
            named_job: named_job(s, &JobType::MusicAddition, *named),
        }),
        Action::Deadline { job } => Event::JobDeadlinePassed {
            job: job_id(s, *job).0,
        },
        Action::Accepted { job, own_id, n } => {
            let (job, pos) = job_id(s, *job);
            let external_id = match pos {
                Some(pos) if *own_id => service_id(s, pos),
                _ => format!("ext-r{}", n % 3),
            };
            Event::ExternalAccepted { job, external_id }
        }
        Action::EffectFailed { job, error } => Event::EffectFailed {
            job: job_id(s, *job).0,
            error: error.clone(),
        },
        Action::Redeliver => delivered.last()?.clone(),
        Action::Replay(i) if !delivered.is_empty() => delivered[i.index(delivered.len())].clone(),
        Action::Replay(_) => return None,
    })
}

fn is_webhook(e: &Event) -> bool {
    matches!(e, Event::GoapiTaskUpdate(_) | Event::NcaJobFinished(_))
}

fn is_command(e: &Event) -> bool {
    matches!(
        e,
        Event::MusicRequested { .. } | Event::RetryRequested { .. }
    )
}

/// A fresh context for delivery number `n`: every delivery is a new inbox entry, with its
/// own event id (from which new job ids derive) and a later clock.
fn ctx(n: u128, e: &Event) -> Ctx {
    Ctx {
        now: epoch() + Duration::minutes(n as i64),
        event_id: Uuid::from_u128(0x0e0e_0000_0000 + n),
        from_webhook: is_webhook(e),
        policy: Policy::default(),
    }
}

// ---------------------------------------------------------------------------------------
// Running a sequence

#[derive(Debug)]
struct Step {
    before: Snapshot,
    event: Event,
    ctx: Ctx,
    result: Result<Decision, Rejection>,
}

impl Step {
    /// A rejected command leaves the snapshot as it was.
    fn after(&self) -> &Snapshot {
        match &self.result {
            Ok(d) => &d.next,
            Err(_) => &self.before,
        }
    }
}

fn run(sc: &Scenario) -> (Snapshot, Vec<Step>) {
    let start = start_snapshot(sc.start, sc.foreign_jobs);
    let mut s = start.clone();
    let mut delivered = Vec::new();
    let mut steps = Vec::new();
    for a in &sc.actions {
        let Some(event) = resolve(a, &s, &delivered) else {
            continue;
        };
        let ctx = ctx(steps.len() as u128 + 1, &event);
        let result = decide(&s, &event, &ctx);
        let step = Step {
            before: s.clone(),
            event: event.clone(),
            ctx,
            result,
        };
        s = step.after().clone();
        delivered.push(event);
        steps.push(step);
    }
    (start, steps)
}

fn effects(step: &Step) -> &[Effect] {
    step.result.as_ref().map_or(&[], |d| d.effects.as_slice())
}

fn video_patch_status(effects: &[Effect]) -> Vec<&VideoStatus> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::UpdateVideo(p) => p.status.as_ref(),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config())]

    /// completed is final: nothing changes its status, Music or Final Video (or anything
    /// else about the video).
    #[test]
    fn completed_is_absorbing(sc in scenario()) {
        for st in run(&sc).1.iter().filter(|st| st.before.video.status == VideoStatus::Completed) {
            prop_assert_eq!(&st.after().video, &st.before.video, "{:?} changed a completed video", st.event);
            prop_assert_eq!(&st.after().jobs, &st.before.jobs, "{:?} changed a completed video's jobs", st.event);
        }
    }

    /// The failed states are final for everything but an operator's retry.
    #[test]
    fn failed_states_are_absorbing_except_for_retry(sc in scenario()) {
        for st in run(&sc).1.iter().filter(|st| st.before.video.status.is_failed()) {
            if !matches!(st.event, Event::RetryRequested { .. }) {
                prop_assert_eq!(&st.after().video, &st.before.video, "{:?} changed a failed video", st.event);
                prop_assert_eq!(&st.after().jobs, &st.before.jobs, "{:?} changed a failed video's jobs", st.event);
            }
        }
    }

    /// A retry supersedes the music jobs still active before it: none stays active, and no
    /// later news of one of them changes the video (no second mix beside the retry's, no
    /// completion with an older track).
    #[test]
    fn a_retry_supersedes_the_jobs_active_before_it(sc in scenario()) {
        let mut superseded = BTreeSet::new();
        for st in run(&sc).1 {
            let Ok(d) = &st.result else { continue };
            if let Event::RetryRequested { .. } = st.event {
                for j in st.before.jobs.iter().filter(|j| {
                    j.status.is_active() && matches!(j.kind, JobType::MusicGeneration | JobType::MusicAddition)
                }) {
                    prop_assert!(d.next.job(j.id).is_some_and(|n| n.status.is_final()),
                        "job {} stayed active through a retry", j.id);
                    superseded.insert(j.id);
                }
            } else if d.job.is_some_and(|j| superseded.contains(&j)) {
                prop_assert_eq!(&d.next.video, &st.before.video,
                    "{:?}, news of a superseded job, changed the video", st.event);
                prop_assert!(d.effects.iter().all(|e| !matches!(e, Effect::SubmitNcaMix { .. } | Effect::CreateGoapiTask { .. })),
                    "{:?}, news of a superseded job, started a paid call", st.event);
            }
        }
    }

    /// One track gives one mix: at most one SubmitNcaMix per music_generation job and per
    /// submission id over the whole sequence, and each names the job it creates.
    #[test]
    fn at_most_one_nca_submission_per_track_and_per_id(sc in scenario()) {
        let mut per_generation_job = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for st in run(&sc).1 {
            let Ok(d) = &st.result else { continue };
            for e in &d.effects {
                let Effect::SubmitNcaMix { job, submission_id, video, music, volume, voice } = e else { continue };
                // Mixed under the voice unless a mix of this video found no audio track.
                let no_audio = d.next.jobs_of(&JobType::MusicAddition)
                    .any(|j| j.error.as_deref().is_some_and(reelstate::machine::mix_found_no_audio_track));
                prop_assert_eq!(*voice, !no_audio);
                prop_assert!(ids.insert(submission_id.clone()), "submission id {} submitted twice", submission_id);
                if let Event::GoapiTaskUpdate(_) = st.event {
                    let g = d.job.expect("a GoAPI decision that submits names its job");
                    prop_assert_eq!(&st.before.job(g).map(|j| &j.kind), &Some(&JobType::MusicGeneration));
                    prop_assert!(per_generation_job.insert(g), "music_generation job {} submitted twice", g);
                }
                // A retried mix's job was created by the retry; its mix follows the check.
                let answers_check = matches!(st.event, Event::TrackChecked { job: j, .. } if j == *job)
                    && st.before.video.checking_track == Some(*job);
                let created = d.next.job(*job).filter(|_| st.before.job(*job).is_none() || answers_check);
                prop_assert!(created.is_some(), "SubmitNcaMix for job {} that this decision did not create", job);
                let created = created.unwrap();
                prop_assert_eq!(&created.kind, &JobType::MusicAddition);
                prop_assert_eq!(created.submission_id.as_ref(), Some(submission_id));
                prop_assert_eq!(Some(video), d.next.video.source_video.as_ref());
                prop_assert_eq!(Some(music), d.next.video.music.as_ref());
                prop_assert_eq!(*volume, 0.2);
            }
        }
    }

    /// Delivering an event twice in a row (a new inbox entry, same content) gives the same
    /// snapshot as delivering it once, and the second delivery only closes its event record.
    #[test]
    fn delivering_twice_is_delivering_once(sc in scenario()) {
        for (i, st) in run(&sc).1.iter().enumerate() {
            let once = st.after();
            let ctx = ctx(1_000 + i as u128, &st.event);
            let again = decide(once, &st.event, &ctx);
            let twice = again.as_ref().map_or(once, |d| &d.next);
            prop_assert_eq!(twice, once, "second {:?} changed the snapshot", st.event);
            if let Ok(d) = &again {
                prop_assert_ne!(d.outcome, Outcome::Applied);
                for e in &d.effects {
                    prop_assert!(
                        matches!(e, Effect::RecordWebhookOutcome { .. }),
                        "second {:?} emitted {:?}", st.event, e
                    );
                }
            }
        }
    }

    /// What people see in Airtable is never contradictory: a completed video has its Music
    /// and Final Video, a failed video and a failed job say why.
    #[test]
    fn final_states_carry_their_fields(sc in scenario()) {
        let (start, steps) = run(&sc);
        for s in std::iter::once(&start).chain(steps.iter().map(Step::after)) {
            let v = &s.video;
            if v.status == VideoStatus::Completed {
                prop_assert!(v.music.is_some() && v.final_video.is_some(), "completed without Music/Final Video: {:?}", v);
            }
            if v.status.is_failed() {
                prop_assert!(v.error_details.as_deref().is_some_and(|e| !e.trim().is_empty()), "{} without Error Details", v.status);
            }
            for j in s.jobs.iter().filter(|j| j.status == JobStatus::Failed) {
                prop_assert!(j.error.as_deref().is_some_and(|e| !e.trim().is_empty()), "failed job without an error: {:?}", j);
            }
        }
    }

    /// The only way into completed is from adding_music, so a finished video always went
    /// through the mix.
    #[test]
    fn completed_only_through_adding_music(sc in scenario()) {
        let (start, steps) = run(&sc);
        let mut history = vec![start.video.status.clone()];
        for st in &steps {
            let to = &st.after().video.status;
            if to == &VideoStatus::Completed && st.before.video.status != VideoStatus::Completed {
                prop_assert_eq!(&st.before.video.status, &VideoStatus::AddingMusic, "{:?} completed the video", st.event);
                prop_assert!(history.contains(&VideoStatus::AddingMusic), "history {:?}", history);
            }
            history.push(to.clone());
        }
    }

    /// Outcome and snapshot agree: Applied changes the snapshot; anything else leaves it
    /// untouched and emits nothing but the event log entry. Only commands are rejected:
    /// a webhook always ends in a decision that is recorded.
    #[test]
    fn outcome_matches_the_change(sc in scenario()) {
        for st in run(&sc).1 {
            match &st.result {
                Err(r) => prop_assert!(is_command(&st.event), "{:?} rejected: {}", st.event, r),
                Ok(d) if d.outcome == Outcome::Applied => {
                    prop_assert_ne!(&d.next, &st.before, "{:?} Applied without a change", st.event);
                }
                Ok(d) => {
                    prop_assert_eq!(&d.next, &st.before, "{:?} was {} but changed the snapshot", st.event, d.outcome);
                    prop_assert!(
                        d.effects.iter().all(|e| matches!(e, Effect::RecordWebhookOutcome { .. })),
                        "{:?} was {} but emitted {:?}", st.event, d.outcome, d.effects
                    );
                }
            }
        }
    }

    /// The effects are exactly the state change: an UpdateVideo with status X iff the status
    /// became X, a CreateJob (and its start effect) for exactly the new jobs, an UpdateJob
    /// for exactly the jobs whose projected fields changed, the event log entry last and
    /// only for webhooks.
    #[test]
    fn effects_are_the_state_change(sc in scenario()) {
        for st in run(&sc).1 {
            let Ok(d) = &st.result else { continue };
            let (a, b) = (&st.before, &d.next);
            let statuses = video_patch_status(&d.effects);
            if a.video.status == b.video.status {
                prop_assert!(statuses.is_empty(), "{:?}: UpdateVideo status {:?} without a status change", st.event, statuses);
            } else {
                prop_assert_eq!(statuses, vec![&b.video.status], "{:?}: status {} -> {}", st.event, a.video.status, b.video.status);
            }
            let updates = d.effects.iter().filter(|e| matches!(e, Effect::UpdateVideo(_))).count();
            // What the Videos record shows; the rest (retries, prompts, a waiting check) is
            // the engine's own.
            let shown = |v: &Video| (v.status.clone(), v.music.clone(), v.final_video.clone(), v.error_details.clone());
            prop_assert_eq!(updates, usize::from(shown(&a.video) != shown(&b.video)), "{:?}: UpdateVideo count", st.event);

            // Jobs are only ever appended.
            prop_assert!(b.jobs.len() >= a.jobs.len());
            prop_assert!(a.jobs.iter().zip(&b.jobs).all(|(x, y)| x.id == y.id), "jobs reordered or removed");
            let new: BTreeMap<JobId, &Job> = b.jobs[a.jobs.len()..].iter().map(|j| (j.id, j)).collect();
            let mut created = BTreeMap::new();
            let mut started = BTreeSet::new();
            let mut updated = BTreeSet::new();
            for e in &d.effects {
                match e {
                    Effect::CreateJob { job, kind, status } => { created.insert(*job, (kind.clone(), *status)); }
                    Effect::CreateGoapiTask { job, .. } | Effect::SubmitNcaMix { job, .. } | Effect::CheckTrack { job, .. }
                        if new.contains_key(job) => { prop_assert!(started.insert(*job)); }
                    // The mix of a job a retry created, once its track check answered.
                    Effect::SubmitNcaMix { job, .. } => {
                        let answered = matches!(st.event, Event::TrackChecked { job: j, .. } if j == *job);
                        prop_assert!(answered && a.video.checking_track == Some(*job), "{:?}: a mix for old job {}", st.event, job);
                    }
                    Effect::CreateGoapiTask { job, .. } | Effect::CheckTrack { job, .. } => {
                        prop_assert!(false, "{:?}: started old job {}", st.event, job);
                    }
                    Effect::UpdateJob { job, patch } => {
                        prop_assert!(updated.insert(*job), "two UpdateJob for {}", job);
                        let (x, y) = (a.job(*job), b.job(*job));
                        prop_assert!(x.is_some() && y.is_some(), "UpdateJob for a job that is not old");
                        let (x, y) = (x.unwrap(), y.unwrap());
                        prop_assert_eq!(patch.status, (x.status != y.status).then_some(y.status));
                        prop_assert_eq!(&patch.external_id, &(x.external_id != y.external_id).then(|| y.external_id.clone()).flatten());
                        prop_assert_eq!(&patch.error, &(x.error != y.error).then(|| y.error.clone()).flatten());
                    }
                    Effect::UpdateVideo(_) | Effect::RecordWebhookOutcome { .. } => {}
                }
            }
            prop_assert_eq!(
                created.keys().collect::<Vec<_>>(), new.keys().collect::<Vec<_>>(),
                "{:?}: CreateJob for other jobs than the new ones", st.event
            );
            for (id, j) in &new {
                prop_assert_eq!(&created[id], &(j.kind.clone(), j.status));
            }
            prop_assert_eq!(started.iter().collect::<Vec<_>>(), new.keys().collect::<Vec<_>>(), "every new job is started, once");
            for x in &a.jobs {
                let y = b.job(x.id).unwrap();
                let changed = x.status != y.status || x.external_id != y.external_id || x.error != y.error;
                prop_assert_eq!(updated.contains(&x.id), changed, "{:?}: UpdateJob for {} vs change", st.event, x.id);
            }

            let logs: Vec<usize> = d.effects.iter().enumerate()
                .filter(|(_, e)| matches!(e, Effect::RecordWebhookOutcome { .. }))
                .map(|(i, _)| i).collect();
            if st.ctx.from_webhook {
                prop_assert_eq!(logs, vec![d.effects.len() - 1], "the event log entry comes last, once");
                let Some(Effect::RecordWebhookOutcome { outcome, job, .. }) = d.effects.last() else { unreachable!() };
                prop_assert_eq!((outcome, job), (&d.outcome, &d.job));
            } else {
                prop_assert!(logs.is_empty(), "an event log entry for a non-webhook event");
            }
        }
    }

    /// pending → processing → completed | failed, and nothing ever leaves completed or failed.
    #[test]
    fn job_statuses_only_move_forward(sc in scenario()) {
        use JobStatus::*;
        for st in run(&sc).1 {
            let b = st.after();
            for x in &st.before.jobs {
                let y = b.job(x.id);
                prop_assert!(y.is_some(), "job {} disappeared", x.id);
                let (from, to) = (x.status, y.unwrap().status);
                let allowed = from == to || matches!(
                    (from, to),
                    (Pending, Processing | Completed | Failed) | (Processing, Completed | Failed)
                );
                prop_assert!(allowed, "{:?} moved job {} from {} to {}", st.event, x.id, from, to);
            }
            for y in b.jobs.iter().filter(|y| st.before.job(y.id).is_none()) {
                prop_assert_eq!(y.status, Pending, "new jobs start pending");
            }
        }
    }

    /// Callbacks bind to what they name: a GoAPI update binds only to the job whose task
    /// id is recorded, or to the job the signed URL names while that job has no task id;
    /// an NCA callback to a signed URL binds only to the job the URL names.
    #[test]
    fn callbacks_bind_only_to_what_they_name(sc in scenario()) {
        for st in run(&sc).1 {
            let Ok(d) = &st.result else { continue };
            let Some(job) = d.job else { continue };
            let before = st.before.job(job);
            match &st.event {
                Event::GoapiTaskUpdate(u) => {
                    let j = before.expect("a bound job exists");
                    let by_task = j.external_id.as_deref() == Some(u.task_id.as_str());
                    let by_url = u.named_job == Some(job) && j.external_id.is_none();
                    prop_assert!(by_task || by_url, "{:?} bound to {:?}", u, j);
                }
                Event::NcaJobFinished(u) if u.named_job.is_some() => {
                    prop_assert_eq!(u.named_job, Some(job), "{:?}", u);
                }
                _ => {}
            }
        }
    }

    /// Jobs another stage created (types the engine does not know) are never touched, even
    /// when an event names them.
    #[test]
    fn jobs_of_other_types_are_never_modified(sc in scenario()) {
        for st in run(&sc).1 {
            for x in st.before.jobs.iter().filter(|j| matches!(j.kind, JobType::Other(_))) {
                prop_assert_eq!(st.after().job(x.id), Some(x), "{:?} modified a job of another stage", st.event);
                let touched = effects(&st).iter().any(|e| matches!(e, Effect::UpdateJob { job, .. } if *job == x.id));
                prop_assert!(!touched, "{:?} emitted an UpdateJob for a job of another stage", st.event);
            }
        }
    }

    /// A retried mix is paid for only after its track is checked, and new music only on
    /// proof that the track is gone: a retry never submits a mix itself, a track check
    /// that answered `gone` never mixes, one that did not never orders a GoAPI task, and
    /// a check answers once.
    #[test]
    fn a_retried_mix_waits_for_its_track_check(sc in scenario()) {
        let mut answered = BTreeSet::new();
        for st in run(&sc).1 {
            let Ok(d) = &st.result else { continue };
            let mixes = d.effects.iter().filter(|e| matches!(e, Effect::SubmitNcaMix { .. })).count();
            let tasks = d.effects.iter().filter(|e| matches!(e, Effect::CreateGoapiTask { .. })).count();
            match &st.event {
                Event::RetryRequested { .. } => {
                    prop_assert_eq!(mixes, 0, "a retry mixed without checking the track");
                    let checks: Vec<_> = d.effects.iter().filter_map(|e| match e {
                        Effect::CheckTrack { job, music } => Some((*job, music.clone())),
                        _ => None,
                    }).collect();
                    prop_assert_eq!(checks.len() + tasks, 1, "{:?}", d.effects);
                    if let Some((job, music)) = checks.first() {
                        prop_assert_eq!(d.next.video.checking_track, Some(*job));
                        prop_assert_eq!(d.next.video.music.as_ref(), Some(music));
                    }
                }
                Event::TrackChecked { job, check } if d.outcome == Outcome::Applied => {
                    prop_assert!(answered.insert(*job), "the check of job {} answered twice", job);
                    prop_assert_eq!(d.next.video.checking_track, None);
                    if let TrackCheck::Gone { .. } = check {
                        prop_assert_eq!((mixes, tasks), (0, 1));
                    } else {
                        prop_assert_eq!((mixes, tasks), (1, 0));
                    }
                }
                Event::TrackChecked { .. } => prop_assert_eq!((mixes, tasks), (0, 0)),
                _ => {}
            }
        }
    }

    /// decide() is a function: the same snapshot, event and context give the same decision.
    #[test]
    fn decide_is_deterministic(sc in scenario()) {
        for st in run(&sc).1 {
            prop_assert_eq!(decide(&st.before, &st.event, &st.ctx), st.result.clone());
        }
    }
}

/// The generator is only worth its properties if it reaches every state: over a fixed
/// number of generated sequences, every status and every outcome must occur.
#[test]
fn sequences_reach_every_state() {
    let mut runner = TestRunner::new(config());
    let strategy = scenario();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut job_statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut applied: BTreeSet<&'static str> = BTreeSet::new();
    for _ in 0..CASES {
        let sc = strategy
            .new_tree(&mut runner)
            .expect("the strategy generates")
            .current();
        let (start, steps) = run(&sc);
        let mut seen = BTreeSet::new();
        let mut seen_jobs = BTreeSet::new();
        for s in std::iter::once(&start).chain(steps.iter().map(Step::after)) {
            seen.insert(match &s.video.status {
                VideoStatus::Other(_) => "(other)".to_owned(),
                known => known.name().to_owned(),
            });
            seen_jobs.extend(
                s.jobs
                    .iter()
                    .map(|j| format!("{} {}", j.kind.name(), j.status)),
            );
        }
        for st in &steps {
            if matches!(&st.result, Ok(d) if d.outcome == Outcome::Applied) {
                applied.insert(st.event.label());
            }
            let o = match &st.result {
                Ok(d) => d.outcome.to_string(),
                Err(_) => "rejected".to_owned(),
            };
            *outcomes.entry(o).or_default() += 1;
        }
        for s in seen {
            *statuses.entry(s).or_default() += 1;
        }
        for s in seen_jobs {
            *job_statuses.entry(s).or_default() += 1;
        }
    }
    let want_statuses = VideoStatus::KNOWN
        .iter()
        .map(|s| s.name().to_owned())
        .chain(["(other)".to_owned()]);
    for s in want_statuses {
        // A status reached in under 5% of the sequences would leave its properties
        // barely exercised.
        let n = statuses.get(&s).copied().unwrap_or(0);
        assert!(
            n * 20 >= CASES as usize,
            "only {n} of {CASES} sequences reach {s}: {statuses:?}"
        );
    }
    for o in [
        "applied",
        "recorded",
        "duplicate",
        "stale",
        "unmatched",
        "rejected",
    ] {
        assert!(
            outcomes.contains_key(o),
            "no decision was {o}: {outcomes:?}"
        );
    }
    // A retried mix's check and every answer to it are exercised.
    for label in [
        "retry_requested",
        "retry_from_music",
        "retry_from_mix",
        "track_reachable",
        "track_gone",
        "track_unknown",
    ] {
        assert!(
            applied.contains(label),
            "no {label} was applied: {applied:?}"
        );
    }
    for kind in ["music_generation", "music_addition"] {
        for status in ["pending", "processing", "completed", "failed"] {
            let key = format!("{kind} {status}");
            assert!(
                job_statuses.contains_key(&key),
                "no {key} job: {job_statuses:?}"
            );
        }
    }
}

/// A retry keeps the prompt the operator gave: the new GoAPI task asks for the same music,
/// not for the base's Music Prompt.
#[test]
fn a_retry_orders_the_music_the_operator_asked_for() {
    let s = start_snapshot(Start::SegmentsCombined, false);
    assert_eq!(s.video.music_prompt.as_deref(), Some("calm piano"));
    let asked = Event::MusicRequested {
        prompt: Some("epic drums".into()),
    };
    let d = decide(&s, &asked, &ctx(1, &asked)).expect("accepted");
    let job = d.job.expect("a job");
    let failed = Event::GoapiTaskUpdate(TaskUpdate {
        task_id: "task-1".into(),
        status: TaskStatus::Failed,
        tracks: vec![],
        error: Some("quota".into()),
        named_job: Some(job),
    });
    let d = decide(&d.next, &failed, &ctx(2, &failed)).expect("decided");
    assert_eq!(d.next.video.status, VideoStatus::MusicGenerationFailed);
    let retry = Event::RetryRequested { from: None };
    let d = decide(&d.next, &retry, &ctx(3, &retry)).expect("accepted");
    let prompts: Vec<_> = d
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::CreateGoapiTask { prompt, .. } => Some(prompt.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(prompts, vec![Some("epic drums".to_owned())]);
}
