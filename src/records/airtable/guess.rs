//! `reelstate mapping --from-base`: a mapping file guessed from the base's schema (the meta
//! API's tables, fields, types and select options), with a comment on every line saying
//! what was found and what was guessed, so that nobody writes thirty keys by hand and
//! every guess is reviewed before it is trusted.

use serde_json::Value;

use lines::{
    Table, Use, Values, field_line, find_table, kind_line, line, link_line, tables, values_section,
};

mod lines;

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

    #[test]
    fn every_option_that_reads_as_a_value_is_proposed_the_engines_own_first() {
        let meta = json!({"tables": [
            {"id": "tblV", "name": "Videos", "fields": [
                {"name": "Status", "type": "singleSelect", "options": {"choices": [
                    {"name": "Music Generation Failed"}, {"name": "Music Addition Failed"}, {"name": "Failed"}]}},
                {"name": "Combined Segments Video", "type": "url"},
                {"name": "Music", "type": "url"},
                {"name": "Final Video", "type": "url"},
            ]},
            {"id": "tblJ", "name": "Jobs", "fields": [
                {"name": "Type", "type": "singleSelect", "options": {"choices": [
                    {"name": "music"}, {"name": "final"}, {"name": "music_generation"}]}},
                {"name": "Status", "type": "singleSelect", "options": {"choices": [
                    {"name": "pending"}, {"name": "processing"}, {"name": "completed"}, {"name": "failed"}]}},
                {"name": "Related Video", "type": "multipleRecordLinks", "options": {"linkedTableId": "tblV"}},
                {"name": "External Job ID", "type": "singleLineText"},
            ]},
            {"id": "tblE", "name": "Webhook Events", "fields": [
                {"name": "Service", "type": "singleLineText"},
                {"name": "Raw Payload", "type": "multilineText"},
                {"name": "Processed", "type": "checkbox"},
                {"name": "Success", "type": "checkbox"},
            ]},
        ]});
        let toml = mapping_from_meta(&meta);
        assert!(
            toml.contains("music_generation = [\"music_generation\", \"music\"]  # found"),
            "{toml}"
        );
        let m = Mapping::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        use crate::domain::{JobType, VideoStatus};
        assert_eq!(
            m.job_type_value(&JobType::MusicGeneration),
            "music_generation"
        );
        assert_eq!(m.parse_job_type("music"), JobType::MusicGeneration);
        assert_eq!(
            m.parse_job_type("music_generation"),
            JobType::MusicGeneration
        );
        assert_eq!(m.job_type_value(&JobType::MusicAddition), "final");
        // A bare "Failed" matches both failed states: it is not proposed as either's.
        assert_eq!(
            m.video_status_values["music_generation_failed"].all(),
            ["Music Generation Failed".to_owned()]
        );
        assert_eq!(
            m.video_status_value(&VideoStatus::MusicAdditionFailed),
            "Music Addition Failed"
        );
    }
}
