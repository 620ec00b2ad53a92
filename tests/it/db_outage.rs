//! The store goes away. PostgreSQL: three replicas reach the database through a proxy that
//! cuts every connection (open ones closed, new ones refused) for 20 s, then for 90 s,
//! while GoAPI completions keep coming to all three. While it is cut, webhooks are refused
//! with 503 and never acknowledged; `/readyz` answers 503 and never hangs; afterwards the
//! replicas reconnect by themselves and every video completes with one mix each, every
//! acknowledged delivery on record, NCA callbacks that met the cut found out by asking
//! NCA. Runs when `REELSTATE_TEST_DATABASE_URL` is set. SQLite: a store that cannot write
//! (its page limit reached) refuses webhooks with 503 and takes them again once it can.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::airtable_double::{AirtableDouble, DoubleConfig};
use support::app::{AppBuilder, GOAPI_SECRET, TestApp};
use support::cut_proxy::{CutProxy, upstream_of};
use support::nca_double::NcaDouble;

/// One completion every this often, spread over the replicas, for the whole run.
const EVERY: Duration = Duration::from_millis(1500);
/// Before the first cut; between the two; after the second, the stream goes on this long.
const WARM: Duration = Duration::from_secs(5);
const FIRST_CUT: Duration = Duration::from_secs(20);
const BETWEEN: Duration = Duration::from_secs(15);
const SECOND_CUT: Duration = Duration::from_secs(90);
const AFTER: Duration = Duration::from_secs(10);
/// A probe or a webhook that takes longer than this has hung.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one delivery met on its way to being acknowledged.
#[derive(Debug, Default, Clone)]
struct Sent {
    refused: usize,
    /// Acknowledged with 202 although sent after a cut began and answered before it
    /// ended: the store could not have had it.
    acknowledged_in_cut: bool,
    acknowledged_at: Option<Instant>,
}

/// The cuts as they happen: (began, ended) per cut, `ended` `None` while it lasts.
type Cuts = Arc<Mutex<Vec<(Instant, Option<Instant>)>>>;

fn within_a_cut(cuts: &Cuts, from: Instant, to: Instant) -> bool {
    cuts.lock()
        .unwrap()
        .iter()
        .any(|(began, ended)| from >= *began && ended.is_none_or(|e| to < e))
}

/// Sends one GoAPI completion to replica `first` (the next one when a replica cannot be
/// reached) until it is acknowledged, as GoAPI retries a webhook that was not: a 503 is
/// the service saying "not taken, try again".
async fn deliver(
    urls: Arc<Vec<String>>,
    first: usize,
    video: String,
    task: String,
    cuts: Cuts,
) -> Sent {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let body = support::world::goapi_fixture("udio_completed.json", &task, 1_765_248_943);
    let mut sent = Sent::default();
    for attempt in 0.. {
        let url = &urls[(first + attempt) % urls.len()];
        let began = Instant::now();
        let answer = client
            .post(format!("{url}/webhooks/goapi?video_id={video}"))
            .header("x-webhook-secret", GOAPI_SECRET)
            .json(&body)
            .send()
            .await;
        let Ok(r) = answer else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        match status {
            200 | 202 => {
                let now = Instant::now();
                sent.acknowledged_in_cut |= within_a_cut(&cuts, began, now);
                sent.acknowledged_at = Some(now);
                return sent;
            }
            503 => {
                let error: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                assert_eq!(error["error"]["code"], "unavailable", "503 body: {text}");
                sent.refused += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => panic!("delivery of {task} answered {other}: {text}"),
        }
    }
    unreachable!()
}

/// One `/readyz` answer: when it was asked, its status (`None`: no answer within
/// [`PROBE_TIMEOUT`]) and how long it took.
#[derive(Debug, Clone)]
struct Probe {
    replica: usize,
    at: Instant,
    status: Option<u16>,
    took: Duration,
}

async fn probe_loop(
    urls: Arc<Vec<String>>,
    log: Arc<Mutex<Vec<Probe>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .build()
        .expect("client");
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        for (replica, url) in urls.iter().enumerate() {
            let at = Instant::now();
            let status = client
                .get(format!("{url}/readyz"))
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16());
            log.lock().unwrap().push(Probe {
                replica,
                at,
                status,
                took: at.elapsed(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_ride_out_postgres_cut_for_20_s_then_90_s() {
    let Some(db) = support::pg::database().await else {
        return;
    };
    let proxy = CutProxy::start(upstream_of(&db.url)).await;
    let through = proxy.url_through(&db.url);
    let airtable = AirtableDouble::start(DoubleConfig::default()).await;
    let nca = NcaDouble::start().await;
    // A mix takes a few seconds: those submitted just before a cut end during it, and
    // their one callback (NCA does not retry) is refused.
    nca.set_callback_delay(Duration::from_secs(4));

    let run = WARM + FIRST_CUT + BETWEEN + SECOND_CUT + AFTER;
    let videos_n = (run.as_millis() / EVERY.as_millis()) as usize;
    let videos: Vec<String> = (0..videos_n)
        .map(|i| {
            let video = airtable.insert_record(
                "Videos",
                json!({
                    "Name": format!("video {i}"),
                    "Status": "generating_music",
                    "Combined Segments Video": format!("{}/videos/combined-{i}.mp4", nca.url()),
                }),
            );
            airtable.insert_record(
                "Jobs",
                json!({
                    "Job ID": format!("pipeline-{i}"),
                    "Type": "music_generation",
                    "Status": "processing",
                    "Related Video": [video],
                    "External Job ID": format!("task-{i}"),
                }),
            );
            video
        })
        .collect();

    // The interrupted-call grace is left at its default (10 minutes): a mix whose answer
    // or callback met the cut must be found out at NCA well before it.
    let mut apps: Vec<TestApp> = Vec::new();
    for i in 0..3 {
        let mut app = AppBuilder::new()
            .env("REELSTATE_DB", &through)
            .env("REELSTATE_LEASE_SECS", "2")
            .airtable(&airtable)
            .env("AIRTABLE_LOCKOUT_SECS", "2")
            .nca(&nca);
        if i > 0 {
            app = app.env("PUBLIC_BASE_URL", &apps[0].url);
        }
        apps.push(app.spawn().await);
    }
    let urls = Arc::new(apps.iter().map(|a| a.url.clone()).collect::<Vec<_>>());

    let cuts: Cuts = Arc::default();
    let probes: Arc<Mutex<Vec<Probe>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = tokio::spawn(probe_loop(urls.clone(), probes.clone(), stop.clone()));

    // The stream: every video's completion at its moment, every fifth one also to the
    // next replica (two deliveries of one completion).
    let start = Instant::now();
    let mut sends = Vec::new();
    for (i, video) in videos.iter().enumerate() {
        let copies = if i % 5 == 0 { 2 } else { 1 };
        for c in 0..copies {
            let (urls, video, cuts) = (urls.clone(), video.clone(), cuts.clone());
            let at = start + EVERY * i as u32;
            sends.push(tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                deliver(urls, (i + c) % 3, video, format!("task-{i}"), cuts).await
            }));
        }
    }

    // The cuts.
    let mut restored_at = Vec::new();
    let mut closed = Vec::new();
    for (offset, length) in [(WARM, FIRST_CUT), (WARM + FIRST_CUT + BETWEEN, SECOND_CUT)] {
        tokio::time::sleep_until((start + offset).into()).await;
        let before = proxy.closed();
        cuts.lock().unwrap().push((Instant::now(), None));
        proxy.cut();
        closed.push(proxy.closed() - before);
        tokio::time::sleep(length).await;
        proxy.restore();
        let now = Instant::now();
        cuts.lock().unwrap().last_mut().unwrap().1 = Some(now);
        restored_at.push(now);
    }

    let mut results = Vec::new();
    for s in sends {
        results.push(s.await.expect("delivery task"));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    prober.await.expect("prober");
    let acknowledged = results.len();
    let refused: usize = results.iter().map(|s| s.refused).sum();

    for v in &videos {
        apps[0]
            .wait_settled(v, "completed", Duration::from_secs(300))
            .await;
    }

    // No 202 while the store could not have taken it.
    assert!(
        results.iter().all(|s| !s.acknowledged_in_cut),
        "a webhook was acknowledged while the database was cut off"
    );
    assert!(refused > 0, "no webhook met a cut: the test did not test");
    let callbacks_refused = nca
        .callbacks_sent()
        .iter()
        .filter(|c| !c.answered.is_some_and(|s| (200..300).contains(&s)))
        .count();
    assert!(
        callbacks_refused > 0,
        "no NCA callback met a cut: the test did not test"
    );

    // 0 duplicate paid calls: one mix per video.
    let by_id = nca.submissions_by_id();
    assert_eq!(by_id.len(), videos_n, "one submission id per video");
    let duplicates: usize = by_id.values().map(|n| n - 1).sum();
    assert_eq!(duplicates, 0, "{by_id:?}");
    assert_eq!(
        nca.submissions().len(),
        videos_n,
        "one NCA render per video"
    );

    // 0 lost: every acknowledged delivery has its Webhook Events record.
    let records = airtable.records_by_id("Videos");
    for v in &videos {
        assert_eq!(records[v].fields["Status"], "completed", "{:?}", records[v]);
    }
    let goapi_events = airtable
        .records("Webhook Events")
        .iter()
        .filter(|e| e.fields["Service"] == "GoAPI")
        .count();
    let lost = acknowledged.saturating_sub(goapi_events);
    assert_eq!(
        lost, 0,
        "{acknowledged} acknowledged, {goapi_events} on record"
    );

    // /readyz: always answered, 503 while cut.
    let probes = probes.lock().unwrap().clone();
    let hung: Vec<&Probe> = probes.iter().filter(|p| p.status.is_none()).collect();
    assert!(
        hung.is_empty(),
        "/readyz did not answer within 2 s: {hung:?}"
    );
    let slowest = probes.iter().map(|p| p.took).max().unwrap_or_default();
    let mut during_cut: Vec<Duration> = probes
        .iter()
        .filter(|p| p.status == Some(503))
        .map(|p| p.took)
        .collect();
    during_cut.sort();
    let median = during_cut
        .get(during_cut.len() / 2)
        .copied()
        .unwrap_or_default();

    // Recovery: from the restore to the first delivery acknowledged after it, and to the
    // first 200 of every replica's /readyz.
    let mut recovery = Vec::new();
    for at in &restored_at {
        let first_ack = results
            .iter()
            .filter_map(|s| s.acknowledged_at)
            .filter(|t| t >= at)
            .min()
            .map(|t| t - *at);
        let ready = (0..3)
            .map(|r| {
                probes
                    .iter()
                    .find(|p| p.replica == r && p.at >= *at && p.status == Some(200))
                    .map(|p| p.at + p.took - *at)
            })
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().max());
        recovery.push((first_ack, ready));
    }
    eprintln!(
        "db_outage: {videos_n} videos, {acknowledged} deliveries acknowledged, {refused} refused with 503 during the cuts, \
         lost {lost}, duplicate paid calls {duplicates}, {callbacks_refused} NCA callbacks met a cut (found out at NCA), \
         connections closed by the cuts {closed:?}, connection attempts refused {}, wall {:.0} s",
        proxy.refused(),
        start.elapsed().as_secs_f64()
    );
    for (n, (ack, ready)) in recovery.iter().enumerate() {
        eprintln!(
            "db_outage: cut {} ({} s): first webhook acknowledged {:.1} s after the restore, every replica ready {:.1} s after",
            n + 1,
            [FIRST_CUT, SECOND_CUT][n].as_secs(),
            ack.map_or(f64::NAN, |d| d.as_secs_f64()),
            ready.map_or(f64::NAN, |d| d.as_secs_f64()),
        );
    }
    eprintln!(
        "db_outage: /readyz {} probes, {} unanswered within 2 s; 503 answers took {:.0} ms median, slowest probe {:.0} ms",
        probes.len(),
        hung.len(),
        median.as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3
    );
    let cut_spans = cuts.lock().unwrap().clone();
    for (n, (began, ended)) in cut_spans.iter().enumerate() {
        let ended = ended.expect("restored");
        for replica in 0..3 {
            let during: Vec<&Probe> = probes
                .iter()
                .filter(|p| p.replica == replica && p.at >= *began && p.at + p.took < ended)
                .collect();
            let last = during.last().expect("probed during the cut");
            assert_eq!(
                last.status,
                Some(503),
                "replica {replica}'s /readyz at the end of cut {n}: {during:?}"
            );
        }
    }
    assert!(
        hung.is_empty(),
        "/readyz did not answer within 2 s: {hung:?}"
    );
    assert!(
        recovery.iter().all(|(a, r)| a.is_some() && r.is_some()),
        "a cut was not recovered from: {recovery:?}"
    );
}

/// Fills the store's file up to `pages` pages from a connection of the test's own, as the
/// service's own data would: a table of blobs, filled down to the last page.
fn fill(db: &std::path::Path, pages: i64) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(db).expect("open the store's file");
    c.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
        r.get::<_, i64>(0)
    })
    .expect("page limit");
    c.execute_batch("CREATE TABLE IF NOT EXISTS filler (b BLOB)")
        .expect("filler table");
    for size in [65_536, 4_096, 512, 64, 8] {
        while c
            .execute("INSERT INTO filler (b) VALUES (zeroblob(?1))", [size])
            .is_ok()
        {}
    }
    c
}

async fn post_completion(app: &TestApp, n: usize) -> (u16, Value) {
    let body =
        support::world::goapi_fixture("udio_completed.json", &format!("full-{n}"), 1_765_248_943);
    let r = app
        .client
        .post(format!(
            "{}/webhooks/goapi?video_id=recFull{n:010}",
            app.url
        ))
        .header("x-webhook-secret", GOAPI_SECRET)
        .json(&body)
        .send()
        .await
        .expect("the service answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Completions 1, 2, … until one is refused with 503 and the JSON `unavailable` error (any
/// other answer fails the test): those taken, and the refused one, if any of `up_to` was.
async fn post_until_refused(app: &TestApp, up_to: usize) -> (Vec<usize>, Option<usize>) {
    let mut taken = Vec::new();
    for n in 1..=up_to {
        match post_completion(app, n).await {
            (202, _) => taken.push(n),
            (503, body) => {
                assert_eq!(body["error"]["code"], "unavailable", "{body}");
                return (taken, Some(n));
            }
            (other, body) => panic!("answered {other}: {body}"),
        }
    }
    (taken, None)
}

/// `/readyz` until it answers `want` (its answer is cached for up to 5 s), or the last
/// answer after 15 s.
async fn ready_becomes(app: &TestApp, want: u16) -> (u16, Value) {
    let mut last = (0, Value::Null);
    for _ in 0..60 {
        last = app.get_json("/readyz").await;
        if last.0 == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    last
}

#[tokio::test]
async fn a_full_sqlite_store_refuses_webhooks_with_503_and_takes_them_again_once_it_has_room() {
    // 2 MB: room for the schema and a little work; the test fills the rest.
    let app = AppBuilder::new()
        .env("REELSTATE_DB_MAX_MB", "2")
        .spawn()
        .await;
    let (status, body) = post_completion(&app, 0).await;
    assert_eq!(status, 202, "taken while there is room: {body}");

    let filler = fill(&app.db, 2 * 1024 * 1024 / 4096);
    // A few more may still fit in the pages the store's tables have; then none.
    let (taken, refused) = post_until_refused(&app, 200).await;
    let refused = refused.expect("a full store refuses webhooks");
    // Refused again while still full: the sender's retry is refused the same way.
    assert_eq!(post_completion(&app, refused).await.0, 503);
    let (status, ready) = ready_becomes(&app, 503).await;
    assert_eq!(status, 503, "/readyz while full: {ready}");
    assert!(
        ready["store"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("full") || e.contains("limit")),
        "{ready}"
    );

    // Room again (an operator freed it; retention does the same): intake resumes, and
    // what was acknowledged before the disk filled is on record.
    filler
        .execute_batch("DROP TABLE filler")
        .expect("free the pages");
    let (status, body) = post_completion(&app, refused).await;
    assert_eq!(
        status, 202,
        "the refused delivery is taken once there is room: {body}"
    );
    let (status, ready) = ready_becomes(&app, 200).await;
    assert_eq!(status, 200, "/readyz once there is room: {ready}");
    for n in std::iter::once(0).chain(taken.iter().copied()) {
        let (status, body) = post_completion(&app, n).await;
        assert_eq!(
            status, 200,
            "delivery {n} acknowledged before is on record: {body}"
        );
        assert_eq!(body["status"], "duplicate");
    }
    eprintln!(
        "db_outage: SQLite at its page limit: {} webhooks taken into partly filled pages, then 503 until pages were freed",
        taken.len()
    );
}

/// A filesystem of the test's own, small enough to fill: tmpfs, mounted over a temporary
/// directory and unmounted when dropped. None where this process may not mount (not root,
/// or a container without the capability).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a file until the filesystem refuses another byte (ENOSPC), as another
    /// program sharing the disk would.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("filler file");
        for size in [65_536, 4_096, 512, 1] {
            let chunk = vec![0u8; size];
            while f.write_all(&chunk).and_then(|()| f.flush()).is_ok() {}
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A real full disk, not the configured page limit: the store on a 16 MiB tmpfs that
/// another file fills to the last byte. Webhooks are refused with 503 (never a 202 that
/// the disk did not keep), `/readyz` says the disk is full, and once space is freed intake
/// resumes with every earlier acknowledgement on record.
#[tokio::test]
async fn a_full_disk_refuses_webhooks_with_503_and_takes_them_again_once_freed() {
    let Some(disk) = SmallDisk::mount(16 * 1024 * 1024) else {
        eprintln!("db_outage: skipped: this process may not mount a tmpfs (needs root)");
        return;
    };
    let app = AppBuilder::new().db_in(disk.path()).spawn().await;
    let (status, body) = post_completion(&app, 0).await;
    assert_eq!(status, 202, "taken while there is room: {body}");
    let (status, ready) = ready_becomes(&app, 200).await;
    assert_eq!(status, 200, "/readyz with room: {ready}");

    let filler = disk.fill();
    // The WAL reuses what it already has, so a few more may fit; then none.
    let (taken, refused) = post_until_refused(&app, 5_000).await;
    let refused = refused.expect("a full disk refuses webhooks");
    assert_eq!(post_completion(&app, refused).await.0, 503, "and again");
    let (status, ready) = ready_becomes(&app, 503).await;
    assert_eq!(status, 503, "/readyz on a full disk: {ready}");
    assert!(
        ready["store"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("full")),
        "{ready}"
    );

    std::fs::remove_file(&filler).expect("free the disk");
    let (status, body) = post_completion(&app, refused).await;
    assert_eq!(status, 202, "taken once the disk has room: {body}");
    let (status, ready) = ready_becomes(&app, 200).await;
    assert_eq!(status, 200, "/readyz once the disk has room: {ready}");
    for n in std::iter::once(0).chain(taken.iter().copied()) {
        let (status, body) = post_completion(&app, n).await;
        assert_eq!(status, 200, "delivery {n} acknowledged before: {body}");
        assert_eq!(body["status"], "duplicate");
    }
    eprintln!(
        "db_outage: full disk: {} webhooks taken after the disk filled, then 503 until it was freed",
        taken.len()
    );
}
