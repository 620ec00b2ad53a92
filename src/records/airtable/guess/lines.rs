//! How one mapping line is guessed: the meta API's tables read, a field found by its name
//! (exactly, then loosely) and a type the engine can use, and the line written with a
//! comment saying what was found.

use std::fmt::Write as _;

use serde_json::Value;

use crate::records::airtable::schema::is_computed;

/// One field as the meta API describes it.
struct Field<'a> {
    name: &'a str,
    kind: &'a str,
    options: Vec<&'a str>,
    linked_table: Option<&'a str>,
}

pub(super) struct Table<'a> {
    id: &'a str,
    pub(super) name: &'a str,
    fields: Vec<Field<'a>>,
}

pub(super) fn tables(meta: &Value) -> Vec<Table<'_>> {
    meta.get("tables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| Table {
            id: t.get("id").and_then(Value::as_str).unwrap_or_default(),
            name: t.get("name").and_then(Value::as_str).unwrap_or_default(),
            fields: t
                .get("fields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|f| Field {
                    name: f.get("name").and_then(Value::as_str).unwrap_or_default(),
                    kind: f.get("type").and_then(Value::as_str).unwrap_or_default(),
                    options: f
                        .pointer("/options/choices")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c.get("name").and_then(Value::as_str))
                        .collect(),
                    linked_table: f.pointer("/options/linkedTableId").and_then(Value::as_str),
                })
                .collect(),
        })
        .collect()
}

/// Lower case, letters and digits only: "Video + Music" ~ "video_music".
fn norm(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .flat_map(char::to_lowercase)
        .collect()
}

pub(super) fn find_table<'t, 'a>(tables: &'t [Table<'a>], names: &[&str]) -> Option<&'t Table<'a>> {
    names.iter().find_map(|n| {
        tables
            .iter()
            .find(|t| t.name == *n)
            .or_else(|| tables.iter().find(|t| norm(t.name) == norm(n)))
    })
}

/// What the engine does with a field, for the guess.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Use {
    /// Written: a computed field will not do.
    Write,
    /// Only read: a computed field is fine.
    Read,
}

/// A `key = "value"  # comment` line.
pub(super) fn line(out: &mut String, key: &str, value: &str, comment: &str) {
    let _ = writeln!(out, "{key} = {}  # {comment}", toml_string(value));
}

fn toml_string(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// Guesses one field: the first candidate name present (exactly, then loosely) whose type
/// the engine can use; writes the mapping line with a comment saying what was found.
pub(super) fn field_line(
    out: &mut String,
    table: Option<&Table<'_>>,
    key: &str,
    candidates: &[&str],
    optional: bool,
    usage: Use,
) -> Option<String> {
    let fields: &[Field<'_>] = table.map(|t| t.fields.as_slice()).unwrap_or_default();
    let found: Vec<&Field<'_>> = candidates
        .iter()
        .flat_map(|c| {
            fields.iter().filter(move |f| f.name == *c).chain(
                fields
                    .iter()
                    .filter(move |f| f.name != *c && norm(f.name) == norm(c)),
            )
        })
        .collect();
    let usable = found
        .iter()
        .find(|f| usage == Use::Read || !is_computed(f.kind));
    match (usable, found.first()) {
        (Some(f), _) => {
            let exact = f.name == candidates[0];
            let others: Vec<&str> = found
                .iter()
                .map(|x| x.name)
                .filter(|n| *n != f.name)
                .collect();
            let mut comment = format!(
                "{}found \"{}\" ({})",
                if exact { "" } else { "GUESS: " },
                f.name,
                f.kind
            );
            if !others.is_empty() {
                let _ = write!(comment, "; also there: {}", others.join(", "));
            }
            line(out, key, f.name, &comment);
            Some(f.name.to_owned())
        }
        (None, Some(computed)) if optional => {
            line(
                out,
                key,
                "",
                &format!(
                    "GUESS: off: \"{}\" is computed ({}) and Airtable refuses writes to it",
                    computed.name, computed.kind
                ),
            );
            None
        }
        (None, Some(computed)) => {
            line(
                out,
                key,
                candidates[0],
                &format!(
                    "CHECK: \"{}\" is computed ({}); name a writable field here",
                    computed.name, computed.kind
                ),
            );
            None
        }
        (None, None) if optional => {
            line(
                out,
                key,
                "",
                &format!(
                    "GUESS: off: the base has no field like \"{}\"",
                    candidates[0]
                ),
            );
            None
        }
        (None, None) => {
            line(
                out,
                key,
                candidates[0],
                "CHECK: no such field found; create it or name the field to use",
            );
            None
        }
    }
}

/// The link field of `table` pointing at `target`, if any.
pub(super) fn link_line(
    out: &mut String,
    table: Option<&Table<'_>>,
    key: &str,
    preferred: &str,
    target: Option<&Table<'_>>,
) {
    let link = table.zip(target).and_then(|(t, to)| {
        let links: Vec<&Field<'_>> = t
            .fields
            .iter()
            .filter(|f| f.kind == "multipleRecordLinks" && f.linked_table == Some(to.id))
            .collect();
        links
            .iter()
            .find(|f| f.name == preferred)
            .or_else(|| links.first())
            .copied()
    });
    match link {
        Some(f) => {
            let comment = if f.name == preferred {
                format!("found \"{}\" (link)", f.name)
            } else {
                format!("GUESS: the link to that table is \"{}\"", f.name)
            };
            line(out, key, f.name, &comment);
        }
        None => line(
            out,
            key,
            "",
            "GUESS: off: no link field to that table was found",
        ),
    }
}

/// The `kind` line of a media field: what the base's field is.
pub(super) fn kind_line(
    out: &mut String,
    table: Option<&Table<'_>>,
    key: &str,
    name: Option<&str>,
) {
    let kind = table
        .zip(name)
        .and_then(|(t, n)| t.fields.iter().find(|f| f.name == n))
        .map(|f| f.kind);
    let value = if kind == Some("multipleAttachments") {
        "attachment"
    } else {
        "url"
    };
    line(
        out,
        &format!("{key}_kind"),
        value,
        &format!("the field is {}", kind.unwrap_or("not found")),
    );
}

/// Engine values and the spellings to look for among a select's options, best first.
pub(super) type Values<'a> = &'a [(&'a str, &'a [&'a str])];

pub(super) fn values_section(
    out: &mut String,
    section: &str,
    table: Option<&Table<'_>>,
    field: Option<&str>,
    values: Values<'_>,
) {
    let _ = writeln!(out, "\n[{section}]");
    let options: Vec<&str> = table
        .zip(field)
        .and_then(|(t, n)| t.fields.iter().find(|f| f.name == n))
        .filter(|f| f.kind == "singleSelect")
        .map(|f| f.options.clone())
        .unwrap_or_default();
    if options.is_empty() {
        let _ = writeln!(
            out,
            "# not a single select (or not found): the engine writes its own spellings"
        );
        return;
    }
    // Every option that reads as a value: a base written by two builds holds both
    // spellings (`music` and `music_generation`), and a record in the one not listed would
    // not be recognised. The engine's own name first (it is written), then the likely
    // spellings in their order, each option once.
    let matches: Vec<(Option<&str>, Vec<&str>)> = values
        .iter()
        .map(|(engine, spellings)| {
            let exact = options.iter().copied().find(|o| *o == *engine);
            let mut found: Vec<&str> = exact.into_iter().collect();
            for s in spellings.iter() {
                let like = options
                    .iter()
                    .copied()
                    .find(|o| *o == *s)
                    .or_else(|| options.iter().copied().find(|o| norm(o) == norm(s)));
                if let Some(o) = like.filter(|o| !found.contains(o)) {
                    found.push(o);
                }
            }
            (exact, found)
        })
        .collect();
    for (i, ((engine, _), (exact, found))) in values.iter().zip(&matches).enumerate() {
        let exact = *exact;
        // An option that also matches another value (a bare `Failed`) may be written, but
        // is not read as this one: it would be read as whichever value came first.
        let shared = |o: &&str| {
            matches
                .iter()
                .enumerate()
                .any(|(j, (_, f))| j != i && f.contains(o))
        };
        let found: Vec<&str> = found
            .iter()
            .enumerate()
            .filter(|(k, o)| *k == 0 || !shared(o))
            .map(|(_, o)| *o)
            .collect();
        let others: Vec<&str> = options
            .iter()
            .copied()
            .filter(|x| !found.contains(x))
            .collect();
        match found.as_slice() {
            [] => {
                let _ = writeln!(
                    out,
                    "# {engine} = \"?\"  # CHECK: no option like \"{engine}\"; add it to the field or name one of: {}",
                    options.join(", ")
                );
            }
            [o] if Some(*o) == exact => line(out, engine, o, "found"),
            [o] => line(
                out,
                engine,
                o,
                &format!("GUESS among the options; the others: {}", others.join(", ")),
            ),
            several => {
                let list: Vec<String> = several.iter().map(|o| toml_string(o)).collect();
                let how = if exact.is_some() { "found" } else { "GUESS" };
                let _ = writeln!(
                    out,
                    "{engine} = [{}]  # {how}: every option is read as {engine}, the first written; the others: {}",
                    list.join(", "),
                    others.join(", ")
                );
            }
        }
    }
}
