//! Backup and restore of the SQLite store (docs/backup.md), through the real binary: a
//! backup taken by `reelstate backup` while the service takes a burst of webhooks, the
//! service killed, the backup restored with `reelstate restore`, the service started again.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use support::world::{WorldBuilder, goapi_fixture};
use tokio::time::Instant;

/// Runs `reelstate <args>` to its end: whether it succeeded, stdout, stderr.
async fn cli(args: &[&str], db: &Path) -> (bool, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_reelstate"))
            .args(args)
            .arg("--db")
            .arg(db)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the command ends")
    .expect("run the binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One webhook delivery as a sender saw it: its event id once acknowledged, and when.
struct Delivery {
    video: String,
    completed: bool,
    event_id: Option<String>,
    acked_at: Instant,
}

/// Submission ids of the mixes the backup recorded as submitted: the effect done (its
/// answer stored), or NCA's job id in the video's snapshot.
fn mixes_recorded_in(backup: &Path) -> Vec<String> {
    let c = Connection::open_with_flags(backup, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut st = c
        .prepare(
            "SELECT effect_id FROM outbox WHERE kind = 'submit_nca_mix' AND state = 'done'
             UNION
             SELECT json_extract(j.value, '$.submission_id') FROM video_state, json_each(snapshot, '$.jobs') j
             WHERE json_extract(j.value, '$.kind') = 'music_addition'
               AND json_extract(j.value, '$.external_id') IS NOT NULL",
        )
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

async fn event_state(app: &support::app::TestApp, id: &str) -> (u16, Value) {
    app.get_json(&format!("/events/{id}")).await
}

#[tokio::test]
async fn a_backup_taken_under_load_restores_what_was_acknowledged_before_it() {
    let mut w = WorldBuilder::new()
        .app(|a| {
            // A mix whose callback the lost process took is found out by the reconciler
            // once the job is past its deadline (docs/backup.md): short here.
            a.fixed_port()
                .env("REELSTATE_INTERRUPTED_GRACE_SECS", "2")
                .env("REELSTATE_NCA_DEADLINE_SECS", "2")
        })
        .start()
        .await;
    let db = w.app.db.clone();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("backup.db");

    // Before the backup: videos that went all the way, through a paid GoAPI task and a
    // paid NCA mix each, all of it recorded.
    let mut settled = Vec::new();
    for n in 0..3 {
        let video = w.seed_video(100 + n).await;
        let (status, body) = w.request_music(&video).await;
        assert_eq!(status, 202, "{body}");
        settled.push(video);
    }
    for video in &settled {
        w.wait_settled(video, "completed").await;
    }
    assert_eq!(w.goapi.tasks().len(), 3);

    // The load: GoAPI reports on eight videos' tasks from four senders, a few hundred
    // deliveries. Half the videos' tasks complete early in their sender's run, half late.
    let videos: Vec<(String, String)> = {
        let mut v = Vec::new();
        for i in 0..8 {
            let task = format!("20000000-0000-4000-8000-{i:012}");
            v.push((w.seed_generating(i, Some(&task)).await.to_string(), task));
        }
        v
    };
    let per_video = 36;
    let total = videos.len() * per_video;
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // The senders' last third waits for the backup to end, so that it falls mid-load
    // however fast the machine takes the first two.
    let (backed_up, backup_done) = tokio::sync::watch::channel(false);
    let (client, url) = (w.app.client.clone(), w.app.url.clone());
    let senders: Vec<_> = videos
        .chunks(2)
        .map(|pair| {
            let pair = pair.to_vec();
            let (client, url) = (client.clone(), url.clone());
            let acked = acked.clone();
            let mut backup_done = backup_done.clone();
            async move {
                let mut out = Vec::new();
                for step in 0..per_video {
                    if step == per_video * 2 / 3 {
                        backup_done.wait_for(|done| *done).await.unwrap();
                    }
                    for (k, (video, task)) in pair.iter().enumerate() {
                        let early = k == 0;
                        let completed = step == if early { 3 } else { per_video - 3 };
                        let body = if completed {
                            goapi_fixture("udio_completed.json", task, 1_765_300_000)
                        } else {
                            goapi_fixture("udio_processing.json", task, 1_765_200_000 + step as i64)
                        };
                        let answer = client
                            .post(format!("{url}/webhooks/goapi?video_id={video}"))
                            .header("x-webhook-secret", support::app::GOAPI_SECRET)
                            .json(&body)
                            .send()
                            .await
                            .expect("the service is up during the load");
                        let status = answer.status().as_u16();
                        let body: Value = answer.json().await.unwrap_or(Value::Null);
                        assert_eq!(status, 202, "{body}");
                        // Timed before it is counted: a delivery the backup's start saw
                        // counted was acknowledged before that start.
                        let acked_at = Instant::now();
                        acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        out.push(Delivery {
                            video: video.clone(),
                            completed,
                            event_id: body["event_id"].as_str().map(str::to_owned),
                            acked_at,
                        });
                    }
                }
                out
            }
        })
        .collect();
    let load = tokio::spawn(async move { join_all(senders).await });

    // The backup, about a third of the way into the load.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(std::sync::atomic::Ordering::SeqCst) < total / 3 {
        assert!(Instant::now() < deadline, "the load stalled");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let backup_started = Instant::now();
    let (ok, out, err) = cli(&["backup", copy.to_str().unwrap()], &db).await;
    let backup_ended = Instant::now();
    backed_up.send(true).unwrap();
    assert!(ok, "backup failed: {err}");
    assert!(out.contains("backed up"), "{out}");
    let deliveries: Vec<Delivery> = load.await.unwrap().into_iter().flatten().collect();
    assert_eq!(deliveries.len(), total);
    assert!(
        !Path::new(&format!("{}-wal", copy.display())).exists(),
        "one self-contained file"
    );
    let before: Vec<&Delivery> = deliveries
        .iter()
        .filter(|d| d.acked_at < backup_started)
        .collect();
    let after: Vec<&Delivery> = deliveries
        .iter()
        .filter(|d| d.acked_at > backup_ended)
        .collect();
    assert!(
        before.len() >= total / 3 && !after.is_empty(),
        "the backup ran mid-load: {} before, {} after",
        before.len(),
        after.len()
    );
    assert!(
        before.iter().any(|d| d.completed),
        "a task completed before it"
    );
    let recorded = mixes_recorded_in(&copy);
    assert!(recorded.len() >= settled.len(), "{recorded:?}");

    // A restore is refused while the service holds the file.
    let (ok, _, err) = cli(&["restore", copy.to_str().unwrap()], &db).await;
    assert!(!ok && err.contains("already in use"), "{err}");

    // The machine is lost mid-load; the backup is put back and the service started.
    w.app.kill().await;
    let (ok, out, err) = cli(&["restore", copy.to_str().unwrap()], &db).await;
    assert!(ok, "restore failed: {err}");
    assert!(out.contains("moved the previous store to"), "{out}");
    w.app.restart().await;
    let (status, health) = w.app.get_json("/healthz").await;
    assert_eq!((status, &health["status"]), (200, &Value::from("up")));

    // Every delivery acknowledged before the backup is there and processed, once.
    for video in before.iter().filter(|d| d.completed).map(|d| &d.video) {
        w.wait_settled(&video.parse().unwrap(), "completed").await;
    }
    for video in &settled {
        w.wait_settled(video, "completed").await;
    }
    for d in &before {
        let id = d
            .event_id
            .as_deref()
            .expect("an acknowledged delivery has an event id");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, e) = event_state(&w.app, id).await;
            assert_eq!(
                status, 200,
                "event {id} acknowledged before the backup: {e}"
            );
            if e["state"] == "done" {
                break;
            }
            assert!(Instant::now() < deadline, "event {id} never processed: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for (video, _) in &videos {
        let (_, v) = w.app.get_json(&format!("/videos/{video}")).await;
        let history = v["history"].as_array().cloned().unwrap_or_default();
        for to in ["adding_music", "completed"] {
            let n = history
                .iter()
                .filter(|h| h["to"] == to && h["from"] != to)
                .count();
            assert!(n <= 1, "{video} entered {to} {n} times: {v:#}");
        }
    }
    // What was acknowledged after the backup is not in it (docs/backup.md: lost).
    for d in after.iter().take(20) {
        let id = d.event_id.as_deref().unwrap();
        let (status, e) = event_state(&w.app, id).await;
        assert_eq!(status, 404, "event {id} acknowledged after the backup: {e}");
    }

    // No paid call repeated for what the backup recorded: the GoAPI tasks of the settled
    // videos, and every mix it holds as submitted.
    assert_eq!(
        w.goapi.tasks().len(),
        settled.len(),
        "{:?}",
        w.goapi.tasks()
    );
    let by_id = w.nca.submissions_by_id();
    for id in &recorded {
        assert_eq!(
            by_id.get(id),
            Some(&1),
            "mix {id} submitted again after the restore: {by_id:?}"
        );
    }
}
