//! What the pipeline's earlier stages leave in an Airtable base, written straight into the
//! Airtable double: the records the Airtable tests and benches start from.

use serde_json::json;

use super::airtable_double::AirtableDouble;

/// A Videos record whose segments are combined, waiting for its music; its id.
pub fn combined_video(airtable: &AirtableDouble, name: &str, combined: &str) -> String {
    airtable.insert_record(
        "Videos",
        json!({
            "Name": name,
            "Status": "segments_combined",
            "Combined Segments Video": combined,
            "Music Prompt": "calm piano",
        }),
    )
}

/// Video `i` generating music, with the processing music_generation job another part of
/// the pipeline created for it, bound to GoAPI task `task`: the engine has seen neither
/// when GoAPI calls back. The video's id.
pub fn generating_video(
    airtable: &AirtableDouble,
    i: usize,
    combined: &str,
    prompt: &str,
    task: &str,
) -> String {
    let video = airtable.insert_record(
        "Videos",
        json!({
            "Name": format!("v{i}"),
            "Status": "generating_music",
            "Combined Segments Video": combined,
            "Music Prompt": prompt,
        }),
    );
    airtable.insert_record(
        "Jobs",
        json!({
            "Job ID": format!("pipeline-job-{i}"),
            "Type": "music_generation",
            "Status": "processing",
            "Related Video": [video],
            "External Job ID": task,
        }),
    );
    video
}
