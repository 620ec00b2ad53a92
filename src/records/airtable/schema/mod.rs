//! Checks that an Airtable base has the tables, fields, types and select options the
//! [`Mapping`] needs, before the first write fails on them, and says how to fix each one.

use std::fmt;

use serde_json::Value;

use super::{AirtableBackend, AirtableConfig};
use crate::records::{Mapping, MediaKind, RecordsError};

const TEXT: &[&str] = &["singleLineText"];
const LONG_TEXT: &[&str] = &["multilineText", "richText", "singleLineText"];
const ANY_TEXT: &[&str] = &["singleLineText", "multilineText", "richText"];
const URL: &[&str] = &["url", "singleLineText", "multilineText"];
const ATTACHMENT: &[&str] = &["multipleAttachments"];
/// A plain text Status has no options to check; a select must offer every value written.
const SELECT: &[&str] = &["singleSelect", "singleLineText"];
const LINK: &[&str] = &["multipleRecordLinks"];
const CHECKBOX: &[&str] = &["checkbox"];
const TIMESTAMP: &[&str] = &["dateTime", "singleLineText"];

/// Field types whose value Airtable computes: every write to them, `null` included, is
/// refused with 422 `INVALID_VALUE_FOR_COLUMN` ("cannot accept a value because the field
/// is computed"). Fine for a field the engine only reads; never for one it writes.
pub const COMPUTED: &[&str] = &[
    "formula",
    "autoNumber",
    "createdTime",
    "lastModifiedTime",
    "createdBy",
    "lastModifiedBy",
    "multipleLookupValues",
    "rollup",
    "count",
];

pub fn is_computed(field_type: &str) -> bool {
    COMPUTED.contains(&field_type)
}

/// Whether the engine writes a field or only reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One field the engine reads or writes.
#[derive(Debug, Clone, PartialEq)]
pub struct RequiredField {
    pub name: String,
    /// The mapping line that names it: `[jobs] job_id`.
    pub key: String,
    /// Whether `key = ""` switches it off.
    pub optional: bool,
    pub access: Access,
    /// Acceptable Airtable field types, the preferred one first.
    pub types: &'static [&'static str],
    /// Options a `singleSelect` must offer (ignored for text types), each with the mapping
    /// line that spells it: (`[job_type_values] music_addition`, `music_addition`).
    pub options: Vec<(String, String)>,
    /// For a link: the table it must point to.
    pub links_to: Option<String>,
    /// For a media field: the `*_kind` line and the kind the mapping says.
    pub media: Option<(String, MediaKind)>,
    /// What the engine uses it for (for README docs and messages).
    pub purpose: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RequiredTable {
    pub name: String,
    /// `[videos] table`.
    pub key: String,
    pub fields: Vec<RequiredField>,
}

/// Everything the mapping needs from the base.
pub fn required_schema(m: &Mapping) -> Vec<RequiredTable> {
    let field = |section: &str, key: &str, name: &str, types, access, purpose| RequiredField {
        name: name.to_owned(),
        key: format!("[{section}] {key}"),
        optional: false,
        access,
        types,
        options: Vec::new(),
        links_to: None,
        media: None,
        purpose,
    };
    let optional = |f: RequiredField| RequiredField {
        optional: true,
        ..f
    };
    let media =
        |section: &str, key: &str, name: &str, kind: MediaKind, access, purpose| RequiredField {
            media: Some((format!("[{section}] {key}_kind"), kind)),
            ..field(
                section,
                key,
                name,
                match kind {
                    MediaKind::Url => URL,
                    MediaKind::Attachment => ATTACHMENT,
                },
                access,
                purpose,
            )
        };
    let link = |section: &str, key: &str, name: &str, to: &str, access, purpose| RequiredField {
        links_to: Some(to.to_owned()),
        ..field(section, key, name, LINK, access, purpose)
    };
    let select = |section: &str,
                  key: &str,
                  name: &str,
                  values: &str,
                  options: Vec<(String, String)>,
                  purpose| RequiredField {
        options: options
            .into_iter()
            .map(|(engine, option)| (format!("[{values}] {engine}"), option))
            .collect(),
        ..field(section, key, name, SELECT, Access::Write, purpose)
    };
    use crate::domain::{JobStatus, JobType, VideoStatus};
    use strum::IntoEnumIterator;

    let v = &m.videos;
    let mut videos = Vec::new();
    if let Some(s) = m.video_status_field() {
        let options = VideoStatus::KNOWN
            .iter()
            .map(|st| (st.name().to_owned(), m.video_status_value(st)))
            .collect();
        videos.push(optional(select(
            "videos",
            "status",
            s,
            "video_status_values",
            options,
            "the video's music stage",
        )));
    }
    videos.push(media(
        "videos",
        "combined_segments_video",
        &v.combined_segments_video,
        v.combined_segments_video_kind,
        Access::Read,
        "input video (read)",
    ));
    if let Some(p) = &v.music_prompt {
        videos.push(optional(field(
            "videos",
            "music_prompt",
            p,
            ANY_TEXT,
            Access::Read,
            "music prompt (read)",
        )));
    }
    videos.push(media(
        "videos",
        "music",
        &v.music,
        v.music_kind,
        Access::Write,
        "generated track",
    ));
    videos.push(media(
        "videos",
        "final_video",
        &v.final_video,
        v.final_video_kind,
        Access::Write,
        "mixed video",
    ));
    if let Some(e) = &v.error_details {
        videos.push(optional(field(
            "videos",
            "error_details",
            e,
            LONG_TEXT,
            Access::Write,
            "why the stage failed",
        )));
    }
    if let Some(l) = &v.jobs_link {
        videos.push(optional(link(
            "videos",
            "jobs_link",
            l,
            &m.jobs.table,
            Access::Read,
            "the video's jobs (read)",
        )));
    }

    let j = &m.jobs;
    let mut jobs = Vec::new();
    if let Some(id) = &j.job_id {
        jobs.push(optional(field(
            "jobs",
            "job_id",
            id,
            TEXT,
            Access::Write,
            "the engine's job id (written for people; not a key)",
        )));
    }
    let types = [JobType::MusicGeneration, JobType::MusicAddition]
        .iter()
        .map(|t| (t.name().to_owned(), m.job_type_value(t)))
        .collect();
    jobs.push(select(
        "jobs",
        "job_type",
        &j.job_type,
        "job_type_values",
        types,
        "job type",
    ));
    let statuses = JobStatus::iter()
        .map(|st| (st.to_string(), m.job_status_value(st)))
        .collect();
    jobs.push(select(
        "jobs",
        "status",
        &j.status,
        "job_status_values",
        statuses,
        "job status",
    ));
    jobs.push(link(
        "jobs",
        "related_video",
        &j.related_video,
        &v.table,
        Access::Write,
        "the job's video",
    ));
    jobs.push(field(
        "jobs",
        "external_job_id",
        &j.external_job_id,
        TEXT,
        Access::Write,
        "GoAPI task id / NCA job id",
    ));
    if let Some(u) = &j.webhook_url {
        jobs.push(optional(field(
            "jobs",
            "webhook_url",
            u,
            URL,
            Access::Write,
            "callback URL given to the service",
        )));
    }
    if let Some(e) = &j.error_details {
        jobs.push(optional(field(
            "jobs",
            "error_details",
            e,
            LONG_TEXT,
            Access::Write,
            "why the job failed",
        )));
    }
    if let Some(t) = &j.timestamps {
        jobs.push(optional(field(
            "jobs",
            "timestamps",
            t,
            ANY_TEXT,
            Access::Write,
            "when each step happened",
        )));
    }

    let w = &m.webhook_events;
    let mut events = Vec::new();
    if let Some(id) = &w.event_id {
        events.push(optional(field(
            "webhook_events",
            "event_id",
            id,
            TEXT,
            Access::Write,
            "delivery id (written for people; not a key)",
        )));
    }
    let services = [("goapi", "GoAPI"), ("nca", "NCA Toolkit")]
        .iter()
        .map(|(k, d)| ((*k).to_owned(), m.service_value(k, d)))
        .collect();
    events.push(select(
        "webhook_events",
        "service",
        &w.service,
        "service_values",
        services,
        "goapi or nca",
    ));
    if let Some(e) = &w.endpoint {
        events.push(optional(field(
            "webhook_events",
            "endpoint",
            e,
            URL,
            Access::Write,
            "the endpoint called",
        )));
    }
    events.push(field(
        "webhook_events",
        "raw_payload",
        &w.raw_payload,
        LONG_TEXT,
        Access::Write,
        "the body received",
    ));
    events.push(field(
        "webhook_events",
        "processed",
        &w.processed,
        CHECKBOX,
        Access::Write,
        "handled",
    ));
    events.push(field(
        "webhook_events",
        "success",
        &w.success,
        CHECKBOX,
        Access::Write,
        "handled successfully",
    ));
    if let Some(t) = &w.timestamp {
        events.push(optional(field(
            "webhook_events",
            "timestamp",
            t,
            TIMESTAMP,
            Access::Write,
            "when it arrived",
        )));
    }
    if let Some(r) = &w.related_job {
        events.push(optional(link(
            "webhook_events",
            "related_job",
            r,
            &j.table,
            Access::Write,
            "the job it concerns",
        )));
    }
    if let Some(e) = &w.error_details {
        events.push(optional(field(
            "webhook_events",
            "error_details",
            e,
            LONG_TEXT,
            Access::Write,
            "what went wrong",
        )));
    }

    vec![
        RequiredTable {
            name: v.table.clone(),
            key: "[videos] table".into(),
            fields: videos,
        },
        RequiredTable {
            name: j.table.clone(),
            key: "[jobs] table".into(),
            fields: jobs,
        },
        RequiredTable {
            name: w.table.clone(),
            key: "[webhook_events] table".into(),
            fields: events,
        },
    ]
}

/// One thing the base lacks, with the mapping line that would fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaProblem {
    MissingTable {
        table: String,
        key: String,
    },
    MissingField {
        table: String,
        field: String,
        key: String,
        optional: bool,
        expected: Vec<String>,
    },
    WrongType {
        table: String,
        field: String,
        key: String,
        optional: bool,
        found: String,
        expected: Vec<String>,
    },
    /// A field the engine writes whose value Airtable computes.
    Computed {
        table: String,
        field: String,
        key: String,
        optional: bool,
        found: String,
    },
    /// A media field of the other kind than the mapping says.
    WrongMediaKind {
        table: String,
        field: String,
        kind_key: String,
        kind: &'static str,
    },
    MissingOption {
        table: String,
        field: String,
        /// `[job_type_values] music_addition`
        key: String,
        option: String,
        choices: Vec<String>,
    },
    WrongLinkTarget {
        table: String,
        field: String,
        expected_table: String,
    },
}

/// `, or switch it off: [jobs] timestamps = ""` for an optional field.
fn or_off(optional: bool, key: &str) -> String {
    if optional {
        format!(", or switch it off with the mapping line `{key} = \"\"`")
    } else {
        String::new()
    }
}

impl fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaProblem::MissingTable { table, key } => write!(
                f,
                "table \"{table}\" is missing: create it, or name the existing table with the \
                 mapping line `{key} = \"<its name>\"`"
            ),
            SchemaProblem::MissingField {
                table,
                field,
                key,
                optional,
                expected,
            } => write!(
                f,
                "{table}.\"{field}\" is missing: add a field \"{field}\" of type {} (names are \
                 case-sensitive), or name an existing field with the mapping line \
                 `{key} = \"<its name>\"`{}",
                expected.join(" or "),
                or_off(*optional, key)
            ),
            SchemaProblem::WrongType {
                table,
                field,
                key,
                optional,
                found,
                expected,
            } => write!(
                f,
                "{table}.\"{field}\" is of type {found}, expected {}: change its type, or name \
                 another field with the mapping line `{key} = \"<its name>\"`{}",
                expected.join(" or "),
                or_off(*optional, key)
            ),
            SchemaProblem::Computed {
                table,
                field,
                key,
                optional,
                found,
            } => write!(
                f,
                "{table}.\"{field}\" is computed ({found}) and Airtable refuses every write to \
                 it: {}",
                if *optional {
                    format!(
                        "switch it off with the mapping line `{key} = \"\"` (the engine then \
                         keeps its ids in its own store), or name a writable field"
                    )
                } else {
                    format!("name a writable field with the mapping line `{key} = \"<its name>\"`")
                }
            ),
            SchemaProblem::WrongMediaKind {
                table,
                field,
                kind_key,
                kind,
            } => write!(
                f,
                "{table}.\"{field}\" is {} field: write the mapping line `{kind_key} = \"{kind}\"`",
                if *kind == "attachment" {
                    "an attachment"
                } else {
                    "a URL or text"
                }
            ),
            SchemaProblem::MissingOption {
                table,
                field,
                key,
                option,
                choices,
            } => write!(
                f,
                "{table}.\"{field}\" has no select option \"{option}\": add the option, or spell \
                 it as one the field has with the mapping line `{key} = \"<option>\"` (options: {})",
                if choices.is_empty() {
                    "none".to_owned()
                } else {
                    choices
                        .iter()
                        .map(|c| format!("\"{c}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            SchemaProblem::WrongLinkTarget {
                table,
                field,
                expected_table,
            } => write!(
                f,
                "{table}.\"{field}\" does not link to table \"{expected_table}\": make it a link \
                 to \"{expected_table}\""
            ),
        }
    }
}

/// Reads the base's schema (`GET /v0/meta/bases/{base}/tables`, one request; the token needs
/// `schema.bases:read`) and lists every problem; an empty list means the mapping fits.
pub async fn check_schema(
    backend_cfg: &AirtableConfig,
    mapping: &Mapping,
) -> Result<Vec<SchemaProblem>, RecordsError> {
    let backend = AirtableBackend::new(backend_cfg.clone())?;
    let meta = backend.meta_tables().await?;
    Ok(problems(&meta, mapping))
}

/// The problems found in the base's schema (empty: all good), or why it could not be read.
pub type SchemaCheck = Result<Vec<String>, String>;

/// The last schema check, so that a readiness probe does not spend the rate limit.
#[derive(Default)]
pub struct SchemaCache(tokio::sync::Mutex<Option<(std::time::Instant, SchemaCheck)>>);

impl SchemaCache {
    /// The base's schema problems (empty: all good), checked at most once a minute.
    pub async fn problems(&self, airtable: &AirtableBackend, mapping: &Mapping) -> SchemaCheck {
        let mut cached = self.0.lock().await;
        if let Some((_, result)) = cached
            .as_ref()
            .filter(|(at, _)| at.elapsed() < std::time::Duration::from_secs(60))
        {
            return result.clone();
        }
        let result = match airtable.meta_tables().await {
            Ok(meta) => Ok(problems(&meta, mapping)
                .iter()
                .map(ToString::to_string)
                .collect()),
            Err(e) => Err(e.to_string()),
        };
        *cached = Some((std::time::Instant::now(), result.clone()));
        result
    }
}

/// Compares a meta tables response with what the mapping needs.
pub fn problems(meta: &Value, mapping: &Mapping) -> Vec<SchemaProblem> {
    let tables: &[Value] = meta
        .get("tables")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let str_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let table_named = |name: &str| {
        tables
            .iter()
            .find(|t| str_of(t, "name").as_deref() == Some(name))
    };
    let mut out = Vec::new();
    for required in required_schema(mapping) {
        let Some(table) = table_named(&required.name) else {
            out.push(SchemaProblem::MissingTable {
                table: required.name.clone(),
                key: required.key.clone(),
            });
            continue;
        };
        let fields: &[Value] = table
            .get("fields")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for want in &required.fields {
            let expected = || want.types.iter().map(|t| (*t).to_owned()).collect();
            let Some(have) = fields
                .iter()
                .find(|f| str_of(f, "name").as_deref() == Some(want.name.as_str()))
            else {
                out.push(SchemaProblem::MissingField {
                    table: required.name.clone(),
                    field: want.name.clone(),
                    key: want.key.clone(),
                    optional: want.optional,
                    expected: expected(),
                });
                continue;
            };
            let found = str_of(have, "type").unwrap_or_default();
            if is_computed(&found) {
                // A computed field is fine to read (a lookup of the source video, a formula
                // prompt); a write to it is refused.
                if want.access == Access::Write {
                    out.push(SchemaProblem::Computed {
                        table: required.name.clone(),
                        field: want.name.clone(),
                        key: want.key.clone(),
                        optional: want.optional,
                        found,
                    });
                }
                continue;
            }
            if let Some((kind_key, kind)) = &want.media {
                // Either kind can be read; what matters is that the mapping says which, so
                // that writes have the right shape and expiring copies are read afresh.
                let other = match kind {
                    MediaKind::Url if found == "multipleAttachments" => Some("attachment"),
                    MediaKind::Attachment if URL.contains(&found.as_str()) => Some("url"),
                    _ => None,
                };
                if let Some(other) = other {
                    out.push(SchemaProblem::WrongMediaKind {
                        table: required.name.clone(),
                        field: want.name.clone(),
                        kind_key: kind_key.clone(),
                        kind: other,
                    });
                    continue;
                }
            }
            if !want.types.contains(&found.as_str()) {
                out.push(SchemaProblem::WrongType {
                    table: required.name.clone(),
                    field: want.name.clone(),
                    key: want.key.clone(),
                    optional: want.optional,
                    found,
                    expected: expected(),
                });
                continue;
            }
            let options = have.get("options");
            if found == "singleSelect" {
                let choices: Vec<String> = options
                    .and_then(|o| o.get("choices"))
                    .and_then(Value::as_array)
                    .map(|c| c.iter().filter_map(|c| str_of(c, "name")).collect())
                    .unwrap_or_default();
                for (key, option) in &want.options {
                    if !choices.contains(option) {
                        out.push(SchemaProblem::MissingOption {
                            table: required.name.clone(),
                            field: want.name.clone(),
                            key: key.clone(),
                            option: option.clone(),
                            choices: choices.clone(),
                        });
                    }
                }
            }
            if let Some(target) = &want.links_to {
                let linked = options.and_then(|o| str_of(o, "linkedTableId"));
                let target_id = table_named(target).and_then(|t| str_of(t, "id"));
                // Only a link known to point elsewhere is reported; a missing target table
                // is reported as such.
                if let (Some(linked), Some(target_id)) = (linked, target_id)
                    && linked != target_id
                {
                    out.push(SchemaProblem::WrongLinkTarget {
                        table: required.name.clone(),
                        field: want.name.clone(),
                        expected_table: target.clone(),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta_for(m: &Mapping) -> Value {
        let tables: Vec<Value> = required_schema(m)
            .iter()
            .map(|t| {
                let fields: Vec<Value> = t
                    .fields
                    .iter()
                    .map(|f| {
                        let mut v = json!({"id": "fld", "name": f.name, "type": f.types[0]});
                        if f.types[0] == "singleSelect" {
                            let choices: Vec<Value> =
                                f.options.iter().map(|(_, o)| json!({"name": o})).collect();
                            v["options"] = json!({ "choices": choices });
                        }
                        if let Some(to) = &f.links_to {
                            v["options"] = json!({ "linkedTableId": format!("tbl{to}") });
                        }
                        v
                    })
                    .collect();
                json!({"id": format!("tbl{}", t.name), "name": t.name, "fields": fields})
            })
            .collect();
        json!({ "tables": tables })
    }

    fn field_mut<'a>(meta: &'a mut Value, table: &str, field: &str) -> &'a mut Value {
        meta["tables"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|t| t["name"] == table)
            .unwrap()["fields"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|f| f["name"] == field)
            .unwrap()
    }

    #[test]
    fn the_required_schema_satisfies_itself() {
        let m = Mapping::default();
        assert_eq!(problems(&meta_for(&m), &m), vec![]);
    }

    #[test]
    fn problems_are_precise() {
        let m = Mapping::default();
        let mut meta = meta_for(&m);
        field_mut(&mut meta, "Videos", "Combined Segments Video")["type"] = json!("checkbox");
        field_mut(&mut meta, "Videos", "Jobs")["options"]["linkedTableId"] = json!("tblOther");
        field_mut(&mut meta, "Jobs", "Status")["options"]["choices"]
            .as_array_mut()
            .unwrap()
            .retain(|c| c["name"] != "failed");
        let tables = meta["tables"].as_array_mut().unwrap();
        tables.retain(|t| t["name"] != "Webhook Events");
        let jobs = tables[1]["fields"].as_array_mut().unwrap();
        jobs.retain(|f| f["name"] != "External Job ID");
        let found = problems(&meta, &m);
        assert_eq!(
            found,
            vec![
                SchemaProblem::WrongType {
                    table: "Videos".into(),
                    field: "Combined Segments Video".into(),
                    key: "[videos] combined_segments_video".into(),
                    optional: false,
                    found: "checkbox".into(),
                    expected: vec![
                        "url".into(),
                        "singleLineText".into(),
                        "multilineText".into()
                    ],
                },
                SchemaProblem::WrongLinkTarget {
                    table: "Videos".into(),
                    field: "Jobs".into(),
                    expected_table: "Jobs".into(),
                },
                SchemaProblem::MissingOption {
                    table: "Jobs".into(),
                    field: "Status".into(),
                    key: "[job_status_values] failed".into(),
                    option: "failed".into(),
                    choices: vec!["pending".into(), "processing".into(), "completed".into()],
                },
                SchemaProblem::MissingField {
                    table: "Jobs".into(),
                    field: "External Job ID".into(),
                    key: "[jobs] external_job_id".into(),
                    optional: false,
                    expected: vec!["singleLineText".into()],
                },
                SchemaProblem::MissingTable {
                    table: "Webhook Events".into(),
                    key: "[webhook_events] table".into(),
                },
            ]
        );
        let text = found[2].to_string();
        assert!(
            text.contains("Jobs.\"Status\"")
                && text.contains("`[job_status_values] failed = \"<option>\"`"),
            "{text}"
        );
    }

    #[test]
    fn a_base_without_status_needs_no_status_field() {
        let m = Mapping::from_toml("[videos]\nstatus = \"\"").unwrap();
        let videos = &required_schema(&m)[0];
        assert!(videos.fields.iter().all(|f| f.name != "Status"));
    }

    #[test]
    fn computed_fields_may_be_read_but_never_written() {
        let m = Mapping::default();
        let mut meta = meta_for(&m);
        field_mut(&mut meta, "Jobs", "Job ID")["type"] = json!("formula");
        field_mut(&mut meta, "Webhook Events", "Event ID")["type"] = json!("autoNumber");
        // Read only: a lookup of the source video and a formula prompt are fine.
        field_mut(&mut meta, "Videos", "Combined Segments Video")["type"] =
            json!("multipleLookupValues");
        field_mut(&mut meta, "Videos", "Music Prompt")["type"] = json!("formula");
        let found = problems(&meta, &m);
        assert_eq!(found.len(), 2, "{found:#?}");
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert!(
            text[0].contains("Jobs.\"Job ID\" is computed (formula)")
                && text[0].contains("`[jobs] job_id = \"\"`"),
            "{}",
            text[0]
        );
        assert!(
            text[1].contains("`[webhook_events] event_id = \"\"`"),
            "{}",
            text[1]
        );
        let off =
            Mapping::from_toml("[jobs]\njob_id = \"\"\n[webhook_events]\nevent_id = \"\"").unwrap();
        assert_eq!(problems(&meta, &off), vec![]);
    }

    #[test]
    fn a_media_field_of_the_other_kind_names_its_kind_line() {
        let m = Mapping::default();
        let mut meta = meta_for(&m);
        field_mut(&mut meta, "Videos", "Music")["type"] = json!("multipleAttachments");
        let found = problems(&meta, &m);
        assert_eq!(found.len(), 1);
        assert!(
            found[0]
                .to_string()
                .contains("`[videos] music_kind = \"attachment\"`"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn select_options_are_checked_as_the_mapping_spells_them() {
        let m = Mapping::from_toml(
            "[service_values]\ngoapi = \"goapi\"\nnca = \"nca\"\n[job_type_values]\nmusic_generation = \"music\"\nmusic_addition = \"final\"",
        )
        .unwrap();
        let meta = meta_for(&m);
        assert_eq!(problems(&meta, &m), vec![]);
        // The same base checked with the default spellings names every line to write.
        let found = problems(&meta, &Mapping::default());
        let keys: Vec<String> = found
            .iter()
            .filter_map(|p| match p {
                SchemaProblem::MissingOption { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            keys,
            [
                "[job_type_values] music_generation",
                "[job_type_values] music_addition",
                "[service_values] goapi",
                "[service_values] nca"
            ]
        );
    }
}
