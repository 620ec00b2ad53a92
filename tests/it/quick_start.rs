//! README's Quick start and the sandbox's printout, run as a newcomer runs them, against
//! the built binary from a fresh state directory: every command must succeed and every
//! video must reach the state it is promised.
//!
//! Adaptations, and only these: README's `cargo run --release -- <args>` is this test
//! binary's `reelstate <args>` (`CARGO_BIN_EXE_reelstate`, a debug build: what `cargo run`
//! would build and start); the server listens on the port the OS picks (`REELSTATE_LISTEN`
//! `127.0.0.1:0`, read back from its first line) and README's fixed `127.0.0.1:8080` is
//! replaced by that address. The printed commands need nothing replaced. `curl` runs with a
//! `.curlrc` of `fail-with-body` (a fresh `HOME`), so that an HTTP error fails the command
//! as a newcomer's eyes would.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const README_PORT: &str = "127.0.0.1:8080";
const WITHIN: Duration = Duration::from_secs(120);

/// The commands in the `sh` blocks of README's "## Quick start" section, in order.
fn quick_start_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("\n## Quick start\n")
        .expect("a Quick start section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in section.lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            l if in_sh && !l.is_empty() && !l.starts_with('#') => commands.push(l.to_owned()),
            _ => {}
        }
    }
    commands
}

/// Runs one shell command as typed in a second terminal; its stdout.
fn run(cmd: &str, home: &Path) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .current_dir(home)
        .output()
        .expect("run sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn video(url: &str, id: &str) -> Value {
    reqwest::get(format!("{url}/videos/{id}"))
        .await
        .expect("GET video")
        .json()
        .await
        .unwrap_or(Value::Null)
}

/// Polls until the video is in `status` with no effect left to run.
async fn wait_for(url: &str, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let v = video(url, id).await;
        if v["status"] == status && v["effects"].as_array().is_some_and(|e| e.is_empty()) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never reached {status}; last seen {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A `POST /sandbox/videos {"fail": …}` answer: the video reaches what it promises, its
/// commands run, and a Retry among them completes it.
async fn keeps_its_promise(url: &str, answer: &str, home: &Path) {
    let a: Value = serde_json::from_str(answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
    let id = a["video_id"].as_str().expect("video_id");
    let reaches = a["reaches"].as_str().expect("reaches");
    wait_for(url, id, reaches).await;
    let mut retried = false;
    for cmd in a["commands"].as_array().expect("commands") {
        let cmd = cmd.as_str().expect("a command");
        run(cmd, home);
        retried |= cmd.ends_with("/retry");
    }
    assert_eq!(retried, reaches != "completed", "{answer}");
    wait_for(url, id, "completed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_and_everything_the_sandbox_prints_run_verbatim() {
    let commands = quick_start_commands();
    let serve = commands.first().expect("a first command");
    let args = serve
        .strip_prefix("cargo run --release -- ")
        .unwrap_or_else(|| panic!("the Quick start starts the server with cargo run: {serve}"));
    assert!(args.contains("serve --sandbox"), "{serve}");

    let home = tempfile::tempdir().expect("tempdir");
    std::fs::write(home.path().join(".curlrc"), "fail-with-body\n").expect(".curlrc");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reelstate"))
        .args(args.split_whitespace())
        .env_clear()
        .env("REELSTATE_LISTEN", "127.0.0.1:0")
        .current_dir(home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    // The printout ends with the trigger command.
    while !printed
        .last()
        .is_some_and(|l: &String| l.contains(" trigger "))
    {
        match tokio::time::timeout(WITHIN, lines.next_line()).await {
            Ok(Ok(Some(l))) => printed.push(l),
            other => panic!("the printout stopped ({other:?}):\n{}", printed.join("\n")),
        }
    }
    let text = printed.join("\n");
    let url = printed[0]
        .strip_prefix("reelstate listening on ")
        .expect("the address first")
        .to_owned();
    let addr = url.strip_prefix("http://").expect("http");
    // The store is the default one, in the fresh directory.
    assert!(home.path().join("reelstate.db").exists(), "{text}");

    let demo = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{url}/ui/videos/")))
        .unwrap_or_else(|| panic!("no demo video page in:\n{text}"))
        .to_owned();
    // The addresses to open in a browser answer pages.
    for page in [format!("{url}/ui/videos/{demo}"), format!("{url}/")] {
        let r = reqwest::get(&page).await.expect("GET page");
        assert_eq!(r.status(), 200, "{page}");
    }
    wait_for(&url, &demo, "completed").await;

    // Every printed command, as printed.
    let printed_commands: Vec<&str> = printed
        .iter()
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| !l.starts_with("in a browser:"))
        .collect();
    assert!(printed_commands.len() >= 7, "{text}");
    // The failing videos are followed all at once: each waits on the reconciler's deadline.
    let mut answers = Vec::new();
    for cmd in &printed_commands {
        let out = run(cmd, home.path());
        if cmd.contains("/sandbox/videos") {
            answers.push(out);
        } else if cmd.contains(" trigger ") {
            assert!(out.starts_with("202"), "{cmd}: {out}");
        }
    }

    // README's commands, on the port this server took.
    for cmd in &commands[1..] {
        let cmd = cmd.replace(README_PORT, addr);
        let out = run(&cmd, home.path());
        if cmd.contains("/sandbox/videos") {
            answers.push(out);
        } else {
            let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
            assert!(v["videos"].as_array().is_some_and(|l| !l.is_empty()), "{v}");
        }
    }
    assert_eq!(
        answers.len(),
        6,
        "three failure kinds, printed and in README"
    );
    futures::future::join_all(
        answers
            .iter()
            .map(|a| keeps_its_promise(&url, a, home.path())),
    )
    .await;
}
