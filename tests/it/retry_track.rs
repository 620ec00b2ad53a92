//! A retry fixes what expired (issue 13, item 5), end to end through the real binary:
//! retrying a failed mix first checks that the music's track is still there (GoAPI's track
//! URLs are temporary), and orders new music only when its host says it is gone;
//! `{"from": "music"}` orders new music outright; a body that says anything else is a 400.
//! The track's URL comes from outside, so neither the check nor NCA is sent where it must
//! not go (issue 27, item 6).

use crate::support;

use reelstate::domain::RecordId;
use serde_json::{Value, json};
use support::goapi_double::TrackRequest;
use support::world::{World, WorldBuilder};

/// A mix failure that has nothing to do with the track (and is not the no-audio-track one,
/// which would mix again by itself).
const MIX_ERROR: &str = "FFmpeg command failed: Invalid data found when processing input";

fn music_of(submission: &Value) -> String {
    submission["inputs"][1]["file_url"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn history_events(v: &Value) -> Vec<String> {
    v["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["event"].as_str().map(str::to_owned))
        .collect()
}

fn track_path(track: &str, w: &World) -> String {
    track.trim_start_matches(&w.goapi.url()).to_owned()
}

/// The requests the double's track host got for `track`, in order.
fn requests_for(track: &str, w: &World) -> Vec<TrackRequest> {
    let path = track_path(track, w);
    w.goapi
        .track_requests()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

async fn an_expired_track_buys_new_music_and_is_never_mixed(expired: u16) {
    let w = World::start().await;
    let (video, first_task, track) = w.failed_mix(MIX_ERROR).await;
    w.goapi.answer_tracks_of(&first_task, expired);

    let (s, body) = w.retry(&video, None).await;
    assert_eq!(s, 202, "{body}");
    let v = w.wait_settled(&video, "completed").await;

    // One new GoAPI task, with the same prompt as the first.
    let tasks = w.goapi.tasks();
    assert_eq!(tasks.len(), 2, "a new task for the expired track");
    assert_eq!(
        tasks[1].body["input"]["gpt_description_prompt"],
        tasks[0].body["input"]["gpt_description_prompt"],
        "the retry asks for the same music"
    );
    // The only mix since the retry is of the new track: the expired one was never sent.
    let subs = w.nca.submissions();
    assert_eq!(subs.len(), 2, "{subs:?}");
    assert_eq!(music_of(&subs[0].body), track);
    let new_track = music_of(&subs[1].body);
    assert_ne!(new_track, track);
    assert!(new_track.contains(&tasks[1].task_id), "{new_track}");
    assert_eq!(v["music"], json!(new_track), "{v}");

    // The check is on record: a HEAD, then the one-byte GET whose answer decided.
    let asked: Vec<_> = requests_for(&track, &w)
        .into_iter()
        .map(|r| (r.method, r.range))
        .collect();
    assert_eq!(
        asked,
        [
            ("HEAD".to_owned(), None),
            ("GET".to_owned(), Some("bytes=0-0".to_owned()))
        ]
    );
    let history = history_events(&v);
    assert!(
        history.contains(&"track_gone".to_owned()),
        "the check is in the video's history: {history:?}"
    );
    let gone = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| {
            j["type"] == "music_addition"
                && j["status"] == "failed"
                && j["error"].as_str().is_some_and(|e| e.contains("gone"))
        })
        .unwrap_or_else(|| panic!("the retried mix's job says why it failed: {v:#}"));
    assert!(
        gone["error"]
            .as_str()
            .unwrap()
            .contains(&format!("GET answered {expired}")),
        "{gone}"
    );
    assert!(
        !gone["error"]
            .as_str()
            .unwrap()
            .contains(&track_path(&track, &w)),
        "the URL stays out of the record"
    );
    assert_eq!(v["retries"], 1, "one retry, whatever it took");
}

#[tokio::test]
async fn a_retry_with_a_track_expired_to_404_orders_new_music_and_no_mix_of_it() {
    an_expired_track_buys_new_music_and_is_never_mixed(404).await;
}

#[tokio::test]
async fn a_retry_with_a_track_expired_to_403_orders_new_music_and_no_mix_of_it() {
    an_expired_track_buys_new_music_and_is_never_mixed(403).await;
}

#[tokio::test]
async fn a_retry_with_a_reachable_track_mixes_it_once_and_orders_no_music() {
    let w = World::start().await;
    let (video, _, track) = w.failed_mix(MIX_ERROR).await;
    // A host that refuses HEAD still serves the track to a GET.
    w.goapi.refuse_head(true);

    let (s, body) = w.retry(&video, Some(r#"{"from": "mix"}"#)).await;
    assert_eq!(s, 202, "{body}");
    let v = w.wait_settled(&video, "completed").await;

    assert_eq!(w.goapi.tasks().len(), 1, "no new music");
    let subs = w.nca.submissions();
    assert_eq!(subs.len(), 2, "one more mix: {subs:?}");
    assert_eq!(music_of(&subs[1].body), track);
    assert_eq!(v["music"], json!(track));
    let asked: Vec<_> = requests_for(&track, &w)
        .into_iter()
        .map(|r| r.method)
        .collect();
    assert_eq!(asked, ["HEAD", "GET"]);
    let history = history_events(&v);
    assert!(
        history.contains(&"retry_from_mix".to_owned())
            && history.contains(&"track_reachable".to_owned()),
        "{history:?}"
    );
}

#[tokio::test]
async fn a_retry_from_music_orders_new_music_without_checking_the_track() {
    let w = World::start().await;
    let (video, _, track) = w.failed_mix(MIX_ERROR).await;

    let (s, body) = w.retry(&video, Some(r#"{"from": "music"}"#)).await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(body["video_status"], "generating_music", "{body}");
    let v = w.wait_settled(&video, "completed").await;

    let tasks = w.goapi.tasks();
    assert_eq!(tasks.len(), 2);
    let subs = w.nca.submissions();
    assert_eq!(subs.len(), 2);
    assert!(music_of(&subs[1].body).contains(&tasks[1].task_id));
    assert_ne!(v["music"], json!(track));
    assert!(
        w.goapi.track_requests().is_empty(),
        "nothing to check: {:?}",
        w.goapi.track_requests()
    );
}

/// A host that never says whether it has the track proves nothing: after the executor's
/// attempts the track is mixed anyway (only proof that it is gone buys music).
#[tokio::test]
async fn a_track_whose_host_keeps_failing_is_mixed_rather_than_replaced() {
    let w = WorldBuilder::new()
        .app(|b| b.env("REELSTATE_EFFECT_MAX_ATTEMPTS", "3"))
        .start()
        .await;
    let (video, first_task, track) = w.failed_mix(MIX_ERROR).await;
    w.goapi.answer_tracks_of(&first_task, 503);

    let (s, body) = w.retry(&video, None).await;
    assert_eq!(s, 202, "{body}");
    let v = w.wait_settled(&video, "completed").await;

    assert_eq!(w.goapi.tasks().len(), 1, "no music bought on a guess");
    let subs = w.nca.submissions();
    assert_eq!(subs.len(), 2);
    assert_eq!(music_of(&subs[1].body), track);
    let gets = requests_for(&track, &w)
        .iter()
        .filter(|r| r.method == "GET")
        .count();
    assert_eq!(gets, 3, "asked once per attempt");
    assert!(history_events(&v).contains(&"track_unknown".to_owned()));
}

#[tokio::test]
async fn a_retry_body_that_says_anything_else_is_a_400_and_changes_nothing() {
    let w = World::start().await;
    let (video, _, _) = w.failed_mix(MIX_ERROR).await;
    for (body, code) in [
        (r#"{"from": "lyrics"}"#, "invalid_from"),
        (r#"{"from": 3}"#, "invalid_from"),
        (r#"{"form": "music"}"#, "invalid_body"),
        (r#"["music"]"#, "invalid_body"),
        ("from=music", "invalid_json"),
    ] {
        let (s, reply) = w.retry(&video, Some(body)).await;
        assert_eq!(s, 400, "{body}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{body}: {reply}");
        assert!(reply["error"]["message"].is_string(), "{reply}");
    }
    let v = w.wait_settled(&video, "music_addition_failed").await;
    assert_eq!(v["retries"], 0, "{v}");
    assert_eq!(w.goapi.tasks().len(), 1);
    assert_eq!(w.nca.submissions().len(), 1);
}

/// The track check's URL comes from a webhook or the base: it may not make the service
/// probe its own network. Waits for the retried mix's job to fail with the refusal.
async fn a_refused_track_fails_the_retry_with_why(w: &World, video: &RecordId) -> Value {
    let (s, body) = w.retry(video, None).await;
    assert_eq!(s, 202, "{body}");
    w.app
        .wait_for_video(video.as_str(), std::time::Duration::from_secs(30), |v| {
            v["status"] == "music_addition_failed"
                && v["retries"] == 1
                && v["effects"].as_array().is_some_and(|e| e.is_empty())
        })
        .await
}

#[tokio::test]
async fn a_loopback_track_is_not_checked_when_private_urls_are_not_allowed() {
    let w = WorldBuilder::new()
        .app(|b| b.env("REELSTATE_ALLOW_PRIVATE_URLS", "false"))
        .start()
        .await;
    let (video, _, track) = w.failed_mix(MIX_ERROR).await;

    let v = a_refused_track_fails_the_retry_with_why(&w, &video).await;
    let error = v["error_details"].as_str().unwrap_or_default();
    assert!(
        error.contains("host 127.0.0.1 is a loopback address"),
        "Error Details say which host and why: {v:#}"
    );
    assert!(!error.contains(&track_path(&track, &w)), "{error}");
    assert!(
        requests_for(&track, &w).is_empty(),
        "nothing was sent to it"
    );
    assert!(
        history_events(&v).contains(&"effect_failed".to_owned()),
        "{v:#}"
    );
    assert_eq!(w.goapi.tasks().len(), 1, "no music bought");
    assert_eq!(w.nca.submissions().len(), 1, "no mix of a refused URL");
}

#[tokio::test]
async fn a_track_redirecting_to_the_metadata_address_is_refused_even_with_private_urls() {
    let w = World::start().await;
    let (video, first_task, track) = w.failed_mix(MIX_ERROR).await;
    w.goapi
        .redirect_tracks_of(&first_task, "http://169.254.169.254/latest/meta-data/iam/");

    let v = a_refused_track_fails_the_retry_with_why(&w, &video).await;
    let error = v["error_details"].as_str().unwrap_or_default();
    assert!(
        error.contains("host 169.254.169.254 is a cloud metadata address (reached by a redirect)"),
        "{v:#}"
    );
    let asked: Vec<_> = requests_for(&track, &w)
        .into_iter()
        .map(|r| r.method)
        .collect();
    assert_eq!(
        asked,
        ["HEAD"],
        "the redirect was refused, not followed or asked again"
    );
    assert_eq!(w.goapi.tasks().len(), 1);
    assert_eq!(w.nca.submissions().len(), 1);
}

/// NCA fetches what it is handed from its own network: a music URL on the metadata
/// address is refused before NCA is called, and the job fails saying which host and why.
#[tokio::test]
async fn a_track_on_the_metadata_address_is_never_handed_to_nca() {
    let w = World::start().await;
    let task = "60000000-0000-4000-8000-000000000001";
    let video = w.seed_generating(1, Some(task)).await;
    let mut body = support::world::goapi_fixture("udio_completed.json", task, 1_764_000_000);
    for song in body["data"]["output"]["songs"].as_array_mut().unwrap() {
        song["song_path"] = json!("http://169.254.169.254/latest/meta-data/track.mp3");
    }
    let (s, reply) = w.goapi_webhook(&video, &body).await;
    assert_eq!(s, 202, "{reply}");

    // The refused submission stays on record as a failed (replayable) effect.
    let v = w
        .app
        .wait_for_video(video.as_str(), std::time::Duration::from_secs(30), |v| {
            v["status"] == "music_addition_failed"
        })
        .await;
    let error = v["error_details"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "the music URL is not handed on: host 169.254.169.254 is a cloud metadata address"
        ),
        "{v:#}"
    );
    assert!(w.nca.submissions().is_empty(), "NCA was not called");
}
