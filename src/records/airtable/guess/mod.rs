//! `reelstate mapping --from-base`: a mapping file guessed from the base's schema (the meta
//! API's tables, fields, types and select options), with a comment on every line saying
//! what was found and what was guessed, so that nobody writes thirty keys by hand and
//! every guess is reviewed before it is trusted.

use std::fmt::Write as _;

use serde_json::Value;

use super::schema::is_computed;

/// One field as the meta API describes it.
struct Field<'a> {
    name: &'a str,
    kind: &'a str,
    options: Vec<&'a str>,
    linked_table: Option<&'a str>,
}

struct Table<'a> {
    id: &'a str,
    name: &'a str,
    fields: Vec<Field<'a>>,
}

fn tables(meta: &Value) -> Vec<Table<'_>> {
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

fn find_table<'t, 'a>(tables: &'t [Table<'a>], names: &[&str]) -> Option<&'t Table<'a>> {
    names.iter().find_map(|n| {
        tables
            .iter()
            .find(|t| t.name == *n)
            .or_else(|| tables.iter().find(|t| norm(t.name) == norm(n)))
    })
}

/// What the engine does with a field, for the guess.
#[derive(Clone, Copy, PartialEq)]
enum Use {
    /// Written: a computed field will not do.
    Write,
    /// Only read: a computed field is fine.
    Read,
}

/// A `key = "value"  # comment` line.
fn line(out: &mut String, key: &str, value: &str, comment: &str) {
    let _ = writeln!(out, "{key} = {}  # {comment}", toml_string(value));
}

fn toml_string(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// Guesses one field: the first candidate name present (exactly, then loosely) whose type
/// the engine can use; writes the mapping line with a comment saying what was found.
fn field_line(
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
fn link_line(
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
fn kind_line(out: &mut String, table: Option<&Table<'_>>, key: &str, name: Option<&str>) {
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
type Values<'a> = &'a [(&'a str, &'a [&'a str])];

fn values_section(
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
    for (engine, spellings) in values {
        let exact = options.iter().find(|o| **o == *engine);
        let guessed = exact.or_else(|| {
            spellings.iter().find_map(|s| {
                options
                    .iter()
                    .find(|o| **o == *s)
                    .or_else(|| options.iter().find(|o| norm(o) == norm(s)))
            })
        });
        match guessed {
            Some(o) if Some(o) == exact => line(out, engine, o, "found"),
            Some(o) => {
                let others: Vec<&str> = options.iter().copied().filter(|x| x != o).collect();
                line(
                    out,
                    engine,
                    o,
                    &format!("GUESS among the options; the others: {}", others.join(", ")),
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "# {engine} = \"?\"  # CHECK: no option like \"{engine}\"; add it to the field or name one of: {}",
                    options.join(", ")
                );
            }
        }
    }
}

/// The mapping TOML for the base described by `meta` (`GET /v0/meta/bases/{base}/tables`).
pub fn mapping_from_meta(meta: &Value) -> String {
    let all = tables(meta);
    let videos = find_table(&all, &["Videos", "Video"]);
    let jobs = find_table(&all, &["Jobs", "Job"]);
    let events = find_table(
        &all,
        &["Webhook Events", "Webhook Event", "Webhooks", "Events"],
    );
    let mut out = String::from(
        "# reelstate mapping, guessed from the base's schema by `reelstate mapping --from-base`.\n\
         # Review every line marked GUESS or CHECK, then run `reelstate check-airtable`.\n\
         # A field set to \"\" is switched off: the engine neither reads nor writes it.\n",
    );
    let table_line = |out: &mut String, t: Option<&Table<'_>>, default: &str| match t {
        Some(t) => line(
            out,
            "table",
            t.name,
            &if t.name == default {
                "found".to_owned()
            } else {
                format!("GUESS: the table like \"{default}\"")
            },
        ),
        None => line(out, "table", default, "CHECK: no such table found"),
    };

    out.push_str("\n[videos]\n");
    table_line(&mut out, videos, "Videos");
    let status = field_line(&mut out, videos, "status", &["Status"], true, Use::Write);
    let combined = field_line(
        &mut out,
        videos,
        "combined_segments_video",
        &["Combined Segments Video", "Combined Video", "Source Video"],
        false,
        Use::Read,
    );
    kind_line(
        &mut out,
        videos,
        "combined_segments_video",
        combined.as_deref(),
    );
    field_line(
        &mut out,
        videos,
        "music_prompt",
        &["Music Prompt", "Prompt"],
        true,
        Use::Read,
    );
    let music = field_line(
        &mut out,
        videos,
        "music",
        &["Music", "Music URL", "Background Music"],
        false,
        Use::Write,
    );
    kind_line(&mut out, videos, "music", music.as_deref());
    let final_video = field_line(
        &mut out,
        videos,
        "final_video",
        &[
            "Final Video",
            "Video + Music",
            "Video with Music",
            "Output Video",
        ],
        false,
        Use::Write,
    );
    kind_line(&mut out, videos, "final_video", final_video.as_deref());
    field_line(
        &mut out,
        videos,
        "error_details",
        &["Error Details", "Error", "Errors"],
        true,
        Use::Write,
    );
    link_line(&mut out, videos, "jobs_link", "Jobs", jobs);

    out.push_str("\n[jobs]\n");
    table_line(&mut out, jobs, "Jobs");
    field_line(&mut out, jobs, "job_id", &["Job ID"], true, Use::Write);
    let job_type = field_line(
        &mut out,
        jobs,
        "job_type",
        &["Type", "Job Type"],
        false,
        Use::Write,
    );
    let job_status = field_line(&mut out, jobs, "status", &["Status"], false, Use::Write);
    link_line(&mut out, jobs, "related_video", "Related Video", videos);
    field_line(
        &mut out,
        jobs,
        "external_job_id",
        &["External Job ID", "External ID", "Task ID"],
        false,
        Use::Write,
    );
    field_line(
        &mut out,
        jobs,
        "webhook_url",
        &["Webhook URL", "Callback URL"],
        true,
        Use::Write,
    );
    field_line(
        &mut out,
        jobs,
        "error_details",
        &["Error Details", "Error", "Errors"],
        true,
        Use::Write,
    );
    field_line(
        &mut out,
        jobs,
        "timestamps",
        &["Timestamps"],
        true,
        Use::Write,
    );

    out.push_str("\n[webhook_events]\n");
    table_line(&mut out, events, "Webhook Events");
    field_line(
        &mut out,
        events,
        "event_id",
        &["Event ID"],
        true,
        Use::Write,
    );
    let service = field_line(&mut out, events, "service", &["Service"], false, Use::Write);
    field_line(
        &mut out,
        events,
        "endpoint",
        &["Endpoint"],
        true,
        Use::Write,
    );
    field_line(
        &mut out,
        events,
        "raw_payload",
        &["Raw Payload", "Payload", "Body"],
        false,
        Use::Write,
    );
    field_line(
        &mut out,
        events,
        "processed",
        &["Processed"],
        false,
        Use::Write,
    );
    field_line(&mut out, events, "success", &["Success"], false, Use::Write);
    field_line(
        &mut out,
        events,
        "timestamp",
        &["Timestamp", "Received At", "Created At"],
        true,
        Use::Write,
    );
    link_line(&mut out, events, "related_job", "Related Job", jobs);
    field_line(
        &mut out,
        events,
        "error_details",
        &["Error Details", "Error", "Errors"],
        true,
        Use::Write,
    );

    let statuses: Values<'_> = &[
        (
            "segments_combined",
            &["Segments Combined", "Ready for Music"],
        ),
        ("generating_music", &["Generating Music"]),
        ("adding_music", &["Adding Music"]),
        ("completed", &["Completed", "Done", "Complete"]),
        (
            "music_generation_failed",
            &["Music Generation Failed", "Failed"],
        ),
        (
            "music_addition_failed",
            &["Music Addition Failed", "Failed"],
        ),
    ];
    values_section(
        &mut out,
        "video_status_values",
        videos,
        status.as_deref(),
        statuses,
    );
    let job_statuses: Values<'_> = &[
        ("pending", &["Pending", "Queued"]),
        ("processing", &["Processing", "In Progress", "Running"]),
        ("completed", &["Completed", "Done", "Complete"]),
        ("failed", &["Failed", "Error"]),
    ];
    values_section(
        &mut out,
        "job_status_values",
        jobs,
        job_status.as_deref(),
        job_statuses,
    );
    let types: Values<'_> = &[
        (
            "music_generation",
            &["music", "Music Generation", "generate_music"],
        ),
        (
            "music_addition",
            &["final", "Music Addition", "add_music", "mix"],
        ),
    ];
    values_section(
        &mut out,
        "job_type_values",
        jobs,
        job_type.as_deref(),
        types,
    );
    let services: Values<'_> = &[
        ("goapi", &["GoAPI", "goapi"]),
        ("nca", &["NCA Toolkit", "NCA", "nca", "nca_toolkit"]),
    ];
    values_section(
        &mut out,
        "service_values",
        events,
        service.as_deref(),
        services,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Mapping;
    use serde_json::json;

    #[test]
    fn a_base_like_the_production_one_gets_a_mapping_that_fits_it() {
        let meta = json!({"tables": [
            {"id": "tblV", "name": "Videos", "fields": [
                {"name": "Description", "type": "multilineText"},
                {"name": "Combined Segments Video", "type": "multipleAttachments"},
                {"name": "Music", "type": "multipleAttachments"},
                {"name": "Video + Music", "type": "multipleAttachments"},
                {"name": "Jobs", "type": "multipleRecordLinks", "options": {"linkedTableId": "tblJ"}},
            ]},
            {"id": "tblJ", "name": "Jobs", "fields": [
                {"name": "Job ID", "type": "formula"},
                {"name": "Type", "type": "singleSelect", "options": {"choices": [{"name": "music"}, {"name": "final"}]}},
                {"name": "Status", "type": "singleSelect", "options": {"choices": [
                    {"name": "pending"}, {"name": "processing"}, {"name": "completed"}, {"name": "failed"}]}},
                {"name": "Related Video", "type": "multipleRecordLinks", "options": {"linkedTableId": "tblV"}},
                {"name": "External Job ID", "type": "singleLineText"},
            ]},
            {"id": "tblE", "name": "Webhook Events", "fields": [
                {"name": "Event ID", "type": "autoNumber"},
                {"name": "Service", "type": "singleSelect", "options": {"choices": [
                    {"name": "GoAPI"}, {"name": "NCA"}, {"name": "NCA Toolkit"}, {"name": "OpenAI"}]}},
                {"name": "Endpoint", "type": "singleLineText"},
                {"name": "Raw Payload", "type": "multilineText"},
                {"name": "Processed", "type": "checkbox"},
                {"name": "Success", "type": "checkbox"},
                {"name": "Created At", "type": "createdTime"},
                {"name": "Related Job", "type": "multipleRecordLinks", "options": {"linkedTableId": "tblJ"}},
            ]},
        ]});
        let toml = mapping_from_meta(&meta);
        let m = Mapping::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(m.video_status_field(), None, "{toml}");
        assert_eq!(m.videos.final_video, "Video + Music");
        assert_eq!(
            m.videos.final_video_kind,
            crate::records::MediaKind::Attachment
        );
        assert_eq!(m.jobs.job_id, None, "a formula Job ID is switched off");
        assert_eq!(m.webhook_events.event_id, None);
        assert_eq!(m.webhook_events.timestamp, None, "Created At is computed");
        assert_eq!(m.jobs.webhook_url, None);
        assert_eq!(
            m.job_type_value(&crate::domain::JobType::MusicAddition),
            "final"
        );
        assert_eq!(m.service_value("nca", "?"), "NCA Toolkit");
        let problems = crate::records::airtable::schema::problems(&meta, &m);
        assert_eq!(problems, vec![], "{toml}");
        for l in toml.lines().filter(|l| l.contains(" = ")) {
            assert!(l.contains("  # "), "every line says what it found: {l}");
        }
    }
}
