//! Sources of events. Each source reads raw messages, decodes them (bad ones go to the dead-letter
//! path), and hands batches with their resume offsets to `apply` through a [`Sink`].
//!
//! Owns: batching, the Kafka source (self-assigned partitions), dead-lettering, replay, JSON-lines
//! files. Must not: interpret events beyond decoding (that is `apply`) or touch the store except
//! through `apply` (resume offsets included).

pub mod file;
pub mod kafka;
pub mod replay;

use crate::apply::{Applier, Batch, Expired};
use crate::events::{BadEvent, Cuts, Subject};
use crate::health::Health;
use crate::shutdown::Shutdown;
use crate::telemetry::ingest::{
    ApplyFailed, BatchApplied, EventDeadLettered, StepsExpired, StringCut,
};
use crate::telemetry::Telemetry;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `apply` with the bookkeeping every source needs: telemetry, health, and retrying a batch
/// that failed to write until it succeeds or the service stops (a batch is never dropped).
#[derive(Clone)]
pub struct Sink {
    pub applier: Arc<Applier>,
    pub telemetry: Arc<Telemetry>,
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
                    BatchApplied {
                        events: batch.events.len(),
                        took: started.elapsed(),
                        changed: &stats.changed,
                        unchanged: &stats.unchanged,
                        expired: &stats.expired,
                    }
                    .emit(&self.telemetry);
                    self.health.set_apply_failure(None);
                    return true;
                }
                Err(error) => {
                    ApplyFailed { error: &error }.emit(&self.telemetry);
                    self.health.set_apply_failure(Some(format!("{error:#}")));
                    if stop.sleep(backoff) {
                        return false;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Expires the steps (of those `judged` keeps) whose last event is older than `keep_ms`
    /// (see `retention`).
    pub fn expire(
        &self,
        now_ms: i64,
        keep_ms: i64,
        judged: impl Fn(Subject) -> bool,
    ) -> anyhow::Result<Expired> {
        let expired = self.applier.expire(now_ms, keep_ms, judged)?;
        StepsExpired {
            steps: expired.steps,
            tombstones: expired.tombstones,
        }
        .emit(&self.telemetry);
        Ok(expired)
    }

    pub fn record_bad(&self, bad: &BadEvent) {
        EventDeadLettered { reason: bad.reason }.emit(&self.telemetry);
    }

    /// Counts the string fields that events carried over their bounds (and were cut).
    pub fn record_cuts(&self, cuts: &[Cuts]) {
        for field in cuts.iter().flat_map(|c| c.fields()) {
            StringCut { field }.emit(&self.telemetry);
        }
    }
}
