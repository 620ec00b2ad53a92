//! `states/` is the single human-readable source of the lifecycles (ARCHITECTURE.md, invariant 6).
//! These tests keep it honest: its tables must list exactly the transitions that
//! `machine::explore()` finds by running decide(), no more and no fewer, and the Mermaid
//! diagram must draw exactly those transitions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use reelstate::machine::{
    FinalStateRow, JobTransitionRow, TransitionRow, explore, final_state_rows, mermaid,
};

type Row = Vec<String>;

/// The body rows of the first Markdown table in `text` whose header cells are `header`:
/// the rows between the `| --- |` separator and the first line that is not a table line.
fn table(text: &str, header: &[&str], file: &str) -> Vec<Row> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with('|') && cells(l) == header)
        .unwrap_or_else(|| panic!("{file}: no table with header {header:?}"));
    let separator = lines.get(start + 1).copied().unwrap_or_default();
    assert!(
        !cells(separator).is_empty()
            && cells(separator)
                .iter()
                .all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':')),
        "{file}: the header {header:?} is not followed by a separator line (got {separator:?})"
    );
    let rows: Vec<Row> = lines[start + 2..]
        .iter()
        .take_while(|l| l.starts_with('|'))
        .map(|l| cells(l))
        .collect();
    for r in &rows {
        assert_eq!(
            r.len(),
            header.len(),
            "{file}: row {r:?} does not have the {} columns {header:?}",
            header.len()
        );
    }
    rows
}

fn cells(line: &str) -> Row {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    if inner.trim().is_empty() {
        return Vec::new();
    }
    inner.split('|').map(|c| c.trim().to_owned()).collect()
}

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn video_table() -> Vec<Row> {
    table(
        &read("states/video.md"),
        &["from", "event", "to", "effects"],
        "states/video.md",
    )
}

fn job_table() -> Vec<Row> {
    table(
        &read("states/job.md"),
        &["job type", "from", "event", "to"],
        "states/job.md",
    )
}

fn video_row(r: &TransitionRow) -> Row {
    vec![
        r.from.clone(),
        r.event.clone(),
        r.to.clone(),
        r.effects.clone(),
    ]
}

fn job_row(r: &JobTransitionRow) -> Row {
    vec![
        r.job_type.clone(),
        r.from.clone(),
        r.event.clone(),
        r.to.clone(),
    ]
}

/// Compares as multisets, so a row listed twice in a table is reported too.
fn differences(code: &[Row], table: &[Row]) -> Vec<String> {
    let count = |rows: &[Row]| {
        let mut m: BTreeMap<Row, usize> = BTreeMap::new();
        for r in rows {
            *m.entry(r.clone()).or_default() += 1;
        }
        m
    };
    let (c, t) = (count(code), count(table));
    let show = |r: &Row| format!("| {} |", r.join(" | "));
    let mut out = Vec::new();
    for (r, n) in &c {
        match t.get(r) {
            None => out.push(format!("in code, missing from the table: {}", show(r))),
            Some(m) if m != n => out.push(format!("listed {m} times in the table: {}", show(r))),
            Some(_) => {}
        }
    }
    for r in t.keys().filter(|r| !c.contains_key(*r)) {
        out.push(format!("in the table, not in code: {}", show(r)));
    }
    out
}

fn assert_agree(file: &str, code: &[Row], table: &[Row]) {
    assert!(!code.is_empty(), "explore() found no transitions at all");
    let diff = differences(code, table);
    assert!(
        diff.is_empty(),
        "{file} and machine::explore() differ:\n  {}",
        diff.join("\n  ")
    );
}

#[test]
fn video_table_is_exactly_the_machine() {
    let code: Vec<Row> = explore().0.iter().map(video_row).collect();
    assert_agree("states/video.md", &code, &video_table());
}

#[test]
fn job_table_is_exactly_the_machine() {
    let code: Vec<Row> = explore().1.iter().map(job_row).collect();
    assert_agree("states/job.md", &code, &job_table());
}

fn final_row(r: &FinalStateRow) -> Row {
    vec![
        r.from.clone(),
        r.job.clone(),
        r.event.clone(),
        r.outcome.clone(),
        r.to.clone(),
    ]
}

#[test]
fn final_state_table_is_exactly_the_machine() {
    let code: Vec<Row> = final_state_rows().iter().map(final_row).collect();
    let table = table(
        &read("states/video.md"),
        &["from", "left-over job", "event", "outcome", "to"],
        "states/video.md",
    );
    assert_agree("states/video.md (final states)", &code, &table);
}

/// Final is final: on a final video with a left-over active job, only an operator's retry
/// moves the video, whatever the table says.
#[test]
fn only_a_retry_leaves_a_final_state() {
    let rows = final_state_rows();
    assert!(rows.iter().any(|r| r.from == "completed"), "{rows:?}");
    for r in rows {
        if !r.event.starts_with("retry_") {
            assert_eq!(r.to, r.from, "{r:?}");
        }
    }
}

/// The comparison itself must see both kinds of difference, or the two tests above could
/// pass on a stale table.
#[test]
fn the_comparison_reports_both_directions() {
    let row = |s: &str| s.split(',').map(str::to_owned).collect::<Row>();
    let code = vec![row("a,e,b,-"), row("b,e,c,-")];
    let table = vec![row("a,e,b,-"), row("x,e,y,-"), row("x,e,y,-")];
    assert_eq!(
        differences(&code, &table),
        vec![
            "in code, missing from the table: | b | e | c | - |".to_owned(),
            "in the table, not in code: | x | e | y | - |".to_owned(),
        ]
    );
    assert_eq!(
        differences(&[row("a,e,b,-")], &[row("a,e,b,-"), row("a,e,b,-")]),
        vec!["listed 2 times in the table: | a | e | b | - |".to_owned()]
    );
}

#[test]
fn the_parser_stops_at_the_end_of_the_table() {
    let text = "intro\n\n| a | b |\n| --- | :-: |\n| 1 | 2 |\n|3|4|\n\n| 5 | 6 |\n";
    assert_eq!(
        table(text, &["a", "b"], "inline"),
        vec![row2("1", "2"), row2("3", "4")]
    );
}

fn row2(a: &str, b: &str) -> Row {
    vec![a.to_owned(), b.to_owned()]
}

/// One labelled edge of a Mermaid state diagram, in the tables' spelling.
type Edge = (String, String, String);

/// The labelled edges of each diagram (video, job), and the unlabelled ones.
fn mermaid_edges(text: &str) -> (BTreeSet<Edge>, BTreeSet<Edge>, Vec<String>) {
    let (video, job) = text
        .split_once("%% Job lifecycle")
        .expect("mermaid() draws a job diagram after the video diagram");
    let parse = |section: &str, job_diagram: bool| {
        let mut labelled = BTreeSet::new();
        let mut bare = Vec::new();
        for line in section.lines().map(str::trim).filter(|l| l.contains("-->")) {
            let (edge, label) = match line.split_once(" : ") {
                Some((e, l)) => (e, Some(l.trim())),
                None => (line, None),
            };
            let (from, to) = edge.split_once("-->").expect("an edge");
            let (from, to) = (from.trim(), to.trim());
            let name = |n: &str| match n {
                "other" => "(other)".to_owned(),
                "[*]" if job_diagram => "(new)".to_owned(),
                n => n.to_owned(),
            };
            match label {
                Some(l) => {
                    labelled.insert((name(from), l.to_owned(), name(to)));
                }
                None => bare.push(line.to_owned()),
            }
        }
        (labelled, bare)
    };
    let (v, mut bare) = parse(video, false);
    let (j, bare_j) = parse(job, true);
    bare.extend(bare_j);
    (v, j, bare)
}

#[test]
fn mermaid_draws_exactly_the_tables() {
    let text = mermaid();
    let (video_edges, job_edges, bare) = mermaid_edges(&text);

    let want_video: BTreeSet<Edge> = video_table()
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        .collect();
    // The job diagram labels an edge `event (job type)`, so one job type's edges are not
    // merged with another's.
    let want_job: BTreeSet<Edge> = job_table()
        .into_iter()
        .map(|r| (r[1].clone(), format!("{} ({})", r[2], r[0]), r[3].clone()))
        .collect();

    let mut problems = Vec::new();
    for (what, got, want) in [
        ("video", &video_edges, &want_video),
        ("job", &job_edges, &want_job),
    ] {
        for (f, l, t) in want.difference(got) {
            problems.push(format!("{what} diagram lacks {f} --> {t} : {l}"));
        }
        for (f, l, t) in got.difference(want) {
            problems.push(format!(
                "{what} diagram has {f} --> {t} : {l}, not in the table"
            ));
        }
    }
    // Unlabelled edges may only mark where a lifecycle starts or ends.
    for line in bare.iter().filter(|l| !l.contains("[*]")) {
        problems.push(format!(
            "unlabelled edge that is not a start or end marker: {line}"
        ));
    }
    assert!(
        problems.is_empty(),
        "mermaid() and states/ differ:\n  {}\n\n{text}",
        problems.join("\n  ")
    );
}

#[test]
fn the_states_command_prints_the_diagrams() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reelstate"))
        .arg("states")
        .output()
        .expect("run reelstate states");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        reelstate::machine::mermaid()
    );
}
