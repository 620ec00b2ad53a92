//! No import cycle in `src/`: the graph of which file takes names from which, built from
//! the code itself (every `use` line, and every inline `crate::`, `super::` and `self::`
//! path), never from a list of file names. A name re-exported by a facade (`pub use` in a
//! `mod.rs`) counts as taken from the file that defines it, so a facade is not a cycle of
//! its own; a `mod` declaration is containment, not an import, and so is a module's use of
//! its own ancestors (`super::Ctx`: what a parent declares for its children). Inline
//! `mod … { }` blocks (unit tests) are not part of the house.
//!
//! A cycle means two files each need the other: neither can be understood, tested or moved
//! alone. ARCHITECTURE.md names which module may touch which; this keeps the files honest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One source file as a module: its path in the crate (`["store", "sqlite", "inbox"]`).
#[derive(Debug)]
struct Module {
    file: String,
    path: Vec<String>,
    /// Its child modules (`mod x;` or inline `mod x { … }` is not followed: files only).
    children: BTreeSet<String>,
    /// `pub use` / `pub(crate) use` re-exports: exported name -> the path it names,
    /// written relative to this module as in the source.
    reexports: BTreeMap<String, Vec<String>>,
    /// `pub use x::*` targets.
    globs: Vec<Vec<String>>,
    /// Every path this file names: from `use` lines and inline paths, written as in the
    /// source (first segment `crate`, `super`, `self`, or a child module).
    paths: Vec<Vec<String>>,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src/` (lib.rs is the root; `x/mod.rs` is `x`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The source without comments, string and char literals (their text is not code).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(b[i] as char);
                i += 1;
                continue;
            }
            let end: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            j += 1;
            while j < b.len() && !b[j..].starts_with(&end) {
                j += 1;
            }
            i = j + end.len();
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && (b.get(i + 2) == Some(&b'\'') || (b.get(i + 1) == Some(&b'\\')))
        {
            // A char literal ('x', '\n', '\''); a lifetime ('a) has no closing quote.
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            let c = src[i..].chars().next().expect("a char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The code without inline `mod name { … }` blocks (a file's unit tests), whose `super`
/// is the file itself.
fn without_inline_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some((_, at)) = find_word(rest, &["mod"]) {
        let after = &rest[at + 3..];
        let name_end = after
            .find(|c: char| !(c.is_whitespace() || is_ident_char(c)))
            .unwrap_or(after.len());
        if !after[name_end..].starts_with('{') {
            out.push_str(&rest[..at + 3]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..at]);
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[name_end..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = name_end + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Expands one `use` tree (`a::{b, c::{d as e}, f::*}`) into its paths, each with the
/// name it binds (`None` for a glob).
fn expand_use(tree: &str) -> Vec<(Vec<String>, Option<String>)> {
    fn split_top(s: &str) -> Vec<&str> {
        let (mut depth, mut start, mut out) = (0, 0, Vec::new());
        for (i, c) in s.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push(&s[start..]);
        out
    }
    fn go(prefix: &[String], tree: &str, out: &mut Vec<(Vec<String>, Option<String>)>) {
        let tree = tree.trim();
        if tree.is_empty() {
            return;
        }
        if let Some(open) = tree.find('{') {
            let head = tree[..open].trim().trim_end_matches("::");
            let inner = &tree[open + 1..tree.rfind('}').expect("a closing brace")];
            let mut p = prefix.to_vec();
            p.extend(
                head.split("::")
                    .filter(|s| !s.is_empty())
                    .map(|s| s.trim().to_owned()),
            );
            for part in split_top(inner) {
                go(&p, part, out);
            }
            return;
        }
        let (path, alias) = match tree.split_once(" as ") {
            Some((p, a)) => (p.trim(), Some(a.trim().to_owned())),
            None => (tree, None),
        };
        let mut p = prefix.to_vec();
        p.extend(path.split("::").map(|s| s.trim().to_owned()));
        if p.last().is_some_and(|l| l == "*") {
            p.pop();
            out.push((p, None));
        } else if p.last().is_some_and(|l| l == "self") {
            p.pop();
            let name = alias.or_else(|| p.last().cloned());
            out.push((p, name));
        } else {
            let name = alias.or_else(|| p.last().cloned());
            out.push((p, name));
        }
    }
    let mut out = Vec::new();
    go(&[], tree, &mut out);
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn read_module(src_dir: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src_dir).expect("under src");
    let code = without_inline_modules(&code_only(
        &std::fs::read_to_string(file).expect("read a source file"),
    ));
    let mut m = Module {
        file: format!("src/{}", rel.display()),
        path: module_path(rel),
        children: BTreeSet::new(),
        reexports: BTreeMap::new(),
        globs: Vec::new(),
        paths: Vec::new(),
    };
    // Statements: `mod x;` and `use …;` (at any depth: a function may have its own use).
    let mut rest = code.as_str();
    while let Some(at) = find_word(rest, &["use", "mod"]) {
        let (word, start) = at;
        let before = rest[..start].trim_end();
        let public = before.ends_with("pub") || before.ends_with(')') && before.contains("pub(");
        let body_start = start + word.len();
        let Some(end) = rest[body_start..].find([';', '{']).map(|e| e + body_start) else {
            break;
        };
        if word == "mod" {
            if rest[end..].starts_with(';') {
                m.children.insert(rest[body_start..end].trim().to_owned());
            }
            rest = &rest[end + 1..];
            continue;
        }
        // A use tree may hold braces: read to its semicolon.
        let semi = rest[body_start..]
            .find(';')
            .map(|e| e + body_start)
            .unwrap_or(rest.len());
        let tree: String = rest[body_start..semi]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for (path, name) in expand_use(&tree) {
            // A re-export is the facade passing a name on, not using it: whoever names it
            // through the facade is tied to the file that defines it.
            if public {
                match name {
                    Some(n) => {
                        m.reexports.insert(n, path);
                    }
                    None => m.globs.push(path),
                }
            } else {
                m.paths.push(path);
            }
        }
        rest = &rest[(semi + 1).min(rest.len())..];
    }
    // Inline paths: `crate::a::b`, `super::x`, `self::y`, and `child::z`.
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if is_ident_char(chars[i])
            && (i == 0 || !is_ident_char(chars[i - 1]) && chars[i - 1] != ':')
        {
            let mut segs = Vec::new();
            let mut j = i;
            loop {
                let s = j;
                while j < chars.len() && is_ident_char(chars[j]) {
                    j += 1;
                }
                segs.push(chars[s..j].iter().collect::<String>());
                if chars.get(j) == Some(&':')
                    && chars.get(j + 1) == Some(&':')
                    && chars.get(j + 2).is_some_and(|c| is_ident_char(*c))
                {
                    j += 2;
                } else {
                    break;
                }
            }
            let first = segs[0].as_str();
            if segs.len() > 1
                && (matches!(first, "crate" | "super" | "self") || m.children.contains(first))
            {
                m.paths.push(segs);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    m
}

/// The next `use` or `mod` keyword in `s` standing as a statement's word.
fn find_word<'a>(s: &str, words: &[&'a str]) -> Option<(&'a str, usize)> {
    let bytes = s.as_bytes();
    let mut best: Option<(&'a str, usize)> = None;
    for w in words {
        let mut from = 0;
        while let Some(pos) = s[from..].find(w) {
            let at = from + pos;
            let before_ok =
                at == 0 || !is_ident_char(bytes[at - 1] as char) && bytes[at - 1] != b':';
            let after_ok = bytes
                .get(at + w.len())
                .is_some_and(|c| c.is_ascii_whitespace());
            if before_ok && after_ok {
                if best.is_none_or(|(_, b)| at < b) {
                    best = Some((w, at));
                }
                break;
            }
            from = at + w.len();
        }
    }
    best
}

struct Crate {
    modules: Vec<Module>,
    by_path: BTreeMap<Vec<String>, usize>,
}

impl Crate {
    fn read() -> Crate {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        // main.rs is the binary's root, another crate: it only uses the library.
        let modules: Vec<Module> = files
            .iter()
            .filter(|f| !f.ends_with("main.rs"))
            .map(|f| read_module(&src, f))
            .collect();
        let by_path = modules
            .iter()
            .enumerate()
            .map(|(i, m)| (m.path.clone(), i))
            .collect();
        Crate { modules, by_path }
    }

    /// A path as written in module `from`, made absolute.
    fn absolute(&self, from: &[String], path: &[String]) -> Vec<String> {
        let mut base: Vec<String> = Vec::new();
        let mut rest = path;
        match path.first().map(String::as_str) {
            Some("crate") => rest = &path[1..],
            Some("self") => {
                base = from.to_vec();
                rest = &path[1..];
            }
            Some("super") => {
                base = from.to_vec();
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            _ => {
                // A child module of `from`, or (at the root) a top-level module.
                base = from.to_vec();
            }
        }
        base.extend(rest.iter().cloned());
        base
    }

    /// The file that defines what an absolute path names (following re-exports).
    fn resolve(&self, path: &[String], depth: usize) -> Option<usize> {
        if depth > 16 {
            return None;
        }
        // The longest prefix that is a file of its own.
        let mut n = path.len();
        while n > 0 && !self.by_path.contains_key(&path[..n]) {
            n -= 1;
        }
        let module = *self.by_path.get(&path[..n])?;
        let Some(name) = path.get(n) else {
            return Some(module);
        };
        let m = &self.modules[module];
        if let Some(target) = m.reexports.get(name) {
            let mut abs = self.absolute(&m.path, target);
            abs.extend(path[n + 1..].iter().cloned());
            return self.resolve(&abs, depth + 1).or(Some(module));
        }
        for glob in &m.globs {
            let mut abs = self.absolute(&m.path, glob);
            abs.extend(path[n..].iter().cloned());
            if let Some(found) = self.resolve(&abs, depth + 1)
                && found != module
            {
                return Some(found);
            }
        }
        Some(module)
    }

    /// file -> files it takes names from, with the paths that tie them.
    fn edges(&self) -> BTreeMap<usize, BTreeMap<usize, BTreeSet<String>>> {
        let mut edges: BTreeMap<usize, BTreeMap<usize, BTreeSet<String>>> = BTreeMap::new();
        for (i, m) in self.modules.iter().enumerate() {
            for p in &m.paths {
                let abs = self.absolute(&m.path, p);
                let Some(to) = self.resolve(&abs, 0) else {
                    continue;
                };
                // A module taking names from its own ancestors (`super::Ctx`) is the one
                // unit a parent and its children make: the parent declares what they
                // share and dispatches to them. Everything else is an edge, the parent's
                // own use of its children included.
                let ancestor = self.modules[to].path.len() < m.path.len()
                    && m.path.starts_with(&self.modules[to].path);
                if to != i && !ancestor {
                    edges
                        .entry(i)
                        .or_default()
                        .entry(to)
                        .or_default()
                        .insert(p.join("::"));
                }
            }
        }
        edges
    }
}

/// Every cycle's files (strongly connected components of more than one file), by Tarjan.
fn cycles(n: usize, edges: &BTreeMap<usize, BTreeMap<usize, BTreeSet<String>>>) -> Vec<Vec<usize>> {
    struct T<'a> {
        edges: &'a BTreeMap<usize, BTreeMap<usize, BTreeSet<String>>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(t: &mut T, v: usize) {
        t.index[v] = Some(t.next);
        t.low[v] = t.next;
        t.next += 1;
        t.stack.push(v);
        t.on[v] = true;
        let targets: Vec<usize> = t
            .edges
            .get(&v)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        for w in targets {
            match t.index[w] {
                None => {
                    visit(t, w);
                    t.low[v] = t.low[v].min(t.low[w]);
                }
                Some(iw) if t.on[w] => t.low[v] = t.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(t.low[v]) == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            visit(&mut t, v);
        }
    }
    t.out
}

fn report(
    c: &Crate,
    edges: &BTreeMap<usize, BTreeMap<usize, BTreeSet<String>>>,
    found: &[Vec<usize>],
) -> String {
    let mut out = String::new();
    for comp in found {
        let files: Vec<&str> = comp.iter().map(|&i| c.modules[i].file.as_str()).collect();
        out.push_str(&format!("cycle: {}\n", files.join(", ")));
        for &a in comp {
            for (&b, via) in edges.get(&a).into_iter().flatten() {
                if comp.contains(&b) {
                    out.push_str(&format!(
                        "  {} -> {}: {}\n",
                        c.modules[a].file,
                        c.modules[b].file,
                        via.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn src_has_no_import_cycle() {
    let c = Crate::read();
    assert!(
        c.modules.len() > 50,
        "the crate's files were read: {}",
        c.modules.len()
    );
    let edges = c.edges();
    let found = cycles(c.modules.len(), &edges);
    assert!(
        found.is_empty(),
        "import cycles in src/:\n{}",
        report(&c, &edges, &found)
    );
}

/// The graph is built from the code: a `use` line, an inline `crate::` path and a
/// `super::` path each make an edge, re-exports are followed to the defining file, and a
/// cycle through them is reported with the names that tie it.
#[test]
fn the_graph_sees_use_lines_inline_paths_and_reexports() {
    let c = Crate::read();
    let edges = c.edges();
    let file = |name: &str| {
        c.modules
            .iter()
            .position(|m| m.file == name)
            .unwrap_or_else(|| panic!("{name} is read"))
    };
    let has_edge = |a: &str, b: &str| {
        edges
            .get(&file(a))
            .is_some_and(|m| m.contains_key(&file(b)))
    };
    // `use crate::store::Lease` names store.rs, which re-exports it from lease.rs.
    assert!(has_edge("src/startup.rs", "src/engine.rs"), "a use line");
    assert!(
        has_edge("src/runners/worker.rs", "src/store/lease.rs"),
        "through a re-export"
    );
    assert!(
        has_edge(
            "src/runners/executor/attempt.rs",
            "src/runners/executor/calls.rs"
        ),
        "a super:: path to a sibling"
    );
    assert!(
        has_edge("src/runners/executor/calls.rs", "src/find_out.rs"),
        "an inline crate:: path (`crate::find_out::look_up(…)`)"
    );
    assert!(
        !has_edge("src/store/lease.rs", "src/store.rs"),
        "a module's use of its ancestors is containment"
    );
    assert!(
        cycles(c.modules.len(), &edges)
            .iter()
            .all(|comp| !comp.contains(&file("src/store/lease.rs"))),
        "a facade's re-export is not an edge of its own"
    );

    // A made-up pair that names each other is a cycle.
    let mut two = BTreeMap::new();
    two.insert(
        0,
        BTreeMap::from([(1, BTreeSet::from(["crate::b::x".to_owned()]))]),
    );
    two.insert(
        1,
        BTreeMap::from([(0, BTreeSet::from(["super::a::y".to_owned()]))]),
    );
    assert_eq!(cycles(2, &two), vec![vec![0, 1]]);
    assert!(
        cycles(
            2,
            &BTreeMap::from([(0, BTreeMap::from([(1, BTreeSet::new())]))])
        )
        .is_empty()
    );

    // Comments and strings are not code.
    assert!(!code_only("a // crate::x\nb \"crate::y\" c /* crate::z */ d").contains("crate"));
    assert_eq!(
        expand_use("crate::a::{b, c::{d as e}, f::*}"),
        vec![
            (
                vec!["crate".into(), "a".into(), "b".into()],
                Some("b".into())
            ),
            (
                vec!["crate".into(), "a".into(), "c".into(), "d".into()],
                Some("e".into())
            ),
            (vec!["crate".into(), "a".into(), "f".into()], None),
        ]
    );
}
