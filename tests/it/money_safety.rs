//! Money and state safety, end to end through the real binary: a finished video stays
//! finished whatever its left-over jobs do, and an answer that does not prove a request was
//! refused never buys a second GoAPI task or NCA mix.

use crate::support;

use std::time::Duration;

use reelstate::domain::{JobStatus, JobType, RecordId, VideoStatus};
use reelstate::records::{JobFields, VideoFields};
use serde_json::Value;
use support::world::{World, WorldBuilder, goapi_fixture, url};

fn fast_reconcile(b: support::app::AppBuilder) -> support::app::AppBuilder {
    b.env("REELSTATE_GOAPI_DEADLINE_SECS", "0.5")
        .env("REELSTATE_NCA_DEADLINE_SECS", "0.5")
        .env("REELSTATE_RECONCILE_INTERVAL_SECS", "0.2")
        .env("REELSTATE_RECONCILE_CHECKS", "2")
}

/// A video an older handler left in `status` in the base, with its music (and the final
/// video it produced, if any).
async fn left_over_video(
    w: &World,
    n: usize,
    status: VideoStatus,
    final_video: Option<&str>,
) -> RecordId {
    let video = w.seed_video(n).await;
    w.records
        .update_video(
            &video,
            &VideoFields {
                status: Some(status),
                music: Some(url("https://music.example/old.mp3")),
                final_video: final_video.map(url),
                ..VideoFields::default()
            },
        )
        .await
        .expect("left-over video");
    video
}

/// A job an older handler left active on `video`.
async fn left_over_job(
    w: &World,
    video: &RecordId,
    n: usize,
    (kind, status, ext): (JobType, JobStatus, Option<&str>),
) {
    w.records
        .write_job(&JobFields {
            job_id: format!("old-handler-{n}-{video}"),
            job_type: Some(kind),
            status: Some(status),
            related_video: Some(video.clone()),
            external_job_id: ext.map(str::to_owned),
            webhook_url: None,
            error_details: None,
            timestamps: None,
        })
        .await
        .expect("left-over job");
}

/// A video `completed` in the base, with the Final Video an older handler produced and that
/// handler's jobs left active: a music_addition job that never got NCA's id, and a
/// music_generation job still bound to its GoAPI task.
async fn seed_completed_with_left_overs(w: &World) -> RecordId {
    let video = left_over_video(
        w,
        1,
        VideoStatus::Completed,
        Some("https://videos.example/final.mp4"),
    )
    .await;
    left_over_job(
        w,
        &video,
        1,
        (JobType::MusicAddition, JobStatus::Processing, None),
    )
    .await;
    left_over_job(
        w,
        &video,
        2,
        (
            JobType::MusicGeneration,
            JobStatus::Processing,
            Some("task-left-over"),
        ),
    )
    .await;
    video
}

/// A video the engine has not seen, `adding_music` in the base with a mix job an older
/// handler started and never saw accepted: its deadline does fail it. It shows that the
/// reconciler has been through the jobs that were due.
async fn seed_adding_with_left_over(w: &World) -> RecordId {
    let video = left_over_video(w, 2, VideoStatus::AddingMusic, None).await;
    left_over_job(
        w,
        &video,
        3,
        (JobType::MusicAddition, JobStatus::Pending, None),
    )
    .await;
    video
}

/// The video's entries in the event log, as `/events` lists them.
async fn events_for(w: &World, video: &RecordId) -> Vec<Value> {
    let (_, events) = w.app.get_json(&format!("/events?video_id={video}")).await;
    events["events"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no event list: {events}"))
}

/// The event log's entry of the delivery `accepted` answered, once the worker has done it.
async fn processed(w: &World, video: &RecordId, accepted: &Value) -> Value {
    let event = accepted["event_id"].as_str().expect("event id").to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = events_for(w, video).await;
        if let Some(e) = events
            .iter()
            .find(|e| e["event_id"] == event.as_str() && e["state"] == "done")
        {
            return e.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never processed: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asks for music for a new video, then waits until it completed with its final video.
async fn music_until_completed(w: &World) -> (RecordId, Value) {
    let video = w.seed_video(1).await;
    let (s, body) = w.request_music(&video).await;
    assert_eq!(s, 202, "{body}");
    let v = w.wait_settled(&video, "completed").await;
    assert!(v["final_video"].is_string(), "{v}");
    (video, v)
}

#[tokio::test]
async fn a_completed_video_with_left_over_jobs_stays_completed_through_deadline_and_reconciliation()
{
    let w = WorldBuilder::new().app(fast_reconcile).start().await;
    let video = seed_completed_with_left_overs(&w).await;
    let control = seed_adding_with_left_over(&w).await;

    // First contact: the engine loads each video and its jobs (the requests are refused),
    // the completed one first, so that its jobs fall due first.
    let (s, body) = w.request_music(&video).await;
    assert_eq!(s, 409, "{body}");
    let (s, body) = w.request_music(&control).await;
    assert_eq!(s, 409, "{body}");

    // A late failure webhook for the left-over task changes nothing either.
    let late = goapi_fixture("udio_failed.json", "task-left-over", 1_700_000_100);
    let (s, body) = w.goapi_webhook(&video, &late).await;
    assert_eq!(s, 202, "{body}");

    // The deadlines (0.5 s) pass and the reconciler goes through the due jobs: the control
    // video's job fails after its last check, later than the completed video's jobs fell due.
    w.wait_settled(&control, "music_addition_failed").await;

    let v = w.wait_settled(&video, "completed").await;
    assert_eq!(v["final_video"], "https://videos.example/final.mp4", "{v}");
    let stored = w
        .records
        .get_video(&video)
        .await
        .expect("video")
        .expect("exists");
    assert_eq!(stored.status, Some(VideoStatus::Completed));
    assert_eq!(
        stored.final_video.as_ref().map(|u| u.as_str()),
        Some("https://videos.example/final.mp4")
    );
    assert_eq!(stored.error_details, None, "{stored:?}");
    let events = events_for(&w, &video).await;
    assert!(
        events.iter().all(|e| e["endpoint"] != "reconcile"),
        "nothing is fed in for jobs of a final video: {events:?}"
    );
    let log = w.app.log_text();
    assert_eq!(
        log.matches("not polling a left-over job of a final video")
            .count(),
        2,
        "each left-over job is set aside once, then never polled again"
    );
}

/// The reported incident: a gateway in front of NCA answered 504 after the toolkit had
/// queued the mix, whose callback followed. One mix, a completed video.
#[tokio::test]
async fn a_gateway_504_after_queueing_gives_exactly_one_mix_and_a_completed_video() {
    let w = World::start().await;
    w.nca.gateway_timeout_after_queueing_next(1);
    music_until_completed(&w).await;
    let per_id = w.nca.submissions_by_id();
    assert_eq!(w.nca.submissions().len(), 1, "one mix: {per_id:?}");
    assert_eq!(w.nca.attempts(), 1, "NCA was called once");
}

/// The same 504, and the toolkit's callback is lost too: the engine finds the finished
/// job at NCA (its status names our submission) instead of calling again.
#[tokio::test]
async fn after_a_504_the_engine_finds_the_mix_at_nca_instead_of_calling_again() {
    let w = WorldBuilder::new()
        .app(|b| b.env("REELSTATE_INTERRUPTED_GRACE_SECS", "0"))
        .start()
        .await;
    w.nca.gateway_timeout_after_queueing_next(1);
    w.nca.set_drop_callbacks(true);
    let (video, _) = music_until_completed(&w).await;
    assert_eq!(w.nca.attempts(), 1, "{:?}", w.nca.submissions_by_id());
    assert_eq!(w.nca.callbacks_sent().len(), 0);
    assert!(w.nca.listings() >= 1, "NCA's job listing was asked");
    let events = events_for(&w, &video).await;
    assert!(
        events.iter().any(|e| e["endpoint"] == "find-out"),
        "the result came from the look-up: {events:?}"
    );
}

/// A proxy's 503 page while NCA restarts proves nothing either: the engine waits until NCA
/// answers that it does not have the mix, then re-submits once, on the job's record.
#[tokio::test]
async fn a_mix_is_resubmitted_once_nca_says_it_does_not_have_it_and_the_history_shows_it() {
    let w = WorldBuilder::new()
        .app(|b| b.env("REELSTATE_INTERRUPTED_GRACE_SECS", "0"))
        .start()
        .await;
    w.nca.set_down(true);
    let video = w.seed_video(1).await;
    w.request_music(&video).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while w.nca.attempts() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "NCA never called");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.nca.set_down(false);
    let v = w.wait_settled(&video, "completed").await;
    assert!(v["final_video"].is_string(), "{v}");
    assert_eq!(
        w.nca.attempts(),
        2,
        "the refused call and one re-submission"
    );
    assert_eq!(w.nca.submissions().len(), 1);
    let events = events_for(&w, &video).await;
    let resubmissions: Vec<_> = events
        .iter()
        .filter(|e| e["endpoint"] == "resubmit")
        .collect();
    assert_eq!(resubmissions.len(), 1, "{events:?}");
    // Applied: it counts on the job (`resubmissions`), which no status shows.
    assert_eq!(resubmissions[0]["outcome"], "applied", "{events:?}");
    assert!(
        resubmissions[0]["job_id"].is_string(),
        "bound to its job: {events:?}"
    );
}

/// Never more than one automatic re-submission: when the re-submission gets no clear
/// answer either, the job fails at its deadline, visibly, and NCA is not called a third
/// time.
#[tokio::test]
async fn at_most_one_automatic_resubmission_per_job() {
    let w = WorldBuilder::new()
        .app(|b| {
            b.env("REELSTATE_INTERRUPTED_GRACE_SECS", "0")
                .env("REELSTATE_NCA_DEADLINE_SECS", "1")
                // The reconciler must not be the one that ends the job here.
                .env("REELSTATE_RECONCILE_INTERVAL_SECS", "600")
        })
        .start()
        .await;
    w.nca.set_down(true);
    let video = w.seed_video(1).await;
    w.request_music(&video).await;
    // The effect stays on record as failed (replayable), so "settled" is the status alone.
    let v = w.wait_status(&video, "music_addition_failed").await;
    let error = v["error_details"].as_str().unwrap_or_default();
    assert!(error.contains("not calling a third time"), "{v}");
    assert_eq!(w.nca.attempts(), 2, "the first call and one re-submission");
}

/// GoAPI's `code: 500` envelope on an HTTP 200, after the task was created: waiting for
/// the task's webhook, not ordering a second task.
#[tokio::test]
async fn a_goapi_error_envelope_after_creating_buys_no_second_task() {
    let w = World::start().await;
    w.goapi.fail_after_creating_next(1);
    music_until_completed(&w).await;
    assert_eq!(w.goapi.tasks().len(), 1, "one paid task");
    assert_eq!(w.nca.submissions().len(), 1);
}

/// NCA answered the compose call with the finished result (200 with `response`): that is
/// the callback, none follows, and the video completes without waiting for reconciliation.
#[tokio::test]
async fn ncas_synchronous_answer_counts_as_its_callback() {
    let w = World::start().await;
    w.nca.answer_synchronously_next(1);
    let (video, _) = music_until_completed(&w).await;
    assert_eq!(w.nca.callbacks_sent().len(), 0);
    assert_eq!(w.nca.submissions().len(), 1);
    let events = events_for(&w, &video).await;
    assert!(
        events.iter().all(|e| e["endpoint"] != "reconcile"),
        "{events:?}"
    );
}

/// Every URL we hand out carries `job` and `token` together: one that arrives with the job
/// and without its token is refused, at both endpoints (development mode included).
#[tokio::test]
async fn a_callback_url_issued_with_a_token_is_refused_without_it() {
    let w = WorldBuilder::new()
        .app(|b| b.env("REELSTATE_DEV_MODE", "true"))
        .start()
        .await;
    let video = w.seed_video(1).await;
    let job = uuid::Uuid::new_v4();
    let nca = w
        .app
        .client
        .post(format!(
            "{}/webhooks/nca-toolkit?video_id={video}&operation=add_music&job={job}",
            w.app.url
        ))
        .json(&serde_json::json!({"code": 200, "id": "x", "job_id": "j", "message": "success", "response": []}))
        .send()
        .await
        .expect("post");
    assert_eq!(nca.status().as_u16(), 401);
    let body: serde_json::Value = nca.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    let goapi = w
        .app
        .client
        .post(format!(
            "{}/webhooks/goapi?video_id={video}&job={job}",
            w.app.url
        ))
        .header("x-webhook-secret", support::app::GOAPI_SECRET)
        .json(&goapi_fixture(
            "udio_completed.json",
            "task-1",
            1_700_000_000,
        ))
        .send()
        .await
        .expect("post");
    assert_eq!(goapi.status().as_u16(), 401);
}

/// A task the video's jobs do not know, delivered to a URL that names no job, never binds
/// to the job that waits for its task id: it may be anyone's task.
#[tokio::test]
async fn an_unknown_task_never_binds_to_a_waiting_job() {
    let w = World::start().await;
    let video = w.seed_generating(1, None).await;
    let hook = goapi_fixture("udio_completed.json", "task-not-ours", 1_700_000_000);
    let (s, body) = w.goapi_webhook(&video, &hook).await;
    assert_eq!(s, 202, "{body}");
    let outcome = processed(&w, &video, &body).await;
    assert_eq!(outcome["outcome"], "unmatched", "{outcome}");
    let v = w.wait_settled(&video, "generating_music").await;
    assert!(v["music"].is_null(), "{v}");
    assert_eq!(
        w.nca.submissions().len(),
        0,
        "no mix for someone else's task"
    );
}

/// A combined video without an audio track: the mix under its voice fails with ffmpeg's
/// "matches no streams", and the music alone is submitted once, as a new job.
#[tokio::test]
async fn a_video_without_audio_gets_the_music_alone_in_one_more_mix() {
    let w = World::start().await;
    w.nca.set_videos_without_audio(true);
    music_until_completed(&w).await;
    let subs = w.nca.submissions();
    assert_eq!(subs.len(), 2, "the voice mix, then the music alone");
    let filter = |i: usize| {
        subs[i].body["filters"][0]["filter"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(filter(0).contains("[0:a]"));
    assert!(!filter(1).contains("[0:a]"), "{}", filter(1));
}

/// NCA refuses the mix with its own queue-full 429 until the last attempt the settings
/// allow, and then a gateway answers 504 after the toolkit queued it. An answer that does
/// not prove a refusal never uses up the attempts: the job waits for the callback, and the
/// video completes with its one render (a failed job here would make the render's callback
/// stale and the operator's retry a second paid render).
#[tokio::test]
async fn an_ambiguous_answer_on_the_last_allowed_attempt_does_not_fail_the_job() {
    let w = WorldBuilder::new()
        .app(|b| {
            b.env("REELSTATE_EFFECT_MAX_ATTEMPTS", "3")
                .env("REELSTATE_EFFECT_BACKOFF_MS", "10")
        })
        .start()
        .await;
    w.nca.queue_full_next(2);
    w.nca.gateway_timeout_after_queueing_next(1);
    w.nca.set_callback_delay(Duration::from_millis(500));
    music_until_completed(&w).await;
    assert_eq!(w.nca.submissions().len(), 1, "one render");
    assert_eq!(w.nca.attempts(), 3, "two refusals and the call NCA queued");
}

/// NCA answers 202 without a `job_id` (it took the job): not a failed job, and not a second
/// render at once. The engine settles it like any answer that proves nothing: here the
/// toolkit's listing says it has no such job, so the mix is re-submitted once, on record.
#[tokio::test]
async fn an_nca_acceptance_without_a_job_id_is_settled_not_failed() {
    let w = WorldBuilder::new()
        .app(|b| b.env("REELSTATE_INTERRUPTED_GRACE_SECS", "0"))
        .start()
        .await;
    // tests/fixtures/nca/compose_accepted.json, less its `job_id`.
    w.nca.respond_next(
        202,
        serde_json::json!({"code": 202, "id": "add_music:x:1", "message": "processing",
                           "pid": 6953, "queue_id": 139_652_379_057_488_i64, "max_queue_length": "unlimited",
                           "queue_length": 0, "build_number": 209}),
    );
    let (video, _) = music_until_completed(&w).await;
    assert_eq!(
        w.nca.submissions().len(),
        1,
        "{:?}",
        w.nca.submissions_by_id()
    );
    let events = events_for(&w, &video).await;
    let resubmissions = events
        .iter()
        .filter(|e| e["endpoint"] == "resubmit")
        .count();
    assert_eq!(resubmissions, 1, "{events:?}");
}

/// A video imported `music_generation_failed` with the music job an older handler left
/// processing: the operator's retry orders new music, and the old task's late completion
/// is stale. It neither starts a mix of its own beside the retry's, nor completes the video
/// with its track while the music the retry paid for is thrown away.
#[tokio::test]
async fn a_retry_supersedes_the_jobs_left_active_before_it() {
    let w = WorldBuilder::new().app(fast_reconcile).start().await;
    let video = left_over_video(&w, 3, VideoStatus::MusicGenerationFailed, None).await;
    left_over_job(
        &w,
        &video,
        4,
        (
            JobType::MusicGeneration,
            JobStatus::Processing,
            Some("task-left-over"),
        ),
    )
    .await;
    // The retry's own task calls back only when the reconciler asks after it.
    w.goapi.set_drop_webhooks(true);
    let (s, body) = w.retry(&video, None).await;
    assert_eq!(s, 202, "{body}");
    let late = goapi_fixture("udio_completed.json", "task-left-over", 1_700_000_200);
    let (s, body) = w.goapi_webhook(&video, &late).await;
    assert_eq!(s, 202, "{body}");
    let outcome = processed(&w, &video, &body).await;
    assert_eq!(outcome["outcome"], "stale", "{outcome}");

    let v = w.wait_settled(&video, "completed").await;
    let tasks = w.goapi.tasks();
    assert_eq!(tasks.len(), 1, "the retry's task: {tasks:?}");
    let subs = w.nca.submissions();
    assert_eq!(subs.len(), 1, "one render: {subs:?}");
    let mixed = subs[0].body.to_string();
    assert!(
        !mixed.contains("music.example"),
        "the left-over task's track is not mixed: {mixed}"
    );
    let jobs = v["jobs"].as_array().expect("jobs");
    let left = jobs
        .iter()
        .find(|j| j["external_id"] == "task-left-over")
        .unwrap_or_else(|| panic!("the left-over job: {v}"));
    assert_eq!(left["status"], "failed", "superseded by the retry: {left}");
}

/// The one automatic re-submission is counted on its job, not found in a window of recent
/// events: a flood of deliveries to the video (here 600 webhooks for tasks nobody ordered)
/// pushes the `resubmitting` entry out of the newest 500 while the re-submitted mix is
/// still unanswered, and NCA is still not called a third time.
#[tokio::test]
async fn the_one_resubmission_is_counted_on_its_job_whatever_the_event_log_holds() {
    let w = WorldBuilder::new()
        .app(|b| {
            b.env("REELSTATE_INTERRUPTED_GRACE_SECS", "0")
                .env("REELSTATE_NCA_DEADLINE_SECS", "1")
                .env("REELSTATE_RECONCILE_INTERVAL_SECS", "600")
        })
        .start()
        .await;
    w.nca.set_down(true);
    let video = w.seed_video(1).await;
    w.request_music(&video).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !events_for(&w, &video)
        .await
        .iter()
        .any(|e| e["endpoint"] == "resubmit")
    {
        assert!(tokio::time::Instant::now() < deadline, "never re-submitted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..600 {
        let hook = goapi_fixture(
            "udio_completed.json",
            &format!("task-flood-{i}"),
            1_700_000_000 + i,
        );
        let (s, body) = w.goapi_webhook(&video, &hook).await;
        assert_eq!(s, 202, "{body}");
    }
    let v = w.wait_status(&video, "music_addition_failed").await;
    let error = v["error_details"].as_str().unwrap_or_default();
    assert!(error.contains("not calling a third time"), "{v}");
    assert_eq!(w.nca.attempts(), 2, "the first call and one re-submission");
    let jobs = v["jobs"].as_array().expect("jobs");
    assert!(
        jobs.iter().any(|j| j["resubmissions"] == 1),
        "the job carries its re-submission: {v}"
    );
}
