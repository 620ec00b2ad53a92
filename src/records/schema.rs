//! Checks that an Airtable base has the tables, fields, types and select options the
//! [`Mapping`] needs, before the first write fails on them, and says how to fix each one.

use std::fmt;

use serde_json::Value;

use super::airtable::{AirtableBackend, AirtableConfig};
use super::{Mapping, MediaKind, RecordsError};

const TEXT: &[&str] = &["singleLineText"];
const LONG_TEXT: &[&str] = &["multilineText", "richText"];
const ANY_TEXT: &[&str] = &["singleLineText", "multilineText", "richText"];
const URL: &[&str] = &["url", "singleLineText", "multilineText"];
const ATTACHMENT: &[&str] = &["multipleAttachments"];
/// A plain text Status has no options to check; a select must offer every value written.
const SELECT: &[&str] = &["singleSelect", "singleLineText"];
const LINK: &[&str] = &["multipleRecordLinks"];
const CHECKBOX: &[&str] = &["checkbox"];
const TIMESTAMP: &[&str] = &["dateTime", "singleLineText"];

/// One field the engine reads or writes.
#[derive(Debug, Clone, PartialEq)]
pub struct RequiredField {
    pub name: String,
    /// Acceptable Airtable field types, the preferred one first.
    pub types: &'static [&'static str],
    /// Options a `singleSelect` must offer (ignored for text types).
    pub options: Vec<String>,
    /// For a link: the table it must point to.
    pub links_to: Option<String>,
    /// What the engine uses it for (for README docs and messages).
    pub purpose: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RequiredTable {
    pub name: String,
    pub fields: Vec<RequiredField>,
}

/// Everything the mapping needs from the base.
pub fn required_schema(m: &Mapping) -> Vec<RequiredTable> {
    let field = |name: &str, types, purpose| RequiredField {
        name: name.to_owned(),
        types,
        options: Vec::new(),
        links_to: None,
        purpose,
    };
    let media = |kind: MediaKind| match kind {
        MediaKind::Url => URL,
        MediaKind::Attachment => ATTACHMENT,
    };
    let link = |name: &str, to: &str, purpose| RequiredField {
        links_to: Some(to.to_owned()),
        ..field(name, LINK, purpose)
    };
    let select = |name: &str, options: Vec<String>, purpose| RequiredField {
        options,
        ..field(name, SELECT, purpose)
    };

    let v = &m.videos;
    let mut videos = Vec::new();
    if let Some(s) = m.video_status_field() {
        videos.push(select(
            s,
            m.video_status_options(),
            "the video's music stage",
        ));
    }
    videos.push(field(
        &v.combined_segments_video,
        media(v.combined_segments_video_kind),
        "input video (read)",
    ));
    if let Some(p) = &v.music_prompt {
        videos.push(field(p, ANY_TEXT, "music prompt (read)"));
    }
    videos.push(field(&v.music, media(v.music_kind), "generated track"));
    videos.push(field(
        &v.final_video,
        media(v.final_video_kind),
        "mixed video",
    ));
    if let Some(e) = &v.error_details {
        videos.push(field(e, LONG_TEXT, "why the stage failed"));
    }
    if let Some(l) = &v.jobs_link {
        videos.push(link(l, &m.jobs.table, "the video's jobs (read)"));
    }

    let j = &m.jobs;
    let mut jobs = vec![
        field(&j.job_id, TEXT, "the engine's job id (upsert key)"),
        select(
            &j.job_type,
            vec!["music_generation".into(), "music_addition".into()],
            "job type",
        ),
        select(&j.status, m.job_status_options(), "job status"),
        link(&j.related_video, &v.table, "the job's video"),
        field(&j.external_job_id, TEXT, "GoAPI task id / NCA job id"),
    ];
    if let Some(u) = &j.webhook_url {
        jobs.push(field(u, URL, "callback URL given to the service"));
    }
    if let Some(e) = &j.error_details {
        jobs.push(field(e, LONG_TEXT, "why the job failed"));
    }
    if let Some(t) = &j.timestamps {
        jobs.push(field(t, ANY_TEXT, "when each step happened"));
    }

    let w = &m.webhook_events;
    let mut events = vec![
        field(&w.event_id, TEXT, "delivery id (upsert key)"),
        field(&w.service, TEXT, "goapi or nca"),
        field(&w.endpoint, URL, "the endpoint called"),
        field(&w.raw_payload, LONG_TEXT, "the body received"),
        field(&w.processed, CHECKBOX, "handled"),
        field(&w.success, CHECKBOX, "handled successfully"),
        field(&w.timestamp, TIMESTAMP, "when it arrived"),
    ];
    if let Some(r) = &w.related_job {
        events.push(link(r, &j.table, "the job it concerns"));
    }
    if let Some(e) = &w.error_details {
        events.push(field(e, LONG_TEXT, "what went wrong"));
    }

    vec![
        RequiredTable {
            name: v.table.clone(),
            fields: videos,
        },
        RequiredTable {
            name: j.table.clone(),
            fields: jobs,
        },
        RequiredTable {
            name: w.table.clone(),
            fields: events,
        },
    ]
}

/// One thing the base lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaProblem {
    MissingTable {
        table: String,
    },
    MissingField {
        table: String,
        field: String,
        expected: Vec<String>,
    },
    WrongType {
        table: String,
        field: String,
        found: String,
        expected: Vec<String>,
    },
    MissingOption {
        table: String,
        field: String,
        option: String,
    },
    WrongLinkTarget {
        table: String,
        field: String,
        expected_table: String,
    },
}

impl fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaProblem::MissingTable { table } => write!(
                f,
                "table \"{table}\" is missing: create it with exactly this name, or name the \
                 existing table in the mapping file"
            ),
            SchemaProblem::MissingField {
                table,
                field,
                expected,
            } => write!(
                f,
                "{table}.\"{field}\" is missing: add a field \"{field}\" of type {} (names are \
                 case-sensitive), or map this field to an existing one in the mapping file",
                expected.join(" or ")
            ),
            SchemaProblem::WrongType {
                table,
                field,
                found,
                expected,
            } => write!(
                f,
                "{table}.\"{field}\" is of type {found}, expected {}: change its type, or map \
                 this field to another one in the mapping file",
                expected.join(" or ")
            ),
            SchemaProblem::MissingOption {
                table,
                field,
                option,
            } => write!(
                f,
                "{table}.\"{field}\" has no select option \"{option}\": add the option (writes \
                 of it fail otherwise), or map the value to an existing option in the mapping file"
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
                    expected: expected(),
                });
                continue;
            };
            let found = str_of(have, "type").unwrap_or_default();
            if !want.types.contains(&found.as_str()) {
                out.push(SchemaProblem::WrongType {
                    table: required.name.clone(),
                    field: want.name.clone(),
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
                for option in &want.options {
                    if !choices.contains(option) {
                        out.push(SchemaProblem::MissingOption {
                            table: required.name.clone(),
                            field: want.name.clone(),
                            option: option.clone(),
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
                                f.options.iter().map(|o| json!({"name": o})).collect();
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

    #[test]
    fn the_required_schema_satisfies_itself() {
        let m = Mapping::default();
        assert_eq!(problems(&meta_for(&m), &m), vec![]);
    }

    #[test]
    fn problems_are_precise() {
        let m = Mapping::default();
        let mut meta = meta_for(&m);
        let tables = meta["tables"].as_array_mut().unwrap();
        tables.retain(|t| t["name"] != "Webhook Events");
        let jobs = tables[1]["fields"].as_array_mut().unwrap();
        jobs.retain(|f| f["name"] != "External Job ID");
        jobs[2]["options"]["choices"]
            .as_array_mut()
            .unwrap()
            .retain(|c| c["name"] != "failed");
        tables[0]["fields"][1]["type"] = json!("checkbox");
        tables[0]["fields"][6]["options"]["linkedTableId"] = json!("tblOther");
        let found = problems(&meta, &m);
        assert_eq!(
            found,
            vec![
                SchemaProblem::WrongType {
                    table: "Videos".into(),
                    field: "Combined Segments Video".into(),
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
                    option: "failed".into(),
                },
                SchemaProblem::MissingField {
                    table: "Jobs".into(),
                    field: "External Job ID".into(),
                    expected: vec!["singleLineText".into()],
                },
                SchemaProblem::MissingTable {
                    table: "Webhook Events".into(),
                },
            ]
        );
        let text = found[2].to_string();
        assert!(
            text.contains("Jobs.\"Status\"") && text.contains("\"failed\""),
            "{text}"
        );
    }

    #[test]
    fn a_base_without_status_needs_no_status_field() {
        let m = Mapping::from_toml("[videos]\nstatus = \"\"").unwrap();
        let videos = &required_schema(&m)[0];
        assert!(videos.fields.iter().all(|f| f.name != "Status"));
    }
}
