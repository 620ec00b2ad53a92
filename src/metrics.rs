//! Prometheus text-format metrics, kept in memory. Counters are keyed by their full
//! label set; a handful of label values exist, so a map under one mutex is plenty.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the processing-latency histogram, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    latency: Mutex<Histogram>,
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Metrics {
    pub fn inc(&self, name: &'static str, pairs: &[(&str, &str)]) {
        self.add(name, pairs, 1);
    }

    pub fn add(&self, name: &'static str, pairs: &[(&str, &str)], n: u64) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry((name, labels(pairs))).or_default() += n;
        }
    }

    /// Time from a webhook's acknowledgement to its decision being stored.
    pub fn observe_latency(&self, d: Duration) {
        if let Ok(mut h) = self.latency.lock() {
            let s = d.as_secs_f64();
            for (i, b) in BUCKETS.iter().enumerate() {
                if s <= *b {
                    h.buckets[i] += 1;
                }
            }
            h.count += 1;
            h.sum += s;
        }
    }

    /// Renders every metric; `gauges` are values read at scrape time.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        if let Ok(c) = self.counters.lock() {
            let mut last = "";
            for ((name, labels), v) in c.iter() {
                if *name != last {
                    let _ = writeln!(out, "# TYPE {name} counter");
                    last = name;
                }
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        if let Ok(h) = self.latency.lock() {
            let name = "reelstate_processing_latency_seconds";
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", h.buckets[i]);
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", h.sum, h.count);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.inc(
            "reelstate_webhooks_total",
            &[("service", "goapi"), ("outcome", "accepted")],
        );
        m.inc(
            "reelstate_webhooks_total",
            &[("service", "goapi"), ("outcome", "accepted")],
        );
        m.observe_latency(Duration::from_millis(20));
        let text = m.render(&[("reelstate_inbox_depth", "pending inbox entries", 3.0)]);
        assert!(
            text.contains("reelstate_webhooks_total{service=\"goapi\",outcome=\"accepted\"} 2")
        );
        assert!(text.contains("reelstate_inbox_depth 3"));
        assert!(text.contains("reelstate_processing_latency_seconds_bucket{le=\"0.025\"} 1"));
    }
}
