//! The one owner of how a status, a state or an outcome is spelled outside the program.

/// An enum of plain variants, spelled snake_case wherever it leaves the program: strum
/// gives its text (`Display`, `FromStr`: a SQL column, an Airtable option), serde its JSON,
/// and this is the one place that says the two agree. Further derives go in front, as
/// attributes of the enum.
macro_rules! snake_case_enum {
    ($(#[$attr:meta])* $vis:vis enum $name:ident { $($body:tt)* }) => {
        $(#[$attr])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            serde::Serialize,
            strum::Display,
            strum::EnumString,
        )]
        #[strum(serialize_all = "snake_case")]
        #[serde(rename_all = "snake_case")]
        $vis enum $name { $($body)* }
    };
}

pub(crate) use snake_case_enum;
