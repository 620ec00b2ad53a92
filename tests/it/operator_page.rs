//! The operator page in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), against the real binary in sandbox mode: a demo video completes, a
//! second one fails, and the page shows what a person would look for. Screenshots go to
//! the test's temporary directory, and to `docs/screenshots/` with
//! `REELSTATE_UPDATE_SCREENSHOTS=1`. Skips, saying why, when Chromium is not installed.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use reelstate::domain::RecordId;
use serde_json::{Value, json};
use support::app::{ADMIN_TOKEN, AppBuilder, GOAPI_SECRET, TestApp};
use support::webdriver::Browser;
use support::world::{UDIO_TASK, World, WorldBuilder};

pub(super) const TOKEN: &str = "operator-page-admin-token";

pub(super) fn shot_path(name: &str) -> PathBuf {
    if std::env::var_os("REELSTATE_UPDATE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("docs/screenshots")
            .join(name)
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("screenshots")
            .join(name)
    }
}

async fn authed_post(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .client
        .post(format!("{}{path}", app.url))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A second demo video, driven to music_generation_failed by an authenticated GoAPI
/// `failed` webhook for its task (the sandbox's own later callbacks are then stale).
async fn failed_video(app: &TestApp) -> String {
    let r = app
        .post_json("/sandbox/videos", &json!({}))
        .await
        .json::<Value>()
        .await
        .expect("json");
    let video = r["video_id"].as_str().expect("video id").to_owned();
    let (status, body) = authed_post(app, &format!("/videos/{video}/music")).await;
    assert_eq!(status, 202, "{body}");
    let v = app
        .wait_for_video(&video, Duration::from_secs(60), |v| {
            v["jobs"][0]["external_id"].is_string()
        })
        .await;
    let task = v["jobs"][0]["external_id"].as_str().expect("task id");
    let req = reelstate::trigger::build(
        reelstate::trigger::Kind::GoapiFailed,
        &reelstate::trigger::Options {
            server: &app.url,
            video: &video,
            task,
            job: None,
            submission_id: None,
            goapi_secret: Some(GOAPI_SECRET),
            signing_secret: None,
        },
    )
    .expect("webhook");
    let mut send = app.client.post(&req.url).json(&req.body);
    for (k, v) in &req.headers {
        send = send.header(*k, v);
    }
    assert!(send.send().await.expect("send").status().is_success());
    app.wait_for_video(&video, Duration::from_secs(60), |v| {
        v["status"] == "music_generation_failed"
    })
    .await;
    video
}

/// A headless Chromium, or `None` (saying why) when it is not installed; installed but not
/// starting is a failure, not a skip.
pub(super) async fn browser(width: u32, height: u32) -> Option<Browser> {
    launch(width, height, false).await
}

/// [`browser`] as a phone: Chromium's mobile emulation, `width` CSS pixels wide.
pub(super) async fn phone(width: u32, height: u32) -> Option<Browser> {
    launch(width, height, true).await
}

async fn launch(width: u32, height: u32, phone: bool) -> Option<Browser> {
    use support::webdriver::on_path;
    if on_path(&["chromedriver"]).is_none()
        || on_path(&["chromium", "chromium-browser", "google-chrome"]).is_none()
    {
        eprintln!(
            "SKIPPED: the operator page browser test needs chromium and chromedriver on PATH \
             (apt-get install chromium chromium-driver; .ci/run does)"
        );
        return None;
    }
    let started = if phone {
        Browser::start_phone(width, height).await
    } else {
        Browser::start(width, height).await
    };
    Some(started.unwrap_or_else(|why| panic!("cannot start headless Chromium: {why}")))
}

/// Opens `path` of the page and gives it the admin token, as an operator does.
pub(super) async fn open_with_token(browser: &Browser, url: &str) {
    browser.goto(url).await;
    browser.wait_for("#token-dialog[open]").await;
    browser.type_into("#token-input", TOKEN).await;
    browser.click("#token-save").await;
}

/// Clicks the action `button` and confirms it: the call the confirmation named, and the
/// title of the API's answer the page shows.
pub(super) async fn confirm_action(browser: &Browser, button: &str) -> (String, String) {
    browser
        .eval(
            "document.querySelector(arguments[0]).click();",
            json!(button),
        )
        .await;
    browser.wait_for("#confirm-dialog[open]").await;
    let asked = browser.text("#confirm-call").await.unwrap_or_default();
    browser.click("#confirm-ok").await;
    browser.wait_for("#result:not([hidden])").await;
    let title = browser.text("#result-title").await.unwrap_or_default();
    (asked, title)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_a_video_complete_and_redrives_a_failed_one() {
    let Some(browser) = browser(1400, 1000).await else {
        return;
    };
    let app = AppBuilder::new()
        .env("REELSTATE_SANDBOX", "true")
        .env("REELSTATE_ADMIN_TOKEN", TOKEN)
        .without("NCA_API_URL")
        .without("NCA_API_KEY")
        .spawn()
        .await;
    // The demo video the sandbox starts with.
    let (_, events) = app.get_json("/events?outcome=applied&limit=1").await;
    let demo = match events["events"][0]["video_id"].as_str() {
        Some(v) => v.to_owned(),
        None => {
            let (_, e) = app.get_json("/events?limit=1").await;
            e["events"][0]["video_id"]
                .as_str()
                .expect("the demo video's first event")
                .to_owned()
        }
    };
    app.wait_for_video(&demo, Duration::from_secs(60), |v| {
        v["status"] == "completed"
    })
    .await;
    let failed = failed_video(&app).await;

    // The overview asks for the token, keeps it in the tab, and shows the counts.
    open_with_token(&browser, &format!("{}/", app.url)).await;
    browser
        .wait_for(r#"#video-states tr[data-state="completed"] td[data-count="1"]"#)
        .await;
    browser
        .wait_for(r#"#video-states tr[data-state="music_generation_failed"] td[data-count="1"]"#)
        .await;
    browser
        .wait_for(&format!(r#"#failed-videos tr[data-video="{failed}"]"#))
        .await;
    assert_eq!(
        browser
            .text(r#"#job-states tr[data-job-type="music_addition"] td[data-status="completed"]"#)
            .await
            .as_deref(),
        Some("1")
    );
    let token_in_session = browser
        .eval(
            "return sessionStorage.getItem('reelstate.adminToken');",
            json!(null),
        )
        .await;
    assert_eq!(token_in_session, json!(TOKEN));
    browser.screenshot(&shot_path("overview.png")).await;

    // The completed video: its current state highlighted, its path drawn, its timeline.
    browser.set_window(1400, 1500).await;
    browser.goto(&format!("{}/ui/videos/{demo}", app.url)).await;
    browser
        .wait_for(r#"#diagram g.state.current[data-state="completed"]"#)
        .await;
    for state in ["segments_combined", "generating_music", "adding_music"] {
        assert_eq!(
            browser
                .count(&format!(
                    r#"#diagram g.state.visited[data-state="{state}"]"#
                ))
                .await,
            1,
            "{state} is marked as visited"
        );
    }
    assert_eq!(
        browser
            .count(r#"#diagram g.state.visited[data-state="music_addition_failed"]"#)
            .await,
        0
    );
    let timeline = browser.text("#timeline").await.expect("a timeline");
    for expected in [
        "music_requested",
        "goapi_completed",
        "nca_succeeded",
        "generating_music → adding_music",
        "adding_music → completed",
    ] {
        assert!(
            timeline.contains(expected),
            "timeline shows {expected}: {timeline}"
        );
    }
    assert!(browser.count("#timeline tr[data-event]").await >= 5);
    browser.screenshot(&shot_path("video.png")).await;

    // A timeline row links to its raw payload.
    let nca_row = browser
        .eval(
            "var rows = document.querySelectorAll('#timeline tr[data-event]');\
             for (var r of rows) { if (r.textContent.indexOf('nca_succeeded') >= 0) return r.getAttribute('data-event'); }\
             return null;",
            json!(null),
        )
        .await;
    let nca_event = nca_row.as_str().expect("an nca_succeeded row").to_owned();
    browser
        .eval(
            "document.querySelector('#timeline tr[data-event=\"' + arguments[0] + '\"] a').click();",
            json!(nca_event),
        )
        .await;
    browser.wait_for("#payload").await;
    let payload = browser.text("#payload").await.unwrap_or_default();
    assert!(
        payload.contains("file_url"),
        "the NCA callback as sent: {payload}"
    );

    // The failed video: retry through the page, confirm, see the API's answer.
    browser
        .goto(&format!("{}/ui/videos/{failed}", app.url))
        .await;
    browser
        .wait_for(r#"#diagram g.state.current[data-state="music_generation_failed"]"#)
        .await;
    browser.screenshot(&shot_path("video-failed.png")).await;
    assert_eq!(
        browser.count("button[data-body]").await,
        0,
        "a plain retry orders new music here: no second choice"
    );
    let (asked, title) = confirm_action(&browser, r#"button[data-action$="/retry"]"#).await;
    assert_eq!(asked, format!("POST /videos/{failed}/retry"));
    assert!(title.contains("→ 202"), "the API's answer: {title}");
    let body = browser.text("#result-body").await.unwrap_or_default();
    assert!(body.contains("\"applied\""), "the API's answer: {body}");
    browser
        .wait_for(r#"#diagram g.state.current:not([data-state="music_generation_failed"])"#)
        .await;
    browser.screenshot(&shot_path("video-retried.png")).await;
    let (_, v) = app.get_json(&format!("/videos/{failed}")).await;
    assert_eq!(
        v["retries"],
        json!(1),
        "the retry went through the admin API"
    );

    // The event log, filtered by service.
    browser.set_window(1400, 1000).await;
    browser.goto(&format!("{}/ui/events", app.url)).await;
    browser.wait_for("#filter-service").await;
    browser
        .eval(
            "document.getElementById('filter-service').value = 'nca';",
            json!(null),
        )
        .await;
    browser.click("form.filters button[type=submit]").await;
    browser
        .wait_for(r#"#filter-service option[value="nca"][selected]"#)
        .await;
    browser.wait_for("#events tr[data-event]").await;
    let sources = browser
        .eval(
            "return Array.from(document.querySelectorAll('#events tr[data-event] td:nth-child(3)')).map(function (c) { return c.textContent; });",
            json!(null),
        )
        .await;
    let sources: Vec<&str> = sources
        .as_array()
        .expect("cells")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !sources.is_empty() && sources.iter().all(|s| *s == "NCA Toolkit"),
        "{sources:?}"
    );
    browser.goto(&format!("{}/ui/events", app.url)).await;
    browser.wait_for("#events tr[data-event]").await;
    browser.screenshot(&shot_path("events.png")).await;
    browser.quit().await;
}

/// GoAPI's webhook for the video the events log is filtered by; accepted (its event back).
async fn goapi_webhook(app: &TestApp, body: &Value) -> Value {
    let r = app
        .client
        .post(format!(
            "{}/webhooks/goapi?video_id=recAAAAAAAAAAAAAB",
            app.url
        ))
        .header("x-webhook-secret", GOAPI_SECRET)
        .json(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(r.status().as_u16(), 202);
    r.json().await.expect("json")
}

pub(super) async fn get_page(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
) -> (u16, String, String) {
    // A bare client: the app's own sends the admin token with every request.
    let mut req = reqwest::Client::new().get(format!("{}{path}", app.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let csp = r
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, csp, r.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_needs_the_admin_token_and_escapes_what_senders_send() {
    let app = AppBuilder::new()
        .env("REELSTATE_DEV_MODE", "true")
        .env("REELSTATE_ADMIN_TOKEN", TOKEN)
        .spawn()
        .await;
    // The shell carries no data, so it is served to anyone; its data needs the token.
    let (status, csp, html) = get_page(&app, "/", None).await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"<main id="view""#) && html.contains("/ui/assets/app.js"));
    assert!(csp.contains("script-src 'self'"), "{csp}");
    for path in [
        "/ui/fragments/overview",
        "/ui/fragments/events",
        "/ui/fragments/videos",
    ] {
        let (status, _, html) = get_page(&app, path, None).await;
        assert_eq!(status, 401, "{path}");
        assert!(html.contains("admin token"), "{html}");
        let (status, _, _) = get_page(&app, path, Some("wrong")).await;
        assert_eq!(status, 401, "{path}");
        let (status, _, _) = get_page(&app, path, Some(TOKEN)).await;
        assert_eq!(status, 200, "{path}");
    }
    // Bad input: a clear 4xx, an HTML page for pages, a fragment for fragments.
    let (status, _, html) = get_page(&app, "/ui/videos/not-a-record", None).await;
    assert_eq!(status, 400);
    assert!(html.contains("<!doctype html>") && html.contains("invalid_video_id"));
    let (status, _, html) = get_page(&app, "/ui/events/42", None).await;
    assert_eq!(status, 400);
    assert!(html.contains("invalid_event_id"));
    let cases = [
        ("/ui/fragments/videos/nope", 400, "invalid_video_id"),
        ("/ui/fragments/events?outcome=bogus", 400, "invalid_outcome"),
        ("/ui/fragments/events?service=bogus", 400, "invalid_service"),
        ("/ui/fragments/events?before=x", 400, "invalid_cursor"),
        ("/ui/fragments/videos?older_than=x", 400, "invalid_age"),
        ("/ui/fragments/videos?before=x", 400, "invalid_cursor"),
        ("/ui/fragments/nothing", 404, "not_found"),
    ];
    for (path, want, code) in cases {
        let (status, _, html) = get_page(&app, path, Some(TOKEN)).await;
        assert_eq!(status, want, "{path}: {html}");
        assert!(html.contains(code), "{path}: {html}");
    }
    // A well-formed id the engine never heard of: said so, with what would start it.
    let (status, _, html) =
        get_page(&app, "/ui/fragments/videos/recAAAAAAAAAAAAAA", Some(TOKEN)).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(r#"id="not-handled""#) && html.contains("Request music"));
    let r = app.post_json("/ui/events", &json!({})).await;
    assert_eq!(r.status().as_u16(), 405);

    // A sender's markup is shown as text, never run.
    let mut body: Value =
        serde_json::from_str(include_str!("../fixtures/goapi/udio_failed.json")).expect("fixture");
    body["data"]["error"]["message"] =
        json!(r#"<script>alert("owned")</script><img src=x onerror=alert(1)>"#);
    let event = goapi_webhook(&app, &body).await;
    let id = event["event_id"].as_str().expect("event id");
    let (status, _, html) =
        get_page(&app, &format!("/ui/fragments/events/{id}"), Some(TOKEN)).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(r#"&lt;script&gt;alert(\&quot;owned\&quot;)&lt;/script&gt;"#),
        "{html}"
    );
    assert!(
        !html.contains("<script") && !html.contains("<img"),
        "{html}"
    );
    let (_, _, html) = get_page(&app, "/ui/fragments/events", Some(TOKEN)).await;
    assert!(html.contains(id) && !html.contains("<script"));
    // What an operator typed comes back as text too.
    let (status, _, html) = get_page(
        &app,
        "/ui/fragments/videos?q=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E&status=%3Cb%3E",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(r#"value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;""#)
            && html.contains(r#"<option value="&lt;b&gt;" selected>"#)
            && !html.contains("<script")
            && !html.contains("<b>"),
        "{html}"
    );

    // The log pages by 50, keeping the filters.
    for i in 0..50 {
        body["timestamp"] = json!(1_700_000_000 + i);
        goapi_webhook(&app, &body).await;
    }
    let first = "/ui/fragments/events?service=goapi&video_id=recAAAAAAAAAAAAAB";
    let (_, _, html) = get_page(&app, first, Some(TOKEN)).await;
    assert_eq!(html.matches("<tr data-event=").count(), 50);
    let older = html
        .split(r#"<a id="older" href="/ui/events?"#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a link to older events")
        .replace("&amp;", "&");
    assert!(older.contains("service=goapi") && older.contains("video_id=recAAAAAAAAAAAAAB"));
    let (status, _, html) =
        get_page(&app, &format!("/ui/fragments/events?{older}"), Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(
        html.matches("<tr data-event=").count(),
        1,
        "the 51st, oldest"
    );
    assert!(html.contains(id) && html.contains("newest"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reads_the_engines_store_and_never_airtable() {
    use support::airtable_double::{AirtableDouble, DoubleConfig};
    let airtable = AirtableDouble::start(DoubleConfig::default()).await;
    let app = AppBuilder::new()
        .env("REELSTATE_DEV_MODE", "true")
        .airtable(&airtable)
        .spawn()
        .await;
    let before = airtable.requests().len();
    for path in [
        "/",
        "/ui/fragments/overview",
        "/ui/fragments/events",
        "/ui/fragments/events?service=goapi&outcome=applied",
        "/ui/videos",
        "/ui/fragments/videos",
        "/ui/fragments/videos?q=recAAAAAAAAAAAAAC&attention=1",
        "/ui/videos/recAAAAAAAAAAAAAC",
        "/ui/fragments/videos/recAAAAAAAAAAAAAC",
    ] {
        for _ in 0..3 {
            let (status, _, html) = get_page(&app, path, Some(ADMIN_TOKEN)).await;
            assert!(status == 200 || status == 404, "{path}: {status} {html}");
        }
    }
    let (_, _, html) = get_page(&app, "/ui/fragments/overview", Some(ADMIN_TOKEN)).await;
    assert!(html.contains("requests sent since start"), "{html}");
    assert_eq!(
        airtable.requests().len(),
        before,
        "the page caused no request to Airtable"
    );
}

/// A 429 locks the base out (for AIRTABLE_LOCKOUT_SECS); while it runs, the overview's
/// Airtable card says so and until when, so an operator knows why nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_airtable_lockout_shows_while_it_runs() {
    use support::airtable_double::{AirtableDouble, DoubleConfig};
    let airtable = AirtableDouble::start(DoubleConfig::default()).await;
    airtable.rate_limit_at_request(1);
    let app = AppBuilder::new()
        .env("REELSTATE_DEV_MODE", "true")
        .airtable(&airtable)
        .env("AIRTABLE_LOCKOUT_SECS", "600")
        .spawn()
        .await;
    let (_, _, html) = get_page(&app, "/ui/fragments/overview", Some(ADMIN_TOKEN)).await;
    assert!(!html.contains("airtable-locked"), "no lockout yet: {html}");
    // Anything that reads the base meets the 429 (and then waits out the lockout, so the
    // caller gives up long before it answers).
    let _ = reqwest::Client::new()
        .get(format!("{}/readyz", app.url))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let html = loop {
        let (_, _, html) = get_page(&app, "/ui/fragments/overview", Some(ADMIN_TOKEN)).await;
        if html.contains("airtable-locked") {
            break html;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lockout never showed; Airtable saw {:?}",
            airtable.requests()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(html.contains("locked out by Airtable until"), "{html}");
    assert!(
        airtable.requests().iter().any(|r| r.status == 429),
        "the double answered 429"
    );
}

/// A row this version cannot read (left by a newer or older reelstate) is set aside by the
/// worker; the overview lists it under "needs attention", since nothing will retry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_row_is_listed_as_needing_attention() {
    let mut app = AppBuilder::new()
        .env("REELSTATE_DEV_MODE", "true")
        .fixed_port()
        .spawn()
        .await;
    app.terminate().await;
    let event_id = uuid::Uuid::new_v4().to_string();
    {
        let db = rusqlite::Connection::open(&app.db).expect("open the store's file");
        db.execute(
            "INSERT INTO inbox (event_id, video_id, source, endpoint, raw_body, headers,
                                received_at, payload, state)
             VALUES (?1, 'recQ1b2C3d4E5f6G7', 'goapi', '/webhooks/goapi', '{}', '{}',
                     ?2, '{\"payload\": \"from_a_newer_version\"}', 'pending')",
            rusqlite::params![
                event_id,
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ],
        )
        .expect("a row the engine cannot read");
    }
    app.restart().await;

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let html = loop {
        let (status, _, html) = get_page(&app, "/ui/fragments/overview", Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 200, "{html}");
        if html.contains("quarantined-rows") {
            break html;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the row was never listed: {html}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(html.contains(&event_id), "{html}");
    assert!(html.contains("recQ1b2C3d4E5f6G7"), "{html}");
    assert!(
        html.contains(r#"id="attention" data-count="1""#),
        "one row needs attention: {html}"
    );
    app.kill().await;
}

#[test]
fn states_svg_writes_both_diagrams_from_the_exploration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reelstate"))
        .args(["states", "--svg"])
        .arg(dir.path().join("diagrams"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (videos, jobs) = reelstate::machine::explore();
    let video = std::fs::read_to_string(dir.path().join("diagrams/video.svg")).expect("video.svg");
    assert!(video.starts_with("<svg"));
    for r in &videos {
        assert!(video.contains(&r.event) && video.contains(&format!(r#"data-state="{}""#, r.from)));
    }
    let job = std::fs::read_to_string(dir.path().join("diagrams/job.svg")).expect("job.svg");
    for r in &jobs {
        assert!(job.contains(&format!("{} ({})", r.event, r.job_type)));
    }
    // A directory that cannot be made: a clear error, not a panic.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("file");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reelstate"))
        .args(["states", "--svg"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot write the diagrams"));
}

/// A mix failure that has nothing to do with the track: a plain retry mixes the video's
/// music again.
const MIX_ERROR: &str = "FFmpeg command failed: Invalid data found when processing input";

/// A world whose app has the page's admin token.
pub(super) async fn world_with_token() -> World {
    WorldBuilder::new()
        .app(|a| a.env("REELSTATE_ADMIN_TOKEN", TOKEN))
        .start()
        .await
}

/// The "Retry with new music" button of a video's fragment: its URL and its body, as the
/// page's script reads them (unescaped).
fn new_music_button(html: &str) -> Option<(String, String)> {
    let button = html
        .split("<button")
        .find(|b| b.contains("Retry with new music"))?;
    let attr = |name: &str| {
        let value = button
            .split(&format!(r#" {name}=""#))
            .nth(1)?
            .split('"')
            .next()?;
        Some(value.replace("&quot;", "\"").replace("&amp;", "&"))
    };
    Some((attr("data-action")?, attr("data-body")?))
}

/// A failed mix can be retried two ways: mixing the video's music again (the plain retry)
/// or with new music. The video's fragment offers the second only there, and its button
/// asks the admin API for exactly that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_mix_offers_a_retry_with_new_music_and_its_button_orders_it() {
    let w = world_with_token().await;
    let (video, _, track) = w.failed_mix(MIX_ERROR).await;
    let fragment = |v: &RecordId| format!("/ui/fragments/videos/{v}");
    let (status, _, html) = get_page(&w.app, &fragment(&video), Some(TOKEN)).await;
    assert_eq!(status, 200, "{html}");
    let (url, body) =
        new_music_button(&html).unwrap_or_else(|| panic!("no retry with new music: {html}"));
    assert_eq!(url, format!("/videos/{video}/retry"));
    let asked: Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(asked, json!({"from": "music"}));

    // Not where the plain retry orders new music anyway.
    let generating = w.seed_generating(2, Some(UDIO_TASK)).await;
    let (status, _) = w
        .goapi_says(&generating, "udio_failed.json", UDIO_TASK, 1)
        .await;
    assert_eq!(status, 202);
    w.wait_settled(&generating, "music_generation_failed").await;
    let (_, _, html) = get_page(&w.app, &fragment(&generating), Some(TOKEN)).await;
    assert!(html.contains("Retry failed stage"), "{html}");
    assert_eq!(new_music_button(&html), None, "{html}");

    // The button's call, as the page's script makes it: new music, and that music mixed.
    let r = w
        .app
        .client
        .post(format!("{}{url}", w.app.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 202);
    let v = w.wait_settled(&video, "completed").await;
    assert_eq!(w.goapi.tasks().len(), 2, "new music was ordered: {v}");
    assert_ne!(v["music"], json!(track), "{v}");
    // Nothing to retry once completed.
    let (_, _, html) = get_page(&w.app, &fragment(&video), Some(TOKEN)).await;
    assert_eq!(new_music_button(&html), None, "{html}");
}

/// The same choice through the page in a browser: the confirmation names the call and its
/// body, and the retry it sends orders new music (a plain retry would mix the old track).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_a_failed_mix_with_new_music() {
    let Some(browser) = browser(1400, 1000).await else {
        return;
    };
    let w = world_with_token().await;
    let (video, _, _) = w.failed_mix(MIX_ERROR).await;
    open_with_token(&browser, &format!("{}/ui/videos/{video}", w.app.url)).await;
    browser
        .wait_for(r#"#diagram g.state.current[data-state="music_addition_failed"]"#)
        .await;
    browser.wait_for("button[data-body]").await;
    let (asked, title) = confirm_action(&browser, "button[data-body]").await;
    assert_eq!(
        asked,
        format!(r#"POST /videos/{video}/retry {{"from":"music"}}"#)
    );
    assert!(title.contains("→ 202"), "the API's answer: {title}");
    let v = w.wait_settled(&video, "completed").await;
    assert_eq!(
        w.goapi.tasks().len(),
        2,
        "the page's retry ordered new music: {v}"
    );
    browser.quit().await;
}

/// A video in music_generation_failed after GoAPI's `failed` webhook for `task`.
pub(super) async fn failed_generation(w: &World, n: usize, task: &str) -> RecordId {
    let video = w.seed_generating(n, Some(task)).await;
    let (status, _) = w.goapi_says(&video, "udio_failed.json", task, 1).await;
    assert_eq!(status, 202);
    w.wait_settled(&video, "music_generation_failed").await;
    video
}

/// The videos list in a browser: from the overview's count of failed videos to the list
/// filtered to them, a bulk retry of two (one confirmation naming how many, every answer
/// shown), and a search by GoAPI task id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_failed_videos_retries_two_and_searches_by_task() {
    let Some(browser) = browser(1400, 1000).await else {
        return;
    };
    retry_two_and_search(browser, 1400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_390px_phone_too_an_operator_retries_two_and_searches_by_task() {
    let Some(browser) = phone(390, 844).await else {
        return;
    };
    retry_two_and_search(browser, 390).await;
}

/// Whether the page fits `width` CSS pixels, with no sideways scrolling.
async fn fits(browser: &Browser, width: u64, what: &str) {
    let w = browser
        .eval("return document.documentElement.scrollWidth;", Value::Null)
        .await
        .as_u64()
        .expect("a width");
    assert!(w <= width, "{what}: {w} px wide in a {width} px viewport");
}

/// The bulk retry and the search, as an operator does them in a `width` px viewport.
async fn retry_two_and_search(browser: Browser, width: u64) {
    let w = world_with_token().await;
    let first_task = uuid::Uuid::new_v4().to_string();
    let first = failed_generation(&w, 1, &first_task).await;
    let second = failed_generation(&w, 2, &uuid::Uuid::new_v4().to_string()).await;
    let done = w.seed_video(3).await;
    let (status, body) = w.request_music(&done).await;
    assert_eq!(status, 202, "{body}");
    w.wait_settled(&done, "completed").await;

    open_with_token(&browser, &format!("{}/", w.app.url)).await;
    let count = r#"#video-states tr[data-state="music_generation_failed"] td[data-count="2"] a"#;
    browser.wait_for(count).await;
    let viewport = browser.eval("return window.innerWidth;", Value::Null).await;
    assert_eq!(viewport, json!(width), "the viewport");
    browser.click(count).await;
    browser
        .wait_for(r#"#filter-status option[value="music_generation_failed"][selected]"#)
        .await;
    browser.wait_for("#videos tr[data-video]").await;
    assert_eq!(browser.count("#videos tr[data-video]").await, 2);
    assert_eq!(
        browser
            .count(&format!(r#"#videos tr[data-video="{done}"]"#))
            .await,
        0,
        "filtered to failed videos"
    );
    for v in [&first, &second] {
        browser.click(&format!(r#"input[data-retry="{v}"]"#)).await;
    }
    fits(&browser, width, "the filtered list").await;
    if width == 1400 {
        browser.screenshot(&shot_path("videos.png")).await;
    }
    browser.click("#bulk-retry").await;
    browser.wait_for("#confirm-dialog[open]").await;
    fits(&browser, width, "the confirmation").await;
    assert_eq!(
        browser.text("#confirm-text").await.as_deref(),
        Some("Retry 2 failed videos?")
    );
    let asked = browser.text("#confirm-call").await.unwrap_or_default();
    assert!(
        asked.contains(first.as_str()) && asked.contains(second.as_str()),
        "{asked}"
    );
    browser.click("#confirm-ok").await;
    browser.wait_for("#result:not([hidden])").await;
    assert_eq!(
        browser.text("#result-title").await.as_deref(),
        Some("Retried 2 videos")
    );
    fits(&browser, width, "the result").await;
    let answers = browser.text("#result-body").await.unwrap_or_default();
    for v in [&first, &second] {
        assert!(
            answers.contains(&format!("POST /videos/{v}/retry → 202")),
            "every answer is shown: {answers}"
        );
    }
    for v in [&first, &second] {
        let (_, body) = w.app.get_json(&format!("/videos/{v}")).await;
        assert_eq!(body["retries"], json!(1), "{body}");
    }

    // A search by the GoAPI task id finds its video, whatever state it is in now.
    browser.goto(&format!("{}/ui/videos", w.app.url)).await;
    browser.wait_for("#filter-q").await;
    browser.type_into("#filter-q", &first_task).await;
    browser.click("form.filters button[type=submit]").await;
    browser
        .wait_for(&format!(r#"#videos tr[data-video="{first}"]"#))
        .await;
    assert_eq!(browser.count("#videos tr[data-video]").await, 1);
    browser.quit().await;
}
