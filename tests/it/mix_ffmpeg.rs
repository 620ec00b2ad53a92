//! The mix the engine asks NCA for, run with real ffmpeg on media generated here: the exact
//! filter graph and options of `clients::nca::compose_body` (NCA's compose endpoint passes
//! them to ffmpeg as given), with local files in place of the URLs.
//!
//! Runs when `ffmpeg` and `ffprobe` are on PATH (`.ci/run` installs them); otherwise each test
//! says so and passes without checking anything.

use std::path::{Path, PathBuf};
use std::process::Command;

use reelstate::clients::nca::{MixRequest, compose_body};
use reelstate::domain::MediaUrl;
use reelstate::machine::mix_found_no_audio_track;
use serde_json::Value;

fn ffmpeg_available() -> bool {
    let ok = |tool: &str| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ok("ffmpeg") && ok("ffprobe") {
        true
    } else {
        eprintln!(
            "SKIPPED: ffmpeg/ffprobe not found on PATH; install ffmpeg (e.g. apt-get install ffmpeg) to run the mix tests"
        );
        false
    }
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg runs")
}

fn generate(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "generating test media failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 3 s video: a test pattern, with a full-scale 440 Hz "voice" when `voice`.
fn video(dir: &Path, voice: bool) -> PathBuf {
    let path = dir.join(if voice { "voice.mkv" } else { "silent.mkv" });
    let p = path.to_str().unwrap();
    let picture = "testsrc=size=160x120:rate=25:duration=3";
    if voice {
        generate(&[
            "-f",
            "lavfi",
            "-i",
            picture,
            "-f",
            "lavfi",
            "-i",
            "aevalsrc=sin(440*2*PI*t):s=44100:d=3",
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "pcm_s16le",
            "-shortest",
            p,
        ]);
    } else {
        generate(&[
            "-f", "lavfi", "-i", picture, "-c:v", "libx264", "-pix_fmt", "yuv420p", p,
        ]);
    }
    path
}

/// One second of full-scale 660 Hz "mastered music", shorter than the video (it loops).
fn music(dir: &Path) -> PathBuf {
    let path = dir.join("music.wav");
    generate(&[
        "-f",
        "lavfi",
        "-i",
        "aevalsrc=sin(660*2*PI*t):s=44100:d=1",
        "-c:a",
        "pcm_s16le",
        path.to_str().unwrap(),
    ]);
    path
}

fn request(voice: bool) -> MixRequest {
    MixRequest {
        video_url: MediaUrl::parse("https://storage.example/combined.mp4").unwrap(),
        music_url: MediaUrl::parse("https://storage.example/music.mp3").unwrap(),
        // The engine's default volume (Policy::default()).
        volume: reelstate::machine::Policy::default().volume,
        webhook_url: "https://example.org/webhooks/nca-toolkit".into(),
        id: "add_music:recA1b2C3d4E5f6G7:1".into(),
        voice,
    }
}

fn options(list: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for o in list.as_array().into_iter().flatten() {
        out.push(o["option"].as_str().expect("option").to_owned());
        match &o["argument"] {
            Value::Null => {}
            Value::String(s) => out.push(s.clone()),
            other => out.push(other.to_string()),
        }
    }
    out
}

/// Runs the compose body as ffmpeg would on the toolkit: per input its options then `-i`,
/// the filter graph, the output options, the output file.
fn mix(body: &Value, inputs: &[&Path], out: &Path) -> std::process::Output {
    let mut args: Vec<String> = Vec::new();
    for (input, file) in body["inputs"].as_array().unwrap().iter().zip(inputs) {
        args.extend(options(&input["options"]));
        args.push("-i".into());
        args.push(file.to_str().unwrap().into());
    }
    let filters: Vec<&str> = body["filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filter"].as_str().unwrap())
        .collect();
    args.push("-filter_complex".into());
    args.push(filters.join(";"));
    args.extend(options(&body["outputs"][0]["options"]));
    args.push(out.to_str().unwrap().into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs)
}

/// The decoded output's highest sample peak, in dBFS (0 dB is full scale).
fn peak_db(file: &Path) -> f64 {
    let out = run(&[
        "-i",
        file.to_str().unwrap(),
        "-af",
        "astats=measure_overall=Peak_level:measure_perchannel=none",
        "-f",
        "null",
        "-",
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    log.lines()
        .find_map(|l| l.split("Peak level dB:").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak in ffmpeg's output:\n{log}"))
}

/// What ffprobe says of `entries` (`stream=codec_type`, `format=duration`), one per line.
fn probe(file: &Path, entries: &str) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", entries, "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn streams(file: &Path) -> Vec<String> {
    probe(file, "stream=codec_type")
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

fn duration(file: &Path) -> f64 {
    probe(file, "format=duration")
        .trim()
        .parse()
        .expect("a duration")
}

/// Full-scale voice under full-scale music at 0.2 sums to 1.2: without a limiter after
/// amix (normalize=0) it clips; the engine's graph keeps the encoded output at or below
/// full scale.
#[test]
fn a_full_scale_voice_under_full_scale_music_never_clips() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (v, m) = (video(dir.path(), true), music(dir.path()));
    let out = dir.path().join("mixed.mp4");
    let result = mix(&compose_body(&request(true)), &[&v, &m], &out);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let peak = peak_db(&out);
    assert!(
        peak <= 0.0,
        "the mix peaks at {peak:.2} dBFS, above full scale"
    );
    assert_eq!(streams(&out), ["video", "audio"]);
    assert!((duration(&out) - 3.0).abs() < 0.1, "ends with the video");
}

/// A combined video without an audio track: the voice graph fails with the message the
/// machine recognises, and the music-only graph it then asks for gives the video the music
/// as its sound, ending with the video.
#[test]
fn a_video_without_an_audio_track_gets_the_music_alone() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (v, m) = (video(dir.path(), false), music(dir.path()));

    let failed = mix(
        &compose_body(&request(true)),
        &[&v, &m],
        &dir.path().join("voice.mp4"),
    );
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(mix_found_no_audio_track(&stderr), "{stderr}");

    let out = dir.path().join("music-only.mp4");
    let result = mix(&compose_body(&request(false)), &[&v, &m], &out);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(streams(&out), ["video", "audio"]);
    assert!(
        (duration(&out) - 3.0).abs() < 0.1,
        "cut at the video's end, not looped forever"
    );
    let peak = peak_db(&out);
    assert!(
        peak <= 0.0 && peak > -30.0,
        "the music is heard, unclipped: {peak:.2} dBFS"
    );
}
