//! Every fixture through the public webhook API, adversarial variants of them, the
//! authentication paths, and property tests that no input makes a parser panic.

use crate::support;

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use reelstate::domain::{MediaUrl, RecordId};
use reelstate::machine::{NcaResult, TaskStatus};
use reelstate::webhook::{
    AuthError, CallbackEndpoint, CallbackParams, CallbackSigner, GoapiWebhook, NcaJobState,
    ParseError, PayloadShape, StandardWebhooks, parse_goapi, parse_nca, parse_nca_status,
    parse_task_object, verify_shared_secret,
};
use serde_json::{Value, json};

fn fixture(kind: &str, name: &str) -> Vec<u8> {
    support::fixture(&format!("{kind}/{name}"))
}

fn json_fixture(kind: &str, name: &str) -> Value {
    support::fixture_json(&format!("{kind}/{name}"))
}

fn goapi(name: &str) -> GoapiWebhook {
    parse_goapi(&fixture("goapi", name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn chosen(w: &GoapiWebhook) -> Option<&str> {
    w.update.usable_track().map(MediaUrl::as_str)
}

const UDIO_TASK: &str = "5c7a1e2b-8d3f-4f6a-9b21-0e4d7c9a1f33";

struct GoapiCase {
    file: &'static str,
    task_id: &'static str,
    status: TaskStatus,
    tracks: usize,
    track: Option<&'static str>,
    error: Option<&'static str>,
    timestamp: Option<i64>,
    shape: PayloadShape,
}

const GOAPI_CASES: &[GoapiCase] = &[
    GoapiCase {
        file: "udio_pending.json",
        task_id: UDIO_TASK,
        status: TaskStatus::Pending,
        tracks: 0,
        track: None,
        error: None,
        timestamp: Some(1765248890),
        shape: PayloadShape::Envelope,
    },
    GoapiCase {
        file: "udio_processing.json",
        task_id: UDIO_TASK,
        status: TaskStatus::Processing,
        tracks: 0,
        track: None,
        error: None,
        timestamp: Some(1765248901),
        shape: PayloadShape::Envelope,
    },
    GoapiCase {
        file: "udio_completed.json",
        task_id: UDIO_TASK,
        status: TaskStatus::Completed,
        tracks: 2,
        track: Some("https://storage.example/udio/29b8adf2.mp3"),
        error: None,
        timestamp: Some(1765248943),
        shape: PayloadShape::Envelope,
    },
    GoapiCase {
        file: "udio_failed.json",
        task_id: UDIO_TASK,
        status: TaskStatus::Failed,
        tracks: 0,
        track: None,
        error: Some("failed to generate music (suno api status: 429)"),
        timestamp: Some(1765249020),
        shape: PayloadShape::Envelope,
    },
    GoapiCase {
        file: "suno_clips_completed.json",
        task_id: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        status: TaskStatus::Completed,
        tracks: 2,
        track: Some("https://cdn1.example/c6a4bd0e.mp3"),
        error: None,
        timestamp: Some(1723018391),
        shape: PayloadShape::Envelope,
    },
    GoapiCase {
        file: "suno_array_completed.json",
        task_id: "b90d65e9-3f1c-4c8e-9a77-2e5d1f0c8b44",
        status: TaskStatus::Completed,
        tracks: 2,
        track: Some("https://cdn1.example/1c5ddaf1.mp3"),
        error: None,
        timestamp: Some(1765248943),
        shape: PayloadShape::Envelope,
    },
    GoapiCase {
        file: "ace_step_completed.json",
        task_id: "f8d11a53-f3ac-47ad-a4d6-7610fda830be",
        status: TaskStatus::Completed,
        tracks: 1,
        track: Some("https://img.theapi.app/temp/2c802652-03bb-4266-8d4b-1cd81da45dcb.mp3"),
        error: None,
        timestamp: Some(1749613445),
        shape: PayloadShape::Envelope,
    },
    GoapiCase {
        file: "diffrhythm_completed.json",
        task_id: "3e9b51d0-7c2a-4f8e-b1d6-5a0c9e8f7d21",
        status: TaskStatus::Completed,
        tracks: 1,
        track: Some("https://img.theapi.app/temp/0b7d2c5e-9a41-4e3f-8c6d-1f2a3b4c5d6e.flac"),
        error: None,
        timestamp: Some(1764331250),
        shape: PayloadShape::Envelope,
    },
    GoapiCase {
        file: "flat_completed.json",
        task_id: UDIO_TASK,
        status: TaskStatus::Completed,
        tracks: 1,
        track: Some("https://storage.example/music/track-1.mp3"),
        error: None,
        timestamp: None,
        shape: PayloadShape::Flat,
    },
    GoapiCase {
        file: "flat_failed.json",
        task_id: UDIO_TASK,
        status: TaskStatus::Failed,
        tracks: 0,
        track: None,
        error: Some("Music generation quota exceeded"),
        timestamp: None,
        shape: PayloadShape::Flat,
    },
];

/// Every `.json` file in a fixture directory, so a new fixture without expectations fails.
fn json_files(kind: &str) -> BTreeSet<String> {
    std::fs::read_dir(support::fixtures_dir().join(kind))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect()
}

#[test]
fn every_goapi_fixture_parses_as_expected() {
    let covered: BTreeSet<String> = GOAPI_CASES.iter().map(|c| c.file.to_owned()).collect();
    assert_eq!(
        covered,
        json_files("goapi"),
        "fixtures without expectations"
    );
    for c in GOAPI_CASES {
        let w = goapi(c.file);
        assert_eq!(w.task_id, c.task_id, "{}", c.file);
        assert_eq!(w.update.task_id, c.task_id, "{}", c.file);
        assert_eq!(w.update.status, c.status, "{}", c.file);
        assert_eq!(w.update.tracks.len(), c.tracks, "{}", c.file);
        assert_eq!(chosen(&w), c.track, "{}", c.file);
        assert_eq!(w.update.error.as_deref(), c.error, "{}", c.file);
        assert_eq!(w.timestamp, c.timestamp, "{}", c.file);
        assert_eq!(w.shape, c.shape, "{}", c.file);
        assert!(w.is_music, "{}", c.file);
        assert!(w.update.tracks.iter().all(|t| t.finished), "{}", c.file);
        assert_eq!(w.raw_status, c.status.to_string(), "{}", c.file);

        // Reconciliation reads the same task from the GET reply: same update.
        let v = json_fixture("goapi", c.file);
        let task = if v.get("data").is_some() {
            &v["data"]
        } else {
            &v
        };
        let polled = parse_task_object(task, Some(42)).unwrap();
        assert_eq!(polled.update, w.update, "{}", c.file);
        assert_eq!(polled.timestamp, Some(42));
        let reply = json!({"code": 200, "data": task, "message": "success"});
        let replied = parse_goapi(reply.to_string().as_bytes()).unwrap();
        assert_eq!(replied.update, w.update, "{}", c.file);
    }
}

#[test]
fn goapi_fixture_metadata() {
    let w = goapi("udio_completed.json");
    assert_eq!(w.model.as_deref(), Some("music-u"));
    assert_eq!(w.task_type.as_deref(), Some("generate_music"));
    assert_eq!(
        w.dedupe_key(None, b"{}"),
        format!("goapi:{UDIO_TASK}:completed:1765248943")
    );
    let w = goapi("ace_step_completed.json");
    assert_eq!(w.model.as_deref(), Some("Qubico/ace-step"));
    assert_eq!(w.task_type.as_deref(), Some("txt2audio"));
    let w = goapi("suno_clips_completed.json");
    let urls: Vec<_> = w
        .update
        .tracks
        .iter()
        .map(|t| t.url.as_ref().unwrap().as_str())
        .collect();
    assert_eq!(
        urls,
        [
            "https://cdn1.example/c6a4bd0e.mp3",
            "https://cdn1.example/d7b5ce1f.mp3"
        ]
    );
}

/// A fixture with a change applied to its task object.
fn udio_with(change: impl FnOnce(&mut Value)) -> Result<GoapiWebhook, ParseError> {
    let mut v = json_fixture("goapi", "udio_completed.json");
    change(&mut v["data"]);
    parse_goapi(v.to_string().as_bytes())
}

#[test]
fn goapi_adversarial_variants() {
    // Unfinished first song: the second is chosen.
    let w = udio_with(|d| d["output"]["songs"][0]["finished"] = json!(false)).unwrap();
    assert_eq!(
        chosen(&w),
        Some("https://storage.example/udio/7d1e0c55.mp3")
    );
    // An empty URL before a good one.
    let w = udio_with(|d| d["output"]["songs"][0]["song_path"] = json!("")).unwrap();
    assert_eq!(w.update.tracks.len(), 2);
    assert_eq!(w.update.tracks[0].url, None);
    assert_eq!(
        chosen(&w),
        Some("https://storage.example/udio/7d1e0c55.mp3")
    );
    // No song usable at all: completed, with nothing to mix (the machine decides).
    let w = udio_with(|d| {
        d["output"]["songs"][0]["finished"] = json!(false);
        d["output"]["songs"][1]["song_path"] = json!("javascript:alert(1)");
    })
    .unwrap();
    assert_eq!(w.update.status, TaskStatus::Completed);
    assert_eq!(chosen(&w), None);
    // Empty or null songs.
    for songs in [json!([]), json!(null)] {
        let w = udio_with(|d| d["output"]["songs"] = songs).unwrap();
        assert!(w.update.tracks.is_empty());
        assert!(w.is_music);
    }
    // Uppercase and `complete`.
    for s in ["COMPLETED", "Complete", "complete"] {
        let w = udio_with(|d| d["status"] = json!(s)).unwrap();
        assert_eq!(w.update.status, TaskStatus::Completed);
        assert_eq!(w.raw_status, s);
    }
    // Wrong types where a value is optional: ignored.
    let w = udio_with(|d| {
        d["output"]["songs"][0] = json!(17);
        d["model"] = json!({"x": 1});
        d["error"] = json!([1, 2]);
        d["meta"] = json!("nope");
    })
    .unwrap();
    assert_eq!(
        chosen(&w),
        Some("https://storage.example/udio/7d1e0c55.mp3")
    );
    assert_eq!(w.model, None);
    assert_eq!(w.update.error, None);
    // Nulls everywhere optional.
    let w = udio_with(|d| {
        for k in [
            "model",
            "task_type",
            "output",
            "error",
            "config",
            "input",
            "meta",
        ] {
            d[k] = Value::Null;
        }
    })
    .unwrap();
    assert!(w.update.tracks.is_empty() && w.is_music);
    // Wrong types where a value is required: refused.
    assert!(matches!(
        udio_with(|d| d["task_id"] = json!(["x"])),
        Err(ParseError::Invalid(_))
    ));
    assert_eq!(
        udio_with(|d| d["task_id"] = json!("")),
        Err(ParseError::MissingTaskId)
    );
    assert_eq!(
        udio_with(|d| d["status"] = Value::Null),
        Err(ParseError::MissingStatus)
    );
    assert_eq!(
        udio_with(|d| d["status"] = json!("exploded")),
        Err(ParseError::UnknownStatus("exploded".into()))
    );
    // A huge error is bounded and keeps both ends.
    let w = udio_with(|d| {
        d["status"] = json!("failed");
        d["error"] = json!({"code": 1, "message": format!("BEGIN{}END", "x".repeat(1_000_000))});
    })
    .unwrap();
    let e = w.update.error.unwrap();
    assert!(e.len() <= 4_000 && e.starts_with("BEGIN") && e.ends_with("END"));
}

#[test]
fn goapi_non_music_tasks_are_recognised() {
    let video = json!({"timestamp": 1, "data": {
        "task_id": "v-1", "model": "kling", "task_type": "video_generation", "status": "completed",
        "output": {"video_url": "https://cdn/x.mp4", "works": []},
        "error": {"code": 0, "message": "", "raw_message": ""}}});
    let w = parse_goapi(video.to_string().as_bytes()).unwrap();
    assert!(!w.is_music);
    assert_eq!(w.task_id, "v-1");
    for (model, tt) in [
        ("midjourney", "imagine"),
        ("Qubico/flux1-schnell", "txt2img"),
        ("hailuo", "img2video"),
        ("luma", "video_generation"),
    ] {
        let v = json!({"task_id": "x", "model": model, "task_type": tt, "status": "pending"});
        assert!(
            !parse_goapi(v.to_string().as_bytes()).unwrap().is_music,
            "{model}"
        );
    }
    for (model, tt) in [
        ("suno", "generate_music_custom"),
        ("Qubico/ace-step", "txt2audio"),
        ("udio", "music"),
    ] {
        let v = json!({"task_id": "x", "model": model, "task_type": tt, "status": "pending"});
        assert!(
            parse_goapi(v.to_string().as_bytes()).unwrap().is_music,
            "{model}"
        );
    }
}

#[test]
fn goapi_body_errors_have_codes() {
    let cases: [(&[u8], &str); 4] = [
        (b"", "invalid_json"),
        (b"not json", "invalid_json"),
        (b"[1,2]", "not_an_object"),
        (b"{\"status\": \"pending\"}", "missing_task_id"),
    ];
    for (body, code) in cases {
        assert_eq!(parse_goapi(body).unwrap_err().code(), code);
    }
}

#[test]
fn every_nca_fixture_parses_as_expected() {
    let expected: BTreeSet<String> = [
        "compose_success_webhook.json",
        "compose_failure_webhook.json",
        "compose_accepted.json",
        "compose_request.json",
        "queue_full.json",
        "unauthorized.json",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(expected, json_files("nca"), "fixtures without expectations");

    let ok = parse_nca(&fixture("nca", "compose_success_webhook.json")).unwrap();
    assert_eq!(
        ok.update.result,
        NcaResult::Succeeded {
            output: MediaUrl::parse(
                "https://storage.example/nca/99f8a6a2-3c1b-4e2d-9f0a-1b2c3d4e5f60_output_0.mp4"
            )
            .unwrap()
        }
    );
    assert_eq!(
        ok.update.submission_id.as_deref(),
        Some("add_music:recA1b2C3d4E5f6G7:1")
    );
    assert_eq!(
        ok.update.nca_job_id.as_deref(),
        Some("99f8a6a2-3c1b-4e2d-9f0a-1b2c3d4e5f60")
    );
    assert_eq!(ok.endpoint.as_deref(), Some("/v1/ffmpeg/compose"));
    assert_eq!(ok.code, Some(200));
    assert_eq!(ok.queue_id, Some(139652379057488));
    assert_eq!(ok.build_number, Some(209));

    let failed = parse_nca(&fixture("nca", "compose_failure_webhook.json")).unwrap();
    assert_eq!(
        failed.update.result,
        NcaResult::Failed {
            error: "FFmpeg command failed: Stream specifier ':a' in filtergraph description [1:a]volume=0.2[bg];[0:a][bg]amix=inputs=2:duration=first:dropout_transition=0:normalize=0[aout] matches no streams.".into()
        }
    );
    assert_eq!(
        failed.update.submission_id.as_deref(),
        Some("add_music:recA1b2C3d4E5f6G7:1")
    );
    assert_eq!(failed.code, Some(500));

    // Replies, not callbacks: if one ever reached the callback route it must not pass
    // for a result (202, our own request) or passes as the failure it describes.
    assert!(matches!(
        parse_nca(&fixture("nca", "compose_accepted.json")),
        Err(ParseError::Invalid(_))
    ));
    assert!(matches!(
        parse_nca(&fixture("nca", "compose_request.json")),
        Err(ParseError::Invalid(_))
    ));
    let full = parse_nca(&fixture("nca", "queue_full.json")).unwrap();
    assert_eq!(
        full.update.result,
        NcaResult::Failed {
            error: "MAX_QUEUE_LENGTH (10) reached".into()
        }
    );
    let unauth = parse_nca(&fixture("nca", "unauthorized.json")).unwrap();
    assert_eq!(
        unauth.update.result,
        NcaResult::Failed {
            error: "Unauthorized".into()
        }
    );
}

#[test]
fn nca_adversarial_variants() {
    let base = json_fixture("nca", "compose_success_webhook.json");
    let with = |change: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        change(&mut v);
        parse_nca(v.to_string().as_bytes()).unwrap().update.result
    };
    let failure = |r: NcaResult| match r {
        NcaResult::Failed { error } => error,
        other => panic!("expected failure, got {other:?}"),
    };
    assert!(failure(with(&|v| v["response"] = Value::Null)).contains("no response"));
    assert!(failure(with(&|v| v["response"][0]["file_url"] = json!(""))).contains("file_url"));
    assert!(failure(with(&|v| v["response"] = json!([]))).contains("empty"));
    // Huge ffmpeg stderr is shortened, keeping both ends.
    let e = failure(with(&|v| {
        v["code"] = json!(500);
        v["response"] = Value::Null;
        v["message"] = json!(format!(
            "ffmpeg version{}Conversion failed!",
            "frame= ".repeat(200_000)
        ));
    }));
    assert!(e.len() <= 8_000);
    assert!(e.starts_with("ffmpeg version") && e.ends_with("Conversion failed!"));
    // A queue_id beyond u64 does not fail the parse.
    let body = br#"{"code": 200, "response": [{"file_url": "https://s/o.mp4"}], "queue_id": 99999999999999999999999999999, "build_number": 209}"#;
    let w = parse_nca(body).unwrap();
    assert!(matches!(w.update.result, NcaResult::Succeeded { .. }));
    assert_eq!(w.queue_id, None);
}

#[test]
fn nca_job_status_replies() {
    let payload = json_fixture("nca", "compose_success_webhook.json");
    let reply = |status: &str, inner: Value| {
        json!({"code": 200, "message": "success", "response": {
            "job_status": status, "job_id": "99f8a6a2-3c1b-4e2d-9f0a-1b2c3d4e5f60",
            "queue_id": 139652379057488u64, "process_id": 6953, "response": inner}})
    };
    assert_eq!(
        parse_nca_status(&reply("queued", Value::Null)),
        Ok(NcaJobState::Queued)
    );
    assert_eq!(
        parse_nca_status(&reply("running", Value::Null)),
        Ok(NcaJobState::Running)
    );
    let direct = parse_nca(payload.to_string().as_bytes()).unwrap();
    assert_eq!(
        parse_nca_status(&reply("done", payload)),
        Ok(NcaJobState::Done(direct))
    );
    let not_found = json!({"code": 404, "response": null,
        "message": {"error": "Job not found", "job_id": "nope"}});
    assert_eq!(parse_nca_status(&not_found), Ok(NcaJobState::Unknown));
}

// --- authentication --------------------------------------------------------------------

fn at(ts: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(ts, 0).single().unwrap()
}

#[test]
fn goapi_shared_secret_header() {
    assert_eq!(verify_shared_secret(Some("abc123"), "abc123"), Ok(()));
    assert_eq!(
        verify_shared_secret(Some("********"), "abc123"),
        Err(AuthError::Mismatch)
    );
    assert_eq!(
        verify_shared_secret(None, "abc123"),
        Err(AuthError::Missing)
    );
}

#[test]
fn standard_webhooks_rotation_expiry_and_tampering() {
    let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let new = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQ=";
    let body = fixture("goapi", "udio_completed.json");
    let signed_by_old = StandardWebhooks::new([old])
        .unwrap()
        .sign("msg_1", 1_765_248_943, &body);
    let rotating = StandardWebhooks::new([new, old]).unwrap();
    let now = at(1_765_248_943);
    assert_eq!(
        rotating.verify("msg_1", "1765248943", &signed_by_old, &body, now),
        Ok(())
    );
    // The new secret signs from now on, and both are accepted in one header.
    let signed_by_new = rotating.sign("msg_1", 1_765_248_943, &body);
    assert_ne!(signed_by_new, signed_by_old);
    let header = format!("{signed_by_new} {signed_by_old}");
    assert_eq!(
        StandardWebhooks::new([old])
            .unwrap()
            .verify("msg_1", "1765248943", &header, &body, now),
        Ok(())
    );
    // Expired, in both directions.
    for skew in [301, -301] {
        assert_eq!(
            rotating.verify(
                "msg_1",
                "1765248943",
                &signed_by_old,
                &body,
                at(1_765_248_943 + skew)
            ),
            Err(AuthError::Timestamp),
            "{skew} s off"
        );
    }
    // Tampered body: one byte.
    let mut tampered = body.clone();
    let i = tampered.len() / 2;
    tampered[i] ^= 1;
    assert_eq!(
        rotating.verify("msg_1", "1765248943", &signed_by_old, &tampered, now),
        Err(AuthError::Mismatch)
    );
    // A removed secret no longer verifies.
    assert_eq!(
        StandardWebhooks::new([new]).unwrap().verify(
            "msg_1",
            "1765248943",
            &signed_by_old,
            &body,
            now
        ),
        Err(AuthError::Mismatch)
    );
}

#[test]
fn callback_urls_resist_tampering() {
    let signer =
        CallbackSigner::new(b"a-32-byte-long-callback-key-1234", "https://x.example/rs").unwrap();
    let video = RecordId::parse("recA1b2C3d4E5f6G7").unwrap();
    let job = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";
    let url = signer.nca_url(&video, job);
    let query = url.split_once('?').unwrap().1;
    let params: CallbackParams = serde_urlencoded_like(query);
    assert_eq!(signer.verify(CallbackEndpoint::Nca, &params), Ok(()));
    assert_eq!(params.video_id.as_deref(), Some("recA1b2C3d4E5f6G7"));
    assert_eq!(params.operation.as_deref(), Some("add_music"));
    assert_eq!(params.job.as_deref(), Some(job));

    let mut other_video = params.clone();
    other_video.video_id = Some("recZZZZZZZZZZZZZZ".into());
    assert_eq!(
        signer.verify(CallbackEndpoint::Nca, &other_video),
        Err(AuthError::Mismatch)
    );
    let mut other_job = params.clone();
    other_job.job = Some("00000000-0000-0000-0000-000000000000".into());
    assert_eq!(
        signer.verify(CallbackEndpoint::Nca, &other_job),
        Err(AuthError::Mismatch)
    );
    assert_eq!(
        signer.verify(CallbackEndpoint::Goapi, &params),
        Err(AuthError::Mismatch)
    );
    let mut unsigned = params;
    unsigned.token = None;
    assert_eq!(
        signer.verify(CallbackEndpoint::Nca, &unsigned),
        Err(AuthError::Missing)
    );

    // GoAPI's URL works the same way and carries no operation.
    let url = signer.goapi_url(&video, job);
    let params: CallbackParams = serde_urlencoded_like(url.split_once('?').unwrap().1);
    assert_eq!(params.operation, None);
    assert_eq!(signer.verify(CallbackEndpoint::Goapi, &params), Ok(()));
}

/// Decodes a query string into [`CallbackParams`] through serde, as warp's query filter
/// does (serde_urlencoded is not a direct dependency, so go through a JSON map).
fn serde_urlencoded_like(query: &str) -> CallbackParams {
    let map: serde_json::Map<String, Value> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    serde_json::from_value(Value::Object(map)).unwrap()
}

// --- properties ------------------------------------------------------------------------

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            "[a-z_]{0,12}",
            Just("completed".to_owned()),
            Just("https://a.example/x.mp3".to_owned()),
            Just(String::new()),
            any::<String>(),
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("task_id".to_owned()),
            Just("status".to_owned()),
            Just("output".to_owned()),
            Just("songs".to_owned()),
            Just("clips".to_owned()),
            Just("audio_url".to_owned()),
            Just("song_path".to_owned()),
            Just("finished".to_owned()),
            Just("error".to_owned()),
            Just("message".to_owned()),
            Just("code".to_owned()),
            Just("response".to_owned()),
            Just("file_url".to_owned()),
            Just("data".to_owned()),
            Just("job_status".to_owned()),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn parsers_never_panic_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_goapi(&body);
        let _ = parse_nca(&body);
    }

    #[test]
    fn parsers_never_panic_on_json(v in arb_json()) {
        let body = v.to_string();
        let _ = parse_goapi(body.as_bytes());
        let _ = parse_nca(body.as_bytes());
        let _ = parse_task_object(&v, None);
        let _ = parse_nca_status(&v);
        let wrapped = json!({"timestamp": 1, "data": v});
        let _ = parse_goapi(wrapped.to_string().as_bytes());
        let status = json!({"code": 200, "response": {"job_status": "done", "response": v}});
        let _ = parse_nca_status(&status);
    }

    #[test]
    fn task_shaped_json_parses_or_fails_cleanly(output in arb_json(), error in arb_json(), status in prop_oneof![
        Just("completed"), Just("FAILED"), Just("pending"), Just("complete"), Just("weird")
    ]) {
        let v = json!({"timestamp": 1, "data": {
            "task_id": "t", "model": "music-u", "status": status, "output": output, "error": error}});
        match parse_goapi(v.to_string().as_bytes()) {
            Ok(w) => {
                prop_assert_eq!(w.task_id, "t");
                prop_assert!(w.update.tracks.len() <= 50);
                prop_assert!(w.update.error.map_or(0, |e| e.len()) <= 4_000);
            }
            Err(e) => prop_assert_eq!(e, ParseError::UnknownStatus("weird".into())),
        }
    }

    #[test]
    fn standard_webhooks_verify_never_panics(
        id in any::<String>(),
        ts in any::<String>(),
        sig in any::<String>(),
        body in prop::collection::vec(any::<u8>(), 0..256),
        now in any::<i32>(),
    ) {
        let wh = StandardWebhooks::new(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]).unwrap();
        let _ = wh.verify(&id, &ts, &sig, &body, at(i64::from(now)));
        let _ = wh.verify(&id, &ts, &format!("v1,{sig}"), &body, at(i64::from(now)));
    }

    #[test]
    fn callback_verify_never_panics_and_only_accepts_signed(
        video_id in proptest::option::of(any::<String>()),
        operation in proptest::option::of(any::<String>()),
        job in proptest::option::of(any::<String>()),
        token in proptest::option::of(any::<String>()),
    ) {
        let signer = CallbackSigner::new(b"a-32-byte-long-callback-key-1234", "http://h").unwrap();
        let p = CallbackParams { video_id, operation, job, token };
        prop_assert!(signer.verify(CallbackEndpoint::Nca, &p).is_err());
        prop_assert!(signer.verify(CallbackEndpoint::Goapi, &p).is_err());
    }

    #[test]
    fn any_job_string_round_trips_through_a_callback_url(job in any::<String>()) {
        let signer = CallbackSigner::new(b"a-32-byte-long-callback-key-1234", "http://h/p").unwrap();
        let video = RecordId::parse("recA1b2C3d4E5f6G7").unwrap();
        let url = signer.goapi_url(&video, &job);
        let p = serde_urlencoded_like(url.split_once('?').unwrap().1);
        prop_assert_eq!(p.job.as_deref(), Some(job.as_str()));
        prop_assert_eq!(signer.verify(CallbackEndpoint::Goapi, &p), Ok(()));
    }
}

/// Found by `cargo fuzz run goapi_webhook` (fuzz/): the URL parser repairs `https:/host/…`,
/// backslashes, and tabs, newlines or control characters, and the string was kept as
/// sent, so a track URL NCA cannot fetch passed as usable. Such URLs are now unusable.
#[test]
fn track_and_output_urls_are_plain_http_urls() {
    // The fuzzer's input, as it was.
    let found = br#"{"task_id": "5c7a1e2b-8d3f-4f6a-9b21-0e4d7c9a1f33", "status": "completed", "output": {"url": "https:/serg/tao.examPle/music/track-2.m404p3"}}
"#;
    let w = parse_goapi(found).unwrap();
    assert_eq!(w.update.tracks.len(), 1);
    assert_eq!(w.update.tracks[0].url, None);
    assert_eq!(w.update.usable_track(), None);

    for url in [
        "https:/cdn.example/a.mp3",
        "https:cdn.example/a.mp3",
        "https:\\\\cdn.example\\a.mp3",
        "https://cdn.example/a\nb.mp3",
        "https://cdn.example/a\tb.mp3",
        "\u{1}https://cdn.example/a.mp3",
    ] {
        let body = json!({"task_id": "t", "status": "completed", "output": {"url": url}});
        let w = parse_goapi(body.to_string().as_bytes()).unwrap();
        assert_eq!(w.update.tracks[0].url, None, "{url:?} taken as a track URL");
        let body = json!({"code": 200, "id": "x", "response": [{"file_url": url}]});
        let n = parse_nca(body.to_string().as_bytes()).unwrap();
        assert!(
            matches!(n.update.result, NcaResult::Failed { .. }),
            "{url:?} taken as NCA's output"
        );
    }
    // The plain form still works, in any case, trimmed.
    let body = json!({"task_id": "t", "status": "completed", "output": {"url": " HTTPS://cdn.example/a.mp3 "}});
    let w = parse_goapi(body.to_string().as_bytes()).unwrap();
    assert_eq!(chosen(&w), Some("HTTPS://cdn.example/a.mp3"));
}
