//! What ingest and apply report: batches applied (or failing), bad events dead-lettered, strings
//! cut, where each partition stands, and steps expired.

use super::Telemetry;
use crate::events::BadReason;
use std::time::Duration;

/// Log lines go under the part they are about (`STEPVIEW_LOG=stepview::ingest=debug`).
const TARGET: &str = "stepview::ingest";

/// Events per kind that a batch changed, left unchanged, or dropped as expired.
pub type KindCounts = std::collections::HashMap<&'static str, u64>;

/// A batch applied (one WriteBatch).
pub struct BatchApplied<'a> {
    pub events: usize,
    pub took: Duration,
    pub changed: &'a KindCounts,
    pub unchanged: &'a KindCounts,
    pub expired: &'a KindCounts,
}

impl BatchApplied<'_> {
    pub fn emit(&self, t: &Telemetry) {
        t.apply_duration.observe(self.took.as_secs_f64());
        t.apply_batch_events.observe(self.events as f64);
        for (outcome, counts) in [
            ("applied", self.changed),
            ("unchanged", self.unchanged),
            ("expired", self.expired),
        ] {
            for (kind, n) in counts {
                t.events.with_label_values(&[kind, outcome]).inc_by(*n);
            }
        }
        tracing::trace!(
            target: TARGET,
            events = self.events,
            micros = self.took.as_micros() as u64,
            "batch applied"
        );
    }
}

/// Applying a batch failed; it is retried.
pub struct ApplyFailed<'a> {
    pub error: &'a anyhow::Error,
}

impl ApplyFailed<'_> {
    pub fn emit(&self, t: &Telemetry) {
        t.apply_failures.inc();
        tracing::error!(
            target: TARGET,
            error = format!("{:#}", self.error),
            "applying a batch failed; retrying"
        );
    }
}

/// A bad event, written to the dead-letter topic.
pub struct EventDeadLettered {
    pub reason: BadReason,
}

impl EventDeadLettered {
    pub fn emit(&self, t: &Telemetry) {
        t.events
            .with_label_values(&["invalid", "dead_letter"])
            .inc();
        t.dead_letters
            .with_label_values(&[self.reason.label()])
            .inc();
    }
}

/// A bad message the dead-letter topic refused even as headers only.
pub struct DeadLetterUnwritable {
    pub partition: i32,
    pub offset: i64,
}

impl DeadLetterUnwritable {
    pub fn emit(&self, t: &Telemetry) {
        t.dead_letters_unwritable.inc();
        tracing::error!(
            target: TARGET,
            partition = self.partition,
            offset = self.offset,
            "the dead-letter topic refuses even the headers of a bad message; it stays only in \
             the source topic (raise the topic's max.message.bytes)"
        );
    }
}

/// A string field of an event over its bound, cut to it.
pub struct StringCut {
    pub field: &'static str,
}

impl StringCut {
    pub fn emit(&self, t: &Telemetry) {
        t.strings_cut.with_label_values(&[self.field]).inc();
    }
}

/// How far a partition lags its end.
pub struct PartitionLag<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub lag: i64,
}

impl PartitionLag<'_> {
    pub fn emit(&self, t: &Telemetry) {
        t.consumer_lag
            .with_label_values(&[self.topic, &self.partition.to_string()])
            .set(self.lag);
    }
}

/// A partition's last applied message.
pub struct PartitionApplied<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub last_offset: i64,
    /// Its broker time, when it has one.
    pub at_ms: Option<i64>,
}

impl PartitionApplied<'_> {
    pub fn emit(&self, t: &Telemetry) {
        let labels = [self.topic, &self.partition.to_string()];
        t.last_offset
            .with_label_values(&labels)
            .set(self.last_offset);
        if let Some(at) = self.at_ms {
            t.last_event_time.with_label_values(&labels).set(at);
        }
    }
}

/// A partition no longer read here: its series go.
pub struct PartitionLeft<'a> {
    pub topic: &'a str,
    pub partition: i32,
}

impl PartitionLeft<'_> {
    pub fn emit(&self, t: &Telemetry) {
        let labels = [self.topic, &self.partition.to_string()];
        for gauge in [&t.consumer_lag, &t.last_offset, &t.last_event_time] {
            let _ = gauge.remove_label_values(&labels);
        }
    }
}

/// An expiry pass (retention).
pub struct StepsExpired {
    pub steps: u64,
    pub tombstones: u64,
}

impl StepsExpired {
    pub fn emit(&self, t: &Telemetry) {
        t.expired_steps.inc_by(self.steps);
        t.forgotten_tombstones.inc_by(self.tombstones);
        if self.steps > 0 || self.tombstones > 0 {
            tracing::info!(
                target: TARGET,
                steps = self.steps,
                tombstones = self.tombstones,
                "steps past retention deleted"
            );
        }
    }
}
