//! `GET /videos` through the real binary with the GoAPI and NCA doubles: its filters (state,
//! needs attention, stuck, age), its search by GoAPI task id and NCA job id, its pages, and
//! the admin token it requires; and the page's fragment of the same list.

use crate::support;

use std::time::Duration;

use reelstate::domain::RecordId;
use serde_json::Value;
use support::app::ADMIN_TOKEN;
use support::world::{World, WorldBuilder};

/// The ids a `GET /videos…` lists, in order, and its `next_before`.
async fn list(w: &World, query: &str) -> (Vec<String>, Value) {
    let (status, body) = w.app.get_json(&format!("/videos{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    let ids = body["videos"]
        .as_array()
        .expect("videos")
        .iter()
        .map(|v| v["video_id"].as_str().expect("id").to_owned())
        .collect();
    (ids, body["next_before"].clone())
}

fn ids(videos: &[&RecordId]) -> Vec<String> {
    videos.iter().map(|v| v.to_string()).collect()
}

async fn bare_get(w: &World, path: &str, token: Option<&str>) -> (u16, String) {
    // A bare client: the app's own sends the admin token with every request.
    let mut req = reqwest::Client::new().get(format!("{}{path}", w.app.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request");
    (r.status().as_u16(), r.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_videos_list_filters_searches_and_pages() {
    // GoAPI's deadline is short so that a job it stops answering for is stuck at once.
    let w = WorldBuilder::new()
        .app(|a| a.env("REELSTATE_GOAPI_DEADLINE_SECS", "1"))
        .start()
        .await;
    let (failed, failed_task, _) = w
        .failed_mix("FFmpeg command failed: Invalid data found when processing input")
        .await;
    let done = w.seed_video(2).await;
    let (s, body) = w.request_music(&done).await;
    assert_eq!(s, 202, "{body}");
    let v = w.wait_settled(&done, "completed").await;
    let external = |kind: &str| {
        v["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .find(|j| j["type"] == kind)
            .and_then(|j| j["external_id"].as_str())
            .unwrap_or_else(|| panic!("a {kind} job with its external id: {v}"))
            .to_owned()
    };
    let (done_task, done_nca_job) = (external("music_generation"), external("music_addition"));

    // The admin token, as for /videos/{id}.
    for token in [None, Some("wrong")] {
        let (status, body) = bare_get(&w, "/videos", token).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, _) = bare_get(&w, "/videos", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);

    assert_eq!(
        list(&w, "").await.0,
        ids(&[&done, &failed]),
        "most recently changed first"
    );
    assert_eq!(list(&w, "?status=completed").await.0, ids(&[&done]));
    assert_eq!(
        list(&w, "?status=music_addition_failed").await.0,
        ids(&[&failed])
    );
    assert!(list(&w, "?status=adding_music").await.0.is_empty());
    assert_eq!(list(&w, "?attention=1").await.0, ids(&[&failed]));
    assert_eq!(
        list(&w, "?job_type=music_addition&job_status=failed")
            .await
            .0,
        ids(&[&failed])
    );
    assert_eq!(
        list(&w, "?job_type=music_generation&job_status=completed")
            .await
            .0,
        ids(&[&done, &failed])
    );
    assert!(list(&w, "?stuck=1").await.0.is_empty(), "nothing waits");
    assert_eq!(list(&w, "?newer_than=1h").await.0, ids(&[&done, &failed]));
    assert!(list(&w, "?older_than=1h").await.0.is_empty());
    let far = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    assert_eq!(
        list(&w, &format!("?older_than={}", urlencoding(&far)))
            .await
            .0,
        ids(&[&done, &failed]),
        "a time is taken as given"
    );

    // Search: by GoAPI task id, by NCA job id, by video id; exact matches only.
    assert_eq!(
        list(&w, &format!("?q={failed_task}")).await.0,
        ids(&[&failed])
    );
    assert_eq!(list(&w, &format!("?q={done_task}")).await.0, ids(&[&done]));
    assert_eq!(
        list(&w, &format!("?q={done_nca_job}")).await.0,
        ids(&[&done])
    );
    assert_eq!(list(&w, &format!("?q={failed}")).await.0, ids(&[&failed]));
    assert!(list(&w, "?q=5c7a").await.0.is_empty(), "no prefix match");
    let (_, body) = w.app.get_json(&format!("/videos?q={done_nca_job}")).await;
    let row = &body["videos"][0];
    assert_eq!(row["status"], "completed");
    assert_eq!(
        row["external_ids"],
        serde_json::json!([done_task, done_nca_job])
    );

    // Pages of one, then nothing.
    let (page, next) = list(&w, "?limit=1").await;
    assert_eq!(page, ids(&[&done]));
    let cursor = next.as_str().expect("a next page").to_owned();
    let (page, next) = list(&w, &format!("?limit=1&before={cursor}")).await;
    assert_eq!(page, ids(&[&failed]));
    let cursor = next.as_str().expect("a full page has a next").to_owned();
    let (page, next) = list(&w, &format!("?limit=1&before={cursor}")).await;
    assert!(page.is_empty() && next.is_null(), "{page:?} {next}");

    // A video whose GoAPI task stops answering is stuck once past GoAPI's deadline.
    let stuck = w.seed_video(3).await;
    w.goapi.set_drop_webhooks(true);
    let (s, body) = w.request_music(&stuck).await;
    assert_eq!(s, 202, "{body}");
    w.app
        .wait_for_video(stuck.as_str(), Duration::from_secs(30), |v| {
            v["jobs"][0]["external_id"].is_string()
        })
        .await;
    w.goapi.set_down(true);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if list(&w, "?stuck=1").await.0 == ids(&[&stuck]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never listed as stuck"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(list(&w, "?attention=1").await.0, ids(&[&stuck, &failed]));
    assert_eq!(
        list(&w, "?attention=1&status=generating_music").await.0,
        ids(&[&stuck]),
        "filters combine"
    );

    // Bad input: a clear 400.
    for (query, code) in [
        ("?older_than=soon", "invalid_age"),
        ("?newer_than=5w", "invalid_age"),
        ("?before=nope", "invalid_cursor"),
        ("?attention=maybe", "invalid_flag"),
        ("?limit=x", "invalid_limit"),
    ] {
        let (status, body) = w.app.get_json(&format!("/videos{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
    }

    // The page's fragment: the same list, behind the same token; failed rows selectable.
    let path = format!("/ui/fragments/videos?q={failed_task}");
    let (status, _) = bare_get(&w, &path, None).await;
    assert_eq!(status, 401);
    let (status, html) = bare_get(&w, &path, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(html.matches("<tr data-video=").count(), 1, "{html}");
    assert!(
        html.contains(&format!(r#"data-retry="{failed}""#)),
        "{html}"
    );
    let (_, html) = bare_get(
        &w,
        "/ui/fragments/videos?status=completed",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert!(
        html.contains(&format!(r#"data-video="{done}""#)) && !html.contains("data-retry="),
        "a completed video is not offered a retry: {html}"
    );
    // The overview's counts link into the list.
    let (_, html) = bare_get(&w, "/ui/fragments/overview", Some(ADMIN_TOKEN)).await;
    assert!(
        html.contains(r#"<a href="/ui/videos?status=completed">1</a>"#),
        "{html}"
    );
    assert!(
        html.contains(
            r#"<a href="/ui/videos?job_type=music_addition&amp;job_status=failed">1</a>"#
        ),
        "{html}"
    );
    let (_, html) = bare_get(
        &w,
        "/ui/fragments/videos?job_type=music_addition&job_status=failed",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert!(
        html.contains(&format!(r#"data-video="{failed}""#))
            && html.contains(r#"<option value="failed" selected>"#),
        "{html}"
    );
}

fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
