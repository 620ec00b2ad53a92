//! What the mapping needs from the base: each table and field the engine reads or writes,
//! the Airtable types that will do, the select options it writes, the link targets.

use crate::records::{Mapping, MediaKind};

const TEXT: &[&str] = &["singleLineText"];
const LONG_TEXT: &[&str] = &["multilineText", "richText", "singleLineText"];
const ANY_TEXT: &[&str] = &["singleLineText", "multilineText", "richText"];
pub(super) const URL: &[&str] = &["url", "singleLineText", "multilineText"];
const ATTACHMENT: &[&str] = &["multipleAttachments"];
/// A plain text Status has no options to check; a select must offer every value written.
const SELECT: &[&str] = &["singleSelect", "singleLineText"];
const LINK: &[&str] = &["multipleRecordLinks"];
const CHECKBOX: &[&str] = &["checkbox"];
const TIMESTAMP: &[&str] = &["dateTime", "singleLineText"];

/// Field types whose value Airtable computes: every write to them, `null` included, is
/// refused with 422 `INVALID_VALUE_FOR_COLUMN` ("cannot accept a value because the field
/// is computed"). Fine for a field the engine only reads; never for one it writes.
pub(crate) const COMPUTED: &[&str] = &[
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

pub(crate) fn is_computed(field_type: &str) -> bool {
    COMPUTED.contains(&field_type)
}

/// Whether the engine writes a field or only reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// One field the engine reads or writes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RequiredField {
    pub(crate) name: String,
    /// The mapping line that names it: `[jobs] job_id`.
    pub(crate) key: String,
    /// Whether `key = ""` switches it off.
    pub(crate) optional: bool,
    pub(crate) access: Access,
    /// Acceptable Airtable field types, the preferred one first.
    pub(crate) types: &'static [&'static str],
    /// Options a `singleSelect` must offer (ignored for text types), each with the mapping
    /// line that spells it: (`[job_type_values] music_addition`, `music_addition`).
    pub(crate) options: Vec<(String, String)>,
    /// For a link: the table it must point to.
    pub(crate) links_to: Option<String>,
    /// For a media field: the `*_kind` line and the kind the mapping says.
    pub(crate) media: Option<(String, MediaKind)>,
    /// What the engine uses it for (for README docs and messages).
    pub(crate) purpose: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RequiredTable {
    pub(crate) name: String,
    /// `[videos] table`.
    pub(crate) key: String,
    pub(crate) fields: Vec<RequiredField>,
}

/// Everything the mapping needs from the base.
pub(crate) fn required_schema(m: &Mapping) -> Vec<RequiredTable> {
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
