//! The sandbox's panel on the overview, in a real headless Chromium against the real binary
//! under `--sandbox`: a newcomer makes a demo video of each kind from the page, follows the
//! link each answer gives, watches each video reach the state it was promised, and redrives
//! the failed ones from their pages. Skips, saying why, without Chromium.

use crate::operator_page::{TOKEN, browser, confirm_action, get_page, open_with_token};
use crate::support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::app::AppBuilder;
use support::webdriver::Browser;

/// Closes the last answer, presses the panel's `button` on the overview, confirms, and
/// follows the link the answer shows: the new video's id, read from the page it opened,
/// and the sentence the answer was shown as.
async fn make_and_follow(
    browser: &Browser,
    base: &str,
    button: &str,
    body: &str,
) -> (String, String) {
    browser.goto(&format!("{base}/")).await;
    browser.wait_for(button).await;
    let (asked, title) = confirm_action(browser, button).await;
    assert_eq!(asked, format!("POST /sandbox/videos {body}").trim_end());
    assert!(title.ends_with("→ 201 Created"), "{title}");
    browser
        .wait_for("#result-link-line:not([hidden]) #result-link")
        .await;
    let link = browser
        .eval(
            "var a = document.getElementById('result-link'); return [a.getAttribute('href'), a.textContent];",
            Value::Null,
        )
        .await;
    let href = link[0].as_str().expect("href").to_owned();
    let video = href
        .strip_prefix("/ui/videos/")
        .unwrap_or_else(|| panic!("a link to a video page: {href}"))
        .to_owned();
    assert_eq!(link[1], json!(format!("Open video {video}")));
    let said = browser.text("#result-text").await.unwrap_or_default();
    browser.click("#result-link").await;
    browser.wait_for("#view h1 #video-status").await;
    let heading = browser.text("#view h1").await.unwrap_or_default();
    assert!(heading.contains(&video), "the link opened {heading}");
    (video, said)
}

/// Opens `video`'s page and waits until it shows `state`.
async fn watch(browser: &Browser, base: &str, video: &str, state: &str) {
    browser.goto(&format!("{base}/ui/videos/{video}")).await;
    browser
        .wait_for(&format!(r#"#video-status[data-status="{state}"]"#))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_makes_each_kind_of_demo_video_from_the_page_and_redrives_the_failed_ones() {
    let Some(browser) = browser(1400, 1000).await else {
        return;
    };
    let started = Instant::now();
    let app = AppBuilder::new()
        .env("REELSTATE_SANDBOX", "true")
        .env("REELSTATE_ADMIN_TOKEN", TOKEN)
        .spawn()
        .await;
    let base = app.url.clone();
    open_with_token(&browser, &format!("{base}/")).await;
    browser.wait_for("#sandbox").await;
    assert_eq!(browser.count("#sandbox button[data-action]").await, 4);

    // A demo video that succeeds: it waits for its music, which its page asks for.
    let (demo, said) =
        make_and_follow(&browser, &base, "#sandbox button:not([data-body])", "").await;
    assert!(said.contains("request its music"), "{said}");
    let (asked, answer) =
        confirm_action(&browser, r#"#actions button[data-action$="/music"]"#).await;
    assert_eq!(asked, format!("POST /videos/{demo}/music"));
    assert!(answer.contains("→ 202"), "{answer}");

    // The three failures, made one after the other and left to run side by side.
    let mut failing = Vec::new();
    for (fail, reaches) in [
        ("music", "music_generation_failed"),
        ("mix", "music_addition_failed"),
        ("callback_lost", "completed"),
    ] {
        let body = format!(r#"{{"fail":"{fail}"}}"#);
        let button = format!("#sandbox button[data-body='{body}']");
        let (video, said) = make_and_follow(&browser, &base, &button, &body).await;
        assert!(said.contains(&format!("reach {reaches}")), "{said}");
        failing.push((video, reaches));
    }

    // Each reaches what it promised, on its page.
    watch(&browser, &base, &demo, "completed").await;
    for (video, reaches) in &failing {
        watch(&browser, &base, video, reaches).await;
    }
    let lost = &failing[2].0;
    let found = browser
        .eval(
            "return Array.prototype.some.call(document.querySelectorAll('#timeline tr[data-event]'),\
             function (tr) { return tr.cells[1].textContent === 'reelstate' && tr.cells[2].textContent === 'nca_succeeded'; });",
            Value::Null,
        )
        .await;
    assert_eq!(
        found,
        json!(true),
        "the page shows the reconciler's finding"
    );
    let (status, log) = app.get_json(&format!("/events?video_id={lost}")).await;
    assert_eq!(status, 200, "{log}");
    let log = log["events"].as_array().expect("events").clone();
    assert!(
        log.iter().any(|e| e["endpoint"] == "reconcile"
            && e["event"] == "nca_succeeded"
            && e["outcome"] == "applied"),
        "the reconciler found the render: {log:#?}"
    );
    assert!(
        !log.iter().any(|e| e["source"] == "nca"),
        "a callback arrived: {log:#?}"
    );

    // Retry, pressed on each failed video's page, then each completes.
    for (video, _) in &failing[..2] {
        browser.goto(&format!("{base}/ui/videos/{video}")).await;
        let retry = r#"#actions button[data-action$="/retry"]:not([data-body])"#;
        browser.wait_for(retry).await;
        let (asked, answer) = confirm_action(&browser, retry).await;
        assert_eq!(asked, format!("POST /videos/{video}/retry"));
        assert!(answer.contains("→ 202"), "{answer}");
    }
    for (video, _) in &failing[..2] {
        watch(&browser, &base, video, "completed").await;
    }
    browser.quit().await;
    eprintln!("sandbox panel flow took {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "the flow stays short: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_sandbox_panel_is_shown_only_under_sandbox() {
    let prod = AppBuilder::new()
        .env("REELSTATE_ADMIN_TOKEN", TOKEN)
        .spawn()
        .await;
    let (status, _, html) = get_page(&prod, "/ui/fragments/overview", Some(TOKEN)).await;
    assert_eq!(status, 200, "{html}");
    assert!(!html.contains(r#"id="sandbox""#), "{html}");
    let sandbox = AppBuilder::new()
        .env("REELSTATE_SANDBOX", "true")
        .env("REELSTATE_ADMIN_TOKEN", TOKEN)
        .spawn()
        .await;
    let (status, _, html) = get_page(&sandbox, "/ui/fragments/overview", Some(TOKEN)).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(r#"<section id="sandbox""#), "{html}");
    assert!(
        html.contains(r#"data-body="{&quot;fail&quot;:&quot;callback_lost&quot;}""#),
        "the body is escaped into its attribute: {html}"
    );
}
