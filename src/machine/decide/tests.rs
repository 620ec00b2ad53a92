use super::*;
use crate::domain::{JobStatus, MediaUrl, RecordId, VideoStatus};
use crate::machine::{Job, RetryFrom, TrackCheck, Video, submission_id};

fn url(s: &str) -> MediaUrl {
    MediaUrl::parse(s).expect("valid")
}

fn ctx(n: u128) -> Ctx {
    Ctx {
        now: DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(n as i64),
        event_id: Uuid::from_u128(n),
        from_webhook: false,
        policy: Policy::default(),
    }
}

/// A video whose mix failed, with the music GoAPI gave and the prompt the operator
/// asked for.
fn addition_failed() -> Snapshot {
    let id = RecordId::parse("recDecide00000001").expect("valid");
    let mut v = Video::new(id.clone(), VideoStatus::MusicAdditionFailed);
    v.source_video = Some(url("https://videos.example/combined.mp4"));
    v.music = Some(url("https://img.theapi.app/temp/track.mp3"));
    v.music_prompt = Some("the base's prompt".into());
    v.requested_prompt = Some("the operator's prompt".into());
    v.error_details = Some("404 Client Error: File not found".into());
    let job = |n: u128, kind, status, sid: Option<String>| Job {
        id: JobId(Uuid::from_u128(n)),
        kind,
        status,
        external_id: Some(format!("ext-{n}")),
        submission_id: sid,
        error: (status == JobStatus::Failed).then(|| "failed".to_owned()),
        created_at: DateTime::<Utc>::UNIX_EPOCH,
        ended_at: None,
        resubmissions: 0,
    };
    Snapshot {
        jobs: vec![
            job(1, JobType::MusicGeneration, JobStatus::Completed, None),
            job(
                2,
                JobType::MusicAddition,
                JobStatus::Failed,
                Some(submission_id(&id, 1)),
            ),
        ],
        video: v,
    }
}

fn retry(from: Option<RetryFrom>) -> Event {
    Event::RetryRequested { from }
}

fn checked(job: JobId, check: TrackCheck) -> Event {
    Event::TrackChecked { job, check }
}

fn kinds(d: &Decision) -> Vec<&'static str> {
    d.effects.iter().map(Effect::kind).collect()
}

/// The retry, decided: the new job whose mix waits for the check.
fn retried() -> (Decision, JobId) {
    let d = decide(&addition_failed(), &retry(None), &ctx(10)).expect("accepted");
    let job = d.job.expect("a job");
    (d, job)
}

#[test]
fn retrying_a_failed_mix_checks_the_track_before_paying_for_a_mix() {
    let (d, job) = retried();
    assert_eq!(d.outcome, Outcome::Applied);
    assert_eq!(kinds(&d), ["create_job", "update_video", "check_track"]);
    assert_eq!(
        d.effects.last(),
        Some(&Effect::CheckTrack {
            job,
            music: url("https://img.theapi.app/temp/track.mp3"),
        })
    );
    assert_eq!(d.next.video.status, VideoStatus::AddingMusic);
    assert_eq!(d.next.video.checking_track, Some(job));
    assert_eq!(d.next.video.retries, 1);
    let j = d.next.job(job).expect("created");
    assert_eq!(
        (&j.kind, j.status),
        (&JobType::MusicAddition, JobStatus::Pending)
    );
    // `from: mix` is the same retry, said explicitly.
    let mix = decide(&addition_failed(), &retry(Some(RetryFrom::Mix)), &ctx(10));
    assert_eq!(mix.map(|m| m.effects), Ok(d.effects));
}

#[test]
fn a_reachable_track_is_mixed_once() {
    let (d, job) = retried();
    let answer = checked(
        job,
        TrackCheck::Reachable {
            detail: "HEAD answered 200".into(),
        },
    );
    let mixed = decide(&d.next, &answer, &ctx(11)).expect("decided");
    assert_eq!(mixed.outcome, Outcome::Applied);
    let sid = d.next.job(job).and_then(|j| j.submission_id.clone());
    assert_eq!(
        mixed.effects,
        vec![Effect::SubmitNcaMix {
            job,
            submission_id: sid.expect("the job's own submission id"),
            video: url("https://videos.example/combined.mp4"),
            music: url("https://img.theapi.app/temp/track.mp3"),
            volume: 0.2,
            voice: true,
        }]
    );
    assert_eq!(mixed.next.video.checking_track, None);
    assert_eq!(mixed.next.video.status, VideoStatus::AddingMusic);
    // The same answer again (a replay) orders no second mix.
    let again = decide(&mixed.next, &answer, &ctx(12)).expect("decided");
    assert_eq!((again.outcome, again.effects.len()), (Outcome::Stale, 0));
}

#[test]
fn a_gone_track_orders_new_music_with_the_operators_prompt_and_no_mix() {
    let (d, job) = retried();
    let gone = checked(
        job,
        TrackCheck::Gone {
            detail: "HEAD answered 404; GET answered 404".into(),
        },
    );
    let next = decide(&d.next, &gone, &ctx(11)).expect("decided");
    assert_eq!(next.outcome, Outcome::Applied);
    assert_eq!(
        kinds(&next),
        [
            "update_job",
            "create_job",
            "update_video",
            "create_goapi_task"
        ]
    );
    assert!(
        next.effects.iter().any(|e| matches!(e,
            Effect::CreateGoapiTask { prompt, .. } if prompt.as_deref() == Some("the operator's prompt"))),
        "{:?}",
        next.effects
    );
    let failed = next.next.job(job).expect("the mix job");
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("gone") && e.contains("GET answered 404")),
        "{failed:?}"
    );
    assert_eq!(next.next.video.status, VideoStatus::GeneratingMusic);
    assert_eq!(next.next.video.checking_track, None);
    assert_eq!(next.next.video.retries, 1, "the same retry, not another");
}

#[test]
fn a_check_that_proves_nothing_mixes_the_track_rather_than_buying_music() {
    let (d, job) = retried();
    let unknown = checked(
        job,
        TrackCheck::Unknown {
            detail: "GET answered 503".into(),
        },
    );
    let next = decide(&d.next, &unknown, &ctx(11)).expect("decided");
    assert_eq!(kinds(&next), ["submit_nca_mix"]);
    assert!(next.note.is_some_and(|n| n.contains("mixing it anyway")));
}

#[test]
fn retry_from_music_orders_new_music_without_checking_the_track() {
    let d = decide(&addition_failed(), &retry(Some(RetryFrom::Music)), &ctx(10)).expect("accepted");
    assert_eq!(
        kinds(&d),
        ["create_job", "update_video", "create_goapi_task"]
    );
    assert!(matches!(d.effects.last(),
        Some(Effect::CreateGoapiTask { prompt, .. }) if prompt.as_deref() == Some("the operator's prompt")));
    assert_eq!(d.next.video.status, VideoStatus::GeneratingMusic);
    assert_eq!(d.next.video.checking_track, None);
    assert_eq!(d.next.video.retries, 1);
}

#[test]
fn retry_from_mix_needs_music_to_mix() {
    let mut s = addition_failed();
    s.video.status = VideoStatus::MusicGenerationFailed;
    s.video.music = None;
    assert_eq!(
        decide(&s, &retry(Some(RetryFrom::Mix)), &ctx(10)),
        Err(Rejection::NothingToMix {
            status: VideoStatus::MusicGenerationFailed
        })
    );
    // Without `from` it is the usual new task.
    let d = decide(&s, &retry(None), &ctx(10)).expect("accepted");
    assert_eq!(
        kinds(&d),
        ["create_job", "update_video", "create_goapi_task"]
    );
}

#[test]
fn the_retry_limit_holds_whatever_the_retry_starts_from() {
    let mut s = addition_failed();
    s.video.retries = Policy::default().max_retries;
    for from in [None, Some(RetryFrom::Music), Some(RetryFrom::Mix)] {
        assert_eq!(
            decide(&s, &retry(from), &ctx(10)),
            Err(Rejection::RetryLimit { limit: 3 })
        );
    }
}

#[test]
fn a_check_answered_after_its_job_failed_changes_nothing() {
    let (d, job) = retried();
    let deadline = Event::JobDeadlinePassed { job };
    let failed = decide(&d.next, &deadline, &ctx(11)).expect("decided");
    assert_eq!(failed.next.video.status, VideoStatus::MusicAdditionFailed);
    assert_eq!(failed.next.video.checking_track, None);
    for check in [
        TrackCheck::Reachable {
            detail: "HEAD answered 200".into(),
        },
        TrackCheck::Gone {
            detail: "GET answered 404".into(),
        },
    ] {
        let late = decide(&failed.next, &checked(job, check), &ctx(12)).expect("decided");
        assert_eq!(late.outcome, Outcome::Stale);
        assert_eq!(late.next, failed.next, "final is final");
        assert!(late.effects.is_empty());
    }
}

#[test]
fn a_check_answer_for_another_job_binds_to_nothing() {
    let (d, _) = retried();
    let other = checked(
        JobId(Uuid::from_u128(2)),
        TrackCheck::Gone {
            detail: "GET answered 404".into(),
        },
    );
    let next = decide(&d.next, &other, &ctx(11)).expect("decided");
    assert_eq!((next.outcome, next.effects.len()), (Outcome::Stale, 0));
    let unknown = checked(
        JobId(Uuid::from_u128(99)),
        TrackCheck::Gone {
            detail: "GET answered 404".into(),
        },
    );
    let next = decide(&d.next, &unknown, &ctx(11)).expect("decided");
    assert_eq!(next.outcome, Outcome::Unmatched);
}
