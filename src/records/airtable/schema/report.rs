//! A problem of the base, said so that it names the mapping line that fixes it.

use std::fmt;

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
