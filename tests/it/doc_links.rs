//! The repository stands alone: every file path that its Markdown and its module docs (`//!`)
//! name exists in it, and nothing points outside it (a sibling checkout, a document that only
//! lives elsewhere). A reader who follows a reference must find what it names.

use std::path::{Path, PathBuf};

/// Top-level folders a reference to a file of ours starts with.
const ROOTS: &[&str] = &[
    "src/", "tests/", "benches/", "states/", "docs/", "fuzz/", ".ci/",
];

/// Names of documents that are not in this repository. The facts the code relies on are
/// restated, with their sources, in `docs/`.
/// (Spelled in pieces, so that this file does not itself name them to a search.)
fn outside() -> Vec<String> {
    vec![
        format!("../{}", "shared"),
        format!("{}.md", "CONTRACTS"),
        format!("{}.md", "DESIGN"),
    ]
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every text file we document or cite from, skipping build output and fuzzing data.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if matches!(
                name.as_str(),
                "target" | ".git" | "corpus" | "artifacts" | "coverage"
            ) {
                continue;
            }
            files(&path, out);
        } else if name.ends_with(".rs")
            || name.ends_with(".md")
            || name.ends_with(".toml")
            || name.ends_with(".sh")
            || name == "run"
        {
            out.push(path);
        }
    }
}

/// The text a reader takes as documentation: all of a Markdown file, the `//!` lines of a
/// Rust file (item docs and plain comments name code more than files, and test strings may
/// hold paths on purpose).
fn documentation(path: &Path, text: &str) -> Vec<(usize, String)> {
    let is_md = path.extension().is_some_and(|e| e == "md");
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            if is_md {
                Some((i + 1, line.to_owned()))
            } else {
                let t = line.trim_start();
                t.strip_prefix("//!").map(|rest| (i + 1, rest.to_owned()))
            }
        })
        .collect()
}

/// Path-like words of a line that start at one of our top-level folders, or name a Markdown
/// file of the root.
fn references(line: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let stop = |c: char| c.is_whitespace() || "`'\"()[],;|".contains(c);
    for word in line.split(stop) {
        let word = word.trim_end_matches(['.', ':', '!', '?']);
        let word = word.split('#').next().unwrap_or("");
        // Patterns and placeholders name no single file.
        if word.is_empty()
            || word.contains(['*', '{', '}', '<', '>', '…', '$'])
            || word.contains("...")
        {
            continue;
        }
        let word = word.strip_prefix("./").unwrap_or(word);
        let starts_at_root = ROOTS.iter().any(|r| word.starts_with(r));
        let root_md = !word.contains('/') && word.ends_with(".md") && word.len() > 3;
        if starts_at_root || root_md {
            refs.push(word.to_owned());
        }
    }
    refs
}

#[test]
fn every_path_the_docs_name_exists_and_none_points_outside() {
    let root = root();
    let mut all = Vec::new();
    files(&root, &mut all);
    assert!(
        all.iter().any(|p| p.ends_with("ARCHITECTURE.md")),
        "the scan found the repository's files"
    );

    let outside = outside();
    let mut problems = Vec::new();
    for path in &all {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let rel = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        for (n, line) in text.lines().enumerate() {
            for outside in &outside {
                if line.contains(outside) {
                    problems.push(format!(
                        "{rel}:{}: cites {outside}, which is not in this repository",
                        n + 1
                    ));
                }
            }
        }
        let dir = path.parent().unwrap_or(&root);
        for (n, line) in documentation(path, &text) {
            for reference in references(&line) {
                let exists = root.join(&reference).exists() || dir.join(&reference).exists();
                if !exists {
                    problems.push(format!(
                        "{rel}:{n}: names `{reference}`, which does not exist"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn references_are_found_and_patterns_skipped() {
    assert_eq!(
        references(
            "see `tests/machine_purity.rs`, and src/engine.rs: and [x](docs/airtable.md#ids)."
        ),
        vec![
            "tests/machine_purity.rs",
            "src/engine.rs",
            "docs/airtable.md"
        ]
    );
    assert_eq!(
        references("states/*.md, src/records/{a,b}.rs and fuzz/corpus/<target>"),
        Vec::<String>::new()
    );
    assert_eq!(references("ARCHITECTURE.md says"), vec!["ARCHITECTURE.md"]);
    assert_eq!(
        references("Airtable's API at https://airtable.com/src/x"),
        Vec::<String>::new()
    );
}
