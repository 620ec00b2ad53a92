//! What an operator deploying from `deploy/` meets: a first `serve` that names every setting
//! still to write (by environment variable, as the env file spells them, and by flag), and
//! the systemd unit as `systemd-analyze` judges it, with the built binary where the unit
//! expects one.
//!
//! `systemd-analyze` (Debian's `systemd`) is run where it is installed; without it the unit's
//! test says so and passes over itself, except under `CI=true`, where a missing tool is a
//! failure (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `--threshold` is on systemd's internal scale, ten times the printed level: the unit is
/// printed as 1.2 ("OK") by systemd 252, so 12 here. 15 leaves a little room for a systemd
/// that weighs a setting differently, no more: the unit without ProtectSystem=strict,
/// CapabilityBoundingSet=, SystemCallFilter= and PrivateDevices= prints 5.0. docs/deploy.md
/// states both numbers.
const SECURITY_THRESHOLD: u32 = 15;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary with nothing but PATH: what a newcomer's first run, or a unit with an empty
/// env file, gives it.
fn bare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reelstate"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run the reelstate binary")
}

#[test]
fn a_first_serve_names_every_missing_setting_in_one_message() {
    let out = bare(&["serve", "--listen", "127.0.0.1:0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // Not one per run: every required setting, by variable and flag, in this one message.
    for (env, flag) in [
        ("GOAPI_WEBHOOK_SECRET", "--goapi-webhook-secret"),
        ("REELSTATE_SIGNING_SECRET", "--signing-secret"),
        ("REELSTATE_ADMIN_TOKEN", "--admin-token"),
        ("PUBLIC_BASE_URL", "--public-base-url"),
        ("NCA_API_URL", "--nca-api-url"),
        ("NCA_API_KEY", "--nca-api-key"),
    ] {
        assert!(
            err.contains(&format!("{env} ({flag})")),
            "{env} ({flag}) not named in:\n{err}"
        );
    }
    assert!(
        err.contains("6 settings are missing or invalid"),
        "the count, so that a reader knows the list is whole:\n{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("  - ")).count(),
        6,
        "{err}"
    );
    // It refused before opening a store: nothing to clean up in the working directory.
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn invalid_values_are_listed_beside_the_missing_ones() {
    let out = Command::new(env!("CARGO_BIN_EXE_reelstate"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("REELSTATE_SIGNING_SECRET", "too-short")
        .env("PUBLIC_BASE_URL", "reelstate.example")
        .env("REELSTATE_MUSIC_VOLUME", "20")
        .env("AIRTABLE_TOKEN", "patXXXXXXXX")
        .output()
        .expect("run the reelstate binary");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for needle in [
        "REELSTATE_SIGNING_SECRET (--signing-secret): 9 bytes, at least 16",
        "PUBLIC_BASE_URL (--public-base-url): must be an absolute http(s) URL",
        "REELSTATE_MUSIC_VOLUME (--music-volume): must be between 0 and 1, got 20",
        "AIRTABLE_BASE_ID (--airtable-base-id): not set, while AIRTABLE_TOKEN is",
        "GOAPI_WEBHOOK_SECRET (--goapi-webhook-secret)",
        "REELSTATE_ADMIN_TOKEN (--admin-token)",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
    // An invalid PUBLIC_BASE_URL is one problem, not also "not set".
    assert_eq!(err.matches("PUBLIC_BASE_URL (").count(), 1, "{err}");
    // The secret's value is never echoed.
    assert!(
        !err.contains("too-short") && !err.contains("patXXXXXXXX"),
        "{err}"
    );
}

#[test]
fn check_airtable_names_the_environment_variables_it_lacks() {
    for command in [&["check-airtable"][..], &["mapping", "--from-base"][..]] {
        let out = bare(command);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command:?}: {err}");
        for named in [
            "AIRTABLE_TOKEN (--airtable-token)",
            "AIRTABLE_BASE_ID (--airtable-base-id)",
        ] {
            assert!(err.contains(named), "{command:?}: {named} not in:\n{err}");
        }
    }
    // With the token alone, only the base id is asked for.
    let out = Command::new(env!("CARGO_BIN_EXE_reelstate"))
        .arg("check-airtable")
        .env_clear()
        .env("AIRTABLE_TOKEN", "patXXXXXXXX")
        .output()
        .expect("run the reelstate binary");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("AIRTABLE_BASE_ID (--airtable-base-id)"),
        "{err}"
    );
    assert!(!err.contains("AIRTABLE_TOKEN ("), "{err}");
}

/// A tool the deployment checks need: its path, or None after saying why the check is
/// skipped. Under `CI=true` a missing tool fails the test instead: CI installs it.
pub fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "CI=true but `{name}` is not installed (Debian package `{package}`; .ci/run installs it)"
        );
        eprintln!("SKIPPED: `{name}` not found (install Debian's `{package}` to run this check)");
    }
    found
}

/// The unit as shipped, with ExecStart pointing at the binary this build made, written
/// into `dir`.
fn unit_with_built_binary(dir: &Path) -> PathBuf {
    let shipped = std::fs::read_to_string(root().join("deploy/reelstate.service"))
        .expect("deploy/reelstate.service");
    let binary = env!("CARGO_BIN_EXE_reelstate");
    let mut replaced = 0;
    let text: String = shipped
        .lines()
        .map(|line| match line.strip_prefix("ExecStart=") {
            Some(rest) => {
                replaced += 1;
                let args = rest.split_once(' ').map(|(_, a)| a).unwrap_or("");
                assert_eq!(
                    rest.split(' ').next(),
                    Some("/usr/local/bin/reelstate"),
                    "docs/deploy.md installs the binary at /usr/local/bin/reelstate"
                );
                format!("ExecStart={binary} {args}\n")
            }
            None => format!("{line}\n"),
        })
        .collect();
    assert_eq!(replaced, 1, "one ExecStart= line in the unit");
    let path = dir.join("reelstate.service");
    std::fs::write(&path, text).expect("write the unit");
    path
}

fn run(tool: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", tool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_unit_passes_systemd_analyze_verify_and_its_security_threshold() {
    let Some(analyze) = tool("systemd-analyze", "systemd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_with_built_binary(dir.path());
    let unit = unit.to_str().expect("utf-8 path");

    // `verify` exits 0 on some warnings; any line naming the unit is a finding to fix.
    let (ok, text) = run(&analyze, &["verify", unit]);
    assert!(ok, "systemd-analyze verify failed:\n{text}");
    let findings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("reelstate.service"))
        .collect();
    assert!(findings.is_empty(), "systemd-analyze verify:\n{text}");

    let threshold = format!("--threshold={SECURITY_THRESHOLD}");
    let (ok, text) = run(&analyze, &["security", "--offline=true", &threshold, unit]);
    let score = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for reelstate.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{text}"));
    assert!(
        ok && score * 10.0 <= f64::from(SECURITY_THRESHOLD),
        "exposure {score} is above the threshold {SECURITY_THRESHOLD} / 10:\n{text}"
    );
    eprintln!(
        "systemd-analyze security: reelstate.service is at {score} (threshold {SECURITY_THRESHOLD} / 10)"
    );
}

/// The test above can fail: the same unit without its sandboxing scores above the threshold
/// and `systemd-analyze security` exits non-zero.
#[test]
fn a_unit_without_its_hardening_fails_the_threshold() {
    let Some(analyze) = tool("systemd-analyze", "systemd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_with_built_binary(dir.path());
    let text = std::fs::read_to_string(&unit).expect("read");
    let weakened: String = text
        .lines()
        .filter(|l| {
            ![
                "ProtectSystem=",
                "CapabilityBoundingSet=",
                "SystemCallFilter=",
                "PrivateDevices=",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&unit, weakened).expect("write");
    let threshold = format!("--threshold={SECURITY_THRESHOLD}");
    let (ok, text) = run(
        &analyze,
        &[
            "security",
            "--offline=true",
            &threshold,
            unit.to_str().unwrap(),
        ],
    );
    assert!(!ok, "a weakened unit passed the threshold:\n{text}");
}

#[test]
fn the_env_example_lists_every_setting_of_serve() {
    let example = std::fs::read_to_string(root().join("deploy/reelstate.env.example"))
        .expect("deploy/reelstate.env.example");
    let help = bare(&["serve", "--help"]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    // Every `[env: NAME=…]` of the help is a setting the example must show (set, or
    // commented out with its default).
    let settings: Vec<&str> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .collect();
    assert!(settings.len() > 30, "parsed the help: {settings:?}");
    let missing: Vec<&&str> = settings
        .iter()
        .filter(|name| {
            !example.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.starts_with(&format!("{name}="))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/reelstate.env.example lacks {missing:?}"
    );
}

/// The env file as an operator first copies it: its required lines are exactly what the
/// binary asks for, so that filling them in is enough to start.
#[test]
fn the_env_example_leaves_empty_exactly_the_settings_serve_requires() {
    let example = std::fs::read_to_string(root().join("deploy/reelstate.env.example"))
        .expect("deploy/reelstate.env.example");
    let given: Vec<(&str, &str)> = example
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            l.split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {l}"))
        })
        .collect();
    let mut empty: Vec<&str> = given
        .iter()
        .filter(|(_, v)| v.is_empty())
        .map(|(k, _)| *k)
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_reelstate"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(given.iter().copied())
        .output()
        .expect("run the reelstate binary");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let mut asked: Vec<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("  - "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    empty.sort_unstable();
    asked.sort_unstable();
    assert_eq!(empty, asked, "{err}");
}

/// The proxy example publishes the webhooks and nothing else: its TLS server has exactly
/// two locations, `/webhooks/` proxied to the service and `/` answered 404.
#[test]
fn the_proxy_example_publishes_only_the_webhooks() {
    let conf =
        std::fs::read_to_string(root().join("deploy/nginx.conf")).expect("deploy/nginx.conf");
    let tls = conf
        .split("server {")
        .find(|block| block.contains("listen 443 ssl"))
        .expect("a TLS server block");
    let mut locations = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in tls.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        if let Some(rest) = line.strip_prefix("location ") {
            current = Some((rest.trim_end_matches('{').trim().to_owned(), String::new()));
        } else if line == "}" {
            locations.extend(current.take());
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    let names: Vec<&str> = locations.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["^~ /webhooks/", "/"], "{conf}");
    assert!(
        locations[0].1.contains("proxy_pass http://127.0.0.1:8080;"),
        "{}",
        locations[0].1
    );
    assert_eq!(locations[1].1.trim(), "return 404;");
    assert_eq!(
        conf.matches("proxy_pass").count(),
        1,
        "one proxied location"
    );
}
