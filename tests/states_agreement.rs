//! `states/` is the readable source of the transitions; the code is what runs. They must
//! agree in both directions: a transition the code makes that the table lacks, or a row
//! of the table the code never makes, fails here with the exact rows.

use std::collections::BTreeSet;

use reelstate::machine::{explore, mermaid};

/// The rows of the first Markdown table in `file` with `columns` columns.
fn table(file: &str, columns: usize) -> BTreeSet<Vec<String>> {
    let path = format!("{}/states/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut rows = BTreeSet::new();
    let mut in_table = false;
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            if in_table {
                break;
            }
            continue;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect();
        if cells
            .iter()
            .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        {
            in_table = true;
            continue;
        }
        if in_table {
            assert_eq!(cells.len(), columns, "{file}: malformed row {line:?}");
            rows.insert(cells);
        }
    }
    assert!(!rows.is_empty(), "{file} has no table rows");
    rows
}

fn compare(file: &str, table: BTreeSet<Vec<String>>, code: BTreeSet<Vec<String>>) {
    let missing: Vec<_> = code.difference(&table).collect();
    let extra: Vec<_> = table.difference(&code).collect();
    let show = |rows: &[&Vec<String>]| {
        rows.iter()
            .map(|r| format!("  | {} |", r.join(" | ")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        missing.is_empty() && extra.is_empty(),
        "states/{file} and the code disagree.\nIn the code but not in the table:\n{}\nIn the table but not in the code:\n{}",
        show(&missing),
        show(&extra)
    );
}

#[test]
fn the_video_table_is_the_code() {
    let code = explore()
        .0
        .into_iter()
        .map(|r| vec![r.from, r.event, r.to, r.effects])
        .collect();
    compare("video.md", table("video.md", 4), code);
}

#[test]
fn the_job_table_is_the_code() {
    let code = explore()
        .1
        .into_iter()
        .map(|r| vec![r.job_type, r.from, r.event, r.to])
        .collect();
    compare("job.md", table("job.md", 4), code);
}

#[test]
fn the_diagram_draws_exactly_the_tables_edges() {
    let diagram = mermaid();
    let (video_part, job_part) = diagram
        .split_once("%% Job lifecycle")
        .expect("two diagrams");
    let node = |s: &str| match s {
        "(other)" => "other".to_owned(),
        "(new)" => "[*]".to_owned(),
        s => s.to_owned(),
    };
    let edges = |part: &str| -> BTreeSet<String> {
        part.lines()
            .map(str::trim)
            .filter(|l| l.contains("-->") && l.contains(" : "))
            .map(str::to_owned)
            .collect()
    };
    let want_video: BTreeSet<String> = table("video.md", 4)
        .into_iter()
        .map(|r| format!("{} --> {} : {}", node(&r[0]), node(&r[2]), r[1]))
        .collect();
    assert_eq!(edges(video_part), want_video);
    let want_job: BTreeSet<String> = table("job.md", 4)
        .into_iter()
        .map(|r| format!("{} --> {} : {} ({})", node(&r[1]), node(&r[3]), r[2], r[0]))
        .collect();
    assert_eq!(edges(job_part), want_job);
}

#[test]
fn the_states_command_prints_the_diagrams() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reelstate"))
        .arg("states")
        .output()
        .expect("run reelstate states");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), mermaid());
}
