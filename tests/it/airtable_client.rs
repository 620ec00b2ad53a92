//! AirtableBackend against the in-process Airtable double (tests/it/support/airtable_double.rs).
//!
//! Every test starts its own double and client; the lockout is 1 s and backoff a few
//! milliseconds so the file stays quick. The only timed assertion is the spec itself: no
//! more than 5 requests in any one second on the double's clock.

use crate::support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use reelstate::domain::RecordId;
use reelstate::records::airtable::schema::{SchemaProblem, check_schema};
use reelstate::records::airtable::{AirtableBackend, AirtableConfig};
use reelstate::records::{Filter, Mapping, RecordBackend, Records, RecordsError};
use serde_json::{Value, json};
use support::airtable_double::{
    AirtableDouble, DoubleConfig, DoubleSchema, FieldType, Spelling, config_for,
};
use support::fields;

async fn setup_with(schema: DoubleSchema) -> (AirtableDouble, Arc<AirtableBackend>) {
    let double = AirtableDouble::start(DoubleConfig {
        schema,
        ..DoubleConfig::default()
    })
    .await;
    let backend = Arc::new(AirtableBackend::new(config_for(&double)).unwrap());
    (double, backend)
}

async fn setup() -> (AirtableDouble, Arc<AirtableBackend>) {
    setup_with(DoubleSchema::default()).await
}

fn rid(s: &str) -> RecordId {
    RecordId::parse(s).unwrap()
}

fn writes(double: &AirtableDouble, method: &str, table: &str) -> usize {
    double
        .requests()
        .iter()
        .filter(|r| r.method == method && r.table.as_deref() == Some(table))
        .count()
}

fn assert_within_rate_limit(double: &AirtableDouble) {
    let max = double.max_requests_in_any_second();
    assert!(max <= 5, "{max} requests in one second");
}

#[tokio::test]
async fn crud_round_trips() {
    let (double, b) = setup().await;
    let created = b
        .create(
            "Videos",
            fields(json!({"Name": "first", "Status": "segments_combined",
                          "Combined Segments Video": "https://media.example/c.mp4"})),
        )
        .await
        .unwrap();
    assert_eq!(created.fields["Name"], json!("first"));
    assert!(!created.created_time.is_empty());

    let got = b.get("Videos", &created.id).await.unwrap().unwrap();
    assert_eq!(got, created);

    let updated = b
        .update(
            "Videos",
            &created.id,
            fields(json!({"Status": "generating_music"})),
        )
        .await
        .unwrap();
    assert_eq!(updated.fields["Status"], json!("generating_music"));
    assert_eq!(updated.fields["Name"], json!("first"), "partial update");

    let found = b
        .find(
            "Videos",
            &Filter::Equals {
                field: "Name".into(),
                value: "first".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(found, vec![updated.clone()]);

    // Upsert: the first creates, the second updates the same record.
    let u1 = b
        .upsert(
            "Jobs",
            "Job ID",
            fields(json!({"Job ID": "j-1", "Type": "music_generation", "Status": "pending"})),
        )
        .await
        .unwrap();
    let u2 = b
        .upsert(
            "Jobs",
            "Job ID",
            fields(json!({"Job ID": "j-1", "Status": "processing"})),
        )
        .await
        .unwrap();
    assert_eq!(u1.id, u2.id);
    assert_eq!(u2.fields["Type"], json!("music_generation"));
    assert_eq!(u2.fields["Status"], json!("processing"));
    assert_eq!(double.records("Jobs").len(), 1);

    // The table name travels percent-encoded.
    b.create(
        "Webhook Events",
        fields(json!({"Event ID": "e-1", "Processed": true})),
    )
    .await
    .unwrap();
    assert!(
        double
            .requests()
            .iter()
            .any(|r| r.path.contains("/Webhook%20Events"))
    );
    assert_within_rate_limit(&double);
    double.shutdown().await;
}

#[tokio::test]
async fn empties_are_omitted_and_null_clears() {
    let (double, b) = setup().await;
    let r = b
        .create(
            "Webhook Events",
            fields(json!({
                "Event ID": "e-empty", "Service": "", "Processed": false, "Success": true,
                "Related Job": [], "Error Details": null,
            })),
        )
        .await
        .unwrap();
    let keys: BTreeSet<&str> = r.fields.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["Event ID", "Success"]));
    let stored = &double.records("Webhook Events")[0];
    assert_eq!(stored.fields.len(), 2, "the double stores no empties");

    let cleared = b
        .update("Webhook Events", &r.id, fields(json!({"Success": null})))
        .await
        .unwrap();
    assert!(!cleared.fields.contains_key("Success"));
    let got = b.get("Webhook Events", &r.id).await.unwrap().unwrap();
    assert_eq!(got.fields.keys().collect::<Vec<_>>(), vec!["Event ID"]);
    double.shutdown().await;
}

#[tokio::test]
async fn links_are_two_way_and_jobs_are_found_by_ids_and_by_value() {
    let (double, b) = setup().await;
    let video = b
        .create("Videos", fields(json!({"Name": "linked video"})))
        .await
        .unwrap();
    let mut jobs = Vec::new();
    for (i, ext) in ["task-a", "task-b"].iter().enumerate() {
        let job = b
            .upsert(
                "Jobs",
                "Job ID",
                fields(
                    json!({"Job ID": format!("job-{i}"), "Related Video": [video.id.as_str()],
                              "External Job ID": ext, "Type": "music_generation"}),
                ),
            )
            .await
            .unwrap();
        jobs.push(job);
    }
    // An unrelated job, which no search may return.
    b.upsert(
        "Jobs",
        "Job ID",
        fields(json!({"Job ID": "other", "External Job ID": "task-c"})),
    )
    .await
    .unwrap();

    let video = b.get("Videos", &video.id).await.unwrap().unwrap();
    let link_ids: Vec<&str> = video.fields["Jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(link_ids, vec![jobs[0].id.as_str(), jobs[1].id.as_str()]);

    let by_ids = b
        .find(
            "Jobs",
            &Filter::RecordIds(vec![jobs[1].id.clone(), jobs[0].id.clone()]),
        )
        .await
        .unwrap();
    let mut got: Vec<&RecordId> = by_ids.iter().map(|r| &r.id).collect();
    got.sort();
    let mut want = vec![&jobs[0].id, &jobs[1].id];
    want.sort();
    assert_eq!(got, want);

    let by_value = b
        .find(
            "Jobs",
            &Filter::Equals {
                field: "External Job ID".into(),
                value: "task-b".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(by_value.len(), 1);
    assert_eq!(by_value[0].id, jobs[1].id);

    // Through the typed layer: a video's jobs come from its own link array.
    let records = Records::new(b.clone(), Mapping::default());
    let typed = records.get_video(&video.id).await.unwrap().unwrap();
    assert_eq!(records.jobs_of_video(&typed).await.unwrap().len(), 2);

    // Re-linking a job to another video moves it in the inverse links, as Airtable does.
    let other = b
        .create("Videos", fields(json!({"Name": "second video"})))
        .await
        .unwrap();
    b.update(
        "Jobs",
        &jobs[0].id,
        fields(json!({"Related Video": [other.id.as_str()]})),
    )
    .await
    .unwrap();
    let first = b.get("Videos", &video.id).await.unwrap().unwrap();
    assert_eq!(first.fields["Jobs"], json!([jobs[1].id.as_str()]));
    let second = b.get("Videos", &other.id).await.unwrap().unwrap();
    assert_eq!(second.fields["Jobs"], json!([jobs[0].id.as_str()]));
    double.shutdown().await;
}

/// The pitfall of docs/airtable.md ("Links"), checked on the double itself: in a formula a linked field
/// is its records' primary field values, so searching it for a record id finds nothing.
#[tokio::test]
async fn the_double_evaluates_linked_fields_as_primary_values() {
    let (double, _b) = setup().await;
    let video = double.insert_record("Videos", json!({"Name": "Sunset reel"}));
    double.insert_record("Jobs", json!({"Job ID": "j", "Related Video": [video]}));
    let http = reqwest::Client::new();
    let list = |formula: String| {
        let http = http.clone();
        let url = format!("{}/v0/{}/Jobs/listRecords", double.url(), double.base_id());
        let token = double.token();
        async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "filterByFormula": formula }))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = list(format!("FIND('{video}', ARRAYJOIN({{Related Video}}))")).await;
    assert_eq!(status, 200);
    assert_eq!(body["records"], json!([]));
    let (_, body) = list("FIND('Sunset reel', ARRAYJOIN({Related Video}))".into()).await;
    assert_eq!(body["records"].as_array().unwrap().len(), 1);
    let (_, body) = list("AND({Job ID}='j', NOT({Job ID}='k'))".into()).await;
    assert_eq!(body["records"].as_array().unwrap().len(), 1);
    let (status, body) = list("{Job ID}='unterminated".into()).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["type"], json!("INVALID_FILTER_BY_FORMULA"));
    let (status, _) = list("{No Such Field}='x'".into()).await;
    assert_eq!(status, 422);
    double.shutdown().await;
}

#[tokio::test]
async fn values_with_quotes_backslashes_and_braces_are_matched_exactly() {
    let odd_field = "Odd}Name";
    let (double, b) = setup_with(DoubleSchema::default().with_field(
        "Jobs",
        odd_field,
        FieldType::SingleLineText,
    ))
    .await;
    let tricky = r"it's a \ back}slash {x} ') OR TRUE() OR ('";
    for (i, v) in [tricky, "it's a", "plain"].iter().enumerate() {
        b.create(
            "Jobs",
            fields(json!({"Job ID": format!("j{i}"), "External Job ID": v, odd_field: v})),
        )
        .await
        .unwrap();
    }
    for field in ["External Job ID", odd_field] {
        let found = b
            .find(
                "Jobs",
                &Filter::Equals {
                    field: field.into(),
                    value: tricky.into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{field}");
        assert_eq!(found[0].fields["Job ID"], json!("j0"));
    }
    double.shutdown().await;
}

#[tokio::test]
async fn pagination_follows_offsets_to_the_end() {
    let (double, b) = setup().await;
    for i in 0..250 {
        double.insert_record(
            "Jobs",
            json!({"Job ID": format!("j{i:03}"), "Type": "music_generation"}),
        );
    }
    double.insert_record("Jobs", json!({"Job ID": "other", "Type": "music_addition"}));
    let found = b
        .find(
            "Jobs",
            &Filter::Equals {
                field: "Type".into(),
                value: "music_generation".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 250);
    let ids: BTreeSet<&RecordId> = found.iter().map(|r| &r.id).collect();
    assert_eq!(ids.len(), 250, "no record twice");
    let lists: Vec<_> = double
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/listRecords"))
        .collect();
    assert_eq!(lists.len(), 3);
    assert!(lists.iter().all(|r| r.method == "POST"));
    assert_eq!(
        lists.iter().map(|r| r.records).collect::<Vec<_>>(),
        vec![100, 100, 50]
    );
    double.shutdown().await;
}

#[tokio::test]
async fn thirty_concurrent_updates_cost_three_requests() {
    let (double, b) = setup().await;
    let ids: Vec<RecordId> = (0..30)
        .map(|i| rid(&double.insert_record("Videos", json!({"Name": format!("v{i}")}))))
        .collect();
    let results = join_all(ids.iter().enumerate().map(|(i, id)| {
        let b = b.clone();
        async move {
            b.update(
                "Videos",
                id,
                fields(json!({"Music": format!("https://media.example/{i}.mp3")})),
            )
            .await
        }
    }))
    .await;
    for (i, r) in results.into_iter().enumerate() {
        let r = r.unwrap();
        assert_eq!(r.id, ids[i], "each caller gets its own record");
        assert_eq!(
            r.fields["Music"],
            json!(format!("https://media.example/{i}.mp3"))
        );
    }
    let patches = writes(&double, "PATCH", "Videos");
    assert!(patches <= 3, "{patches} write requests for 30 updates");
    assert_eq!(b.stats().records_written, 30);
    double.shutdown().await;
}

#[tokio::test]
async fn two_writes_of_one_record_are_not_merged() {
    let (double, b) = setup().await;
    let id = rid(&double.insert_record("Videos", json!({"Name": "v"})));
    let (first, second) = tokio::join!(
        b.update("Videos", &id, fields(json!({"Status": "generating_music"}))),
        b.update("Videos", &id, fields(json!({"Status": "adding_music"}))),
    );
    assert_eq!(first.unwrap().fields["Status"], json!("generating_music"));
    assert_eq!(second.unwrap().fields["Status"], json!("adding_music"));
    assert_eq!(writes(&double, "PATCH", "Videos"), 2);
    assert_eq!(
        double.records("Videos")[0].fields["Status"],
        json!("adding_music")
    );

    // Two upserts of one key: two requests, one record.
    let (a, c) = tokio::join!(
        b.upsert(
            "Jobs",
            "Job ID",
            fields(json!({"Job ID": "k", "Status": "pending"}))
        ),
        b.upsert(
            "Jobs",
            "Job ID",
            fields(json!({"Job ID": "k", "Status": "processing"}))
        ),
    );
    assert_eq!(a.unwrap().id, c.unwrap().id);
    assert_eq!(double.records("Jobs").len(), 1);
    double.shutdown().await;
}

#[tokio::test]
async fn faults_and_a_lockout_still_apply_every_write_exactly_once() {
    let (double, b) = setup().await;
    double.set_fail_rate(0.3);
    double.rate_limit_at_request(3);

    // A create answered 503 is not resent by the client (a gateway can answer 503 after
    // Airtable applied it): its caller finds out, as the engine's keyless search does, by
    // looking for the record it would have made, and creates only when there is none.
    let double_ref = &double;
    let creates = (0..25).map(|i| {
        let (b, double) = (b.clone(), double_ref);
        async move {
            let name = format!("video-{i:02}");
            loop {
                match b.create("Videos", fields(json!({"Name": name}))).await {
                    Ok(r) => return Ok::<_, RecordsError>(r.id),
                    Err(RecordsError::Transient(m)) if m.contains("not repeated") => {
                        let made = double
                            .records("Videos")
                            .into_iter()
                            .find(|r| r.fields["Name"] == json!(name));
                        if let Some(r) = made {
                            return Ok(rid(&r.id));
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    });
    let upserts = (0..15).map(|i| {
        let b = b.clone();
        async move {
            b.upsert(
                "Jobs",
                "Job ID",
                fields(json!({"Job ID": format!("job-{i:02}"), "Status": "pending"})),
            )
            .await
            .map(|r| r.id)
        }
    });
    let (videos, jobs) = tokio::join!(join_all(creates), join_all(upserts));
    let videos: Vec<RecordId> = videos.into_iter().map(Result::unwrap).collect();
    jobs.into_iter().for_each(|r| {
        r.unwrap();
    });

    let updates = videos.iter().enumerate().map(|(i, id)| {
        let b = b.clone();
        async move {
            b.update(
                "Videos",
                id,
                fields(json!({"Final Video": format!("https://media.example/final-{i}.mp4")})),
            )
            .await
        }
    });
    for r in join_all(updates).await {
        r.unwrap();
    }

    let names: Vec<String> = double
        .records("Videos")
        .iter()
        .map(|r| r.fields["Name"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..25).map(|i| format!("video-{i:02}")).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "every video once, none twice");
    for r in double.records("Videos") {
        assert!(r.fields.contains_key("Final Video"), "update applied");
    }
    let mut job_ids: Vec<String> = double
        .records("Jobs")
        .iter()
        .map(|r| r.fields["Job ID"].as_str().unwrap().to_owned())
        .collect();
    job_ids.sort();
    assert_eq!(
        job_ids,
        (0..15).map(|i| format!("job-{i:02}")).collect::<Vec<_>>()
    );

    let stats = b.stats();
    assert!(stats.rate_limited >= 1, "{stats:?}");
    assert!(stats.retries >= 1, "{stats:?}");
    assert_eq!(stats.records_written, 25 + 15 + 25);
    let seen: Vec<u16> = double.requests().iter().map(|r| r.status).collect();
    assert!(seen.contains(&503) && seen.contains(&429), "{seen:?}");
    assert_within_rate_limit(&double);
    double.shutdown().await;
}

#[tokio::test]
async fn never_more_than_five_requests_in_any_second() {
    let (double, b) = setup().await;
    let id = rid(&double.insert_record("Videos", json!({"Name": "v"})));
    let reads = (0..16).map(|_| {
        let b = b.clone();
        let id = id.clone();
        async move { b.get("Videos", &id).await }
    });
    for r in join_all(reads).await {
        assert!(r.unwrap().is_some());
    }
    assert_eq!(double.requests().len(), 16);
    assert_within_rate_limit(&double);
    assert_eq!(b.stats().rate_limited, 0);
    double.shutdown().await;
}

#[tokio::test]
async fn one_bad_record_fails_alone() {
    let (double, b) = setup().await;
    let results = join_all((0..10).map(|i| {
        let b = b.clone();
        let status = if i == 4 { "no_such_status" } else { "pending" };
        async move {
            b.create(
                "Jobs",
                fields(json!({"Job ID": format!("j{i}"), "Status": status})),
            )
            .await
        }
    }))
    .await;
    for (i, r) in results.iter().enumerate() {
        if i == 4 {
            match r {
                Err(RecordsError::Permanent { status, kind, .. }) => {
                    assert_eq!(
                        (*status, kind.as_str()),
                        (422, "INVALID_MULTIPLE_CHOICE_OPTIONS")
                    );
                }
                other => panic!("expected a 422 for the bad record, got {other:?}"),
            }
        } else {
            assert!(r.is_ok(), "record {i}: {r:?}");
        }
    }
    assert_eq!(double.records("Jobs").len(), 9);
    // One refused batch of 10, then one request per record.
    assert_eq!(writes(&double, "POST", "Jobs"), 11);
    double.shutdown().await;
}

#[tokio::test]
async fn errors_are_classified() {
    let (double, b) = setup().await;
    match b.create("Videos", fields(json!({"Nope": "x"}))).await {
        Err(RecordsError::Permanent {
            status: 422, kind, ..
        }) => {
            assert_eq!(kind, "UNKNOWN_FIELD_NAME")
        }
        other => panic!("{other:?}"),
    }
    match b.create("Videos", fields(json!({"Name": 3}))).await {
        Err(RecordsError::Permanent {
            status: 422, kind, ..
        }) => {
            assert_eq!(kind, "INVALID_VALUE_FOR_COLUMN")
        }
        other => panic!("{other:?}"),
    }
    match b
        .find(
            "No Such Table",
            &Filter::RecordIds(vec![rid("recAAAAAAAAAAAAAA")]),
        )
        .await
    {
        Err(RecordsError::Permanent {
            status: 403, kind, ..
        }) => {
            assert_eq!(kind, "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND")
        }
        other => panic!("{other:?}"),
    }
    let missing = rid("recAAAAAAAAAAAAAA");
    assert_eq!(
        b.update("Videos", &missing, fields(json!({"Name": "x"})))
            .await,
        Err(RecordsError::NotFound(missing.to_string(), "Videos".into()))
    );
    let wrong_token = AirtableBackend::new(AirtableConfig {
        token: "patWRONG".into(),
        ..config_for(&double)
    })
    .unwrap();
    match wrong_token.get("Videos", &missing).await {
        Err(RecordsError::Permanent {
            status: 401, kind, ..
        }) => {
            assert_eq!(kind, "AUTHENTICATION_REQUIRED")
        }
        other => panic!("{other:?}"),
    }
    // Every request gets 503: the client gives up with a Transient error.
    double.set_fail_every(Some(1));
    let flaky = AirtableBackend::new(AirtableConfig {
        max_attempts: 3,
        ..config_for(&double)
    })
    .unwrap();
    let e = flaky
        .find("Videos", &Filter::RecordIds(vec![missing]))
        .await;
    assert!(matches!(e, Err(ref e) if e.is_transient()), "{e:?}");
    assert_eq!(flaky.stats().requests, 3);
    double.shutdown().await;
}

#[tokio::test]
async fn get_of_a_record_from_another_table_is_none() {
    let (double, b) = setup().await;
    let job = rid(&double.insert_record("Jobs", json!({"Job ID": "j"})));
    assert_eq!(b.get("Videos", &job).await.unwrap(), None);
    assert!(b.get("Jobs", &job).await.unwrap().is_some());
    assert_eq!(
        b.get("Videos", &rid("recAAAAAAAAAAAAAA")).await.unwrap(),
        None
    );
    double.shutdown().await;
}

#[tokio::test]
async fn schema_check_passes_on_the_default_base() {
    let (double, _b) = setup().await;
    let problems = check_schema(&config_for(&double), &Mapping::default())
        .await
        .unwrap();
    assert_eq!(problems, vec![]);
    double.shutdown().await;
}

#[tokio::test]
async fn schema_check_names_each_problem() {
    let schema = DoubleSchema::default()
        .without_table("Webhook Events")
        .without_field("Videos", "Music")
        .with_field("Jobs", "External Job ID", FieldType::Checkbox)
        .without_option("Videos", "Status", "adding_music");
    let (double, _b) = setup_with(schema).await;
    let problems = check_schema(&config_for(&double), &Mapping::default())
        .await
        .unwrap();
    assert_eq!(
        problems,
        vec![
            SchemaProblem::MissingOption {
                table: "Videos".into(),
                field: "Status".into(),
                key: "[video_status_values] adding_music".into(),
                option: "adding_music".into(),
                choices: vec![
                    "segments_combined".into(),
                    "generating_music".into(),
                    "completed".into(),
                    "music_generation_failed".into(),
                    "music_addition_failed".into(),
                ],
            },
            SchemaProblem::MissingField {
                table: "Videos".into(),
                field: "Music".into(),
                key: "[videos] music".into(),
                optional: false,
                expected: vec![
                    "url".into(),
                    "singleLineText".into(),
                    "multilineText".into()
                ],
            },
            SchemaProblem::WrongType {
                table: "Jobs".into(),
                field: "External Job ID".into(),
                key: "[jobs] external_job_id".into(),
                optional: false,
                found: "checkbox".into(),
                expected: vec!["singleLineText".into()],
            },
            SchemaProblem::MissingTable {
                table: "Webhook Events".into(),
                key: "[webhook_events] table".into(),
            },
        ]
    );
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        text[1].contains("Videos.\"Music\" is missing"),
        "{}",
        text[1]
    );
    double.shutdown().await;
}

/// The double's own limits, checked with raw requests: 10 records per write, the 429 body
/// (an `errors` array) and a lockout during which every request is refused.
#[tokio::test]
async fn the_double_enforces_airtable_limits() {
    let double = AirtableDouble::start(DoubleConfig {
        requests_per_second: 1,
        // Long enough that the requests below certainly fall inside it.
        lockout: Duration::from_secs(30),
        ..DoubleConfig::default()
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/v0/{}/Videos", double.url(), double.base_id());
    let records: Vec<Value> = (0..11)
        .map(|i| json!({"fields": {"Name": format!("v{i}")}}))
        .collect();
    let r = http
        .post(&url)
        .bearer_auth(double.token())
        .json(&json!({ "records": records }))
        .send()
        .await
        .unwrap();
    let first_status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(first_status, 422);
    assert_eq!(body["error"]["type"], json!("INVALID_RECORDS"));

    let second = http
        .get(&url)
        .bearer_auth(double.token())
        .send()
        .await
        .unwrap();
    let log = double.requests();
    // Only meaningful when both arrived within one second, which is nearly always.
    if log[1].at - log[0].at < Duration::from_secs(1) {
        assert_eq!(second.status().as_u16(), 429);
        let body: Value = second.json().await.unwrap();
        assert_eq!(body["errors"][0]["error"], json!("RATE_LIMIT_REACHED"));
        let third = http
            .get(&url)
            .bearer_auth(double.token())
            .send()
            .await
            .unwrap();
        assert_eq!(third.status().as_u16(), 429, "locked out");
    }
    let unauthenticated = http.get(&url).send().await.unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);
    assert!(double.records("Videos").is_empty());
    double.shutdown().await;
}

/// The same records contract as the embedded store (tests/it/records_contract.rs), here on
/// the Airtable client against the double: one interface, two implementations, one suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_airtable_backend_meets_the_records_contract() {
    let (_double, backend) = setup().await;
    support::records_contract::run_core(backend).await;
    let (_double, backend) = setup_with(
        DoubleSchema::default()
            .with_field("Videos", "Music", FieldType::Attachments)
            .with_field("Videos", "Final Video", FieldType::Attachments),
    )
    .await;
    let backend: support::records_contract::Backend = backend;
    support::records_contract::typed_attachment_media_round_trips(&backend).await;
}

/// The records contract of a base without key fields, on the double shaped like the
/// production base (computed Job ID and Event ID, attachments, select options spelled
/// `music`/`final` and `goapi`/`nca`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_airtable_backend_meets_the_contract_of_the_production_base() {
    let (double, backend) = setup_with(DoubleSchema::production_base(Spelling::Code)).await;
    support::records_contract::run_production(backend).await;
    // Nothing was ever written to a computed field (every such write is a 422).
    assert!(
        double.requests().iter().all(|r| r.status < 400),
        "no request was refused: {:?}",
        double
            .requests()
            .iter()
            .filter(|r| r.status >= 400)
            .collect::<Vec<_>>()
    );
    double.shutdown().await;
}

/// What the double plays, as Airtable behaves (docs/airtable.md): computed fields refuse
/// every write, null included; a select refuses an option it lacks unless `typecast`;
/// attachments come back as copies with a fresh URL at every read, and an update keeps one
/// only when it passes its `{"id"}`; reciprocal links follow.
#[tokio::test]
async fn the_double_plays_computed_fields_selects_attachments_and_links() {
    let (double, b) = setup_with(DoubleSchema::production_base(Spelling::Docs)).await;
    for value in [json!("JOB-1"), Value::Null] {
        let refused = b
            .create(
                "Jobs",
                fields(json!({"Job ID": value, "Type": "music_generation"})),
            )
            .await;
        match refused {
            Err(RecordsError::Permanent {
                status,
                kind,
                message,
            }) => {
                assert_eq!((status, kind.as_str()), (422, "INVALID_VALUE_FOR_COLUMN"));
                assert_eq!(
                    message,
                    "Field \"Job ID\" cannot accept a value because the field is computed"
                );
            }
            other => panic!("a write of {value} to a formula must be refused, got {other:?}"),
        }
    }
    let refused = b
        .create("Webhook Events", fields(json!({"Service": "goapi"})))
        .await;
    assert!(
        matches!(&refused, Err(RecordsError::Permanent { status: 422, kind, .. }) if kind == "INVALID_MULTIPLE_CHOICE_OPTIONS"),
        "an option the select lacks is refused: {refused:?}"
    );
    let http = reqwest::Client::new();
    let typecast = http
        .post(format!(
            "{}/v0/{}/Webhook%20Events",
            double.url(),
            double.base_id()
        ))
        .bearer_auth(double.token())
        .json(&json!({"records": [{"fields": {"Service": "goapi"}}], "typecast": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        typecast.status().as_u16(),
        200,
        "typecast creates the option"
    );
    let event = b
        .create(
            "Webhook Events",
            fields(json!({"Service": "GoAPI", "Processed": true})),
        )
        .await
        .unwrap();
    assert!(
        event.fields["Event ID"].as_u64().is_some(),
        "autonumber: {event:?}"
    );
    assert_eq!(event.fields["Created At"], json!(event.created_time));

    let written = "https://cdn.example/combined/source.mp4";
    let video = b
        .create(
            "Videos",
            fields(
                json!({"Description": "a video", "Combined Segments Video": [{"url": written}]}),
            ),
        )
        .await
        .unwrap();
    let first = video.fields["Combined Segments Video"][0].clone();
    let att = first["id"].as_str().unwrap().to_owned();
    assert!(att.starts_with("att"), "{first}");
    assert_eq!(first["filename"], "source.mp4");
    let read = b.get("Videos", &video.id).await.unwrap().unwrap();
    let again = &read.fields["Combined Segments Video"][0];
    assert_ne!(
        first["url"],
        json!(written),
        "the URL read back is Airtable's copy"
    );
    assert_ne!(again["url"], first["url"], "every read signs a new URL");
    assert_eq!(again["id"], json!(att));
    // Kept by id next to a new file; a list without it drops it.
    let kept = b
        .update(
            "Videos",
            &video.id,
            fields(json!({"Combined Segments Video": [{"id": att}, {"url": "https://cdn.example/b.mp4"}]})),
        )
        .await
        .unwrap();
    assert_eq!(
        kept.fields["Combined Segments Video"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(kept.fields["Combined Segments Video"][0]["id"], json!(att));
    let replaced = b
        .update(
            "Videos",
            &video.id,
            fields(json!({"Combined Segments Video": [{"url": "https://cdn.example/c.mp4"}]})),
        )
        .await
        .unwrap();
    assert_eq!(
        replaced.fields["Combined Segments Video"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let job = b
        .create(
            "Jobs",
            fields(json!({"Type": "music_addition", "Related Video": [video.id.as_str()]})),
        )
        .await
        .unwrap();
    assert_eq!(
        job.fields["Job ID"],
        json!(format!("JOB-{}", job.id)),
        "formula computed"
    );
    let video = b.get("Videos", &video.id).await.unwrap().unwrap();
    assert_eq!(
        video.fields["Jobs"],
        json!([job.id.as_str()]),
        "reciprocal link"
    );
    double.shutdown().await;
}

/// A 504 can come from a proxy after Airtable applied the write. Repeating an update is
/// harmless, repeating a create makes a second record: so a create answered 504 is not
/// repeated (its caller finds out what happened; see `creation`), an update is.
#[tokio::test]
async fn a_create_answered_504_after_it_was_applied_is_not_repeated() {
    let (double, b) = setup().await;
    double.gateway_timeout_after_apply(1);
    let created = b
        .create("Videos", fields(json!({"Name": "applied, then 504"})))
        .await;
    assert!(
        matches!(&created, Err(RecordsError::Transient(m)) if m.contains("not repeated")),
        "{created:?}"
    );
    assert_eq!(double.records("Videos").len(), 1, "one record, not two");
    let id = rid(&double.records("Videos")[0].id);
    double.gateway_timeout_after_apply(1);
    let updated = b
        .update("Videos", &id, fields(json!({"Name": "updated"})))
        .await
        .expect("an update answered 504 is repeated and succeeds");
    assert_eq!(updated.fields["Name"], json!("updated"));
    double.shutdown().await;
}

/// Airtable documents 502 and 503 as safe to retry, but a gateway in front of it answers
/// them too after forwarding a write: a create answered either after it was applied is not
/// repeated (one record), as for a 504; an update answered so is.
#[tokio::test]
async fn a_create_answered_502_or_503_after_it_was_applied_is_not_repeated() {
    let (double, b) = setup().await;
    for status in [502, 503] {
        double.answer_after_apply(Some("Videos"), status, 1);
        let name = format!("applied, then {status}");
        let created = b.create("Videos", fields(json!({"Name": name}))).await;
        assert!(
            matches!(&created, Err(RecordsError::Transient(m)) if m.contains("not repeated")),
            "{status}: {created:?}"
        );
        let made = double
            .records("Videos")
            .into_iter()
            .filter(|r| r.fields["Name"] == json!(name))
            .count();
        assert_eq!(made, 1, "{status}: one record, not two");
    }
    let id = rid(&double.records("Videos")[0].id);
    double.answer_after_apply(Some("Videos"), 503, 1);
    b.update("Videos", &id, fields(json!({"Name": "updated"})))
        .await
        .expect("an update answered 503 is repeated and succeeds");
    double.shutdown().await;
}

/// A replica that lost its video while its write waited out a 429 lockout sends nothing:
/// the writer's fence (for the executor, its lease) is asked when the request goes out,
/// not when the write was queued. Its twin, whose fence still holds, is written.
#[tokio::test]
async fn a_write_whose_writer_lost_the_video_while_it_waited_is_never_sent() {
    use reelstate::records::fence::{Fence, fenced};
    use std::sync::atomic::{AtomicBool, Ordering};

    let (double, b) = setup().await;
    let lost = b
        .create("Videos", fields(json!({"Name": "lost"})))
        .await
        .unwrap()
        .id;
    let kept = b
        .create("Videos", fields(json!({"Name": "kept"})))
        .await
        .unwrap()
        .id;
    let fence_of = |holds: Arc<AtomicBool>| -> Fence {
        Arc::new(move || {
            let holds = holds.clone();
            Box::pin(async move { holds.load(Ordering::SeqCst) })
        })
    };
    let (lost_holds, kept_holds) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
    );

    // The next request (a read) is refused with 429: the base is locked out for a second.
    double.rate_limit_at_request(1);
    let first = {
        let b = b.clone();
        tokio::spawn(async move { b.get("Videos", &rid("recAAAAAAAAAAAAAA")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (lost_write, kept_write) = {
        let (b1, b2) = (b.clone(), b.clone());
        let (l, k) = (lost.clone(), kept.clone());
        let (fl, fk) = (fence_of(lost_holds.clone()), fence_of(kept_holds.clone()));
        (
            tokio::spawn(fenced(fl, async move {
                b1.update("Videos", &l, fields(json!({"Name": "stale"})))
                    .await
            })),
            tokio::spawn(fenced(fk, async move {
                b2.update("Videos", &k, fields(json!({"Name": "newer"})))
                    .await
            })),
        )
    };
    // While both wait for the lockout to end, the first writer loses its video.
    tokio::time::sleep(Duration::from_millis(200)).await;
    lost_holds.store(false, Ordering::SeqCst);
    let _ = first.await;
    assert_eq!(
        lost_write.await.unwrap(),
        Err(RecordsError::Fenced),
        "a writer without the video sends nothing"
    );
    kept_write
        .await
        .unwrap()
        .expect("the writer that holds its video writes");
    let videos = double.records_by_id("Videos");
    assert_eq!(videos[lost.as_str()].fields["Name"], "lost");
    assert_eq!(videos[kept.as_str()].fields["Name"], "newer");
}
