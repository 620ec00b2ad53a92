//! The sandbox's failure switch, through the real binary in `--sandbox` mode and its own
//! stand-ins: each kind of `POST /sandbox/videos {"fail": …}` reaches the state it promises
//! through the real engine (webhooks, executor, reconciler), and Retry then completes it.

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};
use support::app::{AppBuilder, TestApp};

/// Generous: the stand-ins take 1.5 s a step, the reconciler's first look comes after the
/// sandbox's 10 s NCA deadline; a loaded CI machine may be slower still.
const WITHIN: Duration = Duration::from_secs(120);

async fn sandbox() -> TestApp {
    AppBuilder::new()
        .env("REELSTATE_SANDBOX", "true")
        .spawn()
        .await
}

async fn failing_video(app: &TestApp, fail: &str) -> Value {
    let r = app
        .post_json("/sandbox/videos", &json!({ "fail": fail }))
        .await;
    assert_eq!(r.status().as_u16(), 201);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["fail"], fail, "{body}");
    body
}

async fn events(app: &TestApp, video: &str) -> Vec<Value> {
    let (status, body) = app.get_json(&format!("/events?video_id={video}")).await;
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().expect("events").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_kind_reaches_its_promised_state_and_retry_completes_the_failed_ones() {
    let app = sandbox().await;
    let music = failing_video(&app, "music").await;
    let mix = failing_video(&app, "mix").await;
    let lost = failing_video(&app, "callback_lost").await;
    let id = |v: &Value| v["video_id"].as_str().expect("video id").to_owned();
    let (music, mix, lost) = (id(&music), id(&mix), id(&lost));

    let v = app
        .wait_settled(&music, "music_generation_failed", WITHIN)
        .await;
    assert!(
        v["error_details"]
            .as_str()
            .is_some_and(|e| e.contains("failed to generate music")),
        "{v:#}"
    );
    let v = app
        .wait_settled(&mix, "music_addition_failed", WITHIN)
        .await;
    assert!(
        v["error_details"]
            .as_str()
            .is_some_and(|e| e.contains("FFmpeg command failed")),
        "{v:#}"
    );

    // The lost callback: no NCA callback is ever received for it; the reconciler's check
    // at NCA is what completes it.
    let v = app.wait_settled(&lost, "completed", WITHIN).await;
    let log = events(&app, &lost).await;
    assert!(
        log.iter().any(|e| e["endpoint"] == "reconcile"
            && e["event"] == "nca_succeeded"
            && e["outcome"] == "applied"),
        "no finding by the reconciler in {log:#?}"
    );
    assert!(
        !log.iter().any(|e| e["source"] == "nca"),
        "a callback arrived: {log:#?}"
    );
    assert!(v["final_video"].is_string(), "{v:#}");

    // Retry: the failure was planned for one request; the next one succeeds.
    for video in [&music, &mix] {
        let (status, body) = app.post(&format!("/videos/{video}/retry")).await;
        assert!((200..300).contains(&status), "{status} {body}");
    }
    for video in [&music, &mix] {
        let v = app.wait_settled(video, "completed", WITHIN).await;
        assert_eq!(v["retries"], 1, "{v:#}");
    }
}

#[tokio::test]
async fn an_unknown_failure_kind_is_refused_with_a_json_error() {
    let app = sandbox().await;
    for body in [
        r#"{"fail": "airtable"}"#,
        r#"{"fail": true}"#,
        r#"{"fial": "mix"}"#,
        "fail=mix",
    ] {
        let r = app
            .client
            .post(format!("{}/sandbox/videos", app.url))
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let e: Value = r.json().await.expect("a JSON error");
        assert_eq!(e["error"]["code"], "bad_sandbox_request", "{body}: {e}");
    }
}

#[tokio::test]
async fn the_sandbox_hands_out_only_the_secrets_it_made_up() {
    // The test launcher sets GOAPI_WEBHOOK_SECRET and REELSTATE_SIGNING_SECRET: the
    // operator's, never handed out.
    let app = sandbox().await;
    let (status, s) = app.get_json("/sandbox/secrets").await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(
        s,
        json!({"goapi_webhook_secret": null, "signing_secret": null})
    );
    // Without them, the sandbox makes up its own, and says what they are.
    let own = AppBuilder::new()
        .env("REELSTATE_SANDBOX", "true")
        .without("GOAPI_WEBHOOK_SECRET")
        .without("REELSTATE_SIGNING_SECRET")
        .spawn()
        .await;
    let (_, s) = own.get_json("/sandbox/secrets").await;
    let goapi = s["goapi_webhook_secret"].as_str().expect("goapi secret");
    let signing = s["signing_secret"].as_str().expect("signing secret");
    assert!(
        goapi.len() >= 32 && signing.len() >= 32 && goapi != signing,
        "{s}"
    );
    // Outside the sandbox the endpoint does not exist.
    let prod = support::app::spawn_app().await;
    let (status, _) = prod.get_json("/sandbox/secrets").await;
    assert_eq!(status, 404);
}
