//! The Prometheus alerts of `deploy/prometheus/alerts.yml` against the service they watch:
//! every series an alert reads is one the running binary exposes (an alert on a misspelt
//! series never fires, silently), every alert has its section in docs/runbook.md and a
//! `runbook_url` to it, and `promtool` accepts the rules and passes their unit tests
//! (`alerts_test.yml`). promtool comes from Debian's `prometheus`; without it that part says
//! so and passes over itself, except under `CI=true`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::deploy::tool;
use crate::support::app::AppBuilder;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One rule of alerts.yml, as far as these checks need it.
#[derive(Debug, Default)]
struct Alert {
    name: String,
    expr: String,
    severity: Option<String>,
    runbook_url: Option<String>,
}

/// A line-based reading of the rules file (its shape is ours: `- alert:` starts a rule,
/// `expr:` is one line or a `|` block indented below it).
fn alerts() -> Vec<Alert> {
    let text = read("deploy/prometheus/alerts.yml");
    let mut alerts: Vec<Alert> = Vec::new();
    let mut in_expr_block = None::<usize>;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if let Some(block_indent) = in_expr_block {
            if indent > block_indent && !t.is_empty() {
                let a = alerts.last_mut().expect("an alert");
                a.expr.push_str(t);
                a.expr.push('\n');
                continue;
            }
            in_expr_block = None;
        }
        if let Some(name) = t.strip_prefix("- alert: ") {
            alerts.push(Alert {
                name: name.to_owned(),
                ..Alert::default()
            });
        } else if let Some(a) = alerts.last_mut() {
            if let Some(expr) = t.strip_prefix("expr: ") {
                if expr == "|" {
                    in_expr_block = Some(indent);
                } else {
                    a.expr = expr.to_owned();
                }
            } else if let Some(s) = t.strip_prefix("severity: ") {
                a.severity = Some(s.to_owned());
            } else if let Some(u) = t.strip_prefix("runbook_url: ") {
                a.runbook_url = Some(u.to_owned());
            }
        }
    }
    alerts
}

/// The series names an expression reads (`reelstate_…` words).
fn series(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("reelstate_"))
        .map(str::to_owned)
        .collect()
}

/// The bucket bounds an expression names (`le="30.0"`).
fn bucket_bounds(expr: &str) -> BTreeSet<String> {
    // The label `le` itself, not the end of another label's name (`lifecycle="video"`).
    expr.match_indices("le=\"")
        .filter(|(at, _)| {
            !expr[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .filter_map(|(at, m)| expr[at + m.len()..].split('"').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_alert_has_a_severity_and_its_runbook_section() {
    let alerts = alerts();
    assert_eq!(
        alerts.len(),
        21,
        "one alert per row of the README's Metrics table: {alerts:#?}"
    );
    let runbook = read("docs/runbook.md");
    let sections: BTreeSet<&str> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .collect();
    let mut problems = Vec::new();
    for a in &alerts {
        if !matches!(a.severity.as_deref(), Some("page" | "ticket")) {
            problems.push(format!("{}: severity {:?}", a.name, a.severity));
        }
        if !sections.contains(a.name.as_str()) {
            problems.push(format!("{}: no `## {}` in docs/runbook.md", a.name, a.name));
        }
        // GitHub's anchor of a heading made of one word is that word in lower case.
        let anchor = format!("docs/runbook.md#{}", a.name.to_lowercase());
        if a.runbook_url.as_deref() != Some(anchor.as_str()) {
            problems.push(format!(
                "{}: runbook_url {:?}, expected {anchor}",
                a.name, a.runbook_url
            ));
        }
        if a.expr.trim().is_empty() || series(&a.expr).is_empty() {
            problems.push(format!("{}: no expression read: {:?}", a.name, a.expr));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The series a scrape shows: its samples' names, and those its `# TYPE` lines declare.
fn scraped_series(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                panic!("odd TYPE line {line:?}");
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#')
            && let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty())
        {
            names.insert(name.to_owned());
        }
    }
    names
}

/// The running binary's /metrics, once a sandbox video went through its whole lifecycle
/// (webhooks acknowledged and processed, transitions, effects): most families are shown
/// only once they have a sample.
async fn metrics_after_a_lifecycle() -> String {
    let app = AppBuilder::new()
        .env("REELSTATE_SANDBOX", "true")
        .spawn()
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = app
            .client
            .get(format!("{}/metrics", app.url))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        if text.contains("to=\"completed\"") {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sandbox's demo video did not complete:\n{text}\nlog:\n{}",
            app.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn every_series_the_alerts_read_is_one_the_service_exposes() {
    let text = metrics_after_a_lifecycle().await;
    let scraped = scraped_series(&text);
    let bounds: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.contains("_bucket{"))
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .collect();
    assert!(bounds.contains("+Inf"), "{text}");

    let mut problems = Vec::new();
    let mut from_the_registry = Vec::new();
    for a in alerts() {
        for s in series(&a.expr) {
            if scraped.contains(&s) {
                continue;
            }
            // Counters a lifecycle does not move (retries, reconciliations, pruning, Airtable's
            // when no base is configured) have no sample yet, and a family without a sample
            // is not in the exposition. The binary's own registry is asked instead.
            let counted = reelstate::metrics::Metrics::default()
                .counter_names()
                .contains(&s.as_str());
            if counted {
                from_the_registry.push(s);
            } else {
                problems.push(format!("{}: {s} is not in /metrics", a.name));
            }
        }
        for le in bucket_bounds(&a.expr) {
            if !bounds.contains(le.as_str()) {
                problems.push(format!("{}: no bucket le=\"{le}\" in /metrics", a.name));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n/metrics:\n{text}",
        problems.join("\n")
    );
    eprintln!("not yet moved in the lifecycle, found in the registry: {from_the_registry:?}");
}

/// Every series family of the README's Metrics table is watched by some alert.
#[test]
fn every_family_of_the_readme_is_watched() {
    let readme = read("README.md");
    let table = readme
        .split("## Metrics")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README's Metrics section");
    let families: BTreeSet<&str> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `reelstate_")?.split('`').next())
        .collect();
    assert_eq!(families.len(), 21, "{families:?}");
    let watched: BTreeSet<String> = alerts()
        .iter()
        .flat_map(|a| series(&a.expr))
        .map(|s| {
            s.trim_start_matches("reelstate_")
                .trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .to_owned()
        })
        .collect();
    let unwatched: Vec<&&str> = families.iter().filter(|f| !watched.contains(**f)).collect();
    assert!(unwatched.is_empty(), "no alert reads {unwatched:?}");
}

fn promtool(args: &[&str]) -> Option<String> {
    let promtool = tool("promtool", "prometheus")?;
    let out = Command::new(&promtool)
        .args(args)
        .current_dir(root().join("deploy/prometheus"))
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    Some(text)
}

#[test]
fn promtool_accepts_the_rules_and_passes_their_unit_tests() {
    let Some(checked) = promtool(&["check", "rules", "alerts.yml"]) else {
        return;
    };
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", alerts().len())),
        "{checked}"
    );
    let tested = promtool(&["test", "rules", "alerts_test.yml"]).expect("promtool is there");
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert is tested: it appears as an `alertname:` of the unit tests.
    let tests = read("deploy/prometheus/alerts_test.yml");
    let untested: Vec<String> = alerts()
        .into_iter()
        .map(|a| a.name)
        .filter(|name| !tests.contains(&format!("alertname: {name}\n")))
        .collect();
    assert!(untested.is_empty(), "no unit test for {untested:?}");
}
