//! The documents a reader starts from describe the product as it is today. README.md,
//! ARCHITECTURE.md and BENCHMARKS.md name no issue, no pass of the lab notebook and no
//! commit (history lives in git and in the benchmark log, `docs/bench-log.md`);
//! BENCHMARKS.md stays short and opens with its table of current figures; and every command
//! in that table runs something that exists: a bench target of Cargo.toml, a test function,
//! an environment variable or flag the code reads, a script of the repository.
//!
//! Each checker is a plain function of text, so the `*_are_caught` tests below can plant a
//! bad example and watch it be reported.

use std::path::{Path, PathBuf};

/// The documents that must carry no history.
const DOCUMENTS: &[&str] = &["README.md", "ARCHITECTURE.md", "BENCHMARKS.md"];

/// BENCHMARKS.md must stay a document a reader gets through: fewer lines than this.
const BENCHMARKS_MAX_LINES: usize = 400;

/// The columns of the current figures' table, in order.
const FIGURES_COLUMNS: &[&str] = &["what", "figure", "command", "machine", "date"];

const ORDINALS: &[&str] = &[
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
];

/// Flags cargo itself reads (`--profile` takes a value), and those of the test harness
/// (after `--`). Any other flag must be one the code reads.
const CARGO_FLAGS: &[&str] = &[
    "--bench",
    "--test",
    "--lib",
    "--release",
    "--profile",
    "--locked",
    "--no-run",
];
const HARNESS_FLAGS: &[&str] = &[
    "--nocapture",
    "--exact",
    "--ignored",
    "--include-ignored",
    "--show-output",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---- (a) history: issues, passes, commits ----------------------------------------------

/// What a line names of the project's history: issue references (`issue 14`, `#14`), pass
/// references (`seventh pass`, `7th pass`) and commit hashes (7 to 40 hex digits in
/// backticks, or a word of them with at least one digit and one letter).
fn history(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let lower = line.to_lowercase();
    let bytes = lower.as_bytes();

    // "issue 14", "issues 12, 13".
    for (at, _) in lower.match_indices("issue") {
        if at > 0 && bytes[at - 1].is_ascii_alphabetic() {
            continue;
        }
        let after = &lower[at + "issue".len()..];
        let rest = after.strip_prefix('s').unwrap_or(after);
        let spaced = rest.trim_start_matches(' ');
        if spaced.len() < rest.len() && spaced.starts_with(|c: char| c.is_ascii_digit()) {
            found.push(format!("issue reference at `{}`", excerpt(line, at)));
        }
    }
    // "#14" as an issue: a '#' after no word character, followed by a digit.
    for (at, _) in lower.match_indices('#') {
        let before_ok =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'&');
        if before_ok && bytes.get(at + 1).is_some_and(u8::is_ascii_digit) {
            found.push(format!("issue reference at `{}`", excerpt(line, at)));
        }
    }

    // "seventh pass", "7th pass".
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    for pair in words.windows(2) {
        if pair[1] != "pass" {
            continue;
        }
        let w = pair[0];
        let numbered = w.len() > 2 && {
            let (digits, suffix) = w.split_at(w.len() - 2);
            digits.chars().all(|c| c.is_ascii_digit()) && ["st", "nd", "rd", "th"].contains(&suffix)
        };
        if ORDINALS.contains(&w) || numbered {
            found.push(format!("pass reference `{w} pass`"));
        }
    }

    // Commit hashes in backticks.
    for (i, span) in line.split('`').enumerate() {
        if i % 2 == 1 && is_hex(span) && !span.chars().all(|c| c.is_ascii_digit()) {
            found.push(format!("commit hash `{span}`"));
        }
    }
    // Commit hashes as words.
    let stop = |c: char| c.is_whitespace() || "`'\"()[]{},;:|<>/=*#".contains(c);
    for word in line.split(stop) {
        let word = word.trim_end_matches(['.', '!', '?']);
        if is_hex(word)
            && word.chars().any(|c| c.is_ascii_digit())
            && word.chars().any(|c| c.is_ascii_alphabetic())
            && !found.iter().any(|f| f == &format!("commit hash `{word}`"))
        {
            found.push(format!("commit hash `{word}`"));
        }
    }
    found
}

fn is_hex(s: &str) -> bool {
    (7..=40).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn excerpt(line: &str, at: usize) -> String {
    line[at..].chars().take(24).collect()
}

/// Every history reference of a document, with its line number.
fn history_in(text: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .flat_map(|(n, line)| {
            history(line)
                .into_iter()
                .map(move |h| format!("line {}: {h}", n + 1))
        })
        .collect()
}

#[test]
fn the_readers_documents_name_no_issue_pass_or_commit() {
    let mut problems = Vec::new();
    for doc in DOCUMENTS {
        for p in history_in(&read(doc)) {
            problems.push(format!("{doc}: {p}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn history_is_caught() {
    for bad in [
        "fixed in issue 14",
        "after issues 12, 13 and 14",
        "see Issue 29 for the notes",
        "as #29 asked",
        "(#7)",
        "the seventh pass",
        "on the Second pass, and",
        "its 7th pass",
        "the 21st pass",
        "on `ee53df7`",
        "at 452e9d2 (a CI run)",
        "commit 634db9b.",
        "`2616d7b2616d7b2616d7b2616d7b2616d7b2616d`",
    ] {
        assert!(!history(bad).is_empty(), "not caught: {bad:?}");
    }
    for good in [
        "the issue of durability",
        "a 202 is an answer; issues are not",
        "## Quick start",
        "see [the page](#the-operator-page)",
        "`https://…/29b8adf2.mp3` and `recA1b2C3d4E5f6G7`",
        "the held pass syncs only its own pages",
        "a default of 1048576 bytes, `1048576`",
        "`add_music:recA1b2C3d4E5f6G7:1`",
        "the first passes, then",
        "&#39;",
    ] {
        assert_eq!(history(good), Vec::<String>::new(), "flagged: {good:?}");
    }
    assert_eq!(
        history_in("fine\nthe seventh pass"),
        vec!["line 2: pass reference `seventh pass`"]
    );
}

// ---- (b) BENCHMARKS.md's shape -----------------------------------------------------------

/// The rows (cells, trimmed) of the document's first table, header first, and the
/// level-two headings met before it.
fn first_table(text: &str) -> (Vec<Vec<String>>, Vec<String>) {
    let mut headings = Vec::new();
    let mut rows = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('|') {
            rows.push(cells(t));
        } else if !rows.is_empty() {
            break;
        } else if let Some(h) = t.strip_prefix("## ") {
            headings.push(h.to_owned());
        }
    }
    // The separator row (`| --- |`) is no data.
    if rows.len() > 1
        && rows[1]
            .iter()
            .all(|c| c.chars().all(|ch| "-: ".contains(ch)))
    {
        rows.remove(1);
    }
    (rows, headings)
}

/// The cells of a table row; `\|` stays inside its cell.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&'|') {
            out.last_mut().unwrap().push('|');
            chars.next();
        } else if c == '|' {
            out.push(String::new());
        } else {
            out.last_mut().unwrap().push(c);
        }
    }
    out.into_iter().map(|c| c.trim().to_owned()).collect()
}

fn benchmarks_shape(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let lines = text.lines().count();
    if lines >= BENCHMARKS_MAX_LINES {
        problems.push(format!(
            "{lines} lines; under {BENCHMARKS_MAX_LINES} wanted (the dated runs belong in docs/bench-log.md)"
        ));
    }
    let (rows, headings) = first_table(text);
    let header: Vec<String> = rows
        .first()
        .map(|h| h.iter().map(|c| c.to_lowercase()).collect())
        .unwrap_or_default();
    if header != FIGURES_COLUMNS {
        problems.push(format!(
            "the first table's columns are {header:?}; the current figures' {FIGURES_COLUMNS:?} wanted"
        ));
    }
    if rows.len() < 2 {
        problems.push("the current figures' table has no figure".to_owned());
    }
    if headings.iter().any(|h| h != "Current figures") {
        problems.push(format!("sections before the current figures: {headings:?}"));
    }
    problems
}

#[test]
fn benchmarks_is_short_and_opens_with_the_current_figures() {
    let problems = benchmarks_shape(&read("BENCHMARKS.md"));
    assert!(
        problems.is_empty(),
        "BENCHMARKS.md: {}",
        problems.join("\n")
    );
}

#[test]
fn a_long_or_misordered_benchmarks_is_caught() {
    let good = "# B\n\n## Current figures\n\n| what | figure | command | machine | date |\n| --- | --- | --- | --- | --- |\n| a | 1 | `cargo bench --bench intake` | 2 cores | today |\n";
    assert_eq!(benchmarks_shape(good), Vec::<String>::new());

    let long = format!("{good}{}", "more\n".repeat(BENCHMARKS_MAX_LINES));
    assert_eq!(benchmarks_shape(&long).len(), 1, "a long file is caught");

    let history_first = "# B\n\n## Intake (seventh pass)\n\n| build | ack/s |\n| --- | --- |\n| x | 1 |\n\n## Current figures\n\n| what | figure | command | machine | date |\n";
    assert_eq!(
        benchmarks_shape(history_first).len(),
        2,
        "another table and section first are caught"
    );

    let empty = "## Current figures\n\n| what | figure | command | machine | date |\n| --- | --- | --- | --- | --- |\n";
    assert_eq!(benchmarks_shape(empty).len(), 1, "a table without figures");
}

// ---- (c) every command of the figures' table exists -------------------------------------

/// What the commands may name: bench targets, test targets, the Rust sources (for test
/// functions, modules, environment variables and flags), the repository's files.
struct Repo {
    root: PathBuf,
    benches: Vec<String>,
    test_targets: Vec<String>,
    sources: String,
}

impl Repo {
    fn load() -> Repo {
        let root = root();
        let mut benches = Vec::new();
        let mut in_bench = false;
        for line in read("Cargo.toml").lines() {
            let t = line.trim();
            if t.starts_with('[') {
                in_bench = t == "[[bench]]";
            } else if in_bench && let Some(v) = t.strip_prefix("name") {
                benches.push(
                    v.trim_start()
                        .trim_start_matches('=')
                        .trim()
                        .trim_matches('"')
                        .to_owned(),
                );
            }
        }
        let mut test_targets = Vec::new();
        for entry in std::fs::read_dir(root.join("tests"))
            .expect("tests/")
            .flatten()
        {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() && path.join("main.rs").exists() {
                test_targets.push(name);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                test_targets.push(stem.to_owned());
            }
        }
        let mut files = Vec::new();
        for dir in ["src", "tests", "benches"] {
            rust_files(&root.join(dir), &mut files);
        }
        let sources = files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect::<Vec<_>>()
            .join("\n");
        Repo {
            root,
            benches,
            test_targets,
            sources,
        }
    }

    /// An environment variable the code reads names it in a string of its own: `"NAME"`
    /// (`std::env::var("NAME")`, a helper's argument, clap's `env = "NAME"`).
    fn reads_env(&self, name: &str) -> bool {
        self.sources.contains(&format!("\"{name}\""))
    }

    fn has_fn(&self, name: &str) -> bool {
        self.sources.contains(&format!("fn {name}("))
            || self.sources.contains(&format!("fn {name}<"))
    }

    fn has_mod(&self, name: &str) -> bool {
        self.sources.contains(&format!("mod {name};"))
            || self.sources.contains(&format!("mod {name} {{"))
    }

    /// A flag of the service's command line: clap derives `--allow-private-urls` from the
    /// field `allow_private_urls`.
    fn reads_flag(&self, text: &str, flag: &str) -> bool {
        let bare = flag.trim_start_matches('-');
        text.contains(&format!("\"{flag}\""))
            || text.contains(&format!("{}:", bare.replace('-', "_")))
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// What is wrong with one command of the table: a name that does not exist.
fn command_problems(command: &str, repo: &Repo) -> Vec<String> {
    let mut problems = Vec::new();
    let words: Vec<String> = command
        .split_whitespace()
        .map(|w| w.trim_matches(['\'', '"']).to_owned())
        .collect();
    let mut i = 0;
    // Leading NAME=value: environment variables the code must read.
    while let Some((name, _)) = words.get(i).and_then(|w| w.split_once('=')) {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            break;
        }
        if !repo.reads_env(name) {
            problems.push(format!("`{command}`: no code reads {name}"));
        }
        i += 1;
    }
    let Some(program) = words.get(i) else {
        problems.push(format!("`{command}`: no program"));
        return problems;
    };
    let args = &words[i + 1..];
    if program == "cargo" {
        let sub = args.first().map(String::as_str).unwrap_or("");
        if sub != "bench" && sub != "test" {
            problems.push(format!(
                "`{command}`: cargo {sub} is neither bench nor test"
            ));
        }
        let mut harness = false;
        let mut j = 1;
        while j < args.len() {
            let a = args[j].as_str();
            let next = args.get(j + 1).map(String::as_str).unwrap_or("");
            if a == "--" {
                harness = true;
            } else if harness {
                if a.starts_with("--") && !HARNESS_FLAGS.contains(&a) {
                    problems.push(format!("`{command}`: the test harness has no {a}"));
                }
            } else if a == "--bench" {
                if !repo.benches.iter().any(|b| b == next) {
                    problems.push(format!("`{command}`: Cargo.toml has no [[bench]] {next:?}"));
                }
                j += 1;
            } else if a == "--test" {
                if !repo.test_targets.iter().any(|t| t == next) {
                    problems.push(format!("`{command}`: tests/ has no test target {next:?}"));
                }
                j += 1;
            } else if a == "--profile" {
                j += 1;
            } else if a.starts_with('-') {
                if !CARGO_FLAGS.contains(&a) {
                    problems.push(format!("`{command}`: cargo has no {a}"));
                }
            } else if sub == "test" {
                // A test filter: its last segment names a test function, or a module.
                let segments: Vec<&str> = a.split("::").collect();
                let last = segments
                    .iter()
                    .rev()
                    .find(|s| !s.is_empty())
                    .copied()
                    .unwrap_or("");
                let is_module = a.ends_with("::");
                let found = if is_module {
                    repo.has_mod(last)
                } else {
                    repo.has_fn(last)
                };
                if !found {
                    problems.push(format!(
                        "`{command}`: no {} {last} in src/ or tests/",
                        if is_module { "module" } else { "test function" }
                    ));
                }
                for module in &segments[..segments.len().saturating_sub(1)] {
                    if !module.is_empty() && !repo.has_mod(module) && !is_module {
                        problems.push(format!("`{command}`: no module {module}"));
                    }
                }
            }
            j += 1;
        }
    } else if program.contains('/') {
        let path = repo.root.join(program);
        match std::fs::read_to_string(&path) {
            Err(_) => problems.push(format!("`{command}`: {program} does not exist")),
            Ok(script) => {
                for a in args.iter().filter(|a| a.starts_with("--")) {
                    if !script.contains(a.as_str()) {
                        problems.push(format!("`{command}`: {program} reads no {a}"));
                    }
                }
            }
        }
    } else if program == "reelstate" {
        for a in args.iter().filter(|a| a.starts_with("--")) {
            if !repo.reads_flag(&repo.sources, a) {
                problems.push(format!("`{command}`: reelstate has no {a}"));
            }
        }
    } else {
        problems.push(format!(
            "`{command}`: {program} is not a command of this repository"
        ));
    }
    problems
}

/// The commands (backticked) of the figures' table's command column.
fn table_commands(text: &str) -> Vec<String> {
    let (rows, _) = first_table(text);
    let Some(column) = rows
        .first()
        .and_then(|h| h.iter().position(|c| c.eq_ignore_ascii_case("command")))
    else {
        return Vec::new();
    };
    rows.iter()
        .skip(1)
        .filter_map(|r| r.get(column))
        .flat_map(|cell| {
            cell.split('`')
                .enumerate()
                .filter(|(i, s)| i % 2 == 1 && !s.trim().is_empty())
                .map(|(_, s)| s.to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_command_of_the_current_figures_exists() {
    let repo = Repo::load();
    let commands = table_commands(&read("BENCHMARKS.md"));
    assert!(
        commands.len() >= 8,
        "the figures' table names its commands: {commands:?}"
    );
    let problems: Vec<String> = commands
        .iter()
        .flat_map(|c| command_problems(c, &repo))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for bench in ["intake", "airtable", "faults", "soak"] {
        assert!(
            commands
                .iter()
                .any(|c| c.ends_with(&format!("--bench {bench}"))),
            "no figure of `cargo bench --bench {bench}` in {commands:?}"
        );
    }
    assert!(commands.iter().any(|c| c.starts_with("fuzz/run.sh")));
}

#[test]
fn commands_naming_what_does_not_exist_are_caught() {
    let repo = Repo::load();
    for good in [
        "cargo bench --bench intake",
        "BENCH_SECONDS=60 cargo bench --bench intake",
        "REELSTATE_RETENTION_DAYS=0.001 SOAK_SECONDS=300 cargo bench --bench soak",
        "cargo test --test it documents::",
        "cargo test --test it documents::history_is_caught -- --nocapture",
        "cargo bench --bench airtable --profile dev",
        "fuzz/run.sh 120",
        "reelstate serve --allow-private-urls",
    ] {
        assert_eq!(
            command_problems(good, &repo),
            Vec::<String>::new(),
            "{good}"
        );
    }
    for bad in [
        "cargo bench --bench nosuch",
        "NO_SUCH_SETTING=1 cargo bench --bench intake",
        "cargo bench --bench intake --no-such-cargo-flag",
        "cargo test --test nosuch",
        "cargo test --test it documents::no_such_test_function",
        "cargo test --test it no_such_module::",
        "cargo test --test it documents:: -- --no-such-harness-flag",
        "fuzz/no_such_script.sh 120",
        "fuzz/run.sh --no-such-option",
        "reelstate serve --no-such-setting",
        "make bench",
    ] {
        assert_eq!(command_problems(bad, &repo).len(), 1, "not caught: {bad}");
    }
    let planted = "| what | figure | command | machine | date |\n| --- | --- | --- | --- | --- |\n| x | 1 | `cargo bench --bench gone` and `fuzz/run.sh 1` | m | d |\n";
    assert_eq!(
        table_commands(planted),
        vec!["cargo bench --bench gone", "fuzz/run.sh 1"]
    );
}
