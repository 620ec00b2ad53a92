//! What a video cost, as `GET /videos/{id}` and its page show it: a job's attempts are its
//! calls to its service only.

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
