//! The embedded records' own checks: versioning, batched writes, error kinds, lookups.

use rusqlite::params;
use serde_json::Value;

use super::rows::FIND_EQUALS;
use super::*;

/// Records tables from before they were versioned take the first migration as a
/// no-op and keep their rows; a newer records schema is refused, naming both versions.
#[test]
fn records_tables_are_versioned_and_a_newer_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let old = Connection::open(&path).unwrap();
    old.execute_batch(SCHEMA).unwrap();
    old.execute_batch("INSERT INTO records VALUES ('recA1b2C3d4E5f6G7', 'Videos', 'then')")
        .unwrap();
    drop(old);
    let records = SqliteRecords::open(&path, &Mapping::default()).unwrap();
    drop(records);
    let conn = Connection::open(&path).unwrap();
    let (version, kept): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT MAX(version) FROM records_migrations), (SELECT COUNT(*) FROM records)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((version, kept), (RECORDS_SCHEMA, 1));
    conn.execute(
        "INSERT INTO records_migrations VALUES (?1, 'later', 'then')",
        [RECORDS_SCHEMA + 1],
    )
    .unwrap();
    drop(conn);
    let refused = SqliteRecords::open(&path, &Mapping::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        refused.contains(&format!("version {}", RECORDS_SCHEMA + 1))
            && refused.contains(&format!("up to version {RECORDS_SCHEMA}")),
        "{refused}"
    );
}

fn fields(v: Value) -> Fields {
    match v {
        Value::Object(map) => map,
        other => panic!("fields must be an object: {other}"),
    }
}

/// Writes that arrive while the file's lock is taken go in together, one transaction for
/// all of them; one refused halfway (its record row written, its link not) leaves no
/// trace, and the others are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_writes_share_a_transaction_and_a_refused_one_undoes_only_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = WriteGate::default();
    let records =
        SqliteRecords::open_sharing(&dir.path().join("r.db"), &Mapping::default(), gate.clone())
            .expect("open");
    let (release, held) = std::sync::mpsc::channel::<()>();
    let holder = {
        let gate = gate.clone();
        let (taken, is_taken) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _g = gate.hold();
            taken.send(()).expect("taken");
            held.recv().ok();
        });
        is_taken.recv().expect("the gate is held");
        t
    };
    let queued = |r: &SqliteRecords| r.inner.writes.lock().expect("queue").len();
    let spawn = |i: usize| {
        let r = records.clone();
        let f = if i == 4 {
            fields(serde_json::json!({"Job ID": "bad", "Related Video": ["recNoSuchVideo000"]}))
        } else {
            fields(serde_json::json!({"Job ID": format!("job-{i}")}))
        };
        tokio::spawn(async move { r.write("Jobs", Write::Create, f).await })
    };
    // The first write takes its batch (itself) and waits for the gate, holding the
    // connection; the nine after it queue.
    let mut writes = vec![spawn(0)];
    for _ in 0..500 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let connection_held = records.inner.conn.try_lock().is_err();
        if connection_held && queued(&records) == 0 {
            break;
        }
    }
    writes.extend((1..10).map(spawn));
    for _ in 0..500 {
        if queued(&records) == 9 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        queued(&records),
        9,
        "writes behind the held lock wait to go together"
    );
    release.send(()).expect("release");
    holder.join().expect("holder");
    let mut ok = 0;
    let mut refused = 0;
    for w in writes {
        match w.await.expect("task") {
            Ok(_) => ok += 1,
            Err(_) => refused += 1,
        }
    }
    assert_eq!((ok, refused), (9, 1));
    let all = records
        .find("Jobs", &Filter::CreatedSince(chrono::DateTime::UNIX_EPOCH))
        .await
        .expect("find");
    assert_eq!(all.len(), 9, "the refused create left no record behind");
}

#[test]
fn busy_is_transient_and_the_rest_permanent() {
    let busy =
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
    assert!(db("writing")(busy).is_transient());
    let full = rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
        None,
    );
    assert!(matches!(
        db("writing")(full),
        RecordsError::Permanent { status: 500, .. }
    ));
}

/// Virtual-machine steps SQLite takes to find one record by a text field among `n`
/// records of the same table.
fn find_steps(conn: &Connection) -> i32 {
    let mut st = conn.prepare(FIND_EQUALS).unwrap();
    let ids: Vec<String> = st
        .query_map(params!["Event ID", "ev-7", "Webhook Events"], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids.len(), 1);
    st.get_status(rusqlite::StatementStatus::VmStep)
}

fn add_events(conn: &Connection, from: usize, to: usize) {
    let tx = conn.unchecked_transaction().unwrap();
    for i in from..to {
        let id = format!("rec{i:014}");
        tx.execute(
            "INSERT INTO records (id, tbl, created_time) VALUES (?1, 'Webhook Events', '')",
            [&id],
        )
        .unwrap();
        for (field, text) in [
            ("Event ID", format!("ev-{i}")),
            (
                "Raw Payload",
                format!("{{\"n\": {i}, \"pad\": \"{}\"}}", "x".repeat(500)),
            ),
        ] {
            tx.execute(
                "INSERT INTO records_cells (record_id, field, text) VALUES (?1, ?2, ?3)",
                params![id, field, text],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Every Webhook Events upsert looks its Event ID up: the lookup must go through the
/// (field, text) index, not walk the table's records, or each webhook costs more than
/// the one before (the 30-minute soak fell behind that way).
#[test]
fn a_lookup_by_field_does_not_grow_with_the_table() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    add_events(&conn, 0, 100);
    let small = find_steps(&conn);
    add_events(&conn, 100, 10_000);
    let large = find_steps(&conn);
    assert!(
        large <= small * 2,
        "{small} steps among 100 records, {large} among 10,000"
    );
}
