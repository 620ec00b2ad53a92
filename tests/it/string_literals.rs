//! No status, outcome, row state, effect kind, job type or owner prefix is spelled as a
//! string literal outside its enum's own module: a literal (or a single-quoted SQL token
//! inside one) that equals such a spelling fails here, unless [`ALLOWED`] says why it may.
//! The spellings come from the enums themselves, so a new variant is covered at once.
//! Test code (`tests.rs` files, `#[cfg(test)]` modules) is not scanned: asserting a wire
//! spelling is what a test is for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use reelstate::domain::{JobStatus, JobType, VideoStatus};
use reelstate::machine::EffectKind;
use reelstate::store::{EffectState, EntryOutcome, EntryState, EventFilter, Owner};
use strum::IntoEnumIterator;

const STATUS: &str = "src/domain/status.rs";
const STORE_TYPES: &str = "src/store/types.rs";
const EFFECT: &str = "src/machine/effect.rs";

/// Literals reviewed and kept: (file, or a folder ending in `/`; the literals; why).
const ALLOWED: &[(&str, &[&str], &str)] = &[
    (
        "src/store/sqlite/schema.rs",
        &["pending"],
        "schema DDL (a column's DEFAULT) takes no parameters",
    ),
    (
        "src/store/postgres/",
        &["pending", "failed", "done", "quarantined"],
        "the predicate of a partial index (src/pg/migrations): a cached statement's generic \
         plan cannot prove a bound state matches it, and would scan the table instead",
    ),
    (
        "src/webhook/goapi.rs",
        &["pending", "processing", "completed", "failed", "done"],
        "GoAPI's own task statuses, parsed into its TaskStatus",
    ),
    ("src/webhook/nca.rs", &["done"], "NCA's own job status"),
    (
        "src/find_out.rs",
        &["done"],
        "NCA's own job status in its jobs listing",
    ),
    (
        "src/sandbox.rs",
        &[
            "pending",
            "processing",
            "completed",
            "failed",
            "done",
            "music_generation_failed",
            "music_addition_failed",
        ],
        "the stand-ins speak GoAPI's and NCA's own statuses, and script which video status \
         a sandbox run ends in",
    ),
    (
        "src/records/airtable/guess.rs",
        &[
            "segments_combined",
            "generating_music",
            "adding_music",
            "completed",
            "music_generation_failed",
            "music_addition_failed",
            "pending",
            "processing",
            "failed",
            "music_generation",
            "music_addition",
        ],
        "words an Airtable option's name is matched against to guess its mapping",
    ),
    (
        "src/diagram.rs",
        &[
            "segments_combined",
            "generating_music",
            "adding_music",
            "completed",
            "music_generation_failed",
            "music_addition_failed",
            "pending",
            "processing",
            "failed",
        ],
        "the state diagram's layout, keyed by the names it draws",
    ),
    (
        "src/store/overview.rs",
        &["music_generation_failed", "music_addition_failed"],
        "FAILED_STATUSES, a const the SQL of both stores formats in",
    ),
    (
        "src/http/webhooks.rs",
        &["duplicate"],
        "the documented webhook answer's status and metric label for a repeated delivery",
    ),
    (
        "src/http/commands.rs",
        &["rejected"],
        "the API's error code for a refused command",
    ),
    (
        "src/http/ops.rs",
        &["quarantined"],
        "a JSON key of the operator API",
    ),
    (
        "src/metrics.rs",
        &["duplicate"],
        "reelstate_webhooks_total's outcome label for a repeated delivery, as README's table of series spells it",
    ),
    (
        "src/http/inspect.rs",
        &["duplicate"],
        "the kind of a Payload::Duplicate entry, not an outcome",
    ),
    (
        "src/http/ui/fragments.rs",
        &["duplicate"],
        "the kind of a Payload::Duplicate entry, not an outcome",
    ),
    ("src/runners/worker.rs", &["rejected"], "a log message"),
    (
        "src/machine/catalogue.rs",
        &["rejected"],
        "the catalogue's label for a refusal (the machine does not depend on the store)",
    ),
    (
        "src/machine/catalogue/canonical.rs",
        &["failed", "rejected"],
        "free text of a canonical example's error",
    ),
];

/// Every spelling, with the modules that own it (a word can be two enums' spelling).
fn spellings() -> BTreeMap<String, BTreeSet<&'static str>> {
    let mut owned: Vec<(String, &'static str)> = Vec::new();
    owned.extend(
        VideoStatus::KNOWN
            .iter()
            .map(|s| (s.name().to_owned(), STATUS)),
    );
    owned.extend(JobStatus::iter().map(|s| (s.as_ref().to_owned(), STATUS)));
    owned.extend(JobType::KNOWN.iter().map(|t| (t.name().to_owned(), STATUS)));
    owned.extend(EffectKind::iter().map(|k| (k.as_ref().to_owned(), EFFECT)));
    for (name, module) in EntryOutcome::iter()
        .map(|o| o.to_string())
        .chain(EffectState::iter().map(|s| s.to_string()))
        .chain(EntryState::iter().map(|s| s.to_string()))
        .chain(EventFilter::all().map(|f| f.to_string()))
        .chain([Owner::JOB_PREFIX, Owner::EVENT_PREFIX].map(str::to_owned))
        .map(|n| (n, STORE_TYPES))
    {
        owned.push((name, module));
    }
    let mut map: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for (name, module) in owned {
        map.entry(name).or_default().insert(module);
    }
    map
}

/// A string literal's text (escapes resolved) and the line it starts on.
#[derive(Debug, PartialEq)]
struct Literal {
    line: usize,
    text: String,
}

/// The string literals of Rust source, outside comments and `#[cfg(test)]` items.
fn literals(src: &str) -> Vec<Literal> {
    let s: Vec<char> = src.chars().collect();
    let n = s.len();
    let (mut i, mut line, mut depth) = (0usize, 1usize, 0usize);
    let mut cfg_test = false;
    let mut skip_to: Option<usize> = None;
    let mut out = Vec::new();
    let starts = |i: usize, pat: &str| {
        pat.chars()
            .enumerate()
            .all(|(k, c)| s.get(i + k) == Some(&c))
    };
    let ident_before = |i: usize| i > 0 && (s[i - 1].is_alphanumeric() || s[i - 1] == '_');
    while i < n {
        let c = s[i];
        if c == '\n' {
            line += 1;
            i += 1;
            continue;
        }
        if starts(i, "//") {
            while i < n && s[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if starts(i, "/*") {
            let mut nest = 0;
            while i < n {
                if starts(i, "/*") {
                    nest += 1;
                    i += 2;
                } else if starts(i, "*/") {
                    nest -= 1;
                    i += 2;
                    if nest == 0 {
                        break;
                    }
                } else {
                    line += usize::from(s[i] == '\n');
                    i += 1;
                }
            }
            continue;
        }
        // Raw strings: r"…", r#"…"#, br"…", cr"…".
        let prefix = match c {
            'b' | 'c' if s.get(i + 1) == Some(&'r') => 2,
            'r' => 1,
            _ => 0,
        };
        if prefix > 0 && !ident_before(i) {
            let mut j = i + prefix;
            let mut hashes = 0;
            while s.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if s.get(j) == Some(&'"') {
                let start = j + 1;
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let mut k = start;
                while !starts(k, &close) {
                    k += 1;
                }
                let text: String = s[start..k].iter().collect();
                if skip_to.is_none() {
                    out.push(Literal {
                        line,
                        text: text.clone(),
                    });
                }
                line += text.matches('\n').count();
                i = k + close.len();
                continue;
            }
        }
        let quoted =
            c == '"' || ((c == 'b' || c == 'c') && s.get(i + 1) == Some(&'"') && !ident_before(i));
        if quoted {
            let first = line;
            i += if c == '"' { 1 } else { 2 };
            let mut text = String::new();
            while s[i] != '"' {
                if s[i] == '\\' {
                    let e = s[i + 1];
                    i += 2;
                    match e {
                        '\n' => {
                            line += 1;
                            while s[i].is_whitespace() {
                                line += usize::from(s[i] == '\n');
                                i += 1;
                            }
                        }
                        'n' => text.push('\n'),
                        't' => text.push('\t'),
                        'r' => text.push('\r'),
                        '0' => text.push('\0'),
                        'x' => {
                            let hex: String = s[i..i + 2].iter().collect();
                            text.push(char::from(u8::from_str_radix(&hex, 16).unwrap()));
                            i += 2;
                        }
                        'u' => {
                            let close = (i..n).find(|&k| s[k] == '}').unwrap();
                            let hex: String = s[i + 1..close].iter().collect();
                            text.push(
                                char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap(),
                            );
                            i = close + 1;
                        }
                        other => text.push(other),
                    }
                    continue;
                }
                line += usize::from(s[i] == '\n');
                text.push(s[i]);
                i += 1;
            }
            i += 1;
            if skip_to.is_none() {
                out.push(Literal { line: first, text });
            }
            continue;
        }
        // A char literal ('"', '\'', '{') is skipped whole; a lifetime is just a quote.
        if c == '\'' {
            if s.get(i + 1) == Some(&'\\') {
                i = (i + 2..n).find(|&k| s[k] == '\'').unwrap() + 1;
            } else if s.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
            continue;
        }
        if starts(i, "#[cfg(test)]") {
            cfg_test = true;
            i += "#[cfg(test)]".len();
            continue;
        }
        match c {
            ';' if skip_to.is_none() => cfg_test = false,
            '{' => {
                if cfg_test && skip_to.is_none() {
                    skip_to = Some(depth);
                    cfg_test = false;
                }
                depth += 1;
            }
            '}' => {
                depth -= 1;
                if skip_to == Some(depth) {
                    skip_to = None;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The literal itself, and each single-quoted SQL token in it, with the token's offset.
fn words(text: &str) -> Vec<(usize, &str)> {
    let mut words = vec![(0, text)];
    let mut at = 0;
    while let Some(open) = text[at..].find('\'') {
        let start = at + open + 1;
        let Some(close) = text[start..].find('\'') else {
            break;
        };
        words.push((start, &text[start..start + close]));
        at = start + close + 1;
    }
    words
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|f| f != "tests.rs")
        {
            out.push(path);
        }
    }
}

fn allowed(file: &str, word: &str) -> bool {
    ALLOWED.iter().any(|(place, words, _)| {
        let here = if place.ends_with('/') {
            file.starts_with(place)
        } else {
            file == *place
        };
        here && words.contains(&word)
    })
}

/// Every literal spelling an enum outside that enum's module: (file, line, spelling).
fn spelled_elsewhere(root: &Path) -> Vec<(String, usize, String)> {
    let spellings = spellings();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut found = Vec::new();
    for path in files {
        let file = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let src = std::fs::read_to_string(&path).unwrap();
        for lit in literals(&src) {
            for (at, word) in words(&lit.text) {
                let Some(owners) = spellings.get(word) else {
                    continue;
                };
                if !owners.contains(file.as_str()) {
                    // A token of a multi-line SQL string is reported on its own line.
                    let line = lit.line + lit.text[..at].matches('\n').count();
                    found.push((file.clone(), line, word.to_owned()));
                }
            }
        }
    }
    found
}

#[test]
fn enum_spellings_are_not_string_literals_elsewhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let strays: Vec<String> = spelled_elsewhere(root)
        .into_iter()
        .filter(|(file, _, word)| !allowed(file, word))
        .map(|(file, line, word)| format!("{file}:{line}: {word:?}"))
        .collect();
    assert!(
        strays.is_empty(),
        "spelled by hand outside its enum's module (use the enum's as_ref()/Display, or \
         a constant of its module; or add a reviewed reason to ALLOWED):\n{}",
        strays.join("\n")
    );
}

#[test]
fn every_allowance_is_still_needed() {
    // An allowance nothing uses any more would hide the next stray of that spelling.
    let found = spelled_elsewhere(Path::new(env!("CARGO_MANIFEST_DIR")));
    for (place, words, why) in ALLOWED {
        assert!(!why.is_empty(), "{place}: no reason given");
        for word in *words {
            let used = found.iter().any(|(file, _, w)| {
                w == word && allowed(file, w) && {
                    if place.ends_with('/') {
                        file.starts_with(place)
                    } else {
                        file == place
                    }
                }
            });
            assert!(used, "{place}: {word:?} is allowed but not spelled there");
        }
    }
}

#[test]
fn the_scanner_reads_literals_as_rustc_does() {
    let src = r####"
// "pending" in a comment
/// "done" in a doc comment
/* "failed" /* nested */ "quarantined" */
let a = "a\"b\\"; let q = '"'; let l: &'static str = "x";
let r = r#"raw "inner" 'pending'"#;
let e = "line\
         joined\u{21}";
#[cfg(test)]
mod tests { const T: &str = "test only"; fn f() { let _ = "nested"; } }
let after = "after";
"####;
    let texts: Vec<(usize, String)> = literals(src)
        .into_iter()
        .map(|l| (l.line, l.text))
        .collect();
    assert_eq!(
        texts,
        vec![
            (5, "a\"b\\".to_owned()),
            (5, "x".to_owned()),
            (6, r#"raw "inner" 'pending'"#.to_owned()),
            (7, "linejoined!".to_owned()),
            (11, "after".to_owned()),
        ]
    );
    let sql = "UPDATE t SET state = 'done'\n WHERE s IN ('a', 'b')";
    assert_eq!(
        words(sql),
        vec![(0, sql), (22, "done"), (42, "a"), (47, "b")]
    );
}
