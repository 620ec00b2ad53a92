//! Airtable formulas, written by one function from the closed [`Filter`] type, escaping
//! every value: no caller ever writes a formula.

use std::collections::HashSet;

use super::read::PAGE_SIZE;
use crate::domain::RecordId;
use crate::records::Filter;

/// Record ids per `OR(RECORD_ID()=…)` formula: one page (100 records) answers each, so a
/// batch of first-contact reads costs one request per 100 ids. The formula is about
/// 3,300 characters; it travels in a `POST …/listRecords` body (every list here does), so
/// Airtable's 16,000-character URL limit never applies.
const IDS_PER_FORMULA: usize = PAGE_SIZE as usize;

/// The one function that writes formulas. Values are escaped as string literals (`\` and
/// `'`), field names as field references (`}`); record ids are validated [`RecordId`]s and
/// are split so that each formula stays short. An empty id list gives no formula at all.
pub(super) fn formulas(filter: &Filter) -> Vec<String> {
    let field_ref = |name: &str| format!("{{{}}}", name.replace('}', "\\}"));
    let literal = |value: &str| format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"));
    match filter {
        Filter::Equals { field, value } => vec![format!("{}={}", field_ref(field), literal(value))],
        // IS_AFTER is strict; a millisecond earlier makes it "at or after".
        Filter::CreatedSince(since) => {
            let at = (*since - chrono::Duration::milliseconds(1))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            vec![format!(
                "IS_AFTER(CREATED_TIME(),DATETIME_PARSE({}))",
                literal(&at)
            )]
        }
        Filter::RecordIds(ids) => {
            let mut seen = HashSet::new();
            let unique: Vec<&RecordId> = ids.iter().filter(|id| seen.insert(*id)).collect();
            unique
                .chunks(IDS_PER_FORMULA)
                .map(|chunk| {
                    let terms: Vec<String> = chunk
                        .iter()
                        .map(|id| format!("RECORD_ID()={}", literal(id.as_str())))
                        .collect();
                    format!("OR({})", terms.join(","))
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(s: &str) -> RecordId {
        RecordId::parse(s).unwrap()
    }

    #[test]
    fn formulas_escape_values_and_field_names() {
        let f = formulas(&Filter::Equals {
            field: "Odd}Name".into(),
            value: r"it's a \ back}slash".into(),
        });
        assert_eq!(f, vec![r"{Odd\}Name}='it\'s a \\ back}slash'".to_owned()]);
    }

    #[test]
    fn record_id_formulas_are_deduplicated_and_chunked() {
        let a = rid("recAAAAAAAAAAAAAA");
        let f = formulas(&Filter::RecordIds(vec![a.clone(), a.clone()]));
        assert_eq!(f, vec!["OR(RECORD_ID()='recAAAAAAAAAAAAAA')".to_owned()]);
        // One formula per 100 ids: one page of listRecords answers each.
        let many: Vec<RecordId> = (0..250).map(|i| rid(&format!("rec{i:014}"))).collect();
        let f = formulas(&Filter::RecordIds(many));
        assert_eq!(f.len(), 3);
        let terms = |x: &str| x.matches("RECORD_ID()").count();
        assert_eq!(
            f.iter().map(|x| terms(x)).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        assert!(f.iter().all(|x| x.len() < 16_000));
        assert!(formulas(&Filter::RecordIds(vec![])).is_empty());
    }
}
