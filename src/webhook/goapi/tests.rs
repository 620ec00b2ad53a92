use serde_json::json;

use super::*;

fn parse(v: Value) -> Result<GoapiWebhook, ParseError> {
    parse_goapi(v.to_string().as_bytes())
}

fn envelope(task: Value) -> Value {
    json!({"timestamp": 1_700_000_000, "data": task})
}

fn udio(status: &str, output: Value, error: Value) -> Value {
    envelope(json!({
        "task_id": "t-1", "model": "music-u", "task_type": "generate_music",
        "status": status, "output": output, "error": error,
    }))
}

fn no_error() -> Value {
    json!({"code": 0, "raw_message": "", "message": "", "detail": null})
}

fn urls(w: &GoapiWebhook) -> Vec<Option<&str>> {
    w.update
        .tracks
        .iter()
        .map(|t| t.url.as_ref().map(MediaUrl::as_str))
        .collect()
}

#[test]
fn envelope_with_songs() {
    let w = parse(udio(
        "completed",
        json!({"songs": [
            {"song_path": "https://a/1.mp3", "finished": true},
            {"song_path": "https://a/2.mp3", "finished": true},
        ]}),
        no_error(),
    ))
    .unwrap();
    assert_eq!(w.task_id, "t-1");
    assert_eq!(w.timestamp, Some(1_700_000_000));
    assert_eq!(w.shape, PayloadShape::Envelope);
    assert_eq!(w.update.status, TaskStatus::Completed);
    assert_eq!(
        urls(&w),
        vec![Some("https://a/1.mp3"), Some("https://a/2.mp3")]
    );
    assert_eq!(w.update.error, None);
    assert!(w.is_music);
    assert_eq!(
        w.dedupe_key(None, b"ignored"),
        "goapi:t-1:completed:1700000000"
    );
}

#[test]
fn unfinished_and_empty_tracks_are_kept_but_not_chosen() {
    let w = parse(udio(
        "completed",
        json!({"songs": [
            {"song_path": "https://a/1.mp3", "finished": false},
            {"song_path": "", "finished": true},
            {"song_path": "ftp://a/2.mp3", "finished": true},
            {"song_path": "https://a/3.mp3", "finished": true},
        ]}),
        no_error(),
    ))
    .unwrap();
    assert_eq!(w.update.tracks.len(), 4);
    assert!(!w.update.tracks[0].finished);
    assert_eq!(w.update.tracks[1].url, None);
    assert_eq!(w.update.tracks[2].url, None);
    assert_eq!(
        w.update.usable_track().map(MediaUrl::as_str),
        Some("https://a/3.mp3")
    );
}

#[test]
fn songs_null_or_wrong_type_means_no_tracks() {
    for songs in [json!(null), json!("x"), json!(7), json!({}), json!([])] {
        let w = parse(udio("processing", json!({"songs": songs}), no_error())).unwrap();
        assert!(w.update.tracks.is_empty());
        assert!(w.is_music);
    }
}

#[test]
fn clips_status_decides_finished() {
    let w = parse(envelope(json!({
        "task_id": "t", "model": "suno", "status": "processing",
        "output": {"clips": {
            "a": {"audio_url": "https://a/1.mp3", "status": "streaming"},
            "b": {"audio_url": "https://a/2.mp3", "status": "complete"},
            "c": {"audio_url": "https://a/3.mp3"},
        }},
    })))
    .unwrap();
    let f: Vec<bool> = w.update.tracks.iter().map(|t| t.finished).collect();
    assert_eq!(f, vec![false, true, true]);
}

#[test]
fn odd_finished_values() {
    let t = |v: Value| finished(&json!({ "finished": v }));
    assert!(t(json!(true)));
    assert!(!t(json!(false)));
    assert!(t(json!("TRUE")));
    assert!(!t(json!("false")));
    assert!(!t(json!(1)));
    assert!(t(json!(null)));
}

#[test]
fn array_output_and_string_items() {
    let w = parse(envelope(json!({
        "task_id": "t", "model": "suno", "task_type": "music", "status": "completed",
        "output": [{"audio_url": "https://a/1.mp3"}, "https://a/2.mp3", 3, null],
    })))
    .unwrap();
    assert_eq!(
        urls(&w),
        vec![Some("https://a/1.mp3"), Some("https://a/2.mp3")]
    );
}

#[test]
fn tracks_are_capped() {
    let many: Vec<Value> = (0..500)
        .map(|i| json!({"audio_url": format!("https://a/{i}.mp3")}))
        .collect();
    let w = parse(envelope(json!({
        "task_id": "t", "model": "suno", "status": "completed", "output": many,
    })))
    .unwrap();
    assert_eq!(w.update.tracks.len(), MAX_TRACKS);
}

#[test]
fn statuses_case_insensitive_and_synonyms() {
    for (s, want) in [
        ("PENDING", TaskStatus::Pending),
        ("Processing", TaskStatus::Processing),
        ("staged", TaskStatus::Staged),
        ("Completed", TaskStatus::Completed),
        ("complete", TaskStatus::Completed),
        ("SUCCESS", TaskStatus::Completed),
        (" failed ", TaskStatus::Failed),
        ("error", TaskStatus::Failed),
    ] {
        let w = parse(json!({"task_id": "t", "status": s})).unwrap();
        assert_eq!(w.update.status, want, "{s}");
        assert_eq!(w.raw_status, s.trim());
    }
    assert_eq!(
        parse(json!({"task_id": "t", "status": "cancelled"})),
        Err(ParseError::UnknownStatus("cancelled".into()))
    );
    let long = "x".repeat(10_000);
    match parse(json!({"task_id": "t", "status": long})) {
        Err(ParseError::UnknownStatus(s)) => assert!(s.len() <= 64),
        other => panic!("{other:?}"),
    }
}

#[test]
fn required_fields() {
    assert_eq!(
        parse(json!({"status": "pending"})),
        Err(ParseError::MissingTaskId)
    );
    assert_eq!(
        parse(json!({"task_id": "  ", "status": "pending"})),
        Err(ParseError::MissingTaskId)
    );
    assert_eq!(
        parse(json!({"task_id": null, "status": "pending"})),
        Err(ParseError::MissingTaskId)
    );
    assert!(matches!(
        parse(json!({"task_id": 12, "status": "pending"})),
        Err(ParseError::Invalid(_))
    ));
    assert!(matches!(
        parse(json!({"task_id": "x".repeat(300), "status": "pending"})),
        Err(ParseError::Invalid(_))
    ));
    assert_eq!(
        parse(json!({"task_id": "t"})),
        Err(ParseError::MissingStatus)
    );
    assert!(matches!(
        parse(json!({"task_id": "t", "status": ["completed"]})),
        Err(ParseError::Invalid(_))
    ));
    assert_eq!(
        parse(json!({"timestamp": 1, "data": {"status": "pending"}})),
        Err(ParseError::MissingTaskId)
    );
    assert!(matches!(
        parse(json!({"timestamp": 1, "data": "nope"})),
        Err(ParseError::Invalid(_))
    ));
    assert_eq!(parse_goapi(b"[]"), Err(ParseError::NotObject));
    assert!(matches!(parse_goapi(b"nope"), Err(ParseError::NotJson(_))));
}

#[test]
fn wrong_types_elsewhere_are_ignored() {
    let w = parse(json!({
        "timestamp": "soon", "data": {
            "task_id": "t", "status": "completed", "model": 5, "task_type": [],
            "output": "https://a/1.mp3", "error": 42,
        }
    }))
    .unwrap();
    assert_eq!(w.timestamp, None);
    assert_eq!(w.model, None);
    assert!(w.update.tracks.is_empty());
    assert_eq!(w.update.error, None);
}

#[test]
fn errors_combined_and_bounded() {
    let e = |v: Value| error_text(&v);
    assert_eq!(
        e(
            json!({"code": 10000, "message": "failed to generate music", "raw_message": "suno api status: 429"})
        ),
        Some("failed to generate music (suno api status: 429)".into())
    );
    assert_eq!(
        e(json!({"code": 1, "message": "same", "raw_message": "same"})),
        Some("same".into())
    );
    assert_eq!(
        e(json!({"raw_message": "only raw"})),
        Some("only raw".into())
    );
    assert_eq!(
        e(json!({"code": 0, "message": "", "raw_message": ""})),
        None
    );
    assert_eq!(
        e(json!({"code": 7, "message": ""})),
        Some("GoAPI error code 7".into())
    );
    assert_eq!(e(json!("plain")), Some("plain".into()));
    assert_eq!(e(json!(null)), None);
    let big = e(json!({"message": "x".repeat(100_000)})).unwrap();
    assert!(big.len() <= MAX_ERROR_BYTES);
}

#[test]
fn task_reply_envelope() {
    let reply = json!({"code": 200, "message": "success", "data": {
        "task_id": "t", "model": "music-u", "status": "pending", "output": null,
    }});
    let w = parse(reply.clone()).unwrap();
    assert_eq!(w.shape, PayloadShape::TaskReply);
    let w = parse_task_object(&reply, Some(9)).unwrap();
    assert_eq!(w.timestamp, Some(9));
    let w = parse_task_object(&reply["data"], None).unwrap();
    assert_eq!((w.shape, w.timestamp), (PayloadShape::Bare, None));
    let bad = json!({"code": 404, "message": "task not found", "data": null});
    match parse(bad) {
        Err(ParseError::Invalid(m)) => assert!(m.contains("404") && m.contains("not found")),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        parse_task_object(&json!("x"), None),
        Err(ParseError::NotObject)
    );
}

#[test]
fn music_classification() {
    let m = |model: Option<&str>, tt: Option<&str>, out: Value| is_music(model, tt, &out);
    assert!(m(Some("music-u"), Some("generate_music"), json!(null)));
    assert!(m(Some("suno"), Some("music"), json!(null)));
    assert!(m(Some("Qubico/ace-step"), Some("txt2audio"), json!(null)));
    assert!(m(
        Some("Qubico/diffrhythm"),
        Some("txt2audio-base"),
        json!(null)
    ));
    assert!(m(Some("udio"), None, json!(null)));
    assert!(m(None, None, json!({"url": "https://a/x.mp3"})));
    assert!(m(Some("mystery"), None, json!(null)));
    assert!(m(
        Some("kling"),
        Some("video_generation"),
        json!({"audio_url": "https://a"})
    ));
    assert!(!m(Some("kling"), Some("video_generation"), json!(null)));
    assert!(!m(Some("hailuo"), Some("img2video"), json!(null)));
    assert!(!m(Some("luma"), Some("video_generation"), json!(null)));
    assert!(!m(Some("midjourney"), Some("imagine"), json!(null)));
    assert!(!m(Some("midjourney"), Some("upscale"), json!(null)));
    assert!(!m(Some("Qubico/flux1-dev"), Some("txt2img"), json!(null)));
    assert!(!m(Some("Qubico/wanx"), Some("txt2video-14b"), json!(null)));
    assert!(!m(
        Some("Qubico/studio"),
        None,
        json!({"image_url": "https://a"})
    ));
    assert!(!m(None, None, json!({"video_url": "https://a/v.mp4"})));
}

/// Stored keys are what existing databases deduplicate on: their spelling is fixed.
#[test]
fn dedupe_keys_keep_their_stored_spelling() {
    let body = br#"{"task_id": "t-9", "status": "pending"}"#;
    let w = parse_goapi(body).unwrap();
    assert_eq!(w.timestamp, None);
    assert_eq!(w.dedupe_key(Some("msg_1"), body), "goapi:webhook-id:msg_1");
    assert_eq!(
        w.dedupe_key(None, body),
        format!("goapi:body:{}", crate::webhook::sha256_hex(body))
    );
    assert_eq!(
        crate::webhook::sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
