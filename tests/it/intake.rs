//! Webhook intake through the real binary: authentication, validation, durability and
//! duplicate detection, with every fixture.

use crate::support;

use std::time::Duration;

use base64::Engine as _;
use futures::future::join_all;
use reelstate::domain::RecordId;
use reelstate::webhook::auth::StandardWebhooks;
use reelstate::webhook::callback::CallbackSigner;
use serde_json::{Value, json};
use support::app::{AppBuilder, GOAPI_SECRET, SIGNING_SECRET, TestApp};
use support::fixture;

const VIDEO: &str = "recA1b2C3d4E5f6G7";

async fn app() -> TestApp {
    AppBuilder::new().spawn().await
}

async fn post(app: &TestApp, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Value) {
    let mut req = app
        .client
        .post(format!("{}{path}", app.url))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A Standard Webhooks delivery: its id, timestamp and signature headers.
async fn post_signed(
    app: &TestApp,
    path: &str,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let headers = [
        ("webhook-id", id),
        ("webhook-timestamp", timestamp),
        ("webhook-signature", signature),
    ];
    post(app, path, &headers, body).await
}

async fn event_count(app: &TestApp) -> usize {
    let (_, v) = app.get_json("/events?limit=500").await;
    v["events"].as_array().map_or(0, Vec::len)
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn every_goapi_fixture_is_accepted() {
    let app = app().await;
    let names = [
        "udio_pending.json",
        "udio_processing.json",
        "udio_completed.json",
        "udio_failed.json",
        "suno_clips_completed.json",
        "suno_array_completed.json",
        "ace_step_completed.json",
        "flat_completed.json",
        "flat_failed.json",
    ];
    for name in names {
        let (s, b) = post(
            &app,
            &format!("/webhooks/goapi?video_id={VIDEO}"),
            &[("x-webhook-secret", GOAPI_SECRET)],
            fixture(&format!("goapi/{name}")),
        )
        .await;
        assert_eq!(s, 202, "{name}: {b}");
        assert_eq!(b["status"], "accepted", "{name}: {b}");
        assert!(b["event_id"].is_string());
    }
    // The production pipeline's URL shape.
    let (s, b) = post(
        &app,
        "/webhooks/goapi?job_id=recJ0b1234567890A&operation=generate_music_only&target_id=recA1b2C3d4E5f6G7",
        &[("x-webhook-secret", GOAPI_SECRET)],
        fixture("goapi/diffrhythm_completed.json"),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let (_, e) = app
        .get_json(&format!("/events/{}", b["event_id"].as_str().unwrap()))
        .await;
    assert_eq!(e["video_id"], VIDEO, "{e}");
    assert_eq!(event_count(&app).await, names.len() + 1);
}

#[tokio::test]
async fn nca_fixtures_are_accepted_with_a_signed_url_and_refused_without() {
    let app = app().await;
    let signer = CallbackSigner::new(SIGNING_SECRET.as_bytes(), &app.url).unwrap();
    let video = RecordId::parse(VIDEO).unwrap();
    // Job ids are UUIDs: the engine's own, which is all a URL it signs can name.
    let url = signer.nca_url(&video, "00000000-0000-0000-0000-000000000001");
    let path = url.strip_prefix(&app.url).unwrap().to_owned();
    for name in [
        "compose_success_webhook.json",
        "compose_failure_webhook.json",
    ] {
        let (s, b) = post(&app, &path, &[], fixture(&format!("nca/{name}"))).await;
        assert_eq!(s, 202, "{name}: {b}");
    }
    // The reference handler's URL (no token), an altered job, a forged token.
    for bad in [
        format!("/webhooks/nca-toolkit?video_id={VIDEO}&operation=add_music"),
        path.replace(
            "job=00000000-0000-0000-0000-000000000001",
            "job=00000000-0000-0000-0000-000000000002",
        ),
        path.replace("video_id=recA1b2C3d4E5f6G7", "video_id=recZZZZZZZZZZZZZZ"),
        format!("{}&token=AAAA", path.split("&token=").next().unwrap()),
    ] {
        let (s, b) = post(&app, &bad, &[], fixture("nca/compose_success_webhook.json")).await;
        assert_error(s, &b, 401, "unauthorized");
    }
    assert_eq!(
        event_count(&app).await,
        2,
        "refused callbacks are not stored"
    );
}

#[tokio::test]
async fn identical_id_less_nca_callbacks_of_two_videos_are_not_duplicates() {
    // NCA echoes the request's `id` only when one was sent (docs/operations.md): a failure
    // without it, for the same broken track, is byte for byte the same for two videos.
    let app = app().await;
    let signer = CallbackSigner::new(SIGNING_SECRET.as_bytes(), &app.url).unwrap();
    let body = br#"{"endpoint": "/v1/ffmpeg/compose", "code": 500, "response": null, "message": "404 Client Error: File not found for url: https://example.com/track.mp3"}"#;
    for (video, want) in [
        ("recA1b2C3d4E5f6G7", "accepted"),
        ("recB1b2C3d4E5f6G7", "accepted"),
        ("recA1b2C3d4E5f6G7", "duplicate"),
    ] {
        let url = signer.nca_url(
            &RecordId::parse(video).unwrap(),
            "00000000-0000-0000-0000-000000000001",
        );
        let path = url.strip_prefix(&app.url).unwrap().to_owned();
        let (_, b) = post(&app, &path, &[], body.to_vec()).await;
        assert_eq!(b["status"], want, "{video}: {b}");
    }
}

#[tokio::test]
async fn wrong_or_missing_secret_is_401_and_nothing_is_stored() {
    let app = app().await;
    let path = format!("/webhooks/goapi?video_id={VIDEO}");
    for headers in [
        vec![],
        vec![("x-webhook-secret", "wrong")],
        vec![("x-webhook-secret", "")],
    ] {
        let (s, b) = post(&app, &path, &headers, fixture("goapi/udio_completed.json")).await;
        assert_error(s, &b, 401, "unauthorized");
    }
    assert_eq!(event_count(&app).await, 0);
}

#[tokio::test]
async fn standard_webhooks_signatures_are_verified() {
    let key = base64::engine::general_purpose::STANDARD.encode(b"relay-secret-key-0123456789");
    let old = base64::engine::general_purpose::STANDARD.encode(b"older-relay-secret-key-000");
    let secrets = format!("whsec_{key},whsec_{old}");
    let app = AppBuilder::new()
        .env("WEBHOOK_RELAY_SECRETS", &secrets)
        .spawn()
        .await;
    let signer = StandardWebhooks::new([format!("whsec_{key}")]).unwrap();
    let old_signer = StandardWebhooks::new([format!("whsec_{old}")]).unwrap();
    let body = fixture("goapi/udio_completed.json");
    let path = format!("/webhooks/goapi?video_id={VIDEO}");
    let now = chrono::Utc::now().timestamp();

    let sig = signer.sign("msg_1", now, &body);
    let ts = now.to_string();
    let (s, b) = post_signed(&app, &path, "msg_1", &ts, &sig, body.clone()).await;
    assert_eq!(s, 202, "{b}");
    // Signed with the other (rotated) secret.
    let sig_old = old_signer.sign("msg_2", now, &body);
    let (s, b) = post_signed(&app, &path, "msg_2", &ts, &sig_old, body.clone()).await;
    assert_eq!(s, 202, "{b}");
    // The same webhook-id again: a duplicate, never processed twice.
    let (s, b) = post_signed(&app, &path, "msg_1", &ts, &sig, body.clone()).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("duplicate")), "{b}");

    // Tampered body, bad signature, expired timestamp.
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let (s, b) = post_signed(&app, &path, "msg_3", &ts, &sig, tampered).await;
    assert_error(s, &b, 401, "unauthorized");
    let stale = (now - 600).to_string();
    let sig_stale = signer.sign("msg_4", now - 600, &body);
    let (s, b) = post_signed(&app, &path, "msg_4", &stale, &sig_stale, body.clone()).await;
    assert_error(s, &b, 401, "unauthorized");
    assert_eq!(event_count(&app).await, 3);
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_nothing_is_stored() {
    let app = AppBuilder::new()
        .env("REELSTATE_MAX_BODY_BYTES", "4096")
        .spawn()
        .await;
    let secret = [("x-webhook-secret", GOAPI_SECRET)];
    let good = fixture("goapi/udio_completed.json");
    let cases: Vec<(String, Vec<u8>, u16, &str)> = vec![
        (
            "/webhooks/goapi?video_id=nope".into(),
            good.clone(),
            400,
            "invalid_video_id",
        ),
        (
            "/webhooks/goapi?video_id=rec') OR TRUE() OR ('".into(),
            good.clone(),
            400,
            "invalid_video_id",
        ),
        (
            "/webhooks/goapi".into(),
            good.clone(),
            400,
            "missing_video_id",
        ),
        (
            format!("/webhooks/goapi?video_id={VIDEO}"),
            b"{not json".to_vec(),
            400,
            "invalid_json",
        ),
        (
            format!("/webhooks/goapi?video_id={VIDEO}"),
            b"[1,2,3]".to_vec(),
            400,
            "not_an_object",
        ),
        (
            format!("/webhooks/goapi?video_id={VIDEO}"),
            b"{\"status\":\"completed\"}".to_vec(),
            400,
            "missing_task_id",
        ),
        (
            format!("/webhooks/goapi?video_id={VIDEO}"),
            json!({"task_id": "t", "status": "exploded"})
                .to_string()
                .into_bytes(),
            400,
            "unknown_status",
        ),
        (
            format!("/webhooks/goapi?video_id={VIDEO}"),
            vec![b' '; 5000],
            413,
            "payload_too_large",
        ),
    ];
    for (path, body, status, code) in cases {
        let (s, b) = post(&app, &path, &secret, body).await;
        assert_error(s, &b, status, code);
    }
    // Unknown paths are 404 and a wrong method on a known path is 405, both JSON.
    let r = app
        .client
        .get(format!("{}/nope", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    let r = app
        .client
        .get(format!("{}/webhooks/goapi", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "method_not_allowed"
    );
    assert_eq!(event_count(&app).await, 0);
}

#[tokio::test]
async fn five_identical_concurrent_deliveries_give_one_accepted_and_four_duplicates() {
    let app = app().await;
    let path = format!("/webhooks/goapi?video_id={VIDEO}");
    let body = fixture("goapi/udio_processing.json");
    let answers = join_all((0..5).map(|_| {
        post(
            &app,
            &path,
            &[("x-webhook-secret", GOAPI_SECRET)],
            body.clone(),
        )
    }))
    .await;
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 202)
        .map(|(_, b)| b)
        .collect();
    let dups: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect();
    assert_eq!((accepted.len(), dups.len()), (1, 4), "{answers:?}");
    for d in dups {
        assert_eq!(d["status"], "duplicate");
        assert_eq!(d["duplicate_of"], accepted[0]["event_id"]);
    }
    // Every delivery is on record; the repeats as duplicates.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = app.get_json("/events?outcome=duplicate").await;
        if v["events"].as_array().map(Vec::len) == Some(4) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_task_that_is_not_music_is_recorded_and_acknowledged() {
    let app = app().await;
    let body = json!({"timestamp": 1, "data": {"task_id": "vid-1", "model": "kling", "task_type": "video_generation",
        "status": "completed", "output": {"video_url": "https://cdn.example/v.mp4"}, "error": {"code": 0, "message": ""}}});
    let (s, b) = post(
        &app,
        &format!("/webhooks/goapi?video_id={VIDEO}"),
        &[("x-webhook-secret", GOAPI_SECRET)],
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let id = b["event_id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, e) = app.get_json(&format!("/events/{id}")).await;
        if e["state"] == "done" {
            assert_eq!(e["event"], "not_music", "{e}");
            assert_eq!(e["outcome"], "recorded", "{e}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn without_a_secret_the_service_refuses_to_start() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_reelstate"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env(
            "REELSTATE_DB",
            std::env::temp_dir().join("reelstate-refuse.db"),
        )
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GOAPI_WEBHOOK_SECRET") && err.contains("--dev"),
        "{err}"
    );
}
