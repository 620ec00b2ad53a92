//! The lifecycles as SVG, drawn from `machine::explore()`: the same exploration of
//! `decide()` that `states/` is checked against, so the picture cannot describe another
//! machine. States and transitions come from the exploration; only where each state sits
//! is chosen here (a state this layout does not know goes to an extra row, so a new state
//! still appears). Edges carry a number; the legend under the drawing lists each edge's
//! events. Colours are presentation attributes, not CSS, so the same SVG looks the same
//! inline in a page with a strict Content-Security-Policy and as a file on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::http::ui::escape::text as esc;
use crate::machine::{JobTransitionRow, TransitionRow, explore};

/// What to highlight: the states a video went through, the transitions it took (with the
/// numbers of its path's steps that took each), and where it is now. Names are status
/// names as stored; statuses others wrote count as `(other)`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Highlight {
    pub(crate) visited: BTreeSet<String>,
    pub(crate) taken: BTreeSet<(String, String)>,
    pub(crate) steps: BTreeMap<(String, String), Vec<usize>>,
    pub(crate) current: Option<String>,
}

impl Highlight {
    /// From a video's transition history (from, to), in order, and its current status.
    /// Its path's steps are the transitions that changed the status, numbered from 1 as a
    /// page lists them.
    pub(crate) fn from_history<'a>(
        steps: impl IntoIterator<Item = (&'a str, &'a str)>,
        current: &str,
    ) -> Self {
        let mut h = Highlight {
            current: Some(video_node(current)),
            ..Highlight::default()
        };
        let mut step = 0;
        for (raw_from, raw_to) in steps {
            let (from, to) = (video_node(raw_from), video_node(raw_to));
            h.visited.insert(from.clone());
            h.visited.insert(to.clone());
            if raw_from != raw_to {
                step += 1;
                h.steps
                    .entry((from.clone(), to.clone()))
                    .or_default()
                    .push(step);
            }
            h.taken.insert((from, to));
        }
        h.visited.insert(video_node(current));
        h
    }
}

/// The diagram node a stored video status belongs to.
pub(crate) fn video_node(status: &str) -> String {
    const VIDEO_LAYOUT_NAMES: [&str; 6] = [
        "segments_combined",
        "generating_music",
        "adding_music",
        "completed",
        "music_generation_failed",
        "music_addition_failed",
    ];
    if VIDEO_LAYOUT_NAMES.contains(&status) || status == OTHER {
        status.to_owned()
    } else {
        OTHER.to_owned()
    }
}

/// The node of statuses others wrote, as `explore()` names it.
const OTHER: &str = "(other)";
/// [`OTHER_MEANS`], short enough for the node.
const OTHER_NOTE: &str = "set by another stage";

const VIDEO_LAYOUT: &[(&str, u32, u32)] = &[
    ("segments_combined", 0, 0),
    ("generating_music", 1, 0),
    ("adding_music", 2, 0),
    ("completed", 3, 0),
    ("(other)", 0, 1),
    ("music_generation_failed", 1, 1),
    ("music_addition_failed", 2, 1),
];

const JOB_LAYOUT: &[(&str, u32, u32)] = &[
    ("(new)", 0, 0),
    ("pending", 1, 0),
    ("processing", 2, 0),
    ("completed", 3, 0),
    ("failed", 2, 1),
];

/// The video lifecycle's edges, (from, to) → the events that take it, in the order the
/// drawing numbers them (1, 2, …).
fn video_edge_map() -> BTreeMap<(String, String), Vec<String>> {
    let (videos, _) = explore();
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for TransitionRow {
        from, event, to, ..
    } in videos
    {
        let events = edges.entry((from, to)).or_default();
        if !events.contains(&event) {
            events.push(event);
        }
    }
    edges
}

/// One numbered edge of the video lifecycle, as the drawing numbers it.
#[derive(Debug, Clone)]
pub(crate) struct Edge {
    pub(crate) n: usize,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) events: Vec<String>,
}

/// The video lifecycle's edges, numbered as [`video_svg`] numbers them: a page lists them
/// beside the drawing instead of under it.
pub(crate) fn video_edges() -> Vec<Edge> {
    video_edge_map()
        .into_iter()
        .enumerate()
        .map(|(i, ((from, to), events))| Edge {
            n: i + 1,
            from,
            to,
            events,
        })
        .collect()
}

/// What the `(other)` node stands for, said where it is drawn.
pub(crate) const OTHER_MEANS: &str = "a status another stage of the pipeline wrote";

const VIDEO_TITLE: &str = "Video lifecycle (music stage)";
const VIDEO_NOTES: [&str; 2] = [
    "(other): a status another part of the pipeline wrote.",
    "Red: failed states; only an operator's retry leaves them.",
];

/// The video lifecycle, highlighted for one video (or plain, with the default), with its
/// legend of numbered edges under the drawing (a file read on its own).
pub(crate) fn video_svg(h: &Highlight) -> String {
    draw(
        VIDEO_TITLE,
        VIDEO_LAYOUT,
        video_edge_map(),
        h,
        &VIDEO_NOTES,
        true,
    )
}

/// [`video_svg`] without the legend, for a page that lists [`video_edges`] beside it.
pub(crate) fn video_svg_compact(h: &Highlight) -> String {
    draw(VIDEO_TITLE, VIDEO_LAYOUT, video_edge_map(), h, &[], false)
}

/// The job lifecycle (both job types; each edge's events name their type).
pub(crate) fn job_svg() -> String {
    let (_, jobs) = explore();
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for JobTransitionRow {
        job_type,
        from,
        event,
        to,
    } in jobs
    {
        let label = format!("{event} ({job_type})");
        let events = edges.entry((from, to)).or_default();
        if !events.contains(&label) {
            events.push(label);
        }
    }
    draw(
        "Job lifecycle",
        JOB_LAYOUT,
        edges,
        &Highlight::default(),
        &["(new): a job that does not exist yet"],
        true,
    )
}

/// `reelstate states --svg DIR`: both diagrams as files, for docs.
pub fn write_files(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, svg) in [
        ("video.svg", video_svg(&Highlight::default())),
        ("job.svg", job_svg()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, svg)?;
        written.push(path);
    }
    Ok(written)
}

const COL: f64 = 230.0;
const ROW: f64 = 120.0;
const W: f64 = 176.0;
const H: f64 = 40.0;
const MARGIN: f64 = 24.0;
const LEGEND_LINE: f64 = 17.0;
const LEGEND_WRAP: usize = 118;

fn draw(
    title: &str,
    layout: &[(&str, u32, u32)],
    edges: BTreeMap<(String, String), Vec<String>>,
    h: &Highlight,
    notes: &[&str],
    with_legend: bool,
) -> String {
    // Every state the exploration found, placed by the layout or on an extra row.
    let mut states: BTreeSet<String> = BTreeSet::new();
    for (from, to) in edges.keys() {
        states.insert(from.clone());
        states.insert(to.clone());
    }
    for (name, _, _) in layout {
        states.insert((*name).to_owned());
    }
    let extra_row = layout.iter().map(|(_, _, r)| r + 1).max().unwrap_or(0);
    let mut place: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut extra = 0;
    for s in &states {
        let (c, r) = match layout.iter().find(|(n, _, _)| n == s) {
            Some((_, c, r)) => (*c, *r),
            None => {
                extra += 1;
                (extra - 1, extra_row)
            }
        };
        place.insert(
            s.clone(),
            (
                MARGIN + W / 2.0 + f64::from(c) * COL,
                MARGIN + 30.0 + H / 2.0 + f64::from(r) * ROW,
            ),
        );
    }
    let cols = place.values().map(|p| p.0).fold(0.0, f64::max);
    let bottom = place.values().map(|p| p.1).fold(0.0, f64::max);
    let width = cols + W / 2.0 + MARGIN;
    let legend_top = bottom + H / 2.0 + 36.0;

    let mut legend: Vec<String> = Vec::new();
    let mut body = String::new();
    let mut badges: Vec<(f64, f64)> = Vec::new();
    let mut on_top = String::new();
    for (n, ((from, to), events)) in edges.iter().enumerate() {
        let n = n + 1;
        let taken = h.taken.contains(&(from.clone(), to.clone()));
        let (stroke, sw) = if taken {
            ("#0369a1", 2.5)
        } else {
            ("#94a3b8", 1.3)
        };
        let (a, b) = (place[from], place[to]);
        let (path, badge) = if from == to {
            // A loop over the node's right-hand top corner.
            let (x, y) = (a.0 + W / 2.0 - 30.0, a.1 - H / 2.0);
            (
                format!(
                    "M{:.1},{:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                    x - 12.0,
                    y,
                    x - 18.0,
                    y - 34.0,
                    x + 30.0,
                    y - 34.0,
                    x + 14.0,
                    y
                ),
                (x + 2.0, y - 26.0),
            )
        } else {
            // Opposite edges between one pair are drawn side by side.
            let back = edges.contains_key(&(to.clone(), from.clone()));
            let (dx, dy) = (b.0 - a.0, b.1 - a.1);
            let len = (dx * dx + dy * dy).sqrt().max(1.0);
            let (nx, ny) = (-dy / len, dx / len);
            let off = if back { 9.0 } else { 0.0 };
            let a2 = (a.0 + nx * off, a.1 + ny * off);
            let b2 = (b.0 + nx * off, b.1 + ny * off);
            let s = clip(a2, b2);
            let e = clip(b2, a2);
            // A straight line through another state would hide behind it: bow it out.
            let others: Vec<(f64, f64)> = place
                .iter()
                .filter(|(k, _)| *k != from && *k != to)
                .map(|(_, p)| *p)
                .collect();
            let hits = |c: (f64, f64)| {
                (1..40).any(|i| {
                    let p = quad(s, c, e, f64::from(i) / 40.0);
                    others.iter().any(|o| {
                        (p.0 - o.0).abs() < W / 2.0 + 4.0 && (p.1 - o.1).abs() < H / 2.0 + 4.0
                    })
                })
            };
            let mid = ((s.0 + e.0) / 2.0, (s.1 + e.1) / 2.0);
            let control = [0.0, 1.0, -1.0, 2.0, -2.0]
                .iter()
                .map(|k| (mid.0 + nx * 45.0 * k, mid.1 + ny * 45.0 * k))
                .find(|c| !hits(*c))
                .unwrap_or(mid);
            // The number sits where no other number is.
            let badge = [0.5, 0.35, 0.65, 0.25, 0.75, 0.2, 0.8, 0.15, 0.85]
                .iter()
                .map(|t| quad(s, control, e, *t))
                .find(|p| {
                    badges
                        .iter()
                        .all(|q: &(f64, f64)| (p.0 - q.0).hypot(p.1 - q.1) > 21.0)
                })
                .unwrap_or_else(|| quad(s, control, e, 0.5));
            (
                format!(
                    "M{:.1},{:.1} Q{:.1},{:.1} {:.1},{:.1}",
                    s.0, s.1, control.0, control.1, e.0, e.1
                ),
                badge,
            )
        };
        badges.push(badge);
        let _ = write!(
            body,
            r##"<g class="edge{cls}" data-from="{f}" data-to="{t}"><title>{f} → {t}: {ev}</title><path d="{path}" fill="none" stroke="{stroke}" stroke-width="{sw}" marker-end="url(#arrow{mk})"/><circle cx="{bx:.1}" cy="{by:.1}" r="9" fill="#ffffff" stroke="{stroke}"/><text x="{bx:.1}" y="{ty:.1}" text-anchor="middle" font-size="10" fill="#0f172a">{n}</text></g>"##,
            cls = if taken { " taken" } else { "" },
            f = esc(from),
            t = esc(to),
            ev = esc(&events.join(", ")),
            mk = if taken { "-taken" } else { "" },
            bx = badge.0,
            by = badge.1,
            ty = badge.1 + 3.5,
        );
        // This video's steps along the edge, over its number: the path reads on the drawing.
        // Drawn after the states, so that a short edge's label is not hidden behind one.
        if let Some(steps) = h.steps.get(&(from.clone(), to.clone())) {
            let list: Vec<String> = steps.iter().map(usize::to_string).collect();
            let label = format!(
                "{} {}",
                if steps.len() == 1 { "step" } else { "steps" },
                list.join(", ")
            );
            let w = label.chars().count() as f64 * 5.8 + 10.0;
            let _ = write!(
                on_top,
                r##"<g class="steps" data-from="{f}" data-to="{t}" data-steps="{d}"><rect x="{rx:.1}" y="{ry:.1}" width="{w:.1}" height="15" rx="7.5" fill="#0369a1"/><text x="{x:.1}" y="{ty:.1}" text-anchor="middle" font-size="10" font-weight="600" fill="#ffffff">{l}</text></g>"##,
                f = esc(from),
                t = esc(to),
                d = list.join(","),
                rx = badge.0 - w / 2.0,
                ry = badge.1 - 27.0,
                x = badge.0,
                ty = badge.1 - 16.0,
                l = esc(&label),
            );
        }
        if with_legend {
            let line = format!("{n}. {from} → {to}: {}", events.join(", "));
            legend.extend(wrap(&line, LEGEND_WRAP));
        }
    }
    for note in notes {
        legend.push((*note).to_owned());
    }
    for (name, (x, y)) in &place {
        let current = h.current.as_deref() == Some(name.as_str());
        let visited = h.visited.contains(name);
        let failed = name.ends_with("failed");
        let (fill, stroke, ink, sw) = match (current, visited, failed) {
            (true, _, true) => ("#b91c1c", "#7f1d1d", "#ffffff", 2.5),
            (true, _, false) => ("#0369a1", "#0c4a6e", "#ffffff", 2.5),
            (false, true, _) => ("#e0f2fe", "#0369a1", "#0c4a6e", 1.5),
            (false, false, true) => ("#fef2f2", "#fca5a5", "#7f1d1d", 1.2),
            (false, false, false) => ("#ffffff", "#94a3b8", "#1e293b", 1.2),
        };
        let cls = match (current, visited) {
            (true, _) => " current visited",
            (false, true) => " visited",
            _ => "",
        };
        // "(other)" says what it stands for on the node itself, not in a legend.
        let (ty, note) = if name == OTHER {
            (
                y - 3.0,
                format!(
                    r#"<text x="{x:.1}" y="{ny:.1}" text-anchor="middle" font-size="9.5" fill="{ink}">{m}</text>"#,
                    ny = y + 12.0,
                    m = esc(OTHER_NOTE),
                ),
            )
        } else {
            (y + 4.5, String::new())
        };
        let _ = write!(
            body,
            r#"<g class="state{cls}" data-state="{n}"><title>{tip}</title><rect x="{rx:.1}" y="{ry:.1}" width="{W}" height="{H}" rx="8" fill="{fill}" stroke="{stroke}" stroke-width="{sw}"/><text x="{x:.1}" y="{ty:.1}" text-anchor="middle" font-size="13" font-weight="{fw}" fill="{ink}">{n}</text>{note}</g>"#,
            n = esc(name),
            tip = esc(&if name == OTHER {
                format!("{name}: {OTHER_MEANS}")
            } else {
                name.clone()
            }),
            rx = x - W / 2.0,
            ry = y - H / 2.0,
            fw = if current { "700" } else { "500" },
        );
    }
    body.push_str(&on_top);
    let height = if legend.is_empty() {
        bottom + H / 2.0 + MARGIN
    } else {
        legend_top + legend.len() as f64 * LEGEND_LINE + MARGIN
    };
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="lifecycle" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" role="img" aria-label="{t}" font-family="ui-sans-serif, system-ui, sans-serif"><title>{t}</title><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#94a3b8"/></marker><marker id="arrow-taken" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#0369a1"/></marker></defs><rect width="100%" height="100%" fill="#ffffff"/><text x="{MARGIN}" y="{ty}" font-size="15" font-weight="700" fill="#0f172a">{t}</text>"##,
        t = esc(title),
        ty = MARGIN + 4.0,
    );
    svg.push_str(&body);
    for (i, line) in legend.iter().enumerate() {
        let _ = write!(
            svg,
            r##"<text x="{x}" y="{y:.1}" font-size="12" font-family="ui-monospace, monospace" fill="#334155">{l}</text>"##,
            x = if line.starts_with(' ') {
                MARGIN + 28.0
            } else {
                MARGIN
            },
            y = legend_top + i as f64 * LEGEND_LINE,
            l = esc(line.trim_start()),
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The point at `t` of the quadratic Bézier curve from `s` to `e` through control `c`.
fn quad(s: (f64, f64), c: (f64, f64), e: (f64, f64), t: f64) -> (f64, f64) {
    let u = 1.0 - t;
    (
        u * u * s.0 + 2.0 * u * t * c.0 + t * t * e.0,
        u * u * s.1 + 2.0 * u * t * c.1 + t * t * e.1,
    )
}

/// Where the segment from the centre `a` to `b` leaves `a`'s box.
fn clip(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let tx = if dx.abs() > f64::EPSILON {
        (W / 2.0 + 3.0) / dx.abs()
    } else {
        f64::INFINITY
    };
    let ty = if dy.abs() > f64::EPSILON {
        (H / 2.0 + 3.0) / dy.abs()
    } else {
        f64::INFINITY
    };
    let t = tx.min(ty).min(1.0);
    (a.0 + dx * t, a.1 + dy * t)
}

/// Splits a legend line at spaces; continuation lines are indented.
fn wrap(line: &str, width: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    for word in line.split(' ') {
        let cur = out.last_mut().expect("one line");
        if !cur.trim().is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            out.push(format!("     {word}"));
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_explored_transition_is_drawn_once() {
        let (videos, jobs) = explore();
        let svg = video_svg(&Highlight::default());
        let pairs: BTreeSet<(String, String)> = videos
            .iter()
            .map(|r| (r.from.clone(), r.to.clone()))
            .collect();
        assert_eq!(svg.matches(r#"<g class="edge"#).count(), pairs.len());
        for r in &videos {
            assert!(svg.contains(&r.event), "{} is in the legend", r.event);
            assert!(svg.contains(&format!(r#"data-state="{}""#, esc(&r.to))));
        }
        let svg = job_svg();
        for r in &jobs {
            assert!(svg.contains(&format!("{} ({})", r.event, r.job_type)));
        }
    }

    #[test]
    fn the_compact_drawing_numbers_the_listed_edges_and_explains_other_in_place() {
        let svg = video_svg_compact(&Highlight::default());
        let edges = video_edges();
        assert_eq!(svg.matches(r#"<g class="edge"#).count(), edges.len());
        for e in &edges {
            // The number on the drawing is the list's, on the edge between the same states.
            let title = format!(
                "<title>{} → {}: {}</title>",
                esc(&e.from),
                esc(&e.to),
                esc(&e.events.join(", "))
            );
            let at = svg
                .find(&title)
                .unwrap_or_else(|| panic!("edge {} drawn", e.n));
            let badge = &svg[at..];
            let badge = &badge[..badge.find("</g>").expect("the edge's end")];
            assert!(badge.ends_with(&format!(">{}</text>", e.n)), "{badge}");
        }
        assert!(
            !svg.contains("font-family=\"ui-monospace, monospace\""),
            "no legend"
        );
        assert!(svg.contains(&format!(">{OTHER_NOTE}</text>")));
        assert!(video_svg(&Highlight::default()).contains("1. (other) → (other)"));
    }

    #[test]
    fn the_current_state_and_the_path_taken_are_highlighted() {
        let h = Highlight::from_history(
            [
                ("segments_combined", "generating_music"),
                ("generating_music", "adding_music"),
            ],
            "adding_music",
        );
        let svg = video_svg(&h);
        assert!(svg.contains(r#"<g class="state current visited" data-state="adding_music">"#));
        assert!(svg.contains(r#"<g class="state visited" data-state="segments_combined">"#));
        assert!(svg.contains(r#"<g class="state" data-state="completed">"#));
        assert_eq!(svg.matches(r#"class="edge taken""#).count(), 2);
        // Each step of the path is numbered on the edge it took.
        assert!(svg.contains(r#"<g class="steps" data-from="segments_combined" data-to="generating_music" data-steps="1">"#));
        assert!(svg.contains(
            r#"<g class="steps" data-from="generating_music" data-to="adding_music" data-steps="2">"#
        ));
        assert_eq!(svg.matches(r#"<g class="steps""#).count(), 2);
        // Over the states, so that none hides a label.
        assert!(svg.rfind(r#"<g class="state"#) < svg.find(r#"<g class="steps""#));
        // A retry takes an edge twice: both steps are named on it.
        let h = Highlight::from_history(
            [
                ("generating_music", "music_generation_failed"),
                ("music_generation_failed", "generating_music"),
                ("generating_music", "music_generation_failed"),
            ],
            "music_generation_failed",
        );
        assert!(video_svg(&h).contains(r#"data-steps="1,3"><rect"#));
        assert!(video_svg(&h).contains(">steps 1, 3</text>"));
        // A status another stage wrote is the (other) node.
        let h = Highlight::from_history([], "segments_<combining>");
        assert!(video_svg(&h).contains(r#"class="state current visited" data-state="(other)""#));
    }
}
