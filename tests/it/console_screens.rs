//! The operator console as an on-call operator uses it: on a 390 px phone as on a wide
//! screen, refreshing without taking the reader's selection away, holding still when
//! paused, offering only what the machine accepts, saying what answers mean, and naming
//! pages, times and failures honestly. Browser tests skip (saying why) without Chromium.

use crate::operator_page::{
    TOKEN, browser, confirm_action, failed_generation, get_page, open_with_token, phone, shot_path,
    world_with_token,
};
use crate::support;

use std::time::Duration;

use serde_json::{Value, json};
use support::webdriver::Browser;
use support::world::UDIO_TASK;

/// Chromium is not installed: the browser tests say so and pass over themselves.
fn browser_missing() -> bool {
    use support::webdriver::on_path;
    let missing = on_path(&["chromedriver"]).is_none()
        || on_path(&["chromium", "chromium-browser", "google-chrome"]).is_none();
    if missing {
        eprintln!(
            "SKIPPED: needs chromium and chromedriver on PATH (apt-get install chromium chromium-driver)"
        );
    }
    missing
}

/// Polls `script` (a function body returning a boolean) until it is true; a generous
/// bound, for a loaded machine; panics with what the page shows.
async fn until(browser: &Browser, what: &str, script: &str) {
    for _ in 0..900 {
        if browser.eval(script, Value::Null).await == json!(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shown = browser.text("body").await.unwrap_or_default();
    panic!("{what} never happened; the page shows:\n{shown}");
}

/// How many refreshes (or, paused, skipped refreshes) the page has counted.
async fn counter(browser: &Browser, name: &str) -> u64 {
    browser
        .eval(
            "return Number(document.getElementById('stamp').getAttribute(arguments[0]));",
            json!(name),
        )
        .await
        .as_u64()
        .expect("a count")
}

/// Waits until the page counted `n` more of `name` than it has now.
async fn wait_more(browser: &Browser, name: &str, n: u64) {
    let from = counter(browser, name).await;
    until(
        browser,
        &format!("{n} more {name}"),
        &format!(
            "return Number(document.getElementById('stamp').getAttribute('{name}')) >= {};",
            from + n
        ),
    )
    .await;
}

async fn page_width(browser: &Browser) -> u64 {
    browser
        .eval("return document.documentElement.scrollWidth;", Value::Null)
        .await
        .as_u64()
        .expect("a width")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_fits_a_390px_phone_without_sideways_scrolling() {
    let Some(browser) = phone(390, 844).await else {
        return;
    };
    let w = world_with_token().await;
    let failed = failed_generation(&w, 1, &uuid::Uuid::new_v4().to_string()).await;
    let done = w.seed_video(2).await;
    let (status, body) = w.request_music(&done).await;
    assert_eq!(status, 202, "{body}");
    w.wait_settled(&done, "completed").await;
    let base = &w.app.url;
    open_with_token(&browser, &format!("{base}/")).await;
    browser
        .wait_for(r#"#video-states tr[data-state="completed"] td[data-count="1"]"#)
        .await;
    let viewport = browser.eval("return window.innerWidth;", Value::Null).await;
    assert_eq!(viewport, json!(390), "the phone's viewport");
    assert!(page_width(&browser).await <= 390, "the overview");
    browser.screenshot(&shot_path("overview-390.png")).await;

    browser.goto(&format!("{base}/ui/videos")).await;
    browser.wait_for("#videos tr[data-video]").await;
    assert!(page_width(&browser).await <= 390, "the videos list");
    // Stacked rows: each cell says which column it is.
    let label = browser
        .eval(
            "var td = document.querySelector('#videos tr[data-video] td:nth-child(3)');\
             return getComputedStyle(td, '::before').content;",
            Value::Null,
        )
        .await;
    assert_eq!(label, json!("\"state\""), "a stacked row labels its cells");
    browser.screenshot(&shot_path("videos-390.png")).await;

    for (video, state, shot) in [
        (&done, "completed", "video-390.png"),
        (&failed, "music_generation_failed", "video-failed-390.png"),
    ] {
        browser.goto(&format!("{base}/ui/videos/{video}")).await;
        browser
            .wait_for(&format!(
                r#"#diagram g.state.current[data-state="{state}"]"#
            ))
            .await;
        browser.wait_for("#timeline tr[data-event]").await;
        assert!(page_width(&browser).await <= 390, "video {video}");
        // The diagram keeps a legible size and scrolls inside its own box.
        let inside = browser
            .eval(
                "var d = document.getElementById('diagram'); return d.scrollWidth > d.clientWidth;",
                Value::Null,
            )
            .await;
        assert_eq!(inside, json!(true), "the diagram scrolls in its box");
        browser.screenshot(&shot_path(shot)).await;
    }

    browser.goto(&format!("{base}/ui/events")).await;
    browser.wait_for("#events tr[data-event]").await;
    assert!(page_width(&browser).await <= 390, "the event log");
    browser.screenshot(&shot_path("events-390.png")).await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_keeps_the_selection_and_a_pause_holds_the_page_still() {
    if browser_missing() {
        return;
    }
    // A reader nine hours east of UTC, with no daylight saving time to blur the check.
    let browser = Browser::start_in_zone(1400, 1000, "Asia/Tokyo")
        .await
        .unwrap_or_else(|why| panic!("cannot start headless Chromium: {why}"));
    let w = world_with_token().await;
    // GoAPI takes the task and stays silent: the video waits in generating_music until the
    // test sends GoAPI's word.
    w.goapi.set_drop_webhooks(true);
    let video = w.seed_video(1).await;
    let (status, body) = w.request_music(&video).await;
    assert_eq!(status, 202, "{body}");
    let v = w
        .app
        .wait_for_video(video.as_str(), Duration::from_secs(60), |v| {
            v["jobs"][0]["external_id"].is_string()
        })
        .await;
    let task = v["jobs"][0]["external_id"]
        .as_str()
        .expect("GoAPI's task id")
        .to_owned();
    let url = format!("{}/ui/videos/{video}", w.app.url);
    open_with_token(&browser, &url).await;
    browser
        .wait_for(r#"#video-status[data-status="generating_music"]"#)
        .await;

    // Times in the reader's zone, named; UTC on hover.
    let shown = browser
        .eval(
            "var t = document.querySelector('#state-since time');\
             return [t.getAttribute('datetime'), t.textContent, t.title];",
            Value::Null,
        )
        .await;
    let at = chrono::DateTime::parse_from_rfc3339(shown[0].as_str().expect("datetime"))
        .expect("an RFC 3339 time");
    let tokyo = at.with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).expect("+9"));
    let text = shown[1].as_str().expect("text");
    assert!(
        text.contains(&tokyo.format("%M:%S").to_string()) && text.contains("GMT+9"),
        "Tokyo's time, named: {text} for {at}"
    );
    let hour12 = tokyo.format("%I").to_string();
    assert!(
        text.contains(&format!("{hour12}:")),
        "Tokyo's hour: {text} for {at}"
    );
    assert_eq!(
        shown[2].as_str(),
        Some(format!("UTC: {}", at.format("%Y-%m-%d %H:%M:%S")).as_str()),
        "UTC on hover"
    );

    // A reader selects the video's heading, as if to copy its id; the page keeps refreshing.
    let selected = browser
        .eval(
            "var h = document.querySelector('#view h1'); h.dataset.marked = 'before';\
             var r = document.createRange(); r.selectNodeContents(h);\
             var s = window.getSelection(); s.removeAllRanges(); s.addRange(r); return s.toString();",
            Value::Null,
        )
        .await;
    let selected = selected.as_str().expect("text").to_owned();
    assert!(selected.contains(video.as_str()), "{selected}");
    wait_more(&browser, "data-refreshes", 3).await;
    let still = browser
        .eval("return window.getSelection().toString();", Value::Null)
        .await;
    assert_eq!(
        still,
        json!(selected),
        "the selection survived three refreshes"
    );
    assert_eq!(
        browser.count(r#"#view h1[data-marked="before"]"#).await,
        1,
        "the unchanged section was left in place"
    );

    // Paused, the page holds still while the engine moves on.
    browser.click("#pause").await;
    browser.wait_for(r#"#pause[aria-pressed="true"]"#).await;
    let stamp = browser.text("#stamp").await.unwrap_or_default();
    assert!(stamp.contains("paused"), "{stamp}");
    let (status, _) = w.goapi_says(&video, "udio_failed.json", &task, 1).await;
    assert_eq!(status, 202);
    w.wait_settled(&video, "music_generation_failed").await;
    wait_more(&browser, "data-skipped", 2).await;
    assert_eq!(
        browser
            .count(r#"#video-status[data-status="generating_music"]"#)
            .await,
        1,
        "the paused page still shows what it showed"
    );
    assert_eq!(
        browser.count(r#"#pause[aria-pressed="true"]"#).await,
        1,
        "still paused after the refreshes it skipped"
    );

    // Resumed, it catches up.
    browser.click("#pause").await;
    browser
        .wait_for(r#"#video-status[data-status="music_generation_failed"]"#)
        .await;
    assert!(
        browser
            .text("#stamp")
            .await
            .unwrap_or_default()
            .starts_with("live")
    );

    // The pause is the tab's: a reload keeps it, after showing the page once.
    browser.click("#pause").await;
    browser.wait_for(r#"#pause[aria-pressed="true"]"#).await;
    browser.goto(&url).await;
    browser
        .wait_for(r#"#video-status[data-status="music_generation_failed"]"#)
        .await;
    assert_eq!(browser.count(r#"#pause[aria-pressed="true"]"#).await, 1);
    browser.click("#pause").await;
    browser.wait_for(r#"#pause[aria-pressed="false"]"#).await;

    // A new event adds its row to the timeline; the row a reader is selecting in stays,
    // node and selection both.
    let rows = browser.count("#timeline tr[data-event]").await;
    let selected = browser
        .eval(
            "var td = document.querySelector('#timeline tr[data-event] td:nth-child(3)');\
             td.parentElement.dataset.marked = 'before';\
             var r = document.createRange(); r.selectNodeContents(td);\
             var s = window.getSelection(); s.removeAllRanges(); s.addRange(r); return s.toString();",
            Value::Null,
        )
        .await;
    let selected = selected.as_str().expect("text").to_owned();
    assert!(!selected.is_empty(), "an event's name is selected");
    let (status, _) = w.goapi_says(&video, "udio_failed.json", &task, 2).await;
    assert_eq!(status, 202);
    until(
        &browser,
        "the new event in the timeline",
        &format!("return document.querySelectorAll('#timeline tr[data-event]').length > {rows};"),
    )
    .await;
    assert_eq!(
        browser
            .eval("return window.getSelection().toString();", Value::Null)
            .await,
        json!(selected),
        "the selection in the timeline survived the new row"
    );
    assert_eq!(
        browser
            .count(r#"#timeline tr[data-event][data-marked="before"]"#)
            .await,
        1,
        "the unchanged row was left in place"
    );

    // The event log is live: a new event shows without a reload.
    browser.goto(&format!("{}/ui/events", w.app.url)).await;
    browser.wait_for("#events tr[data-event]").await;
    let before = browser.count("#events tr[data-event]").await;
    let (status, _) = w.goapi_says(&video, "udio_failed.json", &task, 3).await;
    assert_eq!(status, 202);
    until(
        &browser,
        "the new event in the log",
        &format!("return document.querySelectorAll('#events tr[data-event]').length > {before};"),
    )
    .await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_named_and_actions_follow_the_state() {
    let Some(browser) = browser(1400, 1000).await else {
        return;
    };
    let w = world_with_token().await;
    let video = w.seed_video(1).await;
    let url = format!("{}/ui/videos/{video}", w.app.url);

    browser.goto(&url).await;
    browser.wait_for("#token-dialog[open]").await;
    assert_eq!(browser.count("#token-error:not([hidden])").await, 0);
    browser.type_into("#token-input", "not-the-token").await;
    browser.click("#token-save").await;
    browser
        .wait_for("#token-dialog[open] #token-error:not([hidden])")
        .await;
    let said = browser.text("#token-error").await.unwrap_or_default();
    assert!(said.contains("refused this token"), "{said}");
    browser.type_into("#token-input", TOKEN).await;
    browser.click("#token-save").await;
    browser.wait_for("#actions").await;
    assert_eq!(browser.count("#token-dialog[open]").await, 0);
    let title = browser.eval("return document.title;", Value::Null).await;
    assert_eq!(
        title,
        json!(format!("Video {video} (not_handled) · reelstate"))
    );

    // Nothing the engine knows of yet: what starts the stage, music with a prompt; no retry.
    assert_eq!(
        browser
            .count(r#"#actions button[data-action$="/retry"]"#)
            .await,
        0
    );
    browser
        .type_into("#music-prompt", "slow lofi rain, no vocals")
        .await;
    let (asked, answer) =
        confirm_action(&browser, r#"#actions button[data-action$="/music"]"#).await;
    assert_eq!(
        asked,
        format!(r#"POST /videos/{video}/music {{"prompt":"slow lofi rain, no vocals"}}"#)
    );
    assert!(answer.contains("→ 202"), "{answer}");
    let sentence = browser.text("#result-text").await.unwrap_or_default();
    // The engine answers within 15 s, or the command stays queued: either is said plainly.
    assert!(
        sentence.starts_with("Done: the video is now generating_music, with job ")
            || sentence == "Queued: the engine takes it up within seconds.",
        "{sentence}"
    );
    assert_eq!(
        browser
            .eval(
                "return document.getElementById('result-raw').open;",
                Value::Null
            )
            .await,
        json!(false),
        "the raw answer waits behind a toggle"
    );
    let raw = browser.text("#result-body").await.unwrap_or_default();
    assert!(raw.contains("\"video_status\""), "{raw}");
    w.wait_settled(&video, "completed").await;
    let prompts: Vec<Value> = w.goapi.tasks().iter().map(|t| t.body.clone()).collect();
    assert!(
        prompts
            .iter()
            .any(|b| b.to_string().contains("slow lofi rain, no vocals")),
        "GoAPI got the typed prompt: {prompts:?}"
    );

    // Completed: nothing to ask for, and the page says so.
    browser.wait_for("#no-action").await;
    assert_eq!(browser.count("#actions button").await, 0);
    browser.quit().await;
}

/// What the video fragment says, read as HTML: honest pills, the path in order with the
/// time spent in each state, the edges named beside the drawing, "(other)" explained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_video_page_tells_its_story_in_order_with_honest_colours() {
    let w = world_with_token().await;
    let failed = failed_generation(&w, 1, UDIO_TASK).await;
    let (status, _, html) = get_page(
        &w.app,
        &format!("/ui/fragments/videos/{failed}"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let goapi_failed = html
        .split("<tr data-event=")
        .skip(1)
        .find(|row| row.contains(">goapi_failed<"))
        .unwrap_or_else(|| panic!("a goapi_failed row: {html}"));
    assert!(
        goapi_failed.contains(r#"<span class="pill failure">applied · failure</span>"#),
        "an applied failure is red: {goapi_failed}"
    );
    assert!(!goapi_failed.contains("pill applied"), "{goapi_failed}");
    assert!(html.contains("Retry failed stage") && !html.contains("Request music"));
    assert!(html.contains("set by another stage"), "(other) on the node");
    assert!(html.contains(r#"<ol class="edges" id="edges">"#));
    assert!(html.contains(
        r#"data-from="generating_music" data-to="music_generation_failed" class="taken">"#
    ));

    let done = w.seed_video(2).await;
    let (status, body) = w.request_music(&done).await;
    assert_eq!(status, 202, "{body}");
    w.wait_settled(&done, "completed").await;
    let (_, _, html) = get_page(&w.app, &format!("/ui/fragments/videos/{done}"), Some(TOKEN)).await;
    let path = html
        .split(r#"<ol class="path" id="path">"#)
        .nth(1)
        .and_then(|p| p.split("</ol>").next())
        .unwrap_or_else(|| panic!("a path: {html}"));
    let steps: Vec<usize> = [
        "segments_combined → <strong>generating_music",
        "generating_music → <strong>adding_music",
        "adding_music → <strong>completed",
    ]
    .iter()
    .map(|s| path.find(s).unwrap_or_else(|| panic!("{s} in {path}")))
    .collect();
    assert!(steps.windows(2).all(|p| p[0] < p[1]), "in order: {path}");
    assert!(path.contains(" in generating_music</span>"), "{path}");
    assert_eq!(
        path.matches(r#"class="edge-n""#).count(),
        3,
        "each step names its edge in the drawing: {path}"
    );
    assert!(path.contains("<time datetime="), "{path}");
    // And the drawing numbers those steps on the edges they took.
    let drawing = html
        .split(r#"id="diagram">"#)
        .nth(1)
        .and_then(|d| d.split("</svg>").next())
        .expect("a drawing");
    for (n, from, to) in [
        (1, "segments_combined", "generating_music"),
        (2, "generating_music", "adding_music"),
        (3, "adding_music", "completed"),
    ] {
        assert!(
            drawing.contains(&format!(
                r#"<g class="steps" data-from="{from}" data-to="{to}" data-steps="{n}">"#
            )),
            "step {n} on {from} → {to}: {drawing}"
        );
    }
    let timeline = html.split(r#"id="timeline""#).nth(1).expect("a timeline");
    assert!(
        timeline.contains(" in adding_music</td>"),
        "time spent shown"
    );
    assert!(html.contains(r#"id="no-action""#) && !html.contains("data-action=\"/videos/"));
    assert!(html.contains(r#"<details id="effects-done">"#), "{html}");
    // Times say their zone before the script localises them.
    assert!(html.contains(" UTC</time>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_named_unknown_pages_are_pages_and_there_is_a_favicon() {
    let w = world_with_token().await;
    let video = w.seed_video(1).await;
    let (status, _, html) = get_page(&w.app, &format!("/ui/videos/{video}"), None).await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!("<title>Video {video} · reelstate</title>")),
        "{html}"
    );
    assert!(
        html.contains(r#"<link rel="icon" type="image/svg+xml" href="/ui/assets/favicon.svg">"#)
    );
    let (_, _, html) = get_page(&w.app, "/ui/events", None).await;
    assert!(html.contains("<title>Event log · reelstate</title>"));

    let r = reqwest::get(format!("{}/ui/assets/favicon.svg", w.app.url))
        .await
        .expect("favicon");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().ok(),
        Some("image/svg+xml")
    );
    assert!(r.text().await.expect("svg").starts_with("<svg"));

    for path in [
        "/ui/nothing",
        "/ui/videos/recAAAAAAAAAAAAAA/more",
        "/ui/assets/x.js",
    ] {
        let (status, csp, html) = get_page(&w.app, path, None).await;
        assert_eq!(status, 404, "{path}");
        assert!(html.starts_with("<!doctype html>"), "{path}: {html}");
        assert!(
            html.contains("<title>Not Found · reelstate</title>"),
            "{html}"
        );
        assert!(csp.contains("default-src 'none'"), "{csp}");
    }
    // The admin API's paths keep answering JSON.
    let r = reqwest::get(format!("{}/nothing", w.app.url))
        .await
        .expect("api");
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = r.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], json!("not_found"));
}
