//! Intake benchmark: drives the real `reelstate serve` binary over loopback at a fixed
//! concurrency with realistic GoAPI traffic (mixed payload shapes, 10% repeated
//! deliveries, intermediate statuses) and prints accepted/s, p50/p99/max acknowledgement
//! latency and the server's peak RSS; then the same load against a bare warp endpoint
//! that answers 200, for scale.
//!
//! Then the latency at a given load: deliveries at a fixed rate (default 5,000/s) on a
//! fresh service, each latency counted from when the delivery was due.
//!
//! Run: `cargo bench --bench intake` (env BENCH_SECONDS, BENCH_CONCURRENCY, BENCH_RATE
//! (0 skips the fixed-rate phase) to change).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use warp::Filter;

const SECRET: &str = "bench-secret";
const SHAPES: [&str; 6] = [
    "udio_pending.json",
    "udio_processing.json",
    "udio_completed.json",
    "suno_clips_completed.json",
    "suno_array_completed.json",
    "ace_step_completed.json",
];

struct Figures {
    sent: u64,
    accepted: u64,
    duplicates: u64,
    errors: u64,
    secs: f64,
    lat_us: Vec<u64>,
}

impl Figures {
    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        let i = ((self.lat_us.len() as f64 - 1.0) * p).round() as usize;
        self.lat_us[i] as f64 / 1000.0
    }
    fn rate(&self) -> f64 {
        (self.accepted + self.duplicates) as f64 / self.secs
    }
}

fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/fixtures/goapi/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

/// The `n`th delivery of a run: its video and body. Every tenth repeats an earlier one
/// (same task, status, timestamp).
fn delivery(shapes: &[serde_json::Value], n: u64, base: u64) -> (String, serde_json::Value) {
    let key = if n % 10 == 9 && n >= base + 5 {
        n - 5
    } else {
        n
    };
    let mut body = shapes[(key % shapes.len() as u64) as usize].clone();
    body["timestamp"] = serde_json::json!(1_700_000_000 + key);
    body["data"]["task_id"] = serde_json::json!(format!("bench-task-{key}"));
    (format!("recBench{:09}", key % 100_000), body)
}

/// Posts one delivery; its status, or None when the request failed.
async fn post(
    client: &reqwest::Client,
    url: &str,
    video: &str,
    body: &serde_json::Value,
) -> Option<u16> {
    let r = client
        .post(format!("{url}/webhooks/goapi?video_id={video}"))
        .header("x-webhook-secret", SECRET)
        .json(body)
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    // Read to the end, so the connection goes back to the pool rather than closed.
    r.bytes().await.ok()?;
    Some(status)
}

/// Closed loop: `concurrency` clients, each sending its next delivery as soon as the
/// previous one is answered. Measures the most the service takes; its latencies are those
/// of a saturated service (each client's wait includes the queue the others make).
async fn drive(url: String, concurrency: usize, duration: Duration, base: u64) -> Figures {
    let shapes: Arc<Vec<serde_json::Value>> = Arc::new(SHAPES.iter().map(|s| fixture(s)).collect());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let counter = Arc::new(AtomicU64::new(base));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, shapes, counter) =
            (client.clone(), url.clone(), shapes.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut accepted, mut duplicates, mut errors) = (0u64, 0u64, 0u64);
            while start.elapsed() < duration {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let (video, body) = delivery(&shapes, n, base);
                let t = Instant::now();
                let status = post(&client, &url, &video, &body).await;
                lat.push(t.elapsed().as_micros() as u64);
                match status {
                    Some(202) => accepted += 1,
                    Some(200) => duplicates += 1,
                    _ => errors += 1,
                }
            }
            (lat, accepted, duplicates, errors)
        }));
    }
    let mut f = Figures {
        sent: 0,
        accepted: 0,
        duplicates: 0,
        errors: 0,
        secs: 0.0,
        lat_us: Vec::new(),
    };
    for t in tasks {
        let (lat, a, d, e) = t.await.expect("task");
        f.lat_us.extend(lat);
        f.accepted += a;
        f.duplicates += d;
        f.errors += e;
    }
    f.secs = start.elapsed().as_secs_f64();
    f.sent = f.lat_us.len() as u64;
    f.lat_us.sort_unstable();
    f
}

/// Open loop: deliveries at a fixed `rate` a second, whatever the answers, as a sender's
/// traffic arrives: the `n`th is due at `n / rate` s. Each latency counts from the moment
/// its delivery was due, so a service that falls behind is charged for the queue it makes
/// (no coordinated omission). `CONNECTIONS` clients take the due deliveries in turn over
/// kept-alive connections, as many as a slow moment needs.
async fn drive_rate(url: String, rate: u64, duration: Duration, base: u64) -> Figures {
    const CONNECTIONS: usize = 128;
    let shapes: Arc<Vec<serde_json::Value>> = Arc::new(SHAPES.iter().map(|s| fixture(s)).collect());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .expect("client");
    let total = rate * duration.as_secs();
    let next = Arc::new(AtomicU64::new(0));
    // Every connection is open before the clock starts: a run's first deliveries are
    // not charged for the connects.
    let opened = Arc::new(tokio::sync::Barrier::new(CONNECTIONS + 1));
    let (go, started) = tokio::sync::watch::channel(None::<Instant>);
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (client, url, shapes, next) =
            (client.clone(), url.clone(), shapes.clone(), next.clone());
        let (opened, mut started) = (opened.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            let _ = client.get(format!("{url}/healthz")).send().await;
            opened.wait().await;
            let start = *started
                .wait_for(Option::is_some)
                .await
                .expect("start")
                .as_ref()
                .expect("set");
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break out;
                }
                let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
                tokio::time::sleep_until(due.into()).await;
                let (video, body) = delivery(&shapes, base + i, base);
                let status = post(&client, &url, &video, &body).await;
                out.push((due.elapsed().as_micros() as u64, status));
            }
        }));
    }
    opened.wait().await;
    let start = Instant::now();
    go.send_replace(Some(start));
    drop(started);
    let mut f = Figures {
        sent: 0,
        accepted: 0,
        duplicates: 0,
        errors: 0,
        secs: 0.0,
        lat_us: Vec::with_capacity(total as usize),
    };
    for t in tasks {
        for (lat, status) in t.await.expect("task") {
            f.lat_us.push(lat);
            match status {
                Some(202) => f.accepted += 1,
                Some(200) => f.duplicates += 1,
                _ => f.errors += 1,
            }
        }
    }
    f.secs = start.elapsed().as_secs_f64();
    f.sent = f.lat_us.len() as u64;
    f.lat_us.sort_unstable();
    f
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// CPU time (user + system, every thread) the process has used so far, in seconds:
/// `/proc/<pid>/stat` fields 14 and 15, in clock ticks of `USER_HZ`, which the kernel fixes
/// at 100 for /proc on x86 and ARM.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The machine's CPU time so far, in `USER_HZ` ticks: (all states, stolen). `/proc/stat`'s
/// first line; steal (8th value) is time the hypervisor gave this VM's CPUs to others.
/// Latency figures taken while it is more than a few per mille are not comparable.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    Some((values.iter().take(8).sum(), *values.get(7)?))
}

fn print(label: &str, f: &Figures) {
    println!(
        "{label:<28} sent {:>7}  ack/s {:>8.0}  accepted {:>7}  duplicates {:>6}  errors {:>4}  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms",
        f.sent,
        f.rate(),
        f.accepted,
        f.duplicates,
        f.errors,
        f.pct(0.50),
        f.pct(0.99),
        f.lat_us.last().copied().unwrap_or(0) as f64 / 1000.0
    );
}

/// A `reelstate serve` of the release build, on a port of its own.
struct Service {
    child: tokio::process::Child,
    pid: u32,
    url: String,
}

impl Service {
    async fn start(db: &str) -> Self {
        // Outside --dev the service needs its public URL (and an admin token): a port
        // chosen now, so the URL can name it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reelstate"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("PUBLIC_BASE_URL", format!("http://127.0.0.1:{port}"))
            .env("REELSTATE_ADMIN_TOKEN", "bench-admin-token-0123456789")
            .env("REELSTATE_DB", db)
            .env("GOAPI_WEBHOOK_SECRET", SECRET)
            .env(
                "REELSTATE_SIGNING_SECRET",
                "bench-signing-secret-0123456789",
            )
            .env("NCA_API_URL", "http://127.0.0.1:9")
            .env("NCA_API_KEY", "unused")
            .env("RUST_LOG", "warn")
            .envs(
                std::env::var("REELSTATE_WORKER_CONCURRENCY")
                    .ok()
                    .map(|v| ("REELSTATE_WORKER_CONCURRENCY", v)),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start reelstate (build it first: cargo build --release)");
        let pid = child.id().expect("pid");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next_line().await.expect("read").expect("a line");
        let url = first
            .strip_prefix("reelstate listening on ")
            .expect("listening line")
            .to_owned();
        Self { child, pid, url }
    }

    /// Prints the service's CPU per acknowledgement (intake plus whatever background work
    /// ran meanwhile: far less sensitive to other load on the machine than the rate), the
    /// WAL's size and the peak RSS, then stops it.
    async fn report(mut self, cpu: Option<f64>, f: &Figures, db: &str) {
        if let Some(cpu) = cpu {
            let acks = (f.accepted + f.duplicates).max(1) as f64;
            println!(
                "reelstate CPU               {cpu:.2} s over {:.1} s ({:.0}% of one core), {:.0} µs per ack",
                f.secs,
                100.0 * cpu / f.secs,
                1e6 * cpu / acks
            );
        }
        if !db.starts_with("postgres") {
            let wal = std::fs::metadata(format!("{db}-wal")).map_or(0, |m| m.len());
            println!(
                "reelstate WAL file          {:.1} MiB at the end",
                wal as f64 / 1048576.0
            );
        }
        if let Some(line) = ack_histogram(&self.url).await {
            println!("reelstate's own ack timing  {line}");
        }
        println!(
            "reelstate peak RSS          {} MiB",
            peak_rss_kib(self.pid).map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
        );
        let _ = self.child.kill().await;
    }
}

/// The service's own `reelstate_webhook_ack_seconds` histogram (warm-up included), as the
/// share of GoAPI acknowledgements within each bound: where the client's latencies and
/// these differ, the time went outside the handler (connection, scheduling, the client).
async fn ack_histogram(url: &str) -> Option<String> {
    let text = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth("bench-admin-token-0123456789")
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut buckets = Vec::new();
    let mut count = 0f64;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("reelstate_webhook_ack_seconds_") else {
            continue;
        };
        if !rest.contains("service=\"goapi\"") {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        if rest.starts_with("count") {
            count = value;
        } else if let Some(le) = rest
            .strip_prefix("bucket{le=\"")
            .and_then(|r| r.split('"').next())
            .filter(|le| *le != "+Inf")
        {
            buckets.push((le.parse::<f64>().ok()?, value));
        }
    }
    (count > 0.0).then(|| {
        buckets
            .iter()
            .filter(|(le, _)| (0.001..=0.1).contains(le))
            .map(|(le, n)| format!("≤{} ms {:.2}%", le * 1000.0, 100.0 * n / count))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// One measured phase on a fresh service: a second's warm-up, then `BENCH_SECONDS` of
/// `run` (its deliveries numbered from `bases.1`), printed with the service's CPU, WAL and
/// own timing.
async fn phase<F, Fut>(label: &str, db: &str, bases: (u64, u64), run: F) -> Figures
where
    F: Fn(String, Duration, u64) -> Fut,
    Fut: std::future::Future<Output = Figures>,
{
    let secs = env_or("BENCH_SECONDS", 10);
    let service = Service::start(db).await;
    let _warm = run(service.url.clone(), Duration::from_secs(1), bases.0).await;
    let cpu_before = cpu_secs(service.pid);
    let machine_before = machine_ticks();
    let f = run(service.url.clone(), Duration::from_secs(secs), bases.1).await;
    let cpu = cpu_before.zip(cpu_secs(service.pid)).map(|(a, b)| b - a);
    let machine = machine_before.zip(machine_ticks());
    print(label, &f);
    if let Some(((all0, steal0), (all1, steal1))) = machine {
        println!(
            "machine steal               {:.1}‰ of CPU time during the phase",
            1000.0 * (steal1 - steal0) as f64 / (all1 - all0).max(1) as f64
        );
    }
    service.report(cpu, &f, db).await;
    f
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let secs: u64 = env_or("BENCH_SECONDS", 10);
    let concurrency: usize = env_or("BENCH_CONCURRENCY", 32);
    let rate: u64 = env_or("BENCH_RATE", 5_000);
    let dir = tempfile::tempdir().expect("tempdir");
    // BENCH_DB=postgres://… measures the shared store instead of the embedded one (both
    // phases then share it; their deliveries differ).
    let shared = std::env::var("BENCH_DB")
        .ok()
        .filter(|d| !d.trim().is_empty());
    let db = |name: &str| {
        shared
            .clone()
            .unwrap_or_else(|| dir.path().join(name).display().to_string())
    };
    println!(
        "intake benchmark: {secs} s at concurrency {concurrency}, then {secs} s at {rate}/s, {} cores, mixed GoAPI shapes, 10% repeats, store {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if shared.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );

    // The most it takes: a closed loop on a fresh store.
    let real = phase(
        "reelstate (durable accept)",
        &db("bench.db"),
        (0, 1 << 40),
        |url, d, base| drive(url, concurrency, d, base),
    )
    .await;

    // Latency at a given load: an open loop at `rate` a second, on another fresh store.
    if rate > 0 {
        let label = format!("reelstate at {rate}/s (open)");
        phase(
            &label,
            &db("bench-rate.db"),
            (1 << 42, 1 << 43),
            |url, d, base| drive_rate(url, rate, d, base),
        )
        .await;
    }

    // The floor: a bare warp endpoint on another runtime thread pool, same client load.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let route = warp::post()
                .and(warp::body::bytes())
                .map(|_b: bytes::Bytes| {
                    warp::reply::with_status("", warp::http::StatusCode::ACCEPTED)
                });
            warp::serve(route).incoming(listener).run().await;
        });
    });
    let bare = drive(
        format!("http://{addr}"),
        concurrency,
        Duration::from_secs(secs),
        1 << 41,
    )
    .await;
    print("bare warp (returns 202)", &bare);
    if rate > 0 {
        let fixed = drive_rate(
            format!("http://{addr}"),
            rate,
            Duration::from_secs(secs),
            1 << 44,
        )
        .await;
        print(&format!("bare warp at {rate}/s (open)"), &fixed);
    }
    println!(
        "ratio reelstate / bare warp: throughput {:.2}, p99 {:.2}x",
        real.rate() / bare.rate().max(1.0),
        real.pct(0.99) / bare.pct(0.99).max(0.001)
    );
}
