//! The whole music lifecycle, end to end, through the real binary with the GoAPI and NCA
//! doubles and the embedded records.

use crate::support;

use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;
use support::goapi_double::{CompletedShape, TaskOutcome};
use support::world::{UDIO_TASK, World, goapi_fixture};

fn submissions_each_once(w: &World) {
    let by_id = w.nca.submissions_by_id();
    assert!(!by_id.is_empty(), "no NCA submission at all");
    for (id, n) in by_id {
        if n != 1 {
            let _ = std::fs::write(format!("/tmp/fail-{}.log", w.app.port), w.app.log_text());
        }
        assert_eq!(
            n,
            1,
            "NCA submission {id} was sent {n} times; server log:\n{}",
            support::app::tail(&w.app.log_text(), 80)
        );
    }
}

#[tokio::test]
async fn a_music_request_goes_all_the_way_to_completed() {
    let w = World::start().await;
    let video = w.seed_video(1).await;
    let (status, body) = w.request_music(&video).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["video_status"], "generating_music", "{body}");

    let v = w.wait_settled(&video, "completed").await;
    let history: Vec<(String, String)> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["from"].as_str().unwrap().to_owned(),
                h["to"].as_str().unwrap().to_owned(),
            )
        })
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        history,
        vec![
            (
                "segments_combined".to_owned(),
                "generating_music".to_owned()
            ),
            ("generating_music".to_owned(), "adding_music".to_owned()),
            ("adding_music".to_owned(), "completed".to_owned()),
        ]
    );
    let task = &w.goapi.tasks()[0];
    assert!(v["music"].as_str().unwrap().contains(&task.task_id), "{v}");
    assert!(
        v["final_video"].as_str().unwrap().starts_with(&w.nca.url()),
        "{v}"
    );
    submissions_each_once(&w);
    // The NCA request mixes the chosen track under the seeded source video.
    let sub = &w.nca.submissions()[0];
    assert_eq!(
        sub.body["inputs"][0]["file_url"],
        format!("{}/videos/combined-1.mp4", w.nca.url())
    );
    assert_eq!(sub.body["inputs"][1]["file_url"], v["music"]);

    // The base tells the same story.
    let rec = w.records.get_video(&video).await.unwrap().unwrap();
    assert_eq!(rec.status.clone().unwrap().name(), "completed");
    assert_eq!(
        rec.final_video.clone().unwrap().as_str(),
        v["final_video"].as_str().unwrap()
    );
    let jobs = w.records.jobs_of_video(&rec).await.unwrap();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(
        jobs.iter()
            .all(|j| j.status.map(|s| s.to_string()) == Some("completed".into())),
        "{jobs:?}"
    );
    let gen_job = jobs
        .iter()
        .find(|j| j.job_type.name() == "music_generation")
        .unwrap();
    assert_eq!(
        gen_job.external_job_id.as_deref(),
        Some(task.task_id.as_str())
    );
    let add_job = jobs
        .iter()
        .find(|j| j.job_type.name() == "music_addition")
        .unwrap();
    assert_eq!(
        add_job.external_job_id.as_deref(),
        Some(w.nca.submissions()[0].job_id.as_str())
    );
}

#[tokio::test]
async fn every_goapi_payload_shape_completes_a_video() {
    let w = World::start().await;
    let shapes = [
        CompletedShape::Udio,
        CompletedShape::SunoClips,
        CompletedShape::SunoArray,
        CompletedShape::AceStep,
        CompletedShape::Flat,
    ];
    let mut videos = Vec::new();
    for (n, shape) in shapes.iter().enumerate() {
        w.goapi.set_outcome(TaskOutcome::Completed(Some(*shape)));
        let video = w.seed_video(n).await;
        let (status, body) = w.request_music(&video).await;
        assert_eq!(status, 202, "{body}");
        // The outcome applies to tasks created after it is set: wait for this one.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while w.goapi.tasks().len() < n + 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "GoAPI task not created"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        videos.push((video, *shape));
    }
    for (video, shape) in &videos {
        let v = w.wait_settled(video, "completed").await;
        assert!(
            v["music"].as_str().is_some_and(|m| m.contains("/audio/")),
            "{shape:?}: {v}"
        );
    }
    submissions_each_once(&w);
    assert_eq!(w.nca.submissions().len(), shapes.len());
}

#[tokio::test]
async fn five_duplicate_completions_give_one_nca_submission() {
    let w = World::start().await;
    let task = UDIO_TASK;
    // Concurrent identical deliveries (GoAPI's retries share the timestamp).
    let concurrent = w.seed_generating(1, Some(task)).await;
    let body = goapi_fixture("udio_completed.json", task, 1765248943);
    let answers = join_all((0..5).map(|_| w.goapi_webhook(&concurrent, &body))).await;
    let accepted = answers.iter().filter(|(s, _)| *s == 202).count();
    let duplicates = answers
        .iter()
        .filter(|(s, b)| *s == 200 && b["status"] == "duplicate")
        .count();
    assert_eq!((accepted, duplicates), (1, 4), "{answers:?}");
    w.wait_settled(&concurrent, "completed").await;

    // Sequential completions with different timestamps: new deliveries, same news.
    let task2 = "6d8b2f3c-9e4a-4a7b-8c32-1f5e8d0b2a44";
    let sequential = w.seed_generating(2, Some(task2)).await;
    for i in 0..5 {
        let body = goapi_fixture("udio_completed.json", task2, 1765248943 + i);
        let (status, b) = w.goapi_webhook(&sequential, &body).await;
        assert_eq!(status, 202, "{b}");
    }
    w.wait_settled(&sequential, "completed").await;
    let (_, events) = w
        .app
        .get_json(&format!("/events?video_id={sequential}&outcome=duplicate"))
        .await;
    assert_eq!(
        events["events"].as_array().map(Vec::len),
        Some(4),
        "{events}"
    );

    submissions_each_once(&w);
    assert_eq!(w.nca.submissions().len(), 2);
}

#[tokio::test]
async fn intermediate_statuses_in_any_order_end_completed() {
    let w = World::start().await;
    let orders: [[&str; 3]; 6] = [
        ["pending", "processing", "completed"],
        ["pending", "completed", "processing"],
        ["processing", "pending", "completed"],
        ["processing", "completed", "pending"],
        ["completed", "pending", "processing"],
        ["completed", "processing", "pending"],
    ];
    let mut videos = Vec::new();
    for (n, order) in orders.iter().enumerate() {
        let task = format!("00000000-0000-4000-8000-00000000000{n}");
        // Half with a pipeline job that has no External Job ID yet: those tasks come to
        // the pipeline's URL, which names its Jobs record (`job_id`), the only thing that
        // binds an unknown task to a waiting job.
        let known = n % 2 == 0;
        let (video, job) = w
            .seed_generating_job(n, known.then_some(task.as_str()))
            .await;
        for (i, status) in order.iter().enumerate() {
            let body = goapi_fixture(&format!("udio_{status}.json"), &task, 1765248900 + i as i64);
            let (code, b) = if known {
                w.goapi_webhook(&video, &body).await
            } else {
                let path = format!(
                    "/webhooks/goapi?job_id={job}&operation=generate_music_only&target_id={video}"
                );
                let r = w
                    .app
                    .client
                    .post(format!("{}{path}", w.app.url))
                    .header("x-webhook-secret", support::app::GOAPI_SECRET)
                    .json(&body)
                    .send()
                    .await
                    .expect("post");
                (r.status().as_u16(), r.json().await.unwrap_or_default())
            };
            assert_eq!(code, 202, "{b}");
        }
        videos.push(video);
    }
    for video in &videos {
        let v = w.wait_settled(video, "completed").await;
        assert_eq!(
            v["music"], "https://storage.example/udio/29b8adf2.mp3",
            "{v}"
        );
    }
    submissions_each_once(&w);
}

#[tokio::test]
async fn goapi_failure_fails_the_generation_with_its_message() {
    let w = World::start().await;
    let video = w.seed_generating(1, Some(UDIO_TASK)).await;
    let (code, _) = w
        .goapi_says(&video, "udio_failed.json", UDIO_TASK, 1765249020)
        .await;
    assert_eq!(code, 202);
    let v = w.wait_settled(&video, "music_generation_failed").await;
    let error = v["error_details"].as_str().unwrap_or_default();
    assert!(error.contains("failed to generate music"), "{v}");
    assert!(error.contains("429"), "{v}");
    let rec = w.records.get_video(&video).await.unwrap().unwrap();
    assert_eq!(rec.status.unwrap().name(), "music_generation_failed");
    assert!(
        rec.error_details
            .unwrap()
            .contains("failed to generate music")
    );
    assert!(w.nca.submissions().is_empty());

    // A GoAPI failure through the double's own flow, too.
    w.goapi.set_outcome(TaskOutcome::Failed);
    let other = w.seed_video(2).await;
    w.request_music(&other).await;
    w.wait_settled(&other, "music_generation_failed").await;
}

#[tokio::test]
async fn nca_failure_fails_the_addition_with_its_message() {
    let w = World::start().await;
    w.nca.set_fail_mix(true);
    // What the real toolkit answers for a track URL that is gone (its message; the
    // fixture's "no audio track" failure is followed by a music-only mix instead).
    w.nca.set_failure_message(
        "404 Client Error: File not found for url: https://storage.example/udio/gone.mp3",
    );
    let video = w.seed_video(1).await;
    w.request_music(&video).await;
    let v = w.wait_settled(&video, "music_addition_failed").await;
    assert!(
        v["error_details"]
            .as_str()
            .unwrap_or_default()
            .contains("404 Client Error"),
        "{v}"
    );
    assert!(v["music"].is_string(), "the music is kept for a retry: {v}");
    let rec = w.records.get_video(&video).await.unwrap().unwrap();
    assert_eq!(rec.status.unwrap().name(), "music_addition_failed");

    // A retry redrives the mix only, with a new submission id.
    w.nca.set_fail_mix(false);
    let (status, body) = w.retry(&video, None).await;
    assert_eq!(status, 202, "{body}");
    w.wait_settled(&video, "completed").await;
    assert_eq!(w.goapi.tasks().len(), 1, "no new music for a mix retry");
    let ids: Vec<String> = w
        .nca
        .submissions()
        .iter()
        .filter_map(|s| s.id.clone())
        .collect();
    assert_eq!(
        ids,
        vec![
            format!("add_music:{video}:1"),
            format!("add_music:{video}:2")
        ]
    );
}

#[tokio::test]
async fn a_webhook_for_an_unknown_video_is_accepted_and_recorded_as_unmatched() {
    let w = World::start().await;
    let body = goapi_fixture("udio_completed.json", "t-1", 1);
    let (code, b) = w
        .goapi_webhook(&"recZZZZZZZZZZZZZZ".parse().unwrap(), &body)
        .await;
    assert_eq!(code, 202, "{b}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, events) = w.app.get_json("/events?outcome=unmatched").await;
        if events["events"].as_array().is_some_and(|e| e.len() == 1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{events}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And it reaches the Webhook Events table.
    let event_id = b["event_id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = w.records.find_webhook_event(&event_id).await.unwrap() {
            assert_eq!(r.fields.get("Success"), None, "unmatched is not a success");
            assert!(
                r.fields["Error Details"]
                    .as_str()
                    .unwrap()
                    .starts_with("unmatched")
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_kill_9_in_the_middle_of_a_burst_loses_nothing_and_submits_once() {
    let w = support::world::WorldBuilder::new()
        .app(|a| a.fixed_port().env("REELSTATE_INTERRUPTED_GRACE_SECS", "3"))
        .start()
        .await;
    let mut w = w;
    // A real mix takes longer than a restart; the callback of a submission whose answer
    // the killed process never stored arrives at the restarted one.
    w.nca.set_callback_delay(Duration::from_millis(1500));
    let n = 20;
    let mut videos = Vec::new();
    for i in 0..n {
        let task = format!("10000000-0000-4000-8000-{i:012}");
        videos.push((w.seed_generating(i, Some(&task)).await, task));
    }
    let sends = videos.iter().map(|(video, task)| {
        let body = goapi_fixture("udio_completed.json", task, 1765248943);
        let (client, url) = (w.app.client.clone(), w.app.url.clone());
        let video = video.clone();
        async move {
            client
                .post(format!("{url}/webhooks/goapi?video_id={video}"))
                .header("x-webhook-secret", support::app::GOAPI_SECRET)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .ok()
        }
    });
    let answers: Vec<Option<u16>> = join_all(sends).await;
    // Kill while the worker and executor are busy with the burst.
    w.app.kill().await;
    w.app.restart().await;
    // GoAPI redelivers what was not acknowledged.
    for ((video, task), answer) in videos.iter().zip(&answers) {
        if *answer != Some(202) {
            let body = goapi_fixture("udio_completed.json", task, 1765248943);
            let (code, _) = w.goapi_webhook(video, &body).await;
            assert!(code == 202 || code == 200);
        }
    }
    for (video, _) in &videos {
        w.wait_settled(video, "completed").await;
    }
    submissions_each_once(&w);
    assert_eq!(w.nca.submissions().len(), n);
    let _: Value = Value::Null;
}
