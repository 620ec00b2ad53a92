//! The state machine stays pure (ARCHITECTURE.md, invariant 1): no runtime, no HTTP, no JSON
//! values, no file system or network, no clock, no randomness in `src/machine/`. The
//! compiler cannot say that, so this test reads the source.

use std::path::{Path, PathBuf};

const FORBIDDEN: [&str; 11] = [
    "tokio",
    "warp",
    "reqwest",
    "serde_json",
    "std::fs",
    "std::net",
    "Utc::now",
    "SystemTime",
    "Instant::now",
    "rand::",
    "Uuid::new_v4",
];

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Occurrences of `word` in `line` as a whole identifier path: `tokio::spawn` matches
/// `tokio` but `my_tokio_like` does not.
fn mentions(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        let starts_clean = before.is_none_or(|c| !is_ident(c));
        let ends_clean = !word.ends_with(is_ident) || after.is_none_or(|c| !is_ident(c));
        starts_clean && ends_clean
    })
}

/// `file:line: `word` in `code`` for every forbidden identifier. Comment lines are
/// skipped: the module's docs name what it must not use.
fn violations(file: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for word in FORBIDDEN.iter().filter(|w| mentions(line, w)) {
            out.push(format!("{file}:{}: `{word}` in `{}`", n + 1, line.trim()));
        }
    }
    out
}

/// Every `.rs` file below `dir`, its submodules' folders included (`decide/…`).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
    {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

fn machine_sources() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/machine");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    files.sort();
    files
}

#[test]
fn the_machine_module_is_pure() {
    let files = machine_sources();
    // An empty or moved directory must not make this test pass by scanning nothing.
    assert!(
        files.iter().any(|f| f.ends_with("decide.rs")),
        "src/machine/decide.rs not found among {files:?}"
    );
    // The steps of decide() live in its folder: they are scanned too.
    assert!(
        files.iter().any(|f| f.ends_with("decide/answers.rs")),
        "src/machine/decide/answers.rs not found among {files:?}"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable source");
        let name = f.strip_prefix(root).unwrap_or(f).display().to_string();
        found.extend(violations(&name, &text));
    }
    assert!(
        found.is_empty(),
        "the state machine must stay pure (no IO, clock, randomness or wire formats):\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_scan_finds_what_it_must() {
    let text = "//! no tokio here\nuse tokio::sync::Mutex;\nlet t = chrono::Utc::now();\nlet my_tokio_like = 1;\nlet x = rand::random::<u8>();\nuse std::fs::read;\n";
    assert_eq!(
        violations("src/machine/x.rs", text),
        vec![
            "src/machine/x.rs:2: `tokio` in `use tokio::sync::Mutex;`",
            "src/machine/x.rs:3: `Utc::now` in `let t = chrono::Utc::now();`",
            "src/machine/x.rs:5: `rand::` in `let x = rand::random::<u8>();`",
            "src/machine/x.rs:6: `std::fs` in `use std::fs::read;`",
        ]
    );
}
