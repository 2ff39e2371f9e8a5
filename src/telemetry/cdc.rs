//! What the translator (`stepview cdc`) reports: change events translated by table and
//! outcome, events produced, dead letters, input lag, changes waiting, batches, and the stops
//! an operator must act on. Its own registry: the translator is a process of its own.

use super::Series;
use prometheus::{
    Encoder, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry, TextEncoder,
};
use std::time::Duration;

const TARGET: &str = "stepview::cdc";

pub struct CdcTelemetry {
    registry: Registry,
    changes: IntCounterVec,
    events: IntCounterVec,
    containers: IntCounter,
    dead_letters: IntCounterVec,
    produce_failures: IntCounter,
    batch_duration: Histogram,
    lag: IntGaugeVec,
    waiting: IntGauge,
    ready: IntGauge,
}

impl Default for CdcTelemetry {
    fn default() -> Self {
        CdcTelemetry::new()
    }
}

impl CdcTelemetry {
    pub fn new() -> CdcTelemetry {
        let registry = Registry::new();
        let s = Series(&registry);
        s.gauges("stepview_build_info", "Build information.", &["version"])
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("metric names are unique");
        CdcTelemetry {
            registry: registry.clone(),
            changes: s.counters(
                "stepview_cdc_changes_total",
                "Change events read, by source table and outcome (emitted, waiting, \
                 skipped_delete, skipped_container, skipped_upload_side, skipped_empty, \
                 dead_letter). A waiting change is counted again when it is released.",
                &["table", "outcome"],
            ),
            events: s.counters(
                "stepview_cdc_events_total",
                "stepview events produced (acknowledged by the broker), by kind.",
                &["kind"],
            ),
            containers: s.counter(
                "stepview_cdc_container_targets_skipped_total",
                "Container targets of steps' target_servers left out (the v3 API serves hosts).",
            ),
            dead_letters: s.counters(
                "stepview_cdc_dead_letters_total",
                "Change events written to the dead-letter topic, by source table.",
                &["table"],
            ),
            produce_failures: s.counter(
                "stepview_cdc_produce_failures_total",
                "Batches whose events the broker did not all acknowledge (sent again).",
            ),
            batch_duration: s.histogram(
                "stepview_cdc_batch_duration_seconds",
                "Time to translate a batch, have its events acknowledged and store its state.",
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
                ],
            ),
            lag: s.gauges(
                "stepview_cdc_input_lag_messages",
                "Change events not yet translated, per input partition.",
                &["topic", "partition"],
            ),
            waiting: s.gauge(
                "stepview_cdc_waiting_changes",
                "Change events kept until what they need arrives (an app's scope, a step).",
            ),
            ready: s.gauge(
                "stepview_cdc_ready",
                "1 when the translator is caught up and running (GET /readyz).",
            ),
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("exposition is UTF-8")
    }
}

/// A batch was translated, acknowledged and stored.
pub struct BatchTranslated<'a> {
    /// (table, outcome) → changes.
    pub outcomes: &'a [((&'static str, &'static str), u64)],
    /// (kind) → events produced.
    pub events: &'a [(&'static str, u64)],
    pub containers: u64,
    pub waiting: usize,
    pub took: Duration,
}

impl BatchTranslated<'_> {
    pub fn emit(&self, t: &CdcTelemetry) {
        for ((table, outcome), n) in self.outcomes {
            t.changes.with_label_values(&[table, outcome]).inc_by(*n);
        }
        for (kind, n) in self.events {
            t.events.with_label_values(&[kind]).inc_by(*n);
        }
        t.containers.inc_by(self.containers);
        t.waiting.set(self.waiting as i64);
        t.batch_duration.observe(self.took.as_secs_f64());
        tracing::debug!(
            target: TARGET,
            changes = self.outcomes.iter().map(|(_, n)| n).sum::<u64>(),
            events = self.events.iter().map(|(_, n)| n).sum::<u64>(),
            millis = self.took.as_secs_f64() * 1e3,
            "batch translated"
        );
    }
}

/// A change event could not be translated and went to the dead-letter topic.
pub struct ChangeDeadLettered<'a> {
    pub table: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub reason: &'a str,
}

impl ChangeDeadLettered<'_> {
    pub fn emit(&self, t: &CdcTelemetry) {
        t.dead_letters.with_label_values(&[self.table]).inc();
        t.changes
            .with_label_values(&[self.table, "dead_letter"])
            .inc();
        tracing::warn!(
            target: TARGET,
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            reason = self.reason,
            "change event dead-lettered"
        );
    }
}

/// The broker did not acknowledge a batch's events; they are sent again.
pub struct ProduceFailed<'a> {
    pub error: &'a str,
    pub attempt: u32,
}

impl ProduceFailed<'_> {
    pub fn emit(&self, t: &CdcTelemetry) {
        t.produce_failures.inc();
        tracing::warn!(
            target: TARGET,
            error = self.error,
            attempt = self.attempt,
            "events not acknowledged; sending the batch again"
        );
    }
}

/// An input topic's partition count changed: a row's changes may now be in another partition,
/// and offsets no longer order them. The translator stops until `cdc.epoch` is raised.
pub struct PartitionCountChanged<'a> {
    pub topic: &'a str,
    pub was: i32,
    pub now: i32,
    pub epoch: u16,
}

impl PartitionCountChanged<'_> {
    pub fn emit(&self, t: &CdcTelemetry) {
        t.ready.set(0);
        tracing::error!(
            target: TARGET,
            topic = self.topic,
            was = self.was,
            now = self.now,
            "{} had {} partitions and has {}: versions from offsets would no longer order a \
             row's changes. Translation stopped; restart with cdc.epoch = {} to go on",
            self.topic,
            self.was,
            self.now,
            u32::from(self.epoch) + 1
        );
    }
}

/// Input partitions found (at start, and new daily log collections later).
pub struct InputsFound<'a> {
    pub topics: &'a [String],
}

impl InputsFound<'_> {
    pub fn emit(&self, _: &CdcTelemetry) {
        tracing::info!(target: TARGET, topics = ?self.topics, "reading input topics");
    }
}

/// How far behind the translator is, per input partition, and whether it is ready.
pub struct InputLag<'a> {
    pub lags: &'a [(&'a str, i32, i64)],
    pub ready: bool,
}

impl InputLag<'_> {
    pub fn emit(&self, t: &CdcTelemetry) {
        for (topic, partition, lag) in self.lags {
            t.lag
                .with_label_values(&[*topic, partition.to_string().as_str()])
                .set(*lag);
        }
        t.ready.set(i64::from(self.ready));
    }
}

/// Progress while far behind (a snapshot, or a long stop): every few seconds.
pub struct CatchingUp {
    pub behind: i64,
    pub per_second: f64,
}

impl CatchingUp {
    pub fn emit(&self, _: &CdcTelemetry) {
        tracing::info!(
            target: TARGET,
            behind = self.behind,
            per_second = self.per_second.round(),
            "catching up: {} change events behind, {:.0}/s",
            self.behind,
            self.per_second
        );
    }
}
