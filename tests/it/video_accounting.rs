//! What a video cost, as `GET /videos/{id}` and its page show it: a job's attempts are its
//! calls to its service only; the paid calls (GoAPI tasks, NCA renders) per video, per day
//! on the overview, and in total as a metric.

use crate::support;

use reelstate::domain::RecordId;
use serde_json::Value;
use support::app::ADMIN_TOKEN;
use support::world::World;

fn job<'a>(v: &'a Value, kind: &str) -> &'a Value {
    v["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["type"] == kind)
        .unwrap_or_else(|| panic!("a {kind} job: {v}"))
}

async fn fragment(w: &World, path: &str) -> String {
    let r = reqwest::Client::new()
        .get(format!("{}/ui/fragments/{path}", w.app.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200, "{path}");
    r.text().await.expect("body")
}

/// The #attempts cell of the job's row on the video's fragment.
async fn attempts_on_the_page(w: &World, video: &RecordId, job: &str) -> String {
    let r = reqwest::Client::new()
        .get(format!("{}/ui/fragments/videos/{video}", w.app.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    let html = r.text().await.expect("body");
    let row = html
        .split(&format!(r#"<tr data-job="{job}">"#))
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("a row for job {job}: {html}"))
        .to_owned();
    row.split(r#"<td class="num">"#)
        .nth(1)
        .and_then(|rest| rest.split("</td>").next())
        .unwrap_or_else(|| panic!("an attempts cell: {row}"))
        .to_owned()
}

/// One GoAPI task, and a mix submitted twice (NCA's queue was full the first time, which
/// proves it was not queued): the music job shows 1 attempt and the mix 2, although each
/// job's records were written several times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_attempts_are_its_calls_to_its_service() {
    let w = World::start().await;
    w.nca.queue_full_next(1);
    let video = w.seed_video(1).await;
    let (status, body) = w.request_music(&video).await;
    assert_eq!(status, 202, "{body}");
    let v = w.wait_settled(&video, "completed").await;
    assert_eq!(w.goapi.tasks().len(), 1);
    assert_eq!(w.nca.attempts(), 2, "the queue was full once");
    for (kind, calls) in [("music_generation", 1), ("music_addition", 2)] {
        let j = job(&v, kind);
        assert_eq!(j["attempts"], calls, "{kind}: {v}");
        let id = j["job_id"].as_str().expect("job id");
        assert_eq!(
            attempts_on_the_page(&w, &video, id).await,
            calls.to_string(),
            "{kind} on the page"
        );
        // What the old count summed: the job's record writes are effects of it too.
        let (_, detail) = w.app.get_json(&format!("/jobs/{id}")).await;
        let all: u64 = detail["effects"]
            .as_array()
            .expect("effects")
            .iter()
            .map(|e| e["attempts"].as_u64().expect("attempts"))
            .sum();
        assert!(
            all > calls,
            "{kind}: its writes were counted before: {detail}"
        );
    }
}

/// A video through the real binary with the doubles: one GoAPI task and one NCA render, on
/// the video (API and page), in today's totals on the overview, and in the metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_calls_show_per_video_per_day_and_as_a_metric() {
    let w = World::start().await;
    let metric = |text: &str, service: &str| {
        let series = format!(r#"reelstate_paid_calls_total{{service="{service}"}} "#);
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map(|v| v.trim().to_owned())
    };
    let scrape = || async {
        reqwest::get(format!("{}/metrics", w.app.url))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    let before = scrape().await;
    assert_eq!(metric(&before, "goapi").as_deref(), Some("0"), "{before}");
    assert_eq!(metric(&before, "nca").as_deref(), Some("0"), "{before}");

    let video = w.seed_video(1).await;
    let (status, body) = w.request_music(&video).await;
    assert_eq!(status, 202, "{body}");
    let v = w.wait_settled(&video, "completed").await;
    assert_eq!(
        v["paid_calls"],
        serde_json::json!({"goapi_tasks": 1, "nca_renders": 1}),
        "{v}"
    );
    assert_eq!((w.goapi.tasks().len(), w.nca.attempts()), (1, 1));
    let html = fragment(&w, &format!("videos/{video}")).await;
    assert!(
        html.contains(r#"id="paid-calls" data-goapi="1" data-nca="1""#),
        "{html}"
    );

    let text = scrape().await;
    assert_eq!(metric(&text, "goapi").as_deref(), Some("1"), "{text}");
    assert_eq!(metric(&text, "nca").as_deref(), Some("1"), "{text}");
    assert!(text.contains("# HELP reelstate_paid_calls "), "{text}");

    let today = chrono::Utc::now().date_naive().to_string();
    let html = fragment(&w, "overview").await;
    assert!(
        html.contains(r#"id="paid-today"><div class="label">Paid calls today (UTC)</div><div class="big" data-goapi="1" data-nca="1">"#),
        "{html}"
    );
    let row = html
        .split(&format!(r#"<tr data-day="{today}">"#))
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("today's row: {html}"));
    assert!(
        row.contains(r#"data-goapi="1""#) && row.contains(r#"data-nca="1""#),
        "{row}"
    );
    assert_eq!(
        html.matches("<tr data-day=").count(),
        7,
        "the last 7 days, zeros included"
    );
}
