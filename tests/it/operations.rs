//! What the people who run reelstate use: inspection, replay, retry, reconciliation of
//! lost webhooks, health, metrics, logs, graceful shutdown.

use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::app::GOAPI_SECRET;
use support::world::{UDIO_TASK, World, WorldBuilder};

fn fast_reconcile(b: support::app::AppBuilder) -> support::app::AppBuilder {
    b.env("REELSTATE_GOAPI_DEADLINE_SECS", "0.5")
        .env("REELSTATE_NCA_DEADLINE_SECS", "0.5")
        .env("REELSTATE_RECONCILE_INTERVAL_SECS", "0.3")
        .env("REELSTATE_RECONCILE_CHECKS", "3")
}

#[tokio::test]
async fn lost_goapi_and_nca_webhooks_are_reconciled_at_the_source() {
    let w = WorldBuilder::new().app(fast_reconcile).start().await;
    w.goapi.set_drop_webhooks(true);
    w.nca.set_drop_callbacks(true);
    let video = w.seed_video(1).await;
    let (s, b) = w.request_music(&video).await;
    assert_eq!(s, 202, "{b}");
    let v = w.wait_settled(&video, "completed").await;
    assert!(
        w.goapi.deliveries().is_empty(),
        "no webhook was ever delivered"
    );
    assert_eq!(w.nca.callbacks_sent().len(), 0);
    assert!(v["final_video"].is_string(), "{v}");
    let (_, events) = w.app.get_json(&format!("/events?video_id={video}")).await;
    let polled = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["endpoint"] == "reconcile")
        .count();
    assert_eq!(polled, 2, "one GoAPI and one NCA answer fed in: {events}");
}

#[tokio::test]
async fn a_job_unknown_at_its_source_fails_after_the_last_check() {
    let w = WorldBuilder::new().app(fast_reconcile).start().await;
    // A long mix: NCA reports it running until it forgets it.
    w.nca.set_callback_delay(Duration::from_secs(60));
    let video = w.seed_video(1).await;
    w.request_music(&video).await;
    w.wait_status(&video, "adding_music").await;
    // NCA restarts: its in-memory queue, and our job, are gone.
    w.nca.forget_jobs();
    let v = w.wait_settled(&video, "music_addition_failed").await;
    let error = v["error_details"].as_str().unwrap_or_default();
    assert!(error.contains("NCA") && error.contains("deadline"), "{v}");
}

#[tokio::test]
async fn inspection_shows_status_jobs_history_and_next_events() {
    let w = World::start().await;
    let video = w.seed_video(1).await;
    w.request_music(&video).await;
    let v = w.wait_settled(&video, "completed").await;
    assert_eq!(v["video_id"], video.as_str());
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    for j in jobs {
        assert_eq!(j["status"], "completed", "{j}");
        assert!(j["external_id"].is_string(), "{j}");
        assert!(
            j["record_id"]
                .as_str()
                .is_some_and(|r| r.starts_with("rec")),
            "{j}"
        );
        let (s, job) = w
            .app
            .get_json(&format!("/jobs/{}", j["job_id"].as_str().unwrap()))
            .await;
        assert_eq!(s, 200, "{job}");
        assert_eq!(job["video_id"], video.as_str());
    }
    let history = v["history"].as_array().unwrap();
    assert!(
        history
            .iter()
            .all(|h| h["event_id"].is_string() && h["at"].is_string())
    );
    assert_eq!(
        v["accepts_next"],
        Value::Array(vec![]),
        "completed accepts nothing: {v}"
    );

    // A failed mix accepts a retry: by default or from the mix (its track checked first),
    // or from new music.
    w.nca.set_fail_mix(true);
    let other = w.seed_video(2).await;
    w.request_music(&other).await;
    let f = w.wait_settled(&other, "music_addition_failed").await;
    assert_eq!(
        f["accepts_next"],
        serde_json::json!(["retry_requested", "retry_from_music", "retry_from_mix"]),
        "{f}"
    );

    // Unknown ids: 404 with a JSON error; malformed: 400.
    let (s, b) = w.app.get_json("/videos/recZZZZZZZZZZZZZZ").await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, b) = w.app.get_json("/videos/nope").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_video_id"))
    );
    let (s, _) = w.app.get_json("/jobs/not-a-uuid").await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn the_event_log_pages_and_filters() {
    let w = World::start().await;
    let video = w.seed_generating(1, Some(UDIO_TASK)).await;
    for i in 0..5 {
        w.goapi_says(&video, "udio_processing.json", UDIO_TASK, 1000 + i)
            .await;
    }
    w.goapi_says(&video, "udio_processing.json", UDIO_TASK, 1000)
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = w.app.get_json("/events?outcome=duplicate").await;
        if v["events"].as_array().map(Vec::len) == Some(1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, page1) = w.app.get_json("/events?limit=4").await;
    assert_eq!(page1["events"].as_array().unwrap().len(), 4);
    let cursor = page1["next_before"].as_i64().unwrap();
    let (_, page2) = w
        .app
        .get_json(&format!("/events?limit=4&before={cursor}"))
        .await;
    assert_eq!(page2["events"].as_array().unwrap().len(), 2);
    assert!(page2["next_before"].is_null());
    let (s, b) = w.app.get_json("/events?outcome=bogus").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_outcome"))
    );
    // Near misses of a filter's spelling are refused too, each with the service's JSON
    // error naming every filter the log knows.
    for near in [
        "Failed",
        "APPLIED",
        "effect_failed",
        "applied%20",
        "failed,applied",
    ] {
        let (s, b) = w.app.get_json(&format!("/events?outcome={near}")).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (400, Some("invalid_outcome")),
            "{near}: {b}"
        );
        let message = b["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("applied")
                && message.contains("rejected")
                && message.contains("failed"),
            "{near}: {message}"
        );
    }
}

#[tokio::test]
async fn replaying_an_applied_event_is_safe() {
    let w = World::start().await;
    let video = w.seed_generating(1, Some(UDIO_TASK)).await;
    let (_, b) = w
        .goapi_says(&video, "udio_completed.json", UDIO_TASK, 1)
        .await;
    let event = b["event_id"].as_str().unwrap().to_owned();
    w.wait_settled(&video, "completed").await;
    for _ in 0..2 {
        let r = w
            .app
            .client
            .post(format!("{}/events/{event}/replay", w.app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "duplicate", "{body}");
    }
    let v = w.wait_settled(&video, "completed").await;
    assert_eq!(w.nca.submissions().len(), 1, "{v}");
}

#[tokio::test]
async fn an_admin_token_guards_inspection_and_operations() {
    let w = WorldBuilder::new()
        .app(|a| a.env("REELSTATE_ADMIN_TOKEN", "admin-secret-token"))
        .start()
        .await;
    let video = w.seed_video(1).await;
    // The app's own client sends the token; a caller without it:
    let stranger = reqwest::Client::new();
    let r = stranger
        .get(format!("{}/videos/{video}", w.app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "unauthorized");
    let r = stranger
        .post(format!("{}/videos/{video}/music", w.app.url))
        .bearer_auth("a-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = stranger
        .post(format!("{}/videos/{video}/music", w.app.url))
        .bearer_auth("admin-secret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // Webhooks and health stay open.
    let (s, _) = w.app.get_json("/healthz").await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let w = World::start().await;
    let video = w.seed_video(1).await;
    w.request_music(&video).await;
    w.wait_settled(&video, "completed").await;
    let (s, b) = w.app.get_json("/healthz").await;
    assert_eq!((s, b["status"].as_str()), (200, Some("up")));
    let (s, b) = w.app.get_json("/readyz").await;
    assert_eq!((s, b["status"].as_str()), (200, Some("ready")), "{b}");
    let r = w
        .app
        .client
        .get(format!("{}/metrics", w.app.url))
        .send()
        .await
        .unwrap();
    let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let text = r.text().await.unwrap();
    for needle in [
        "reelstate_webhooks_total{service=\"goapi\",outcome=\"accepted\"}",
        "reelstate_transitions_total{lifecycle=\"video\",from=\"adding_music\",to=\"completed\"} 1",
        "reelstate_effects_total{kind=\"submit_nca_mix\",outcome=\"done\"} 1",
        "reelstate_inbox_depth 0",
        "reelstate_outbox_depth 0",
        "reelstate_quarantined_rows 0",
        "reelstate_processing_latency_seconds_count",
        // Counters typed as counters, with their HELP.
        "# TYPE reelstate_webhooks counter",
        "# HELP reelstate_webhooks ",
        "# TYPE reelstate_effects counter",
        // The latencies an operator alerts on, as histograms.
        "# TYPE reelstate_webhook_ack_seconds histogram",
        "reelstate_webhook_ack_seconds_count{service=\"goapi\"}",
        "reelstate_effect_duration_seconds_count{kind=\"submit_nca_mix\"} 1",
        "# TYPE reelstate_airtable_request_seconds histogram",
        "# TYPE reelstate_inbox_oldest_pending_age_seconds gauge",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
    }
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let w = WorldBuilder::new()
        .app(|a| {
            a.env("RUST_LOG", "debug")
                .env("REELSTATE_ADMIN_TOKEN", "admin-token-value-xyz")
        })
        .start()
        .await;
    let video = w.seed_video(1).await;
    let r = w
        .app
        .client
        .post(format!("{}/videos/{video}/music", w.app.url))
        .bearer_auth("admin-token-value-xyz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    w.app
        .wait_for_video(video.as_str(), Duration::from_secs(30), |v| {
            v["status"] == "completed"
        })
        .await;
    // Some wrong secrets too, which must not be echoed either.
    let _ = w
        .app
        .client
        .post(format!("{}/webhooks/goapi?video_id={video}", w.app.url))
        .header("x-webhook-secret", "a-wrong-secret-value")
        .body("{}")
        .send()
        .await;
    let log = w.app.log_text();
    assert!(log.contains("decided"), "the log has content");
    for secret in [
        GOAPI_SECRET,
        support::app::SIGNING_SECRET,
        "admin-token-value-xyz",
        "a-wrong-secret-value",
        &w.nca.api_key(),
        &w.goapi.api_key(),
    ] {
        assert!(!log.contains(secret), "secret {secret:?} found in the log");
    }
}

#[tokio::test]
async fn sigterm_during_processing_loses_nothing() {
    let mut w = WorldBuilder::new().app(|a| a.fixed_port()).start().await;
    // NCA calls back once; a mix outlasts the restart, as real mixes do.
    w.nca.set_callback_delay(Duration::from_millis(1500));
    let mut videos = Vec::new();
    for i in 0..10 {
        let task = format!("20000000-0000-4000-8000-{i:012}");
        let video = w.seed_generating(i, Some(&task)).await;
        let (s, _) = w.goapi_says(&video, "udio_completed.json", &task, 7).await;
        assert_eq!(s, 202);
        videos.push(video);
    }
    let status = w.app.terminate().await;
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status:?}\n{}",
        w.app.log_text()
    );
    assert!(w.app.log_text().contains("shut down"));
    w.app.restart().await;
    for v in &videos {
        w.wait_settled(v, "completed").await;
    }
    for (id, n) in w.nca.submissions_by_id() {
        assert_eq!(n, 1, "{id}");
    }
    assert_eq!(w.nca.submissions().len(), videos.len());
}

#[tokio::test]
async fn json_logs_on_request() {
    let w = WorldBuilder::new()
        .app(|a| a.env("REELSTATE_LOG_FORMAT", "json"))
        .start()
        .await;
    let (s, _) = w.app.get_json("/healthz").await;
    assert_eq!(s, 200);
    let log = w.app.log_text();
    let first = log.lines().next().expect("a log line");
    let v: Value = serde_json::from_str(first).expect("JSON log line");
    assert!(v["level"].is_string(), "{v}");
    let _ = GOAPI_SECRET;
}

#[tokio::test]
async fn trigger_sends_an_authenticated_sample_webhook() {
    let w = World::start().await;
    let task = "30000000-0000-4000-8000-000000000001";
    let video = w.seed_generating(1, Some(task)).await;
    let run = |args: Vec<String>, signing: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_reelstate"))
            .arg("trigger")
            .args(args)
            .env_clear()
            .env("GOAPI_WEBHOOK_SECRET", GOAPI_SECRET)
            .env("REELSTATE_SIGNING_SECRET", signing)
            .output()
            .expect("run trigger");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = run(
        vec![
            "goapi-completed".into(),
            "--video".into(),
            video.to_string(),
            "--task".into(),
            task.into(),
            "--server".into(),
            w.app.url.clone(),
        ],
        support::app::SIGNING_SECRET,
    );
    assert!(ok && out.starts_with("202"), "{out}");
    w.wait_settled(&video, "completed").await;
    // A callback signed with another key is refused, and the command says so.
    let (ok, out) = run(
        vec![
            "nca-failure".into(),
            "--video".into(),
            video.to_string(),
            "--job".into(),
            "any".into(),
            "--server".into(),
            w.app.url.clone(),
        ],
        "not-the-servers-signing-secret",
    );
    assert!(!ok && out.starts_with("401"), "{out}");
}

#[tokio::test]
async fn the_sandbox_first_run_completes_a_demo_video_and_says_how_to_inspect_it() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reelstate"))
        .args(["serve", "--sandbox", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("REELSTATE_DB", dir.path().join("first-run.db"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    while printed.len() < 6 {
        match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
            Ok(Ok(Some(l))) => printed.push(l),
            _ => break,
        }
    }
    let text = printed.join("\n");
    let url = printed[0]
        .strip_prefix("reelstate listening on ")
        .unwrap()
        .to_owned();
    assert!(text.contains("SANDBOX"), "{text}");
    let video = text
        .split_whitespace()
        .find(|w| w.starts_with("rec") && w.len() >= 17)
        .map(|w| w[..17].to_owned())
        .unwrap_or_else(|| panic!("no demo video in:\n{text}"));
    assert!(
        text.contains(&format!("curl -s {url}/videos/{video}")),
        "{text}"
    );
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = client
            .get(format!("{url}/videos/{video}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null);
        if v["status"] == "completed" {
            let path: Vec<&str> = v["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["to"].as_str().unwrap())
                .collect();
            assert!(
                path.contains(&"generating_music") && path.contains(&"adding_music"),
                "{v}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not completed within a minute: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_permanent_failure_is_recorded_visible_and_fails_the_stage() {
    let w = World::start().await;
    // NCA refuses the request for good (400: its schema rejected it).
    w.nca.respond_next(
        400,
        serde_json::json!({"code": 400, "message": "Invalid payload: inputs[0].file_url is not a URL"}),
    );
    let video = w.seed_video(1).await;
    w.request_music(&video).await;
    let v = w.wait_status(&video, "music_addition_failed").await;
    assert!(
        v["error_details"]
            .as_str()
            .unwrap_or_default()
            .contains("Invalid payload"),
        "{v}"
    );
    let (_, failed) = w.app.get_json("/events?outcome=failed").await;
    let events = failed["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{failed}");
    assert_eq!(events[0]["event"], "goapi_completed");
    // The failed effect stays visible on the video, with its error.
    let (_, job) = w
        .app
        .get_json(&format!(
            "/jobs/{}",
            v["jobs"][1]["job_id"].as_str().unwrap()
        ))
        .await;
    let effect = job["effects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "submit_nca_mix")
        .unwrap()
        .clone();
    assert_eq!(effect["state"], "failed", "{job}");
    assert!(
        effect["last_error"]
            .as_str()
            .unwrap()
            .contains("Invalid payload")
    );
    // Replaying it is refused with the way forward: its job has failed.
    let r = w
        .app
        .client
        .post(format!(
            "{}/effects/{}/retry",
            w.app.url,
            effect["effect_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/retry"),
        "{body}"
    );
    // A redrive is the operator's way forward.
    let (status, body) = w.retry(&video, None).await;
    assert_eq!(status, 202, "{body}");
    // Completed, and the effects its completion decided have run (the last Webhook Events
    // write may still be pending the moment the status changes).
    let done = w
        .app
        .wait_for_video(video.as_str(), Duration::from_secs(30), |v| {
            v["status"] == "completed"
                && v["effects"]
                    .as_array()
                    .is_some_and(|e| e.iter().all(|e| e["state"] == "failed"))
        })
        .await;
    // The failed effect is still on record (replayable), nothing else is open.
    let open: Vec<&Value> = done["effects"].as_array().unwrap().iter().collect();
    assert!(open.iter().all(|e| e["state"] == "failed"), "{done}");
}

#[tokio::test]
async fn a_second_process_on_the_same_sqlite_file_is_refused_with_a_clear_message() {
    let app = support::app::spawn_app().await;
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_reelstate"))
        .arg("serve")
        .env_clear()
        .env("REELSTATE_DEV_MODE", "true")
        .env("REELSTATE_LISTEN", "127.0.0.1:0")
        .env("REELSTATE_DB", &app.db)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), second)
        .await
        .expect("the second process gives up at once")
        .expect("run the binary");
    assert!(!out.status.success(), "the second process must not serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already in use by another reelstate process")
            && stderr.contains("PostgreSQL"),
        "{stderr}"
    );
    // The first one still serves.
    let (s, _) = app.get_json("/healthz").await;
    assert_eq!(s, 200);
}

/// A counter of `/metrics` text, 0 when the series is not there yet.
fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Probes and scrapes are answered from a cache that one refresh renews at most every
/// 5 s: a burst of them costs the store a bounded number of calls, not one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_scrapes_share_a_few_store_calls() {
    let app = support::app::spawn_app().await;
    let started = std::time::Instant::now();
    let asks: Vec<_> = (0..300)
        .map(|i| {
            let (client, url) = (app.client.clone(), app.url.clone());
            let path = if i % 3 == 0 { "metrics" } else { "readyz" };
            tokio::spawn(async move {
                let r = client.get(format!("{url}/{path}")).send().await.unwrap();
                r.status().as_u16()
            })
        })
        .collect();
    for a in asks {
        assert_eq!(a.await.unwrap(), 200);
    }
    let text = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // At most one call per 4 s (the refresh starts a second before answers expire).
    let bound = started.elapsed().as_secs() / 4 + 1;
    for probe in ["readyz", "metrics"] {
        let calls = counter(
            &text,
            &format!("reelstate_probe_store_calls_total{{probe=\"{probe}\"}}"),
        );
        assert!(
            (1..=bound).contains(&calls),
            "{probe}: {calls} store calls for 200 or 100 requests in {:?}",
            started.elapsed()
        );
    }
}

/// A store that does not answer (here another connection holds SQLite's write lock, so
/// the heartbeat waits) makes `/readyz` answer 503 within 5 s under steady probing, each
/// answer within a second, never a hang; once the lock is gone, it is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_the_store_does_not_answer_within_a_second() {
    let app = support::app::spawn_app().await;
    let (s, b) = app.get_json("/readyz").await;
    assert_eq!(s, 200, "{b}");
    let db = app.db.clone();
    let (locked, unlock) = (
        std::sync::mpsc::channel::<()>(),
        std::sync::mpsc::channel::<()>(),
    );
    let (locked_tx, locked_rx) = locked;
    let (unlock_tx, unlock_rx) = unlock;
    let holder = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(db).unwrap();
        c.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        let _ = unlock_rx.recv();
        c.execute_batch("ROLLBACK").unwrap();
    });
    locked_rx.recv().unwrap();
    let locked_at = std::time::Instant::now();
    // The answer cached before the lock may still be served; within 5 s it is not.
    let deadline = locked_at + Duration::from_secs(5);
    let body = loop {
        let asked = std::time::Instant::now();
        let (s, b) = app.get_json("/readyz").await;
        assert!(
            asked.elapsed() < Duration::from_millis(1500),
            "/readyz took {:?}",
            asked.elapsed()
        );
        if s == 503 {
            break b;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still ready with the store locked: {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        locked_at.elapsed() < Duration::from_millis(5500),
        "told after {:?}",
        locked_at.elapsed()
    );
    assert_eq!(body["store"]["ok"], false, "{body}");
    assert!(
        body["store"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("did not answer")),
        "{body}"
    );
    unlock_tx.send(()).unwrap();
    holder.join().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    loop {
        let (s, b) = app.get_json("/readyz").await;
        if s == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not ready again: {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
