//! An in-process Airtable double: an HTTP server on 127.0.0.1 that behaves like the Airtable
//! Web API as docs/airtable.md describes it (with its sources), pitfalls included, so that the client is tested
//! against what real Airtable does rather than what we hope it does:
//!
//! - records `rec` + 14 alphanumerics with `createdTime`; empties (`""`, `[]`, `false`,
//!   null) omitted on store and read; unknown fields, wrong types and missing select
//!   options refused (422) for the whole request; more than 10 records refused;
//! - `filterByFormula` really evaluated, where a linked field is its records' PRIMARY field
//!   values (so `FIND('recX', ARRAYJOIN({Related Video}))` matches nothing);
//! - inverse links maintained as Airtable does; `performUpsert`; pagination with `offset`;
//! - computed fields (formula, autoNumber, createdTime) that refuse every write, `null`
//!   included, with 422 `INVALID_VALUE_FOR_COLUMN` (docs/airtable.md, "Computed fields");
//! - attachments read back as Airtable's own copies: an `att…` id and a URL that is not the
//!   one written and differs at every read (it is signed and expires), kept on update only
//!   when the write passes their `{"id"}` (docs/airtable.md, "Attachments");
//! - 5 requests/second per base, then the real 429 body and a lockout during which every
//!   request is refused; injectable 503s; a log of every request.
//!
//! Uncertain behaviours take the stricter side: duplicate record ids or merge keys in one
//! write request are refused, as Airtable may refuse them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use rand::distr::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reelstate::records::Mapping;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;
use warp::Filter;

/// The type of a field, with what Airtable's meta API reports about it.
// Every field type the double reads and writes as Airtable does; some are in no schema the
// tests build today.
#[allow(dead_code)]
#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    SingleLineText,
    MultilineText,
    RichText,
    Url,
    Email,
    Number,
    Checkbox,
    DateTime,
    SingleSelect(Vec<String>),
    /// A link to `table`; `inverse` is the field on that table that lists this record back.
    Links {
        table: String,
        inverse: Option<String>,
    },
    Attachments,
    /// A formula over the record's fields (the double's formula language): computed.
    Formula(String),
    /// 1, 2, 3… in creation order: computed.
    AutoNumber,
    /// The record's `createdTime`: computed.
    CreatedTime,
}

impl FieldType {
    /// Airtable computes these and refuses every write to them (docs/airtable.md).
    pub fn is_computed(&self) -> bool {
        matches!(
            self,
            FieldType::Formula(_) | FieldType::AutoNumber | FieldType::CreatedTime
        )
    }

    pub fn api_name(&self) -> &'static str {
        match self {
            FieldType::SingleLineText => "singleLineText",
            FieldType::MultilineText => "multilineText",
            FieldType::RichText => "richText",
            FieldType::Url => "url",
            FieldType::Email => "email",
            FieldType::Number => "number",
            FieldType::Checkbox => "checkbox",
            FieldType::DateTime => "dateTime",
            FieldType::SingleSelect(_) => "singleSelect",
            FieldType::Links { .. } => "multipleRecordLinks",
            FieldType::Attachments => "multipleAttachments",
            FieldType::Formula(_) => "formula",
            FieldType::AutoNumber => "autoNumber",
            FieldType::CreatedTime => "createdTime",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    pub name: String,
    /// The primary field: what a link to this table shows, also inside formulas.
    pub primary: String,
    pub fields: Vec<(String, FieldType)>,
}

/// The two spellings of select options seen in the production base's docs and code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// Type `music_generation`/`music_addition`; Service `GoAPI`, `NCA`, `NCA Toolkit`…
    Docs,
    /// Type `music`/`final`; Service `goapi`, `nca`, `elevenlabs`.
    Code,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DoubleSchema {
    pub tables: Vec<TableSchema>,
}

impl Default for DoubleSchema {
    fn default() -> Self {
        Self::default_for(&Mapping::default())
    }
}

impl DoubleSchema {
    /// The tables and fields of `m`, with both sides of every link and select options for
    /// every status the engine writes. Videos' primary field is `Name`.
    pub fn default_for(m: &Mapping) -> Self {
        use FieldType::*;
        let media = |k: reelstate::records::MediaKind| match k {
            reelstate::records::MediaKind::Url => Url,
            reelstate::records::MediaKind::Attachment => Attachments,
        };
        let link = |table: &str, inverse: &str| Links {
            table: table.to_owned(),
            inverse: Some(inverse.to_owned()),
        };
        let (v, j, w) = (&m.videos, &m.jobs, &m.webhook_events);
        // The inverse sides the mapping does not name still exist in a real base.
        let videos_jobs = v.jobs_link.clone().unwrap_or_else(|| j.table.clone());
        let jobs_events = w.table.clone();

        let mut videos = vec![("Name".to_owned(), SingleLineText)];
        if let Some(s) = m.video_status_field() {
            videos.push((s.to_owned(), SingleSelect(m.video_status_options())));
        }
        videos.push((
            v.combined_segments_video.clone(),
            media(v.combined_segments_video_kind),
        ));
        if let Some(p) = &v.music_prompt {
            videos.push((p.clone(), MultilineText));
        }
        videos.push((v.music.clone(), media(v.music_kind)));
        videos.push((v.final_video.clone(), media(v.final_video_kind)));
        if let Some(e) = &v.error_details {
            videos.push((e.clone(), MultilineText));
        }
        videos.push((videos_jobs.clone(), link(&j.table, &j.related_video)));

        let jobs_primary = j.job_id.clone().unwrap_or_else(|| "Name".into());
        let mut jobs = vec![
            (jobs_primary.clone(), SingleLineText),
            (j.job_type.clone(), SingleSelect(m.job_type_options())),
            (j.status.clone(), SingleSelect(m.job_status_options())),
            (j.related_video.clone(), link(&v.table, &videos_jobs)),
            (j.external_job_id.clone(), SingleLineText),
        ];
        for name in [&j.webhook_url].into_iter().flatten() {
            jobs.push((name.clone(), Url));
        }
        for name in [&j.error_details, &j.timestamps].into_iter().flatten() {
            jobs.push((name.clone(), MultilineText));
        }
        let related_job = w
            .related_job
            .clone()
            .unwrap_or_else(|| "Related Job".into());
        jobs.push((jobs_events.clone(), link(&w.table, &related_job)));

        let events_primary = w.event_id.clone().unwrap_or_else(|| "Name".into());
        let mut events = vec![
            (events_primary.clone(), SingleLineText),
            (w.service.clone(), SingleLineText),
        ];
        for name in [&w.endpoint].into_iter().flatten() {
            events.push((name.clone(), SingleLineText));
        }
        events.extend([
            (w.raw_payload.clone(), MultilineText),
            (w.processed.clone(), Checkbox),
            (w.success.clone(), Checkbox),
        ]);
        for name in [&w.timestamp].into_iter().flatten() {
            events.push((name.clone(), DateTime));
        }
        events.push((related_job, link(&j.table, &jobs_events)));
        if let Some(e) = &w.error_details {
            events.push((e.clone(), MultilineText));
        }

        Self {
            tables: vec![
                TableSchema {
                    name: v.table.clone(),
                    primary: "Name".into(),
                    fields: videos,
                },
                TableSchema {
                    name: j.table.clone(),
                    primary: jobs_primary,
                    fields: jobs,
                },
                TableSchema {
                    name: w.table.clone(),
                    primary: events_primary,
                    fields: events,
                },
            ],
        }
    }

    /// A base shaped like the documented production base of the pipeline's earlier build
    /// (docs/airtable.md, "Real bases"): Videos' primary field `Description`, no Status,
    /// attachments for the source, the music and `Video + Music`; Jobs' `Job ID` a formula,
    /// no Timestamps; Webhook Events' `Event ID` an autonumber, `Created At` a created
    /// time, no Timestamp and no Error Details, `Service` a select. `spelling` picks which of
    /// the two known spellings the select options use.
    pub fn production_base(spelling: Spelling) -> Self {
        use FieldType::*;
        let link = |table: &str, inverse: &str| Links {
            table: table.to_owned(),
            inverse: Some(inverse.to_owned()),
        };
        let (types, services): (Vec<&str>, Vec<&str>) = match spelling {
            Spelling::Docs => (
                vec!["music_generation", "music_addition", "video_generation"],
                vec!["GoAPI", "NCA", "NCA Toolkit", "ElevenLabs", "OpenAI"],
            ),
            Spelling::Code => (vec!["music", "final"], vec!["goapi", "nca", "elevenlabs"]),
        };
        let owned = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect::<Vec<_>>();
        let videos = vec![
            ("Description".to_owned(), MultilineText),
            ("Combined Segments Video".into(), Attachments),
            ("Music Prompt".into(), MultilineText),
            ("Music".into(), Attachments),
            ("Video + Music".into(), Attachments),
            ("Jobs".into(), link("Jobs", "Related Video")),
        ];
        let jobs = vec![
            ("Job ID".to_owned(), Formula("'JOB-' & RECORD_ID()".into())),
            ("Type".into(), SingleSelect(owned(types))),
            (
                "Status".into(),
                SingleSelect(owned(vec!["pending", "processing", "completed", "failed"])),
            ),
            ("Related Video".into(), link("Videos", "Jobs")),
            ("External Job ID".into(), SingleLineText),
            ("Webhook URL".into(), Url),
            ("Error Details".into(), MultilineText),
            (
                "Webhook Events".into(),
                link("Webhook Events", "Related Job"),
            ),
        ];
        let events = vec![
            ("Event ID".to_owned(), AutoNumber),
            ("Service".into(), SingleSelect(owned(services))),
            ("Endpoint".into(), SingleLineText),
            ("Raw Payload".into(), MultilineText),
            ("Processed".into(), Checkbox),
            ("Success".into(), Checkbox),
            ("Created At".into(), CreatedTime),
            ("Related Job".into(), link("Jobs", "Webhook Events")),
        ];
        Self {
            tables: vec![
                TableSchema {
                    name: "Videos".into(),
                    primary: "Description".into(),
                    fields: videos,
                },
                TableSchema {
                    name: "Jobs".into(),
                    primary: "Job ID".into(),
                    fields: jobs,
                },
                TableSchema {
                    name: "Webhook Events".into(),
                    primary: "Event ID".into(),
                    fields: events,
                },
            ],
        }
    }

    /// Drops a table and every link pointing to it.
    pub fn without_table(mut self, table: &str) -> Self {
        self.tables.retain(|t| t.name != table);
        for t in &mut self.tables {
            t.fields
                .retain(|(_, ty)| !matches!(ty, FieldType::Links { table: to, .. } if to == table));
        }
        self
    }

    /// Drops a field (and the inverse side's reference to it, if it was a link).
    pub fn without_field(mut self, table: &str, field: &str) -> Self {
        for t in &mut self.tables {
            if t.name == table {
                t.fields.retain(|(n, _)| n != field);
            }
            for (_, ty) in &mut t.fields {
                if let FieldType::Links { table: to, inverse } = ty
                    && to == table
                    && inverse.as_deref() == Some(field)
                {
                    *inverse = None;
                }
            }
        }
        self
    }

    pub fn without_option(mut self, table: &str, field: &str, option: &str) -> Self {
        for (_, ty) in self.fields_named(table, field) {
            if let FieldType::SingleSelect(options) = ty {
                options.retain(|o| o != option);
            }
        }
        self
    }

    /// Adds a field, or changes the type of an existing one.
    pub fn with_field(mut self, table: &str, field: &str, ty: FieldType) -> Self {
        let mut found = false;
        for (_, t) in self.fields_named(table, field) {
            *t = ty.clone();
            found = true;
        }
        if !found && let Some(t) = self.tables.iter_mut().find(|t| t.name == table) {
            t.fields.push((field.to_owned(), ty));
        }
        self
    }

    fn fields_named<'a>(
        &'a mut self,
        table: &'a str,
        field: &'a str,
    ) -> impl Iterator<Item = &'a mut (String, FieldType)> + 'a {
        self.tables
            .iter_mut()
            .filter(move |t| t.name == table)
            .flat_map(move |t| t.fields.iter_mut().filter(move |(n, _)| n == field))
    }
}

#[derive(Debug, Clone)]
pub struct DoubleConfig {
    pub token: String,
    pub base_id: String,
    pub schema: DoubleSchema,
    pub requests_per_second: usize,
    /// Airtable's is 30 s; tests use about 1 s.
    pub lockout: Duration,
    /// Seeds the 503 injection (and record ids), so runs repeat.
    pub seed: u64,
}

impl Default for DoubleConfig {
    fn default() -> Self {
        Self {
            token: "patDOUBLE.0123456789abcdef".into(),
            base_id: "appDOUBLE0000001".into(),
            schema: DoubleSchema::default(),
            requests_per_second: 5,
            lockout: Duration::from_secs(1),
            seed: 7,
        }
    }
}

/// One request as the double saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRequest {
    pub method: String,
    /// As sent, percent-encoding included.
    pub path: String,
    /// The table named in the path, decoded.
    pub table: Option<String>,
    /// Since the double started.
    pub at: Duration,
    pub status: u16,
    /// Records in the request body for writes, in the response for reads.
    pub records: usize,
}

/// A stored record, in Airtable's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct DoubleRecord {
    pub id: String,
    pub created_time: String,
    pub fields: Map<String, Value>,
}

impl DoubleRecord {
    fn to_json(&self, only: Option<&[String]>) -> Value {
        let fields: Map<String, Value> = self
            .fields
            .iter()
            .filter(|(k, _)| only.is_none_or(|o| o.contains(k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        json!({"id": self.id, "createdTime": self.created_time, "fields": fields})
    }
}

struct Table {
    id: String,
    name: String,
    primary: String,
    fields: Vec<(String, String, FieldType)>, // (id, name, type)
    records: Vec<DoubleRecord>,
    /// The last autoNumber handed out.
    autonumber: u64,
}

impl Table {
    fn field(&self, name: &str) -> Option<&FieldType> {
        self.fields
            .iter()
            .find(|(_, n, _)| n == name)
            .map(|(_, _, t)| t)
    }
}

struct State {
    token: String,
    base_id: String,
    tables: Vec<Table>,
    started: Instant,
    log: Vec<LoggedRequest>,
    // Rate limiting, per base.
    requests_per_second: usize,
    lockout: Duration,
    window: VecDeque<Instant>,
    locked_until: Option<Instant>,
    /// Requests still to go before a forced lockout.
    lockout_in: Option<u64>,
    // Fault injection.
    fail_rng: StdRng,
    fail_rate: f64,
    fail_every: Option<u64>,
    seen: u64,
    id_rng: StdRng,
    offsets: HashMap<String, usize>,
    /// Every attachment URL handed out, with when: each read mints new ones.
    minted: Vec<(String, std::time::SystemTime)>,
    /// Writes are applied at once but answered this much later.
    write_delay: Option<Duration>,
    /// The next this many successful writes are answered 504 (after being applied).
    gateway_timeouts: u64,
    /// Only writes to this table count for `gateway_timeouts`, when set.
    gateway_timeouts_table: Option<String>,
    /// The status those applied writes are answered with (504 unless set).
    gateway_timeouts_status: u16,
}

/// An API error: status and body.
pub struct ApiError {
    pub status: u16,
    pub body: Value,
}

fn err(status: u16, kind: &str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        body: json!({"error": {"type": kind, "message": message.into()}}),
    }
}

fn not_found_bare() -> ApiError {
    ApiError {
        status: 404,
        body: json!({"error": "NOT_FOUND"}),
    }
}

fn model_not_found() -> ApiError {
    err(
        403,
        "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND",
        "Invalid permissions, or the requested model was not found. Check that both your user and your token have the required permissions, and that the model names and/or ids are correct.",
    )
}

fn rate_limited() -> ApiError {
    ApiError {
        status: 429,
        body: json!({"errors": [{"error": "RATE_LIMIT_REACHED", "message": "Rate limit exceeded. Please try again later"}]}),
    }
}

fn invalid_value(field: &str) -> ApiError {
    err(
        422,
        "INVALID_VALUE_FOR_COLUMN",
        format!("Field \"{field}\" cannot accept the provided value"),
    )
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a write request asks for.
#[derive(Clone, Copy, PartialEq)]
enum WriteMode {
    Create,
    Update { replace: bool },
}

/// A validated write of one record, ready to apply.
struct PlannedWrite {
    /// `None`: a new record.
    id: Option<String>,
    fields: Map<String, Value>,
    replace: bool,
}

struct ListParams {
    formula: Option<String>,
    page_size: usize,
    offset: Option<String>,
    max_records: Option<usize>,
    fields: Option<Vec<String>>,
    sort: Vec<(String, bool)>,
}

impl Default for ListParams {
    /// What a list request without parameters asks for: Airtable's pages of 100.
    fn default() -> Self {
        Self {
            formula: None,
            page_size: 100,
            offset: None,
            max_records: None,
            fields: None,
            sort: Vec::new(),
        }
    }
}

impl State {
    fn new_id(&mut self, prefix: &str) -> String {
        let tail: String = (0..14)
            .map(|_| self.id_rng.sample(Alphanumeric) as char)
            .collect();
        format!("{prefix}{tail}")
    }

    fn table_index(&self, name_or_id: &str) -> Option<usize> {
        self.tables
            .iter()
            .position(|t| t.name == name_or_id || t.id == name_or_id)
    }

    /// Counts the request against the base's budget; false when it must get a 429.
    fn admit(&mut self, now: Instant) -> bool {
        if let Some(until) = self.locked_until {
            if now < until {
                return false;
            }
            self.locked_until = None;
        }
        if let Some(n) = self.lockout_in.as_mut() {
            if *n <= 1 {
                self.lockout_in = None;
                self.locked_until = Some(now + self.lockout);
                return false;
            }
            *n -= 1;
        }
        while self
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.window.pop_front();
        }
        if self.window.len() >= self.requests_per_second {
            self.locked_until = Some(now + self.lockout);
            return false;
        }
        self.window.push_back(now);
        true
    }

    fn inject_failure(&mut self) -> bool {
        self.seen += 1;
        if let Some(n) = self.fail_every
            && n > 0
            && self.seen.is_multiple_of(n)
        {
            return true;
        }
        self.fail_rate > 0.0 && self.fail_rng.random::<f64>() < self.fail_rate
    }

    fn handle(
        &mut self,
        method: &str,
        raw_path: &str,
        query: &str,
        auth: Option<&str>,
        body: &[u8],
    ) -> (u16, Value) {
        let now = Instant::now();
        let segments: Vec<String> = raw_path
            .trim_start_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let table = match segments.as_slice() {
            [v0, base, t, ..] if v0 == "v0" && base != "meta" => Some(t.clone()),
            _ => None,
        };
        let (status, value, records) = match self.route(method, &segments, query, auth, body, now) {
            Ok((v, n)) => (200, v, n),
            Err(e) => {
                let n = write_count(body);
                (e.status, e.body, n)
            }
        };
        self.log.push(LoggedRequest {
            method: method.to_owned(),
            path: raw_path.to_owned(),
            table,
            at: now.duration_since(self.started),
            status,
            records,
        });
        (status, value)
    }

    fn route(
        &mut self,
        method: &str,
        segments: &[String],
        query: &str,
        auth: Option<&str>,
        body: &[u8],
        now: Instant,
    ) -> Result<(Value, usize), ApiError> {
        if auth != Some(format!("Bearer {}", self.token).as_str()) {
            return Err(err(
                401,
                "AUTHENTICATION_REQUIRED",
                "Authentication required",
            ));
        }
        if !self.admit(now) {
            return Err(rate_limited());
        }
        if self.inject_failure() {
            return Err(ApiError {
                status: 503,
                body: json!({"error": {"type": "SERVICE_UNAVAILABLE", "message": "injected by the double"}}),
            });
        }
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (method, segs.as_slice()) {
            ("GET", ["v0", "meta", "bases", base, "tables"]) => {
                if *base != self.base_id {
                    return Err(model_not_found());
                }
                Ok((self.meta(), 0))
            }
            (_, ["v0", base, table, rest @ ..]) => {
                if *base != self.base_id {
                    return Err(model_not_found());
                }
                let t = self.table_index(table).ok_or_else(model_not_found)?;
                let json_body = || -> Result<Value, ApiError> {
                    serde_json::from_slice(body).map_err(|_| {
                        err(
                            422,
                            "INVALID_REQUEST_UNKNOWN",
                            "Invalid request: body is not JSON",
                        )
                    })
                };
                match (method, rest) {
                    ("GET", []) => {
                        let params = list_params_from_query(query)?;
                        self.list(t, params)
                    }
                    ("POST", ["listRecords"]) => {
                        let params = list_params_from_body(&json_body()?)?;
                        self.list(t, params)
                    }
                    // Like Airtable, the table in the path is not checked against the record.
                    ("GET", [id]) => {
                        let (owner, mut r) = self
                            .tables
                            .iter()
                            .enumerate()
                            .find_map(|(i, t)| {
                                t.records
                                    .iter()
                                    .find(|r| r.id == *id)
                                    .map(|r| (i, r.to_json(None)))
                            })
                            .ok_or_else(not_found_bare)?;
                        self.mint_urls(owner, &mut r);
                        Ok((r, 1))
                    }
                    ("POST", []) => self.write_request(t, WriteMode::Create, json_body()?, None),
                    ("PATCH", []) | ("PUT", []) => {
                        let mode = WriteMode::Update {
                            replace: method == "PUT",
                        };
                        self.write_request(t, mode, json_body()?, None)
                    }
                    ("PATCH", [id]) | ("PUT", [id]) => {
                        let mode = WriteMode::Update {
                            replace: method == "PUT",
                        };
                        self.write_request(t, mode, json_body()?, Some(id.to_string()))
                    }
                    _ => Err(not_found_bare()),
                }
            }
            _ => Err(not_found_bare()),
        }
    }

    fn meta(&self) -> Value {
        let tables: Vec<Value> = self
            .tables
            .iter()
            .map(|t| {
                let fields: Vec<Value> = t
                    .fields
                    .iter()
                    .map(|(id, name, ty)| {
                        let mut f = json!({"id": id, "name": name, "type": ty.api_name()});
                        match ty {
                            FieldType::SingleSelect(options) => {
                                let choices: Vec<Value> = options
                                    .iter()
                                    .enumerate()
                                    .map(|(i, o)| json!({"id": format!("sel{i:014}"), "name": o, "color": "blueLight2"}))
                                    .collect();
                                f["options"] = json!({ "choices": choices });
                            }
                            FieldType::Links { table, inverse } => {
                                let linked = self.table_index(table).map(|i| &self.tables[i]);
                                let inverse_id = linked.and_then(|l| {
                                    l.fields
                                        .iter()
                                        .find(|(_, n, _)| Some(n) == inverse.as_ref())
                                        .map(|(id, _, _)| id.clone())
                                });
                                f["options"] = json!({
                                    "linkedTableId": linked.map(|l| l.id.clone()),
                                    "isReversed": false,
                                    "prefersSingleRecordLink": false,
                                    "inverseLinkFieldId": inverse_id,
                                });
                            }
                            FieldType::Checkbox => {
                                f["options"] = json!({"icon": "check", "color": "greenBright"});
                            }
                            FieldType::Formula(text) => {
                                f["options"] = json!({
                                    "formula": text,
                                    "isValid": true,
                                    "referencedFieldIds": [],
                                    "result": {"type": "singleLineText"},
                                });
                            }
                            FieldType::AutoNumber => {}
                            FieldType::CreatedTime => {
                                f["options"] = json!({"result": {"type": "dateTime"}});
                            }
                            FieldType::DateTime => {
                                f["options"] = json!({
                                    "dateFormat": {"name": "iso", "format": "YYYY-MM-DD"},
                                    "timeFormat": {"name": "24hour", "format": "HH:mm"},
                                    "timeZone": "utc",
                                });
                            }
                            _ => {}
                        }
                        f
                    })
                    .collect();
                let primary_id = t
                    .fields
                    .iter()
                    .find(|(_, n, _)| *n == t.primary)
                    .map(|(id, _, _)| id.clone());
                json!({"id": t.id, "name": t.name, "primaryFieldId": primary_id, "fields": fields, "views": []})
            })
            .collect();
        json!({ "tables": tables })
    }

    fn list(&mut self, t: usize, p: ListParams) -> Result<(Value, usize), ApiError> {
        if p.page_size == 0 || p.page_size > 100 {
            return Err(err(
                422,
                "INVALID_REQUEST_UNKNOWN",
                "pageSize must be 1 to 100",
            ));
        }
        let table = &self.tables[t];
        if let Some(only) = &p.fields {
            for f in only {
                if table.field(f).is_none() {
                    return Err(err(
                        422,
                        "UNKNOWN_FIELD_NAME",
                        format!("Unknown field name: \"{f}\""),
                    ));
                }
            }
        }
        let formula = match &p.formula {
            Some(text) if !text.trim().is_empty() => {
                Some(formula::parse(text, |name| table.field(name).is_some())?)
            }
            _ => None,
        };
        for (field, _) in &p.sort {
            if table.field(field).is_none() {
                return Err(err(
                    422,
                    "UNKNOWN_FIELD_NAME",
                    format!("Unknown field name: \"{field}\""),
                ));
            }
        }
        let mut matched: Vec<&DoubleRecord> = table
            .records
            .iter()
            .filter(|r| match &formula {
                Some(f) => formula::eval(
                    f,
                    &|name| self.formula_value(t, r, name),
                    &r.id,
                    &r.created_time,
                )
                .truthy(),
                None => true,
            })
            .collect();
        // Stable sorts, last key first, give the first key precedence.
        for (field, desc) in p.sort.iter().rev() {
            let key = |r: &DoubleRecord| {
                r.fields
                    .get(field)
                    .map(formula::V::from_json)
                    .map(|v| v.text())
                    .unwrap_or_default()
            };
            matched.sort_by(|a, b| {
                let o = key(a).cmp(&key(b));
                if *desc { o.reverse() } else { o }
            });
        }
        if let Some(max) = p.max_records {
            matched.truncate(max);
        }
        let start = match &p.offset {
            Some(o) => *self.offsets.get(o).ok_or_else(|| {
                err(
                    422,
                    "LIST_RECORDS_ITERATOR_NOT_AVAILABLE",
                    "The offset is no longer valid",
                )
            })?,
            None => 0,
        };
        let mut page: Vec<Value> = matched
            .iter()
            .skip(start)
            .take(p.page_size)
            .map(|r| r.to_json(p.fields.as_deref()))
            .collect();
        let next = start + page.len();
        let next_id = matched.get(next).map(|r| r.id.clone());
        for r in &mut page {
            self.mint_urls(t, r);
        }
        let n = page.len();
        let mut body = json!({ "records": page });
        if let Some(next_id) = next_id {
            // Shaped like Airtable's cursors; only this double can read it back.
            let token = format!("{}/{}", self.new_id("itr"), next_id);
            self.offsets.insert(token.clone(), next);
            body["offset"] = json!(token);
        }
        Ok((body, n))
    }

    /// A cell as a formula sees it: a link is its records' primary field values.
    fn formula_value(&self, t: usize, r: &DoubleRecord, name: &str) -> formula::V {
        use formula::V;
        let table = &self.tables[t];
        let Some(value) = r.fields.get(name) else {
            return V::Blank;
        };
        match table.field(name) {
            Some(FieldType::Links { table: to, .. }) => {
                let Some(linked) = self.table_index(to).map(|i| &self.tables[i]) else {
                    return V::Blank;
                };
                let ids = value.as_array().cloned().unwrap_or_default();
                V::Arr(
                    ids.iter()
                        .filter_map(Value::as_str)
                        .map(|id| {
                            let primary = linked
                                .records
                                .iter()
                                .find(|x| x.id == id)
                                .and_then(|x| x.fields.get(&linked.primary))
                                .map(formula::V::from_json)
                                .unwrap_or(V::Str(String::new()));
                            V::Str(primary.text())
                        })
                        .collect(),
                )
            }
            Some(FieldType::Attachments) => V::Arr(
                value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        V::Str(format!(
                            "{} ({})",
                            a["filename"].as_str().unwrap_or_default(),
                            a["url"].as_str().unwrap_or_default()
                        ))
                    })
                    .collect(),
            ),
            _ => V::from_json(value),
        }
    }

    fn write_request(
        &mut self,
        t: usize,
        mode: WriteMode,
        body: Value,
        path_id: Option<String>,
    ) -> Result<(Value, usize), ApiError> {
        let Value::Object(body) = body else {
            return Err(err(
                422,
                "INVALID_REQUEST_UNKNOWN",
                "Invalid request: expected an object",
            ));
        };
        for key in body.keys() {
            if ![
                "records",
                "fields",
                "typecast",
                "performUpsert",
                "returnFieldsByFieldId",
            ]
            .contains(&key.as_str())
            {
                return Err(err(
                    422,
                    "INVALID_REQUEST_UNKNOWN",
                    format!("Invalid request: parameter \"{key}\" is not allowed"),
                ));
            }
        }
        let typecast = body
            .get("typecast")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        // `{"fields": …}` alone writes one record and answers with it alone.
        let single = body.contains_key("fields");
        let records: Vec<Value> = if single {
            let mut r = json!({ "fields": body["fields"] });
            if let Some(id) = &path_id {
                r["id"] = json!(id);
            }
            vec![r]
        } else {
            match body.get("records") {
                Some(Value::Array(a)) => a.clone(),
                _ => {
                    return Err(err(
                        422,
                        "INVALID_RECORDS",
                        "Invalid request: records must be an array",
                    ));
                }
            }
        };
        if records.is_empty() || records.len() > 10 {
            return Err(err(
                422,
                "INVALID_RECORDS",
                format!(
                    "You can write between 1 and 10 records per request; got {}",
                    records.len()
                ),
            ));
        }
        let merge_on: Option<Vec<String>> = match body.get("performUpsert") {
            None => None,
            Some(p) if matches!(mode, WriteMode::Update { .. }) => {
                let fields: Vec<String> = p
                    .get("fieldsToMergeOn")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                if fields.is_empty() || fields.len() > 3 {
                    return Err(err(
                        422,
                        "INVALID_REQUEST_UNKNOWN",
                        "fieldsToMergeOn needs 1 to 3 fields",
                    ));
                }
                for f in &fields {
                    if self.tables[t].field(f).is_none() {
                        return Err(err(
                            422,
                            "UNKNOWN_FIELD_NAME",
                            format!("Unknown field name: \"{f}\""),
                        ));
                    }
                }
                Some(fields)
            }
            Some(_) => {
                return Err(err(
                    422,
                    "INVALID_REQUEST_UNKNOWN",
                    "performUpsert needs PATCH or PUT",
                ));
            }
        };

        let mut plans = Vec::new();
        let mut ids_seen = HashSet::new();
        let mut keys_seen = HashSet::new();
        let mut new_options: Vec<(String, String)> = Vec::new();
        for r in &records {
            let fields = match r.get("fields") {
                Some(Value::Object(f)) => f.clone(),
                _ => {
                    return Err(err(
                        422,
                        "INVALID_RECORDS",
                        "Each record needs a fields object",
                    ));
                }
            };
            let given_id = r.get("id").and_then(Value::as_str).map(str::to_owned);
            let id = match (mode, &merge_on, given_id) {
                (WriteMode::Create, _, Some(_)) => {
                    return Err(err(
                        422,
                        "INVALID_RECORDS",
                        "Records to create cannot have an id",
                    ));
                }
                (WriteMode::Create, _, None) => None,
                (WriteMode::Update { .. }, _, Some(id)) => {
                    if !self.tables[t].records.iter().any(|x| x.id == id) {
                        return Err(err(
                            404,
                            "MODEL_ID_NOT_FOUND",
                            format!("Record not found: {id}"),
                        ));
                    }
                    Some(id)
                }
                (WriteMode::Update { .. }, Some(merge), None) => {
                    let key: Vec<String> = merge
                        .iter()
                        .map(|m| fields.get(m).map(Value::to_string).unwrap_or_default())
                        .collect();
                    if key.iter().all(String::is_empty) {
                        return Err(err(
                            422,
                            "INVALID_RECORDS",
                            "Upserted records need the fields to merge on",
                        ));
                    }
                    if !keys_seen.insert(key.clone()) {
                        return Err(err(
                            422,
                            "INVALID_RECORDS",
                            "Two records in the request have the same merge value",
                        ));
                    }
                    let hits: Vec<&DoubleRecord> = self.tables[t]
                        .records
                        .iter()
                        .filter(|x| {
                            merge.iter().zip(&key).all(|(m, k)| {
                                x.fields.get(m).map(Value::to_string).unwrap_or_default() == *k
                            })
                        })
                        .collect();
                    match hits.as_slice() {
                        [] => None,
                        [one] => Some(one.id.clone()),
                        _ => {
                            return Err(err(
                                422,
                                "INVALID_RECORDS",
                                "More than one record matches the merge fields",
                            ));
                        }
                    }
                }
                (WriteMode::Update { .. }, None, None) => {
                    return Err(err(422, "INVALID_RECORDS", "Records to update need an id"));
                }
            };
            if let Some(id) = &id
                && !ids_seen.insert(id.clone())
            {
                return Err(err(
                    422,
                    "INVALID_RECORDS",
                    format!("Record {id} appears twice in the request"),
                ));
            }
            let mut clean = Map::new();
            let current = id
                .as_ref()
                .and_then(|id| self.tables[t].records.iter().find(|x| x.id == *id));
            for (name, value) in fields {
                let existing = current.and_then(|r| r.fields.get(&name));
                let v = self.check_value(t, &name, &value, typecast, existing, &mut new_options)?;
                clean.insert(name, v);
            }
            let replace = matches!(mode, WriteMode::Update { replace: true });
            plans.push(PlannedWrite {
                id,
                fields: clean,
                replace,
            });
        }

        // Everything is valid: apply it all (a request succeeds or fails as a whole).
        for (field, option) in new_options {
            if let Some((_, _, FieldType::SingleSelect(options))) = self.tables[t]
                .fields
                .iter_mut()
                .find(|(_, n, _)| *n == field)
                && !options.contains(&option)
            {
                options.push(option);
            }
        }
        let count = plans.len();
        let mut out = Vec::new();
        let mut created = Vec::new();
        let mut updated = Vec::new();
        for plan in plans {
            let is_new = plan.id.is_none();
            let id = self.apply(t, plan);
            if is_new {
                created.push(id.clone());
            } else {
                updated.push(id.clone());
            }
            out.push(id);
        }
        let table = &self.tables[t];
        let mut rendered: Vec<Value> = out
            .iter()
            .filter_map(|id| table.records.iter().find(|r| r.id == *id))
            .map(|r| r.to_json(None))
            .collect();
        for r in &mut rendered {
            self.mint_urls(t, r);
        }
        if single {
            return Ok((rendered.into_iter().next().unwrap_or(Value::Null), count));
        }
        let mut response = json!({ "records": rendered });
        if merge_on.is_some() {
            response["createdRecords"] = json!(created);
            response["updatedRecords"] = json!(updated);
        }
        Ok((response, count))
    }

    /// Checks one cell against its field's type; returns it as stored (empties → null).
    fn check_value(
        &self,
        t: usize,
        name: &str,
        value: &Value,
        typecast: bool,
        existing: Option<&Value>,
        new_options: &mut Vec<(String, String)>,
    ) -> Result<Value, ApiError> {
        let Some(ty) = self.tables[t].field(name) else {
            return Err(err(
                422,
                "UNKNOWN_FIELD_NAME",
                format!("Unknown field name: \"{name}\""),
            ));
        };
        if ty.is_computed() {
            // Airtable's words, for any value, null included (docs/airtable.md).
            return Err(err(
                422,
                "INVALID_VALUE_FOR_COLUMN",
                format!("Field \"{name}\" cannot accept a value because the field is computed"),
            ));
        }
        if value.is_null() {
            return Ok(Value::Null);
        }
        let cast_text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) if typecast => Some(n.to_string()),
            Value::Bool(b) if typecast => Some(b.to_string()),
            _ => None,
        };
        let stored = match ty {
            FieldType::SingleLineText
            | FieldType::MultilineText
            | FieldType::RichText
            | FieldType::Url
            | FieldType::Email => json!(cast_text(value).ok_or_else(|| invalid_value(name))?),
            FieldType::Number => match value {
                Value::Number(_) => value.clone(),
                Value::String(s) if typecast => {
                    json!(s.trim().parse::<f64>().map_err(|_| invalid_value(name))?)
                }
                _ => return Err(invalid_value(name)),
            },
            FieldType::Checkbox => match value {
                Value::Bool(_) => value.clone(),
                _ => return Err(invalid_value(name)),
            },
            FieldType::DateTime => {
                let s = value.as_str().ok_or_else(|| invalid_value(name))?;
                let at = DateTime::parse_from_rfc3339(s).map_err(|_| invalid_value(name))?;
                json!(
                    at.with_timezone(&Utc)
                        .to_rfc3339_opts(SecondsFormat::Millis, true)
                )
            }
            FieldType::SingleSelect(options) => {
                let s = value.as_str().ok_or_else(|| invalid_value(name))?;
                if !s.is_empty() && !options.iter().any(|o| o == s) {
                    if !typecast {
                        return Err(err(
                            422,
                            "INVALID_MULTIPLE_CHOICE_OPTIONS",
                            format!(
                                "Insufficient permissions to create new select option \"\"{s}\"\""
                            ),
                        ));
                    }
                    new_options.push((name.to_owned(), s.to_owned()));
                }
                json!(s)
            }
            FieldType::Links { table: to, .. } => {
                let ids = value.as_array().ok_or_else(|| invalid_value(name))?;
                let linked = self.table_index(to).map(|i| &self.tables[i]);
                let mut out = Vec::new();
                for id in ids {
                    let id = id.as_str().ok_or_else(|| invalid_value(name))?;
                    if !linked.is_some_and(|l| l.records.iter().any(|r| r.id == id)) {
                        return Err(err(
                            422,
                            "ROW_DOES_NOT_EXIST",
                            format!("Record ID {id} does not exist in this table"),
                        ));
                    }
                    if !out.contains(&json!(id)) {
                        out.push(json!(id));
                    }
                }
                Value::Array(out)
            }
            FieldType::Attachments => {
                let items = value.as_array().ok_or_else(|| invalid_value(name))?;
                let kept: Vec<Value> = existing
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let mut out = Vec::new();
                for a in items {
                    let given_id = a.get("id").and_then(Value::as_str);
                    let url = a.get("url").and_then(Value::as_str);
                    match (given_id, url) {
                        // An existing attachment, kept by its id (its URL, if sent, is ignored).
                        (Some(id), _) => {
                            let old = kept
                                .iter()
                                .find(|k| k["id"] == id)
                                .ok_or_else(|| invalid_value(name))?;
                            out.push(old.clone());
                        }
                        // A new file: Airtable copies it and keeps its own copy.
                        (None, Some(url)) => {
                            if url::Url::parse(url).is_err() {
                                return Err(invalid_value(name));
                            }
                            let filename = a
                                .get("filename")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                                .unwrap_or_else(|| {
                                    url.rsplit('/').next().unwrap_or_default().to_owned()
                                });
                            // The id is drawn when the write is applied.
                            out.push(json!({
                                "filename": filename,
                                "size": 1024,
                                "type": mime(&filename),
                                "source": url,
                            }));
                        }
                        (None, None) => return Err(invalid_value(name)),
                    }
                }
                Value::Array(out)
            }
            FieldType::Formula(_) | FieldType::AutoNumber | FieldType::CreatedTime => {
                return Err(invalid_value(name));
            }
        };
        Ok(if is_empty(&stored) {
            Value::Null
        } else {
            stored
        })
    }

    /// Sets the computed fields of one record: its autoNumber when it is `new`, its
    /// createdTime, and every formula evaluated over its fields.
    fn compute(&mut self, t: usize, pos: usize, new: bool) {
        let computed: Vec<(String, FieldType)> = self.tables[t]
            .fields
            .iter()
            .filter(|(_, _, ty)| ty.is_computed())
            .map(|(_, n, ty)| (n.clone(), ty.clone()))
            .collect();
        for (name, ty) in computed {
            let value = match ty {
                FieldType::AutoNumber if new => {
                    self.tables[t].autonumber += 1;
                    json!(self.tables[t].autonumber)
                }
                FieldType::AutoNumber => continue,
                FieldType::CreatedTime => json!(self.tables[t].records[pos].created_time),
                FieldType::Formula(text) => {
                    let table = &self.tables[t];
                    let Ok(expr) = formula::parse(&text, |n| table.field(n).is_some()) else {
                        continue;
                    };
                    let r = &table.records[pos];
                    let v = formula::eval(
                        &expr,
                        &|n| self.formula_value(t, r, n),
                        &r.id,
                        &r.created_time,
                    );
                    json!(v.text())
                }
                _ => continue,
            };
            self.tables[t].records[pos].fields.insert(name, value);
        }
    }

    /// The names of table `t`'s attachment fields.
    fn attachment_fields(&self, t: usize) -> Vec<String> {
        self.tables[t]
            .fields
            .iter()
            .filter(|(_, _, ty)| *ty == FieldType::Attachments)
            .map(|(_, n, _)| n.clone())
            .collect()
    }

    /// Renders the attachments of a record as Airtable does at every read: a fresh signed
    /// URL of Airtable's own copy, never the URL written.
    fn mint_urls(&mut self, t: usize, record: &mut Value) {
        let names = self.attachment_fields(t);
        for name in names {
            let Some(Value::Array(items)) = record.get_mut("fields").and_then(|f| f.get_mut(&name))
            else {
                continue;
            };
            for a in items {
                let sig = self.new_id("sig");
                let url = format!(
                    "https://v5.airtableusercontent.invalid/{}/{}/{}",
                    a["id"].as_str().unwrap_or_default(),
                    sig,
                    a["filename"].as_str().unwrap_or_default()
                );
                if let Some(o) = a.as_object_mut() {
                    o.remove("source");
                    o.insert("url".into(), json!(url));
                }
                self.minted.push((url, std::time::SystemTime::now()));
            }
        }
    }

    /// Applies a validated write and keeps the inverse links in step; returns the id.
    fn apply(&mut self, t: usize, plan: PlannedWrite) -> String {
        let plan_was_create = plan.id.is_none();
        let id = match plan.id {
            Some(id) => id,
            None => {
                let id = self.new_id("rec");
                let created_time = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
                self.tables[t].records.push(DoubleRecord {
                    id: id.clone(),
                    created_time,
                    fields: Map::new(),
                });
                id
            }
        };
        let Some(pos) = self.tables[t].records.iter().position(|r| r.id == id) else {
            return id;
        };
        let before = self.tables[t].records[pos].fields.clone();
        let mut after = if plan.replace {
            Map::new()
        } else {
            before.clone()
        };
        for (name, value) in plan.fields {
            if value.is_null() {
                after.remove(&name);
            } else {
                after.insert(name, value);
            }
        }
        // New attachments get their ids; computed fields their values.
        let attachment_fields = self.attachment_fields(t);
        for name in attachment_fields {
            let Some(Value::Array(items)) = after.get(&name).cloned() else {
                continue;
            };
            let items: Vec<Value> = items
                .into_iter()
                .map(|mut a| {
                    if a.get("id").is_none() {
                        a["id"] = json!(self.new_id("att"));
                    }
                    a
                })
                .collect();
            after.insert(name, Value::Array(items));
        }
        self.tables[t].records[pos].fields = after.clone();
        self.compute(t, pos, plan_was_create);
        let after = self.tables[t].records[pos].fields.clone();
        // Inverse links: what this record now links to lists it back, and only that.
        let links: Vec<(String, String, Option<String>)> = self.tables[t]
            .fields
            .iter()
            .filter_map(|(_, n, ty)| match ty {
                FieldType::Links { table, inverse } => {
                    Some((n.clone(), table.clone(), inverse.clone()))
                }
                _ => None,
            })
            .collect();
        let ids_of = |m: &Map<String, Value>, f: &str| -> Vec<String> {
            m.get(f)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        for (field, to, inverse) in links {
            let (Some(inverse), Some(u)) = (inverse, self.table_index(&to)) else {
                continue;
            };
            let old = ids_of(&before, &field);
            let new = ids_of(&after, &field);
            let changed: Vec<String> = old
                .iter()
                .chain(&new)
                .filter(|x| old.contains(x) != new.contains(x))
                .cloned()
                .collect();
            for other in &changed {
                let is = new.contains(other);
                let Some(r) = self.tables[u].records.iter_mut().find(|r| r.id == *other) else {
                    continue;
                };
                let mut back = ids_of(&r.fields, &inverse);
                back.retain(|x| *x != id);
                if is {
                    back.push(id.clone());
                }
                if back.is_empty() {
                    r.fields.remove(&inverse);
                } else {
                    r.fields.insert(inverse.clone(), json!(back));
                }
            }
        }
        id
    }
}

/// The MIME type Airtable reports for an attachment, by extension.
fn mime(filename: &str) -> &'static str {
    match filename.rsplit('.').next().unwrap_or_default() {
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        _ => "application/octet-stream",
    }
}

/// Records in a write request body, for the log (0 when it is not one).
fn write_count(body: &[u8]) -> usize {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match (v.get("records"), v.get("fields")) {
        (Some(Value::Array(a)), _) => a.len(),
        (_, Some(_)) => 1,
        _ => 0,
    }
}

fn list_params_from_query(query: &str) -> Result<ListParams, ApiError> {
    let mut p = ListParams::default();
    let mut sort: std::collections::BTreeMap<usize, (String, bool)> = Default::default();
    let bad = |k: &str| {
        err(
            422,
            "INVALID_REQUEST_UNKNOWN",
            format!("Invalid request: parameter \"{k}\""),
        )
    };
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "filterByFormula" => p.formula = Some(v.into_owned()),
            "pageSize" => p.page_size = v.parse().map_err(|_| bad(&k))?,
            "maxRecords" => p.max_records = Some(v.parse().map_err(|_| bad(&k))?),
            "offset" => p.offset = Some(v.into_owned()),
            "fields[]" | "fields" => p.fields.get_or_insert_with(Vec::new).push(v.into_owned()),
            other if other.starts_with("sort[") => {
                let inner = &other[5..];
                let (n, rest) = inner.split_once(']').ok_or_else(|| bad(other))?;
                let n: usize = n.parse().map_err(|_| bad(other))?;
                let entry = sort.entry(n).or_insert((String::new(), false));
                match rest {
                    "[field]" => entry.0 = v.into_owned(),
                    "[direction]" => entry.1 = v == "desc",
                    _ => return Err(bad(other)),
                }
            }
            "cellFormat" | "timeZone" | "userLocale" | "view" | "returnFieldsByFieldId" => {}
            other => return Err(bad(other)),
        }
    }
    p.sort = sort.into_values().collect();
    Ok(p)
}

fn list_params_from_body(body: &Value) -> Result<ListParams, ApiError> {
    let Value::Object(o) = body else {
        return Err(err(
            422,
            "INVALID_REQUEST_UNKNOWN",
            "Invalid request: expected an object",
        ));
    };
    let bad = |k: &str| {
        err(
            422,
            "INVALID_REQUEST_UNKNOWN",
            format!("Invalid request: parameter \"{k}\""),
        )
    };
    let mut p = ListParams::default();
    for (k, v) in o {
        match k.as_str() {
            "filterByFormula" => p.formula = Some(v.as_str().ok_or_else(|| bad(k))?.to_owned()),
            "pageSize" => p.page_size = v.as_u64().ok_or_else(|| bad(k))? as usize,
            "maxRecords" => p.max_records = Some(v.as_u64().ok_or_else(|| bad(k))? as usize),
            "offset" => p.offset = Some(v.as_str().ok_or_else(|| bad(k))?.to_owned()),
            "fields" => {
                let a = v.as_array().ok_or_else(|| bad(k))?;
                p.fields = Some(
                    a.iter()
                        .filter_map(|f| f.as_str().map(str::to_owned))
                        .collect(),
                );
            }
            "sort" => {
                for s in v.as_array().ok_or_else(|| bad(k))? {
                    let field = s
                        .get("field")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(k))?;
                    let desc = s.get("direction").and_then(Value::as_str) == Some("desc");
                    p.sort.push((field.to_owned(), desc));
                }
            }
            "cellFormat" | "timeZone" | "userLocale" | "view" | "returnFieldsByFieldId" => {}
            other => return Err(bad(other)),
        }
    }
    Ok(p)
}

/// A running double. Dropping it without `shutdown` leaves the server to the runtime.
pub struct AirtableDouble {
    state: Arc<Mutex<State>>,
    addr: std::net::SocketAddr,
    token: String,
    base_id: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    /// While true, writes wait, unapplied, before the double looks at them.
    writes_paused: Arc<tokio::sync::watch::Sender<bool>>,
}

impl AirtableDouble {
    pub async fn start(cfg: DoubleConfig) -> AirtableDouble {
        let mut id_rng = StdRng::seed_from_u64(cfg.seed ^ 0x5eed);
        let mut new_id = |prefix: &str| -> String {
            let tail: String = (0..14)
                .map(|_| id_rng.sample(Alphanumeric) as char)
                .collect();
            format!("{prefix}{tail}")
        };
        let tables = cfg
            .schema
            .tables
            .iter()
            .map(|t| Table {
                id: new_id("tbl"),
                name: t.name.clone(),
                primary: t.primary.clone(),
                fields: t
                    .fields
                    .iter()
                    .map(|(n, ty)| (new_id("fld"), n.clone(), ty.clone()))
                    .collect(),
                records: Vec::new(),
                autonumber: 0,
            })
            .collect();
        let state = Arc::new(Mutex::new(State {
            token: cfg.token.clone(),
            base_id: cfg.base_id.clone(),
            tables,
            started: Instant::now(),
            log: Vec::new(),
            requests_per_second: cfg.requests_per_second,
            lockout: cfg.lockout,
            window: VecDeque::new(),
            locked_until: None,
            lockout_in: None,
            fail_rng: StdRng::seed_from_u64(cfg.seed),
            fail_rate: 0.0,
            fail_every: None,
            seen: 0,
            id_rng: StdRng::seed_from_u64(cfg.seed.wrapping_add(1)),
            offsets: HashMap::new(),
            minted: Vec::new(),
            write_delay: None,
            gateway_timeouts: 0,
            gateway_timeouts_table: None,
            gateway_timeouts_status: 504,
        }));

        let shared = state.clone();
        let writes_paused = Arc::new(tokio::sync::watch::channel(false).0);
        let gate = writes_paused.clone();
        let routes = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::bytes())
            .then(
                move |method: warp::http::Method,
                      path: warp::path::FullPath,
                      query: String,
                      auth: Option<String>,
                      body: bytes::Bytes| {
                    let write = method != warp::http::Method::GET
                        && !path.as_str().ends_with("/listRecords");
                    let mut paused = gate.subscribe();
                    let shared = shared.clone();
                    async move {
                        if write {
                            // A stalled base: the write is neither applied nor answered yet.
                            let _ = paused.wait_for(|p| !*p).await;
                        }
                        let (status, value, hold) = {
                            let mut state = shared.lock().unwrap_or_else(|p| p.into_inner());
                            let (status, value) = state.handle(
                                method.as_str(),
                                path.as_str(),
                                &query,
                                auth.as_deref(),
                                &body,
                            );
                            let table_matches =
                                state.gateway_timeouts_table.as_deref().is_none_or(|t| {
                                    path.as_str()
                                        .split('/')
                                        .nth(3)
                                        .map(|seg| seg.replace("%20", " "))
                                        .as_deref()
                                        == Some(t)
                                });
                            let (status, value) = if write
                                && status == 200
                                && state.gateway_timeouts > 0
                                && table_matches
                            {
                                // A proxy in front of Airtable gave up waiting: the write was
                                // applied, the caller hears 504 (or the 502/503 it was set to).
                                state.gateway_timeouts -= 1;
                                let status = state.gateway_timeouts_status;
                                (status, json!(gateway_page(status)))
                            } else {
                                (status, value)
                            };
                            (status, value, state.write_delay.filter(|_| write))
                        };
                        // A write applied whose answer is late: what a slow network, a
                        // proxy or a process killed while waiting sees.
                        if let Some(hold) = hold {
                            tokio::time::sleep(hold).await;
                        }
                        let status = warp::http::StatusCode::from_u16(status)
                            .unwrap_or(warp::http::StatusCode::INTERNAL_SERVER_ERROR);
                        warp::reply::with_status(warp::reply::json(&value), status)
                    }
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Airtable double");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            warp::serve(routes)
                .incoming(listener)
                .graceful(async {
                    let _ = stopped.await;
                })
                .run(),
        );
        AirtableDouble {
            state,
            addr,
            token: cfg.token,
            base_id: cfg.base_id,
            stop: Some(stop),
            server: Some(server),
            writes_paused,
        }
    }

    /// Stalls the base's writes (`true`) until called with `false`: each write waits,
    /// neither applied nor answered, as behind a base that has stopped answering; reads
    /// go on. What a stall or a long lockout looks like to everything queued behind it.
    pub fn pause_writes(&self, paused: bool) {
        self.writes_paused.send_replace(paused);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token(&self) -> String {
        self.token.clone()
    }

    pub fn base_id(&self) -> String {
        self.base_id.clone()
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state().log.clone()
    }

    /// The most requests that arrived within any one second (a sliding window).
    pub fn max_requests_in_any_second(&self) -> usize {
        let times: Vec<Duration> = self.state().log.iter().map(|r| r.at).collect();
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= Duration::from_secs(1) {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    /// Answers this share of requests (after auth and rate limiting) with 503, before doing
    /// anything: a seeded RNG makes the sequence repeat.
    pub fn set_fail_rate(&self, rate: f64) {
        self.state().fail_rate = rate;
    }

    /// Answers every `n`th request with 503 (`None` stops it).
    pub fn set_fail_every(&self, n: Option<u64>) {
        self.state().fail_every = n;
    }

    /// The `n`th request from now (1 = the next) is refused with 429 and starts a lockout,
    /// as if the base had gone over its limit.
    pub fn rate_limit_at_request(&self, n: u64) {
        self.state().lockout_in = Some(n.max(1));
    }

    /// Applies every write at once but answers it only after `delay` (`None`: at once).
    pub fn set_write_delay(&self, delay: Option<Duration>) {
        self.state().write_delay = delay;
    }

    /// The next `n` writes are applied, then answered 504 as a proxy in front of Airtable
    /// answers when it gives up waiting: the unkind case of an unknown outcome.
    pub fn gateway_timeout_after_apply(&self, n: u64) {
        self.answer_after_apply(None, 504, n);
    }

    /// [`Self::gateway_timeout_after_apply`] for the next `n` writes to `table` only.
    pub fn gateway_timeout_after_apply_to(&self, table: &str, n: u64) {
        self.answer_after_apply(Some(table), 504, n);
    }

    /// The next `n` writes (to `table`, when given) are applied, then answered `status`
    /// (502, 503 or 504). Airtable documents 502 and 503 as safe to retry (docs/airtable.md);
    /// a gateway in front of it that gives up after forwarding answers them too, after
    /// the write was applied: the unkind case the double plays because the world allows it.
    pub fn answer_after_apply(&self, table: Option<&str>, status: u16, n: u64) {
        let mut state = self.state();
        state.gateway_timeouts = n;
        state.gateway_timeouts_table = table.map(str::to_owned);
        state.gateway_timeouts_status = status;
    }

    /// When the double handed out this attachment URL (each read mints new ones).
    pub fn minted_at(&self, url: &str) -> Option<std::time::SystemTime> {
        self.state()
            .minted
            .iter()
            .find(|(u, _)| u == url)
            .map(|(_, at)| *at)
    }

    pub fn records(&self, table: &str) -> Vec<DoubleRecord> {
        let s = self.state();
        s.table_index(table)
            .map(|t| s.tables[t].records.clone())
            .unwrap_or_default()
    }

    /// The table's records by id.
    pub fn records_by_id(&self, table: &str) -> HashMap<String, DoubleRecord> {
        self.records(table)
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect()
    }

    /// Seeds a record with the same validation as a create, bypassing the rate limit, the
    /// failure injection and the log. Panics on invalid fields: it is a test helper.
    pub fn insert_record(&self, table: &str, fields: Value) -> String {
        let mut s = self.state();
        let t = s
            .table_index(table)
            .unwrap_or_else(|| panic!("no table {table} in the double"));
        let body = json!({ "records": [{ "fields": fields }] });
        match s.write_request(t, WriteMode::Create, body, None) {
            Ok((v, _)) => v["records"][0]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            Err(e) => panic!("insert_record into {table}: {} {}", e.status, e.body),
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

/// `filterByFormula`: a small parser and evaluator for the part of Airtable's formula
/// language that matters here. What it cannot parse is refused as Airtable refuses it.
pub mod formula {
    use super::{ApiError, err};
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde_json::Value;

    #[derive(Debug, Clone, PartialEq)]
    pub enum V {
        Str(String),
        Num(f64),
        Bool(bool),
        Arr(Vec<V>),
        Blank,
    }

    impl V {
        pub fn from_json(v: &Value) -> V {
            match v {
                Value::String(s) => V::Str(s.clone()),
                Value::Number(n) => V::Num(n.as_f64().unwrap_or_default()),
                Value::Bool(b) => V::Bool(*b),
                Value::Array(a) => V::Arr(a.iter().map(V::from_json).collect()),
                Value::Null | Value::Object(_) => V::Blank,
            }
        }

        pub fn text(&self) -> String {
            match self {
                V::Str(s) => s.clone(),
                V::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", *n as i64),
                V::Num(n) => n.to_string(),
                V::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
                V::Arr(items) => items.iter().map(V::text).collect::<Vec<_>>().join(", "),
                V::Blank => String::new(),
            }
        }

        fn num(&self) -> Option<f64> {
            match self {
                V::Num(n) => Some(*n),
                V::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
                V::Blank => Some(0.0),
                V::Str(s) => s.trim().parse().ok(),
                V::Arr(_) => None,
            }
        }

        pub fn truthy(&self) -> bool {
            match self {
                V::Str(s) => !s.is_empty(),
                V::Num(n) => *n != 0.0,
                V::Bool(b) => *b,
                V::Arr(a) => !a.is_empty(),
                V::Blank => false,
            }
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    pub enum Expr {
        Lit(V),
        Field(String),
        Call(String, Vec<Expr>),
        Bin(&'static str, Box<Expr>, Box<Expr>),
    }

    fn invalid(msg: impl Into<String>) -> ApiError {
        err(
            422,
            "INVALID_FILTER_BY_FORMULA",
            format!(
                "The formula for filtering records is invalid: {}",
                msg.into()
            ),
        )
    }

    const FUNCTIONS: &[(&str, usize, usize)] = &[
        ("RECORD_ID", 0, 0),
        ("CREATED_TIME", 0, 0),
        ("DATETIME_PARSE", 1, 3),
        ("IS_AFTER", 2, 2),
        ("IS_BEFORE", 2, 2),
        ("OR", 1, usize::MAX),
        ("AND", 1, usize::MAX),
        ("NOT", 1, 1),
        ("IF", 2, 3),
        ("FIND", 2, 3),
        ("SEARCH", 2, 3),
        ("ARRAYJOIN", 1, 2),
        ("LEN", 1, 1),
        ("LOWER", 1, 1),
        ("UPPER", 1, 1),
        ("TRUE", 0, 0),
        ("FALSE", 0, 0),
        ("BLANK", 0, 0),
    ];

    struct Parser<'a> {
        chars: Vec<char>,
        pos: usize,
        known_field: &'a dyn Fn(&str) -> bool,
    }

    /// Parses a formula; unknown fields and functions are refused like Airtable does.
    pub fn parse(text: &str, known_field: impl Fn(&str) -> bool) -> Result<Expr, ApiError> {
        let mut p = Parser {
            chars: text.chars().collect(),
            pos: 0,
            known_field: &known_field,
        };
        let e = p.comparison()?;
        p.skip_ws();
        if p.pos != p.chars.len() {
            return Err(invalid(format!("unexpected text at {}", p.pos)));
        }
        Ok(e)
    }

    impl Parser<'_> {
        fn skip_ws(&mut self) {
            while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
                self.pos += 1;
            }
        }

        fn peek(&mut self) -> Option<char> {
            self.skip_ws();
            self.chars.get(self.pos).copied()
        }

        fn eat(&mut self, s: &str) -> bool {
            self.skip_ws();
            let n = s.chars().count();
            if self.chars.len() >= self.pos + n
                && self.chars[self.pos..self.pos + n]
                    .iter()
                    .copied()
                    .eq(s.chars())
            {
                self.pos += n;
                true
            } else {
                false
            }
        }

        fn comparison(&mut self) -> Result<Expr, ApiError> {
            let mut left = self.concat()?;
            loop {
                let op = ["!=", "<=", ">=", "=", "<", ">"]
                    .into_iter()
                    .find(|op| self.eat(op));
                let Some(op) = op else { return Ok(left) };
                let right = self.concat()?;
                left = Expr::Bin(op, Box::new(left), Box::new(right));
            }
        }

        fn concat(&mut self) -> Result<Expr, ApiError> {
            let mut left = self.primary()?;
            while self.eat("&") {
                let right = self.primary()?;
                left = Expr::Bin("&", Box::new(left), Box::new(right));
            }
            Ok(left)
        }

        fn primary(&mut self) -> Result<Expr, ApiError> {
            match self.peek() {
                Some(q @ ('\'' | '"')) => {
                    self.pos += 1;
                    let mut s = String::new();
                    loop {
                        match self.chars.get(self.pos).copied() {
                            None => return Err(invalid("unterminated string")),
                            Some('\\') => {
                                let c = self
                                    .chars
                                    .get(self.pos + 1)
                                    .copied()
                                    .ok_or_else(|| invalid("unterminated string"))?;
                                s.push(match c {
                                    'n' => '\n',
                                    't' => '\t',
                                    other => other,
                                });
                                self.pos += 2;
                            }
                            Some(c) if c == q => {
                                self.pos += 1;
                                return Ok(Expr::Lit(V::Str(s)));
                            }
                            Some(c) => {
                                s.push(c);
                                self.pos += 1;
                            }
                        }
                    }
                }
                Some('{') => {
                    self.pos += 1;
                    let mut name = String::new();
                    loop {
                        match self.chars.get(self.pos).copied() {
                            None => return Err(invalid("unterminated field reference")),
                            Some('\\') if self.chars.get(self.pos + 1) == Some(&'}') => {
                                name.push('}');
                                self.pos += 2;
                            }
                            Some('}') => {
                                self.pos += 1;
                                break;
                            }
                            Some(c) => {
                                name.push(c);
                                self.pos += 1;
                            }
                        }
                    }
                    if !(self.known_field)(&name) {
                        return Err(invalid(format!("Unknown field names: {name}")));
                    }
                    Ok(Expr::Field(name))
                }
                Some('(') => {
                    self.pos += 1;
                    let e = self.comparison()?;
                    if !self.eat(")") {
                        return Err(invalid("missing )"));
                    }
                    Ok(e)
                }
                Some(c) if c.is_ascii_digit() || c == '-' => {
                    let start = self.pos;
                    self.pos += 1;
                    while self
                        .chars
                        .get(self.pos)
                        .is_some_and(|c| c.is_ascii_digit() || *c == '.')
                    {
                        self.pos += 1;
                    }
                    let text: String = self.chars[start..self.pos].iter().collect();
                    text.parse()
                        .map(|n| Expr::Lit(V::Num(n)))
                        .map_err(|_| invalid(format!("bad number {text}")))
                }
                Some(c) if c.is_ascii_alphabetic() => {
                    let start = self.pos;
                    while self
                        .chars
                        .get(self.pos)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                    {
                        self.pos += 1;
                    }
                    let name: String = self.chars[start..self.pos]
                        .iter()
                        .collect::<String>()
                        .to_uppercase();
                    let Some(&(_, min, max)) = FUNCTIONS.iter().find(|(f, _, _)| *f == name) else {
                        return Err(invalid(format!("unknown function or bare name {name}")));
                    };
                    if !self.eat("(") {
                        return Err(invalid(format!("{name} needs parentheses")));
                    }
                    let mut args = Vec::new();
                    if !self.eat(")") {
                        loop {
                            args.push(self.comparison()?);
                            if self.eat(")") {
                                break;
                            }
                            if !self.eat(",") {
                                return Err(invalid("expected , or )"));
                            }
                        }
                    }
                    if args.len() < min || args.len() > max {
                        return Err(invalid(format!("wrong number of arguments to {name}")));
                    }
                    Ok(Expr::Call(name, args))
                }
                _ => Err(invalid(format!("unexpected character at {}", self.pos))),
            }
        }
    }

    fn equal(a: &V, b: &V) -> bool {
        match (a, b) {
            (V::Num(_) | V::Bool(_), _) | (_, V::Num(_) | V::Bool(_)) => match (a.num(), b.num()) {
                (Some(x), Some(y)) => x == y,
                _ => a.text() == b.text(),
            },
            _ => a.text() == b.text(),
        }
    }

    fn find(needle: &str, hay: &str, start: usize, fold: bool) -> f64 {
        let (needle, hay) = if fold {
            (needle.to_lowercase(), hay.to_lowercase())
        } else {
            (needle.to_owned(), hay.to_owned())
        };
        let skip: String = hay.chars().skip(start.saturating_sub(1)).collect();
        match skip.find(&needle) {
            Some(byte) => (skip[..byte].chars().count() + start.max(1)) as f64,
            None => 0.0,
        }
    }

    /// Evaluates `e` for one record: `field` gives a cell as formulas see it.
    pub fn eval(e: &Expr, field: &dyn Fn(&str) -> V, record_id: &str, created: &str) -> V {
        let ev = |x: &Expr| eval(x, field, record_id, created);
        match e {
            Expr::Lit(v) => v.clone(),
            Expr::Field(name) => field(name),
            Expr::Bin(op, a, b) => {
                let (a, b) = (ev(a), ev(b));
                match *op {
                    "&" => V::Str(a.text() + &b.text()),
                    "=" => V::Bool(equal(&a, &b)),
                    "!=" => V::Bool(!equal(&a, &b)),
                    cmp => {
                        let o = match (a.num(), b.num()) {
                            (Some(x), Some(y)) => x.partial_cmp(&y),
                            _ => Some(a.text().cmp(&b.text())),
                        };
                        let Some(o) = o else { return V::Bool(false) };
                        V::Bool(match cmp {
                            "<" => o.is_lt(),
                            ">" => o.is_gt(),
                            "<=" => o.is_le(),
                            _ => o.is_ge(),
                        })
                    }
                }
            }
            Expr::Call(name, args) => {
                let arg = |i: usize| args.get(i).map(ev).unwrap_or(V::Blank);
                match name.as_str() {
                    "RECORD_ID" => V::Str(record_id.to_owned()),
                    "CREATED_TIME" => V::Str(created.to_owned()),
                    // Dates travel as RFC 3339 text here; a text that is not one is blank.
                    "DATETIME_PARSE" => match DateTime::parse_from_rfc3339(&arg(0).text()) {
                        Ok(d) => V::Str(
                            d.with_timezone(&Utc)
                                .to_rfc3339_opts(SecondsFormat::Millis, true),
                        ),
                        Err(_) => V::Blank,
                    },
                    "IS_AFTER" | "IS_BEFORE" => {
                        let (a, b) = (arg(0).text(), arg(1).text());
                        match (
                            DateTime::parse_from_rfc3339(&a),
                            DateTime::parse_from_rfc3339(&b),
                        ) {
                            (Ok(a), Ok(b)) => {
                                V::Bool(if name == "IS_AFTER" { a > b } else { a < b })
                            }
                            _ => V::Blank,
                        }
                    }
                    "OR" => V::Bool(args.iter().any(|a| ev(a).truthy())),
                    "AND" => V::Bool(args.iter().all(|a| ev(a).truthy())),
                    "NOT" => V::Bool(!arg(0).truthy()),
                    "IF" => {
                        if arg(0).truthy() {
                            arg(1)
                        } else {
                            arg(2)
                        }
                    }
                    "FIND" | "SEARCH" => {
                        let start = if args.len() > 2 {
                            arg(2).num().unwrap_or(1.0).max(1.0) as usize
                        } else {
                            1
                        };
                        V::Num(find(
                            &arg(0).text(),
                            &arg(1).text(),
                            start,
                            name == "SEARCH",
                        ))
                    }
                    "ARRAYJOIN" => {
                        let sep = if args.len() > 1 {
                            arg(1).text()
                        } else {
                            ", ".to_owned()
                        };
                        match arg(0) {
                            V::Arr(items) => {
                                V::Str(items.iter().map(V::text).collect::<Vec<_>>().join(&sep))
                            }
                            other => V::Str(other.text()),
                        }
                    }
                    "LEN" => V::Num(arg(0).text().chars().count() as f64),
                    "LOWER" => V::Str(arg(0).text().to_lowercase()),
                    "UPPER" => V::Str(arg(0).text().to_uppercase()),
                    "TRUE" => V::Bool(true),
                    "FALSE" => V::Bool(false),
                    _ => V::Blank,
                }
            }
        }
    }
}

/// A client configuration aimed at `double`: Airtable's 5 requests a second, a 1-s lockout,
/// quick retries, as the client tests use it.
pub fn config_for(double: &AirtableDouble) -> reelstate::records::airtable::AirtableConfig {
    reelstate::records::airtable::AirtableConfig {
        api_url: double.url(),
        token: double.token(),
        base_id: double.base_id(),
        requests_per_second: 5,
        lockout: std::time::Duration::from_secs(1),
        max_attempts: 12,
        request_timeout: std::time::Duration::from_secs(10),
        backoff_base: std::time::Duration::from_millis(5),
    }
}

/// What a gateway's error page says for `status`.
fn gateway_page(status: u16) -> &'static str {
    match status {
        502 => "502 Bad Gateway",
        503 => "503 Service Temporarily Unavailable",
        _ => "504 Gateway Time-out",
    }
}
