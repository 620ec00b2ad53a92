//! Prometheus metrics, kept with `prometheus-client` (the Prometheus project's own Rust
//! client): every series is registered once with its type and HELP, counters are typed
//! counters (`_total`), latencies are histograms, and the text is the OpenMetrics
//! exposition the crate encodes. Callers keep one-line calls by name; the names and
//! their help live in the tables below (and in the README's table of series).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::domain::VideoStatus;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

/// Counters by their full name (as callers and dashboards spell them, with `_total`).
const COUNTERS: &[(&str, &str)] = &[
    (
        "reelstate_webhooks_total",
        "Webhooks received, by service and outcome (accepted, duplicate, or the error code of a refusal)",
    ),
    (
        "reelstate_events_processed_total",
        "Webhook entries the worker processed, by source and outcome",
    ),
    (
        "reelstate_transitions_total",
        "Status changes, by lifecycle, from and to",
    ),
    (
        "reelstate_effects_total",
        "Effects finished, by kind and outcome (done, or failed for good)",
    ),
    (
        "reelstate_effect_retries_total",
        "Effect attempts that failed and will be retried, by kind",
    ),
    (
        "reelstate_reconciliations_total",
        "Jobs checked at their service after their deadline, by kind",
    ),
    (
        "reelstate_pruned_rows_total",
        "Rows deleted by retention, by table",
    ),
    (
        "reelstate_probe_store_calls_total",
        "Store calls made to answer /readyz and /metrics (cached: at most one per 4 s each), by probe",
    ),
    (
        "reelstate_airtable_requests_total",
        "HTTP requests sent to Airtable (every attempt)",
    ),
    (
        "reelstate_airtable_rate_limited_total",
        "429 answers from Airtable",
    ),
    (
        "reelstate_airtable_retries_total",
        "Airtable attempts after the first",
    ),
    (
        "reelstate_paid_calls_total",
        "Paid external calls started (GoAPI tasks, NCA renders), re-submissions included, by service; read from the store, so every replica shows the same total",
    ),
];

/// Values read from the store at scrape time.
const GAUGES: &[(&str, &str)] = &[
    ("reelstate_inbox_depth", "Entries waiting for the worker"),
    ("reelstate_outbox_depth", "Effects waiting for the executor"),
    (
        "reelstate_outbox_failed",
        "Effects that failed for good (replayable with POST /effects/{id}/retry)",
    ),
    (
        "reelstate_quarantined_rows",
        "Inbox entries and effects set aside because they could not be read (GET /quarantine)",
    ),
];

/// Seconds a webhook waits for its acknowledgement (fast: the inbox commit).
const ACK_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Seconds of work that crosses the network or waits on queues.
const SLOW_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn ack_histogram() -> Histogram {
    Histogram::new(ACK_BUCKETS)
}

fn slow_histogram() -> Histogram {
    Histogram::new(SLOW_BUCKETS)
}

/// Airtable requests are timed where they are sent (the records backend), which has no
/// handle on the engine's metrics: one histogram per process, registered by every
/// [`Metrics`].
static AIRTABLE_REQUEST_SECONDS: LazyLock<Histogram> = LazyLock::new(slow_histogram);

/// Times one Airtable request, from sending to its whole response (or its failure).
pub fn observe_airtable_request(d: Duration) {
    AIRTABLE_REQUEST_SECONDS.observe(d.as_secs_f64());
}

/// Label values go in as they are: the crate escapes `\\`, `"` and line feeds in them
/// when it encodes (prometheus-client 0.26, `LabelValueEncoder`).
fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub struct Metrics {
    registry: Registry,
    counters: HashMap<&'static str, Family<Labels, Counter>>,
    gauges: HashMap<&'static str, Gauge<i64, AtomicI64>>,
    oldest_pending: Gauge<f64, AtomicU64>,
    processing: Histogram,
    webhook_ack: Family<Labels, Histogram>,
    effect_duration: Family<Labels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut counters = HashMap::new();
        for (name, help) in COUNTERS {
            let family = Family::<Labels, Counter>::default();
            // The crate adds `_total` to a counter's name itself.
            registry.register(name.trim_end_matches("_total"), *help, family.clone());
            counters.insert(*name, family);
        }
        let mut gauges = HashMap::new();
        for (name, help) in GAUGES {
            let gauge = Gauge::<i64, AtomicI64>::default();
            registry.register(*name, *help, gauge.clone());
            gauges.insert(*name, gauge);
        }
        let oldest_pending = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "reelstate_inbox_oldest_pending_age_seconds",
            "Age of the oldest entry waiting for the worker (0 when none)",
            oldest_pending.clone(),
        );
        let processing = slow_histogram();
        registry.register(
            "reelstate_processing_latency_seconds",
            "From a webhook's acknowledgement to its decision being stored (time in the inbox)",
            processing.clone(),
        );
        let webhook_ack =
            Family::<Labels, Histogram>::new_with_constructor(ack_histogram as fn() -> Histogram);
        registry.register(
            "reelstate_webhook_ack_seconds",
            "From a webhook's request to its answer (202, 200 duplicate, or a refusal), by service",
            webhook_ack.clone(),
        );
        let effect_duration =
            Family::<Labels, Histogram>::new_with_constructor(slow_histogram as fn() -> Histogram);
        registry.register(
            "reelstate_effect_duration_seconds",
            "Time one effect's attempt took (Airtable write, GoAPI task, NCA mix), by kind",
            effect_duration.clone(),
        );
        registry.register(
            "reelstate_airtable_request_seconds",
            "Time one Airtable HTTP request took, from sending to its whole response",
            AIRTABLE_REQUEST_SECONDS.clone(),
        );
        Self {
            registry,
            counters,
            gauges,
            oldest_pending,
            processing,
            webhook_ack,
            effect_duration,
        }
    }
}

impl Metrics {
    pub fn inc(&self, name: &'static str, pairs: &[(&str, &str)]) {
        self.add(name, pairs, 1);
    }

    /// Adds to a counter of [`COUNTERS`]. An unknown name is a programming error: loud in
    /// debug builds, ignored in release (metrics never take the service down).
    pub fn add(&self, name: &'static str, pairs: &[(&str, &str)], n: u64) {
        match self.counters.get(name) {
            Some(family) => {
                family.get_or_create(&labels(pairs)).inc_by(n);
            }
            None => debug_assert!(false, "unregistered counter {name}"),
        }
    }

    /// Sets a counter kept elsewhere (the Airtable client's totals) to its current value.
    pub fn set_counter(&self, name: &'static str, value: u64) {
        if let Some(family) = self.counters.get(name) {
            family
                .get_or_create(&Vec::new())
                .inner()
                .store(value, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// [`Self::set_counter`] for one labelled series (a total the store keeps).
    pub fn set_counter_with(&self, name: &'static str, pairs: &[(&str, &str)], value: u64) {
        match self.counters.get(name) {
            Some(family) => {
                family
                    .get_or_create(&labels(pairs))
                    .inner()
                    .store(value, std::sync::atomic::Ordering::Relaxed);
            }
            None => debug_assert!(false, "unregistered counter {name}"),
        }
    }

    /// Sets a gauge of [`GAUGES`] (read at scrape time).
    pub fn set_gauge(&self, name: &'static str, value: i64) {
        match self.gauges.get(name) {
            Some(g) => {
                g.set(value);
            }
            None => debug_assert!(false, "unregistered gauge {name}"),
        }
    }

    pub fn set_oldest_pending_age(&self, d: Duration) {
        self.oldest_pending.set(d.as_secs_f64());
    }

    /// Time from a webhook's acknowledgement to its decision being stored.
    pub fn observe_latency(&self, d: Duration) {
        self.processing.observe(d.as_secs_f64());
    }

    /// Time a webhook's sender waited for its answer.
    pub fn observe_webhook_ack(&self, service: &str, d: Duration) {
        self.webhook_ack
            .get_or_create(&labels(&[("service", service)]))
            .observe(d.as_secs_f64());
    }

    /// Time one attempt of an effect took.
    pub fn observe_effect(&self, kind: &str, d: Duration) {
        self.effect_duration
            .get_or_create(&labels(&[("kind", kind)]))
            .observe(d.as_secs_f64());
    }

    /// Every series, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    /// Counts a video's status change, labelled by [`VideoStatus::label`].
    pub fn video_transition(&self, from: &VideoStatus, to: &VideoStatus) {
        self.inc(
            "reelstate_transitions_total",
            &[
                ("lifecycle", "video"),
                ("from", from.label()),
                ("to", to.label()),
            ],
        );
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_labelled_by_the_engines_statuses_and_other() {
        let m = Metrics::default();
        let odd = VideoStatus::from_airtable("Waiting for Bob \"2\"");
        m.video_transition(&odd, &VideoStatus::GeneratingMusic);
        m.video_transition(
            &VideoStatus::from_airtable("Archived"),
            &VideoStatus::GeneratingMusic,
        );
        m.video_transition(&VideoStatus::GeneratingMusic, &VideoStatus::AddingMusic);
        let text = m.render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("reelstate_transitions_total{"))
            .collect();
        assert_eq!(
            series.len(),
            2,
            "two odd statuses share one series: {series:?}"
        );
        assert!(
            text.contains(r#"reelstate_transitions_total{lifecycle="video",from="other",to="generating_music"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"from="generating_music",to="adding_music"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains("Bob") && !text.contains("Archived"),
            "{text}"
        );
        for known in VideoStatus::KNOWN {
            assert_eq!(known.label(), known.name());
        }
    }

    #[test]
    fn counters_are_typed_with_help_and_histograms_have_buckets() {
        let m = Metrics::default();
        m.inc(
            "reelstate_webhooks_total",
            &[("service", "goapi"), ("outcome", "accepted")],
        );
        m.inc(
            "reelstate_webhooks_total",
            &[("service", "goapi"), ("outcome", "accepted")],
        );
        m.set_gauge("reelstate_inbox_depth", 3);
        m.observe_latency(Duration::from_millis(20));
        m.observe_webhook_ack("goapi", Duration::from_micros(700));
        m.observe_effect("update_video", Duration::from_millis(40));
        observe_airtable_request(Duration::from_millis(120));
        let text = m.render();
        for needle in [
            "# TYPE reelstate_webhooks counter",
            "# HELP reelstate_webhooks Webhooks received",
            "reelstate_webhooks_total{service=\"goapi\",outcome=\"accepted\"} 2",
            "# TYPE reelstate_inbox_depth gauge",
            "reelstate_inbox_depth 3",
            "# TYPE reelstate_processing_latency_seconds histogram",
            "reelstate_processing_latency_seconds_bucket{le=\"0.025\"} 1",
            "# TYPE reelstate_webhook_ack_seconds histogram",
            "reelstate_webhook_ack_seconds_bucket{le=\"0.001\",service=\"goapi\"} 1",
            "# TYPE reelstate_effect_duration_seconds histogram",
            "reelstate_effect_duration_seconds_count{kind=\"update_video\"} 1",
            "# TYPE reelstate_airtable_request_seconds histogram",
            "# TYPE reelstate_inbox_oldest_pending_age_seconds gauge",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        // Every series has its HELP; no counter is typed as a gauge.
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP"
            );
            assert!(
                !(name.ends_with("_total") && line.ends_with("gauge")),
                "{line}"
            );
        }
    }

    #[test]
    fn label_values_cannot_break_the_text() {
        let m = Metrics::default();
        m.inc(
            "reelstate_webhooks_total",
            &[
                ("service", "goapi"),
                ("outcome", "bad\"code\nwith \\ newline"),
            ],
        );
        let text = m.render();
        assert!(
            text.contains("outcome=\"bad\\\"code\\nwith \\\\ newline\"} 1"),
            "{text}"
        );
        // One sample, one line.
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("reelstate_webhooks_total"))
                .count(),
            1
        );
    }
}
