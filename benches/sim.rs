//! `cargo bench --bench sim`: the deterministic simulation of the whole engine
//! (tests/it/sim) over a range of seeds, on the release build: how many seeds an hour and
//! simulated lifecycles a second it explores, and every seed that broke the promise.
//!
//! `SIM_FROM` (default 1000000: seeds CI does not run) and `SIM_SEEDS` (default 20000)
//! choose the range, `SIM_THREADS` (default: the machine's cores) the threads. Exits 1
//! when a seed broke the promise; each is printed with its replay command and trace.

#[path = "../tests/it/sim/mod.rs"]
#[allow(dead_code)]
mod sim;

fn number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|n| n.parse().unwrap_or_else(|_| panic!("{name} is a number")))
        .unwrap_or(default)
}

fn main() {
    let from = number("SIM_FROM", 1_000_000);
    let count = number("SIM_SEEDS", 20_000);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let threads = number("SIM_THREADS", cores) as usize;
    let seeds: Vec<u64> = (from..from + count).collect();
    println!(
        "sim: seeds {from}..{} on {threads} thread(s), SQLite store",
        from + count
    );
    let started = std::time::Instant::now();
    let found = sim::explore(&seeds, threads);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sim: {} seeds in {secs:.1} s: {:.0} seeds/hour, {:.1} simulated lifecycles/s; {} lifecycles, {} engine deaths",
        found.seeds,
        found.seeds as f64 * 3600.0 / secs,
        found.lifecycles as f64 / secs,
        found.lifecycles,
        found.crashes
    );
    println!("sim: violations: {}", found.failed.len());
    for (_, report) in &found.failed {
        println!("{report}");
    }
    if !found.failed.is_empty() {
        std::process::exit(1);
    }
}
