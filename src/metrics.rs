//! Prometheus metrics, kept with `prometheus-client` (the Prometheus project's own Rust
//! client): every series is registered once with its type and HELP, counters are typed
//! counters (`_total`), latencies are histograms, and the text is the OpenMetrics
//! exposition the crate encodes. Each family is a field of [`Metrics`] whose label set is
//! a struct of the engine's own values, so a series or label that does not exist does not
//! compile; the names and their help are registered below (and listed in the README's
//! table of series).

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::domain::{JobType, VideoStatus};
use crate::store::{EffectState, EntryOutcome, Source};

/// The content type of [`Metrics::render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label values are the engine's own values, spelled as they are everywhere else outside
/// the program (strum's snake_case). The crate escapes `\\`, `"` and line feeds in them
/// when it encodes (prometheus-client 0.26, `LabelValueEncoder`).
macro_rules! label_value_by_display {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                write!(encoder, "{self}")
            }
        }
    )*};
}

label_value_by_display!(Source, EntryOutcome, EffectState, Lifecycle, Probe);

impl EncodeLabelValue for JobType {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.name())
    }
}

/// What became of a webhook: accepted, a duplicate, or refused with an error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WebhookOutcome {
    Accepted,
    Duplicate,
    /// The `code` of the refusal's `ApiError`.
    Refused(&'static str),
}

impl EncodeLabelValue for WebhookOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            WebhookOutcome::Accepted => "accepted",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::Refused(code) => code,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::Display)]
#[strum(serialize_all = "snake_case")]
pub enum Lifecycle {
    Video,
}

/// Which probe asked the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::Display)]
#[strum(serialize_all = "snake_case")]
pub enum Probe {
    Readyz,
    Metrics,
}

/// A video status as a label: every status a base holds that the engine does not know
/// is one `other` series ([`VideoStatus::label`]), so odd statuses cannot grow a series
/// each.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StatusLabel(VideoStatus);

impl From<&VideoStatus> for StatusLabel {
    fn from(s: &VideoStatus) -> Self {
        match s {
            VideoStatus::Other(_) => StatusLabel(VideoStatus::Other(String::new())),
            known => StatusLabel(known.clone()),
        }
    }
}

impl EncodeLabelValue for StatusLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.0.label())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct WebhookLabels {
    pub service: Source,
    pub outcome: WebhookOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ProcessedLabels {
    pub source: Source,
    pub outcome: EntryOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TransitionLabels {
    pub lifecycle: Lifecycle,
    pub from: StatusLabel,
    pub to: StatusLabel,
}

/// An effect's kind is [`crate::machine::Effect::kind`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EffectLabels {
    pub kind: &'static str,
    pub outcome: EffectState,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EffectKindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct JobKindLabels {
    pub kind: JobType,
}

/// A table retention prunes, as `store::Pruned::by_table` names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TableLabels {
    pub table: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ProbeLabels {
    pub probe: Probe,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: Source,
}

/// An unlabelled series that has no sample until it is first set (the Airtable client's
/// totals, absent when no base is configured).
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct NoLabels {}

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
pub(crate) fn observe_airtable_request(d: Duration) {
    AIRTABLE_REQUEST_SECONDS.observe(d.as_secs_f64());
}

/// Sets a counter kept elsewhere (the Airtable client's totals, the store's paid calls)
/// to its current value.
pub(crate) fn set_total(counter: &Counter, value: u64) {
    counter.inner().store(value, Ordering::Relaxed);
}

pub struct Metrics {
    registry: Registry,
    counter_names: Vec<&'static str>,
    pub webhooks: Family<WebhookLabels, Counter>,
    pub events_processed: Family<ProcessedLabels, Counter>,
    pub transitions: Family<TransitionLabels, Counter>,
    pub effects: Family<EffectLabels, Counter>,
    pub effect_retries: Family<EffectKindLabels, Counter>,
    pub reconciliations: Family<JobKindLabels, Counter>,
    pub pruned_rows: Family<TableLabels, Counter>,
    pub probe_store_calls: Family<ProbeLabels, Counter>,
    pub airtable_requests: Family<NoLabels, Counter>,
    pub airtable_rate_limited: Family<NoLabels, Counter>,
    pub airtable_retries: Family<NoLabels, Counter>,
    pub paid_calls: Family<ServiceLabels, Counter>,
    pub inbox_depth: Gauge<i64, AtomicI64>,
    pub outbox_depth: Gauge<i64, AtomicI64>,
    pub outbox_failed: Gauge<i64, AtomicI64>,
    pub quarantined_rows: Gauge<i64, AtomicI64>,
    pub oldest_pending_age: Gauge<f64, AtomicU64>,
    /// From a webhook's acknowledgement to its decision being stored.
    pub processing_latency: Histogram,
    /// Time a webhook's sender waited for its answer.
    pub webhook_ack: Family<ServiceLabels, Histogram>,
    /// Time one attempt of an effect took.
    pub effect_duration: Family<EffectKindLabels, Histogram>,
}

/// Registers a counter family under its full name (as callers and dashboards spell it).
fn counter<L>(
    registry: &mut Registry,
    names: &mut Vec<&'static str>,
    name: &'static str,
    help: &str,
) -> Family<L, Counter>
where
    L: EncodeLabelSet + Clone + Eq + std::hash::Hash + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Counter>::default();
    // The crate adds `_total` to a counter's name itself.
    registry.register(name.trim_end_matches("_total"), help, family.clone());
    names.push(name);
    family
}

/// Registers a gauge read from the store at scrape time.
fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge<i64, AtomicI64> {
    let gauge = Gauge::<i64, AtomicI64>::default();
    registry.register(name, help, gauge.clone());
    gauge
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        let mut counter_names = Vec::new();
        let webhooks = counter(
            &mut r,
            &mut counter_names,
            "reelstate_webhooks_total",
            "Webhooks received, by service and outcome (accepted, duplicate, or the error code of a refusal)",
        );
        let events_processed = counter(
            &mut r,
            &mut counter_names,
            "reelstate_events_processed_total",
            "Webhook entries the worker processed, by source and outcome",
        );
        let transitions = counter(
            &mut r,
            &mut counter_names,
            "reelstate_transitions_total",
            "Status changes, by lifecycle, from and to",
        );
        let effects = counter(
            &mut r,
            &mut counter_names,
            "reelstate_effects_total",
            "Effects finished, by kind and outcome (done, or failed for good)",
        );
        let effect_retries = counter(
            &mut r,
            &mut counter_names,
            "reelstate_effect_retries_total",
            "Effect attempts that failed and will be retried, by kind",
        );
        let reconciliations = counter(
            &mut r,
            &mut counter_names,
            "reelstate_reconciliations_total",
            "Jobs checked at their service after their deadline, by kind",
        );
        let pruned_rows = counter(
            &mut r,
            &mut counter_names,
            "reelstate_pruned_rows_total",
            "Rows deleted by retention, by table",
        );
        let probe_store_calls = counter(
            &mut r,
            &mut counter_names,
            "reelstate_probe_store_calls_total",
            "Store calls made to answer /readyz and /metrics (cached: at most one per 4 s each), by probe",
        );
        let airtable_requests = counter(
            &mut r,
            &mut counter_names,
            "reelstate_airtable_requests_total",
            "HTTP requests sent to Airtable (every attempt)",
        );
        let airtable_rate_limited = counter(
            &mut r,
            &mut counter_names,
            "reelstate_airtable_rate_limited_total",
            "429 answers from Airtable",
        );
        let airtable_retries = counter(
            &mut r,
            &mut counter_names,
            "reelstate_airtable_retries_total",
            "Airtable attempts after the first",
        );
        let paid_calls = counter(
            &mut r,
            &mut counter_names,
            "reelstate_paid_calls_total",
            "Paid external calls started (GoAPI tasks, NCA renders), re-submissions included, by service; read from the store, so every replica shows the same total",
        );
        let inbox_depth = gauge(
            &mut r,
            "reelstate_inbox_depth",
            "Entries waiting for the worker",
        );
        let outbox_depth = gauge(
            &mut r,
            "reelstate_outbox_depth",
            "Effects waiting for the executor",
        );
        let outbox_failed = gauge(
            &mut r,
            "reelstate_outbox_failed",
            "Effects that failed for good (replayable with POST /effects/{id}/retry)",
        );
        let quarantined_rows = gauge(
            &mut r,
            "reelstate_quarantined_rows",
            "Inbox entries and effects set aside because they could not be read (GET /quarantine)",
        );
        let oldest_pending_age = Gauge::<f64, AtomicU64>::default();
        r.register(
            "reelstate_inbox_oldest_pending_age_seconds",
            "Age of the oldest entry waiting for the worker (0 when none)",
            oldest_pending_age.clone(),
        );
        let processing_latency = slow_histogram();
        r.register(
            "reelstate_processing_latency_seconds",
            "From a webhook's acknowledgement to its decision being stored (time in the inbox)",
            processing_latency.clone(),
        );
        let webhook_ack = Family::<ServiceLabels, Histogram>::new_with_constructor(
            ack_histogram as fn() -> Histogram,
        );
        r.register(
            "reelstate_webhook_ack_seconds",
            "From a webhook's request to its answer (202, 200 duplicate, or a refusal), by service",
            webhook_ack.clone(),
        );
        let effect_duration = Family::<EffectKindLabels, Histogram>::new_with_constructor(
            slow_histogram as fn() -> Histogram,
        );
        r.register(
            "reelstate_effect_duration_seconds",
            "Time one effect's attempt took (Airtable write, GoAPI task, NCA mix), by kind",
            effect_duration.clone(),
        );
        r.register(
            "reelstate_airtable_request_seconds",
            "Time one Airtable HTTP request took, from sending to its whole response",
            AIRTABLE_REQUEST_SECONDS.clone(),
        );
        Self {
            registry: r,
            counter_names,
            webhooks,
            events_processed,
            transitions,
            effects,
            effect_retries,
            reconciliations,
            pruned_rows,
            probe_store_calls,
            airtable_requests,
            airtable_rate_limited,
            airtable_retries,
            paid_calls,
            inbox_depth,
            outbox_depth,
            outbox_failed,
            quarantined_rows,
            oldest_pending_age,
            processing_latency,
            webhook_ack,
            effect_duration,
        }
    }
}

impl Metrics {
    /// Counts a video's status change, labelled by [`VideoStatus::label`].
    pub(crate) fn video_transition(&self, from: &VideoStatus, to: &VideoStatus) {
        self.transitions
            .get_or_create(&TransitionLabels {
                lifecycle: Lifecycle::Video,
                from: from.into(),
                to: to.into(),
            })
            .inc();
    }

    /// The full names (`_total` included) of the counters registered: a family is shown
    /// only once it has a sample, so this is how a name read elsewhere (an alert rule) is
    /// checked against the registry.
    pub fn counter_names(&self) -> &[&'static str] {
        &self.counter_names
    }

    /// Every series, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub(crate) fn render(&self) -> String {
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
        let accepted = WebhookLabels {
            service: Source::Goapi,
            outcome: WebhookOutcome::Accepted,
        };
        m.webhooks.get_or_create(&accepted).inc();
        m.webhooks.get_or_create(&accepted).inc();
        m.inbox_depth.set(3);
        m.processing_latency.observe(0.020);
        m.webhook_ack
            .get_or_create(&ServiceLabels {
                service: Source::Goapi,
            })
            .observe(0.0007);
        m.effect_duration
            .get_or_create(&EffectKindLabels {
                kind: "update_video",
            })
            .observe(0.040);
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
        m.webhooks
            .get_or_create(&WebhookLabels {
                service: Source::Goapi,
                outcome: WebhookOutcome::Refused("bad\"code\nwith \\ newline"),
            })
            .inc();
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
