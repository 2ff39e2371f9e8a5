//! Sources of events. Each source reads raw messages, decodes them (bad ones go to the dead-letter
//! path), and hands batches with their resume offsets to `apply` through a [`Sink`].
//!
//! Owns: batching, the Kafka source (self-assigned partitions), dead-lettering, replay, JSON-lines
//! files. Must not: interpret events beyond decoding (that is `apply`) or touch the store except
//! through `apply` (resume offsets included).

pub mod file;
pub mod kafka;
pub mod replay;

use crate::apply::{Applier, ApplyStats, Batch, Expired};
use crate::events::{BadEvent, Cuts};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `apply` with the bookkeeping every source needs: metrics, health, and retrying a batch that
/// failed to write until it succeeds or the service stops (a batch is never dropped).
#[derive(Clone)]
pub struct Sink {
    pub applier: Arc<Applier>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

impl Sink {
    /// Applies one batch; false if stopping made it give up (nothing of the batch is stored
    /// then).
    pub fn apply(&self, batch: &Batch<'_>, stop: &Shutdown) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            match self.applier.apply(batch) {
                Ok(stats) => {
                    self.metrics
                        .apply_duration
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics
                        .apply_batch_events
                        .observe(batch.events.len() as f64);
                    self.record(&stats);
                    self.health.set_apply_failing(false);
                    return true;
                }
                Err(err) => {
                    tracing::error!(error = %err, "applying a batch failed; retrying");
                    self.metrics.apply_failures.inc();
                    self.health.set_apply_failing(true);
                    if stop.sleep(backoff) {
                        return false;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Expires the steps (of those `judged` keeps) whose last event is older than `keep_ms`
    /// (see `retention`), and counts them.
    pub fn expire(
        &self,
        now_ms: i64,
        keep_ms: i64,
        judged: impl Fn(crate::events::Subject) -> bool,
    ) -> anyhow::Result<Expired> {
        let expired = self.applier.expire(now_ms, keep_ms, judged)?;
        self.metrics.expired_steps.inc_by(expired.steps);
        self.metrics.forgotten_tombstones.inc_by(expired.tombstones);
        Ok(expired)
    }

    fn record(&self, stats: &ApplyStats) {
        for (outcome, counts) in [
            ("applied", &stats.changed),
            ("unchanged", &stats.unchanged),
            ("expired", &stats.expired),
        ] {
            for (kind, n) in counts {
                self.metrics
                    .events
                    .with_label_values(&[kind, outcome])
                    .inc_by(*n);
            }
        }
    }

    pub fn record_bad(&self, bad: &BadEvent) {
        self.metrics
            .events
            .with_label_values(&["invalid", "dead_letter"])
            .inc();
        self.metrics
            .dead_letters
            .with_label_values(&[bad.reason.label()])
            .inc();
    }

    /// Counts the string fields that events carried over their bounds (and were cut).
    pub fn record_cuts(&self, cuts: &[Cuts]) {
        for field in cuts.iter().flat_map(|c| c.fields()) {
            self.metrics.strings_cut.with_label_values(&[field]).inc();
        }
    }
}
