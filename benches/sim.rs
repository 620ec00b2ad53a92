//! `cargo bench --bench sim`: the deterministic simulation of the whole engine
//! (tests/it/sim) over a range of seeds, on the release build: how many seeds an hour and
//! simulated lifecycles a second it explores, per backend, and every seed that broke the
//! promise.
//!
//! `SIM_BACKEND` chooses the backend: `sqlite`, `postgres` (three replicas sharing a
//! schema of the database at `REELSTATE_TEST_DATABASE_URL`) or `both` (the default when
//! that URL is set; else `sqlite`). `SIM_FROM` (default 1000000: seeds CI does not run)
//! and `SIM_SEEDS` (default 20000 on SQLite, 200 on PostgreSQL) choose the range,
//! `SIM_THREADS` the threads (default: the machine's cores on SQLite, twice that on
//! PostgreSQL, whose seeds mostly wait for the database). Exits 1 when a seed broke the
//! promise; each is printed with its replay command and trace.

#[path = "../tests/it/sim/mod.rs"]
#[allow(dead_code)]
mod sim;

fn number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|n| n.parse().unwrap_or_else(|_| panic!("{name} is a number")))
        .unwrap_or(default)
}

/// Explores `count` seeds from `from` on one backend; true when none broke the promise.
fn bench(backend: &str, run: &(dyn Fn(u64) -> sim::Run + Sync), count: u64, threads: u64) -> bool {
    let from = number("SIM_FROM", 1_000_000);
    let count = number("SIM_SEEDS", count);
    let threads = number("SIM_THREADS", threads) as usize;
    let seeds: Vec<u64> = (from..from + count).collect();
    println!(
        "sim: seeds {from}..{} on {threads} thread(s), {backend}",
        from + count
    );
    let started = std::time::Instant::now();
    let found = sim::explore_with(&seeds, threads, run);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sim ({backend}): {} seeds in {secs:.1} s: {:.0} seeds/hour, {:.1} simulated lifecycles/s; {} lifecycles, {} engine deaths, {} writes stopped by the lease fence",
        found.seeds,
        found.seeds as f64 * 3600.0 / secs,
        found.lifecycles as f64 / secs,
        found.lifecycles,
        found.crashes,
        found.fenced
    );
    println!("sim ({backend}): violations: {}", found.failed.len());
    for (_, report) in &found.failed {
        println!("{report}");
    }
    found.failed.is_empty()
}

fn main() {
    let url = sim::pg::database_url();
    let backend = std::env::var("SIM_BACKEND")
        .unwrap_or_else(|_| if url.is_some() { "both" } else { "sqlite" }.to_owned());
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let mut held = true;
    if backend == "sqlite" || backend == "both" {
        held &= bench("SQLite store", &sim::run, 20_000, cores);
    }
    if backend == "postgres" || backend == "both" {
        let url = url.expect("SIM_BACKEND=postgres needs REELSTATE_TEST_DATABASE_URL");
        let label = format!("PostgreSQL store, {} replicas", sim::pg::REPLICAS);
        held &= bench(&label, &|seed| sim::pg::run(seed, &url), 200, cores * 2);
    }
    if !matches!(backend.as_str(), "sqlite" | "postgres" | "both") {
        panic!("SIM_BACKEND is sqlite, postgres or both, not {backend}");
    }
    if !held {
        std::process::exit(1);
    }
}
