//! The comparison of the base's schema (the meta API's answer) with what the mapping needs.

use serde_json::Value;

use super::SchemaProblem;
use super::required::{Access, URL, is_computed, required_schema};
use crate::records::{Mapping, MediaKind};

/// Compares a meta tables response with what the mapping needs.
pub(crate) fn problems(meta: &Value, mapping: &Mapping) -> Vec<SchemaProblem> {
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
