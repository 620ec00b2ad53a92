//! The NCA and GoAPI clients against the in-process doubles, and the doubles' callbacks.

use crate::support;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reelstate::clients::{
    ClientError, CreateTask, GoapiClient, GoapiConfig, MixRequest, NcaClient, NcaConfig,
    compose_body,
};
use reelstate::domain::MediaUrl;
use serde_json::{Value, json};
use support::fixture_json as fixture;
use support::goapi_double::{CompletedShape, GoapiDouble, GoapiDoubleConfig, TaskOutcome};
use support::nca_double::NcaDouble;
use support::serve::{Server, serve};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::{Reply, Response};

const WAIT: Duration = Duration::from_secs(10);

// ---------- a tiny webhook receiver ----------

#[derive(Debug, Clone)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// What the receiver heard, and the status it answers with.
struct Heard {
    hits: Mutex<Vec<Hit>>,
    answer: AtomicU16,
}

struct Receiver {
    heard: Arc<Heard>,
    server: Server,
}

/// Records a POST and answers the status set; the doubles' callbacks are POSTs only.
fn hear(
    heard: Arc<Heard>,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    heard.hits.lock().unwrap().push(Hit {
        path: path.to_owned(),
        headers: headers.clone(),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
    });
    let code = StatusCode::from_u16(heard.answer.load(Ordering::SeqCst)).unwrap();
    warp::reply::with_status("ok", code).into_response()
}

impl Receiver {
    async fn start() -> Self {
        let heard = |_| Heard {
            hits: Mutex::new(Vec::new()),
            answer: AtomicU16::new(200),
        };
        let (heard, server) = serve("the webhook receiver", heard, hear).await;
        Self { heard, server }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.server.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.heard.hits.lock().unwrap().clone()
    }
}

/// A port nobody listens on: bound, then released.
async fn dead_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// Accepts connections and never answers.
async fn silent_url() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = l.accept().await {
            held.push(sock);
        }
    });
    (url, task)
}

/// The call was refused for good, with HTTP `status`.
fn assert_permanent(err: &ClientError, status: u16) {
    assert!(
        matches!(err, ClientError::Permanent { status: Some(s), .. } if *s == status),
        "{err:?}"
    );
}

// ---------- NCA ----------

fn nca(url: &str, key: &str) -> NcaClient {
    NcaClient::new(NcaConfig {
        api_url: url.to_owned(),
        api_key: key.to_owned(),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn mix(webhook_url: &str, id: &str) -> MixRequest {
    MixRequest {
        video_url: MediaUrl::parse("https://storage.example/videos/recA1b2C3d4E5f6G7_combined.mp4")
            .unwrap(),
        music_url: MediaUrl::parse("https://storage.example/udio/29b8adf2.mp3").unwrap(),
        volume: 0.2,
        webhook_url: webhook_url.to_owned(),
        id: id.to_owned(),
        voice: true,
    }
}

#[test]
fn compose_body_equals_the_fixture() {
    let req = mix(
        "https://example.org/webhooks/nca-toolkit?video_id=recA1b2C3d4E5f6G7&operation=add_music",
        "add_music:recA1b2C3d4E5f6G7:1",
    );
    // The fixture is the request checked on the real toolkit (build 209); the engine adds
    // the limiter after amix (docs/goapi-and-nca.md, "Loud voice under loud music").
    let mut want = fixture("nca/compose_request.json");
    let filter = want["filters"][0]["filter"].as_str().unwrap().replace(
        "normalize=0[aout]",
        &format!("normalize=0,{}[aout]", reelstate::clients::nca::LIMITER),
    );
    want["filters"][0]["filter"] = serde_json::json!(filter);
    assert_eq!(compose_body(&req), want);
}

#[test]
fn a_video_without_audio_gets_the_music_alone_cut_at_its_end() {
    let mut req = mix("https://example.org/cb", "x");
    req.voice = false;
    let body = compose_body(&req);
    assert_eq!(
        body["filters"][0]["filter"],
        "[1:a]volume=0.2,alimiter=limit=0.891:level=disabled[aout]"
    );
    let options = body["outputs"][0]["options"].as_array().unwrap();
    assert!(options.iter().any(|o| o["option"] == "-shortest"), "{body}");
}

#[test]
fn compose_body_formats_other_volumes_for_ffmpeg() {
    let mut req = mix("https://example.org/cb", "x");
    req.volume = 1.0;
    let filter = compose_body(&req)["filters"][0]["filter"].clone();
    assert_eq!(
        filter,
        "[1:a]volume=1[bg];[0:a][bg]amix=inputs=2:duration=first:dropout_transition=0:normalize=0,alimiter=limit=0.891:level=disabled[aout]"
    );
}

#[tokio::test]
async fn nca_accepts_then_calls_back_once_with_the_success_shape() {
    let double = NcaDouble::start().await;
    let rx = Receiver::start().await;
    let client = nca(&double.url(), &double.api_key());
    let req = mix(
        &rx.url("/webhooks/nca-toolkit?video_id=recA1b2C3d4E5f6G7"),
        "add_music:recA1b2C3d4E5f6G7:1",
    );

    let accepted = client.submit_mix(&req).await.unwrap();
    assert!(!accepted.job_id.is_empty());
    assert_eq!(accepted.finished, None);
    assert_eq!(
        double.submissions_by_id()["add_music:recA1b2C3d4E5f6G7:1"],
        1
    );
    assert_eq!(double.submissions()[0].body, compose_body(&req));

    assert!(double.wait_idle(WAIT).await);
    let hits = rx.hits();
    assert_eq!(hits.len(), 1, "NCA calls back exactly once");
    let payload = &hits[0].body;
    let template = fixture("nca/compose_success_webhook.json");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(payload), keys(&template));
    assert_eq!(payload["code"], 200);
    assert_eq!(payload["job_id"], accepted.job_id.as_str());
    assert_eq!(payload["id"], "add_music:recA1b2C3d4E5f6G7:1");
    assert_eq!(
        payload["response"][0]["file_url"],
        double.output_url(&accepted.job_id).as_str()
    );
    assert_eq!(hits[0].path, "/webhooks/nca-toolkit");
    assert!(
        hits[0].headers.get("x-webhook-secret").is_none(),
        "NCA does not sign"
    );
    assert_eq!(double.callbacks_sent()[0].answered, Some(200));

    let status = client.job_status(&accepted.job_id).await.unwrap();
    assert_eq!(status["code"], 200);
    assert_eq!(status["response"]["job_status"], "done");
    assert_eq!(status["response"]["job_id"], accepted.job_id.as_str());
    assert_eq!(&status["response"]["response"], payload);
}

#[tokio::test]
async fn nca_does_not_deduplicate_by_id() {
    let double = NcaDouble::start().await;
    let rx = Receiver::start().await;
    let client = nca(&double.url(), &double.api_key());
    let req = mix(&rx.url("/cb"), "same-id");
    let a = client.submit_mix(&req).await.unwrap();
    let b = client.submit_mix(&req).await.unwrap();
    assert_ne!(a.job_id, b.job_id);
    assert_eq!(double.submissions_by_id()["same-id"], 2);
    assert!(double.wait_idle(WAIT).await);
    assert_eq!(rx.hits().len(), 2);
}

#[tokio::test]
async fn nca_failure_callback_carries_the_long_message() {
    let double = NcaDouble::start().await;
    let rx = Receiver::start().await;
    double.set_fail_mix(true);
    let huge = format!("FFmpeg command failed: {}", "x".repeat(50_000));
    double.set_failure_message(huge.clone());
    let client = nca(&double.url(), &double.api_key());
    let accepted = client
        .submit_mix(&mix(&rx.url("/cb"), "f:1"))
        .await
        .unwrap();
    assert!(double.wait_idle(WAIT).await);
    let hits = rx.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].body["code"], 500);
    assert_eq!(hits[0].body["response"], Value::Null);
    assert_eq!(hits[0].body["message"], huge.as_str());
    assert_eq!(hits[0].body["job_id"], accepted.job_id.as_str());
}

#[tokio::test]
async fn nca_lost_webhook_still_shows_done_in_status() {
    let double = NcaDouble::start().await;
    let rx = Receiver::start().await;
    double.set_drop_callbacks(true);
    let client = nca(&double.url(), &double.api_key());
    let accepted = client
        .submit_mix(&mix(&rx.url("/cb"), "lost:1"))
        .await
        .unwrap();
    assert!(double.wait_idle(WAIT).await);
    assert!(rx.hits().is_empty());
    assert!(double.callbacks_sent().is_empty());
    assert_eq!(double.callbacks_dropped(), 1);
    let status = client.job_status(&accepted.job_id).await.unwrap();
    assert_eq!(status["response"]["job_status"], "done");
    assert_eq!(status["response"]["response"]["code"], 200);
}

#[tokio::test]
async fn nca_job_status_of_an_unknown_job_is_the_404_body() {
    let double = NcaDouble::start().await;
    let client = nca(&double.url(), &double.api_key());
    let status = client.job_status("no-such-job").await.unwrap();
    assert_eq!(status["code"], 404);
    assert_eq!(status["response"], Value::Null);
    assert_eq!(
        status["message"],
        json!({"error": "Job not found", "job_id": "no-such-job"})
    );

    // After an NCA restart the queue is gone: known jobs become unknown.
    let rx = Receiver::start().await;
    double.set_callback_delay(Duration::from_secs(30));
    let accepted = client
        .submit_mix(&mix(&rx.url("/cb"), "r:1"))
        .await
        .unwrap();
    let status = client.job_status(&accepted.job_id).await.unwrap();
    assert!(matches!(
        status["response"]["job_status"].as_str(),
        Some("queued" | "running")
    ));
    double.forget_jobs();
    let status = client.job_status(&accepted.job_id).await.unwrap();
    assert_eq!(status["code"], 404);
}

#[tokio::test]
async fn nca_wrong_key_is_permanent_and_does_not_leak_the_key() {
    let double = NcaDouble::start().await;
    let client = nca(&double.url(), "wrong-key-0123456789");
    let err = client
        .submit_mix(&mix("https://example.org/cb", "k:1"))
        .await
        .unwrap_err();
    assert_permanent(&err, 401);
    assert!(!err.is_transient());
    assert!(!err.to_string().contains("wrong-key-0123456789"));
    let err = client.job_status("j").await.unwrap_err();
    assert_permanent(&err, 401);
    assert!(double.submissions().is_empty());
}

#[tokio::test]
async fn nca_400_is_permanent_with_ncas_message() {
    let double = NcaDouble::start().await;
    double.respond_next(
        400,
        json!({"message": "Invalid payload: 'file_url' is a required property"}),
    );
    let client = nca(&double.url(), &double.api_key());
    let err = client
        .submit_mix(&mix("https://example.org/cb", "b:1"))
        .await
        .unwrap_err();
    match err {
        ClientError::Permanent { status, message } => {
            assert_eq!(status, Some(400));
            assert!(
                message.contains("Invalid payload: 'file_url' is a required property"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn nca_double_rejects_what_ncas_schema_rejects() {
    let double = NcaDouble::start().await;
    let http = reqwest::Client::new();
    let post = |body: Value| {
        http.post(format!("{}/v1/ffmpeg/compose", double.url()))
            .header("X-API-Key", double.api_key())
            .json(&body)
            .send()
    };
    let mut body = compose_body(&mix("https://example.org/cb", "s:1"));
    body["extra"] = json!(1);
    let r = post(body).await.unwrap();
    assert_eq!(r.status(), 400);
    let msg = r.json::<Value>().await.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        msg.starts_with("Invalid payload: Additional properties are not allowed ('extra'"),
        "{msg}"
    );

    let mut body = compose_body(&mix("https://example.org/cb", "s:1"));
    body.as_object_mut().unwrap().remove("inputs");
    let r = post(body).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Invalid payload: 'inputs' is a required property"
    );

    let r = http
        .post(format!("{}/v1/ffmpeg/compose", double.url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        fixture("nca/unauthorized.json")
    );
    assert!(double.submissions().is_empty());
    assert_eq!(double.attempts(), 3);
}

#[tokio::test]
async fn nca_queue_full_is_transient() {
    let double = NcaDouble::start().await;
    double.queue_full_next(1);
    let client = nca(&double.url(), &double.api_key());
    let req = mix("https://example.org/cb", "q:1");
    let err = client.submit_mix(&req).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(
        err.to_string().contains("MAX_QUEUE_LENGTH (10) reached"),
        "{err}"
    );
    assert!(double.submissions().is_empty());
    client.submit_mix(&req).await.unwrap();
    assert_eq!(double.submissions_by_id()["q:1"], 1);
}

#[tokio::test]
async fn nca_synchronous_200_is_accepted_and_finished() {
    let double = NcaDouble::start().await;
    let mut envelope = fixture("nca/compose_success_webhook.json");
    envelope["job_id"] = json!("sync-job");
    double.respond_next(200, envelope.clone());
    let client = nca(&double.url(), &double.api_key());
    let accepted = client
        .submit_mix(&mix("https://example.org/cb", "s:1"))
        .await
        .unwrap();
    assert_eq!(accepted.job_id, "sync-job");
    assert_eq!(accepted.finished, Some(envelope));
}

#[tokio::test]
async fn nca_down_refused_or_silent_is_transient() {
    let double = NcaDouble::start().await;
    double.set_down(true);
    let client = nca(&double.url(), &double.api_key());
    let req = mix("https://example.org/cb", "d:1");
    assert!(client.submit_mix(&req).await.unwrap_err().is_transient());
    assert!(client.job_status("j").await.unwrap_err().is_transient());

    let refused = nca(&dead_url().await, "k");
    let err = refused.submit_mix(&req).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert!(refused.job_status("j").await.unwrap_err().is_transient());

    let (url, _silent) = silent_url().await;
    let slow = NcaClient::new(NcaConfig {
        api_url: url,
        api_key: "k".into(),
        timeout: Duration::from_millis(200),
    })
    .unwrap();
    let err = slow.submit_mix(&req).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn nca_bad_requests_are_refused_before_sending() {
    let double = NcaDouble::start().await;
    let client = nca(&double.url(), &double.api_key());
    let mut req = mix("https://example.org/cb", "v:1");
    req.volume = f64::NAN;
    assert!(!client.submit_mix(&req).await.unwrap_err().is_transient());
    req.volume = 0.2;
    req.webhook_url = String::new();
    assert!(!client.submit_mix(&req).await.unwrap_err().is_transient());
    assert_eq!(double.attempts(), 0);
    assert!(
        NcaClient::new(NcaConfig {
            api_url: "not a url".into(),
            api_key: "k".into(),
            timeout: Duration::from_secs(1),
        })
        .is_err()
    );
}

// ---------- GoAPI ----------

fn goapi(url: &str, key: &str, model: &str) -> GoapiClient {
    GoapiClient::new(GoapiConfig {
        api_url: url.to_owned(),
        api_key: key.to_owned(),
        model: model.to_owned(),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn task(webhook_url: &str) -> CreateTask {
    CreateTask {
        prompt: "calm lo-fi piano, night breeze".into(),
        webhook_url: webhook_url.to_owned(),
        webhook_secret: "hook-secret".into(),
    }
}

#[tokio::test]
async fn goapi_create_returns_the_task_id_and_sends_the_contract_body() {
    let double = GoapiDouble::start().await;
    let rx = Receiver::start().await;
    let client = goapi(&double.url(), &double.api_key(), "music-u");
    let req = task(&rx.url("/webhooks/goapi?video_id=recA1b2C3d4E5f6G7"));
    let task_id = client.create_task(&req).await.unwrap();
    let tasks = double.tasks();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].task_id, task_id);
    assert_eq!(tasks[0].body, client.task_body(&req));
    assert_eq!(tasks[0].body["input"]["lyrics_type"], "instrumental");
    assert_eq!(
        tasks[0].body["config"]["webhook_config"]["secret"],
        "hook-secret"
    );
}

#[tokio::test]
async fn goapi_webhooks_carry_the_secret_and_each_status() {
    let double = GoapiDouble::start().await;
    let rx = Receiver::start().await;
    let client = goapi(&double.url(), &double.api_key(), "music-u");
    let task_id = client
        .create_task(&task(&rx.url("/webhooks/goapi?video_id=recA1b2C3d4E5f6G7")))
        .await
        .unwrap();
    assert!(double.wait_idle(WAIT).await);
    let hits = rx.hits();
    let statuses: Vec<_> = hits
        .iter()
        .map(|h| h.body["data"]["status"].clone())
        .collect();
    assert_eq!(statuses, ["pending", "processing", "completed"]);
    for h in &hits {
        assert_eq!(h.path, "/webhooks/goapi");
        assert_eq!(h.headers["x-webhook-secret"], "hook-secret");
        assert!(h.body["timestamp"].is_i64());
        assert_eq!(h.body["data"]["task_id"], task_id.as_str());
        assert_eq!(
            h.body["data"]["config"]["webhook_config"]["secret"],
            "********"
        );
    }
    let done = &hits[2].body["data"];
    let urls = double.track_urls(&task_id, CompletedShape::Udio);
    assert_eq!(done["output"]["songs"][0]["song_path"], urls[0].as_str());
    assert_eq!(done["output"]["songs"][1]["song_path"], urls[1].as_str());
    assert_eq!(done["error"]["code"], 0);
    assert_eq!(hits[0].body["data"]["output"]["songs"], Value::Null);

    // Reconciliation sees the same final task object.
    let fetched = client.get_task(&task_id).await.unwrap();
    assert_eq!(&fetched, done);
    // The track URL the double hands out is served.
    let audio = reqwest::get(&urls[0]).await.unwrap();
    assert_eq!(audio.status(), 200);
}

#[tokio::test]
async fn goapi_completed_shapes_put_the_url_where_contracts_say() {
    let cases = [
        (CompletedShape::SunoClips, "suno"),
        (CompletedShape::SunoArray, "suno"),
        (CompletedShape::AceStep, "Qubico/ace-step"),
        (CompletedShape::Flat, "music-u"),
    ];
    for (shape, model) in cases {
        let double = GoapiDouble::start_with(GoapiDoubleConfig {
            outcome: TaskOutcome::Completed(Some(shape)),
            ..GoapiDoubleConfig::default()
        })
        .await;
        let rx = Receiver::start().await;
        let client = goapi(&double.url(), &double.api_key(), model);
        let id = client.create_task(&task(&rx.url("/cb"))).await.unwrap();
        assert!(double.wait_idle(WAIT).await);
        let hits = rx.hits();
        let last = &hits.last().unwrap().body;
        let urls = double.track_urls(&id, shape);
        match shape {
            CompletedShape::SunoClips => {
                let clips = last["data"]["output"]["clips"].as_object().unwrap();
                let mut got: Vec<_> = clips
                    .values()
                    .map(|c| c["audio_url"].as_str().unwrap())
                    .collect();
                got.sort();
                assert_eq!(got, urls);
            }
            CompletedShape::SunoArray => {
                assert_eq!(last["data"]["output"][1]["audio_url"], urls[1].as_str());
            }
            CompletedShape::AceStep => {
                assert_eq!(last["data"]["output"]["audio_url"], urls[0].as_str());
                assert_eq!(last["data"]["model"], "Qubico/ace-step");
                assert_eq!(last["data"]["task_type"], "txt2audio");
            }
            CompletedShape::Flat => {
                assert_eq!(hits.len(), 1, "flat format: the final body only");
                assert_eq!(
                    *last,
                    json!({"task_id": id, "status": "completed", "output": {"url": urls[0]}})
                );
            }
            CompletedShape::Udio => unreachable!(),
        }
    }
}

#[tokio::test]
async fn goapi_failed_task_sends_the_failed_payload() {
    let double = GoapiDouble::start().await;
    double.set_outcome(TaskOutcome::Failed);
    let rx = Receiver::start().await;
    let client = goapi(&double.url(), &double.api_key(), "music-u");
    client.create_task(&task(&rx.url("/cb"))).await.unwrap();
    assert!(double.wait_idle(WAIT).await);
    let last = rx.hits().last().unwrap().body.clone();
    assert_eq!(last["data"]["status"], "failed");
    assert_eq!(
        last["data"]["error"],
        fixture("goapi/udio_failed.json")["data"]["error"]
    );
}

#[tokio::test]
async fn goapi_duplicates_shuffles_retries_and_losses() {
    // Duplicates: each status twice, with the same timestamp.
    let double = GoapiDouble::start().await;
    double.set_duplicates(2);
    let rx = Receiver::start().await;
    let client = goapi(&double.url(), &double.api_key(), "music-u");
    client.create_task(&task(&rx.url("/cb"))).await.unwrap();
    assert!(double.wait_idle(WAIT).await);
    let hits = rx.hits();
    assert_eq!(hits.len(), 6);
    for pair in hits.chunks(2) {
        assert_eq!(pair[0].body, pair[1].body);
    }

    // Shuffled: the same deliveries, in some order.
    double.set_duplicates(1);
    double.set_shuffle(Some(7));
    let rx2 = Receiver::start().await;
    client.create_task(&task(&rx2.url("/cb"))).await.unwrap();
    assert!(double.wait_idle(WAIT).await);
    let mut statuses: Vec<_> = rx2
        .hits()
        .iter()
        .map(|h| h.body["data"]["status"].as_str().unwrap().to_owned())
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["completed", "pending", "processing"]);

    // A receiver answering 503 gets each delivery a bounded number of times.
    double.set_shuffle(None);
    let rx3 = Receiver::start().await;
    rx3.heard.answer.store(503, Ordering::SeqCst);
    let id = client.create_task(&task(&rx3.url("/cb"))).await.unwrap();
    assert!(double.wait_idle(WAIT).await);
    let tries: Vec<_> = double
        .deliveries()
        .into_iter()
        .filter(|d| d.task_id == id)
        .collect();
    assert_eq!(tries.len(), 9, "3 statuses x 3 attempts");
    assert!(tries.iter().all(|d| d.answered == Some(503)));
    assert_eq!(tries.iter().map(|d| d.attempt).max(), Some(3));

    // Lost: no webhook at all, but the task completes for reconciliation.
    double.set_drop_webhooks(true);
    let rx4 = Receiver::start().await;
    let id = client.create_task(&task(&rx4.url("/cb"))).await.unwrap();
    assert!(double.wait_idle(WAIT).await);
    assert!(rx4.hits().is_empty());
    assert_eq!(client.get_task(&id).await.unwrap()["status"], "completed");
}

#[tokio::test]
async fn goapi_envelope_code_other_than_200_is_an_error() {
    let double = GoapiDouble::start().await;
    let client = goapi(&double.url(), &double.api_key(), "music-u");
    let req = task("https://example.org/cb");

    double.reject_next_create(200, 500, "internal error, retry later");
    let err = client.create_task(&req).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");

    double.reject_next_create(400, 400, "invalid request: prompt too long");
    match client.create_task(&req).await.unwrap_err() {
        ClientError::Permanent { status, message } => {
            assert_eq!(status, Some(400));
            assert!(message.contains("prompt too long"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    double.reject_next_create(200, 10000, "insufficient credits");
    let err = client.create_task(&req).await.unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("insufficient credits"));

    double.reject_next_create(429, 429, "too many requests");
    assert!(client.create_task(&req).await.unwrap_err().is_transient());
    assert!(double.tasks().is_empty());
}

#[tokio::test]
async fn goapi_wrong_key_is_permanent() {
    let double = GoapiDouble::start().await;
    let client = goapi(&double.url(), "not-the-key-42", "music-u");
    let err = client
        .create_task(&task("https://example.org/cb"))
        .await
        .unwrap_err();
    assert_permanent(&err, 401);
    assert!(!err.to_string().contains("not-the-key-42"));
    let err = client.get_task("t").await.unwrap_err();
    assert_permanent(&err, 401);
}

#[tokio::test]
async fn goapi_get_task_returns_data_and_encodes_the_id() {
    let double = GoapiDouble::start().await;
    double.set_drop_webhooks(true);
    let client = goapi(&double.url(), &double.api_key(), "suno");
    let id = client
        .create_task(&task("https://example.org/cb"))
        .await
        .unwrap();
    let data = client.get_task(&id).await.unwrap();
    assert_eq!(data["task_id"], id.as_str());
    assert_eq!(data["model"], "suno");

    // An id with path characters stays one segment: unknown task, not another route.
    let err = client.get_task("../task/x?y=1").await.unwrap_err();
    assert_permanent(&err, 404);
    assert!(client.get_task("").await.is_err());
}

#[tokio::test]
async fn goapi_down_or_refused_is_transient() {
    let double = GoapiDouble::start().await;
    double.set_down(true);
    let client = goapi(&double.url(), &double.api_key(), "music-u");
    assert!(
        client
            .create_task(&task("https://example.org/cb"))
            .await
            .unwrap_err()
            .is_transient()
    );
    assert!(client.get_task("t").await.unwrap_err().is_transient());

    let refused = goapi(&dead_url().await, "k", "music-u");
    assert!(
        refused
            .create_task(&task("https://example.org/cb"))
            .await
            .unwrap_err()
            .is_transient()
    );
    assert!(refused.get_task("t").await.unwrap_err().is_transient());
}
