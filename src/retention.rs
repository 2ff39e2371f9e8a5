//! Retention: a step is kept for `store.retention_days` after the broker time of its last event
//! (architecture.md, "Running for months"), then its views go and it answers like a missing step.
//! This part decides when; `apply` deletes (it is the only writer) and remembers the step for one
//! more period, so that its late events are dropped.
//!
//! Only what this instance has caught up with is judged: a step's newer events may still be
//! queued (at start, or on a partition this instance no longer reads), and a step expired
//! before they arrive would drop them. A shard judges the steps of the partitions it serves.
//!
//! Owns: the sweep and its schedule. Must not: write anything itself.

use crate::apply::Expired;
use crate::events::Subject;
use crate::ingest::Sink;
use crate::shutdown::Shutdown;
use crate::store::StoreSettings;
use anyhow::Result;
use std::time::{Duration, Instant};

/// How often the live service sweeps (the first time as soon as it is ready).
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often it looks whether a sweep is due.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Expires, now, what the retention setting says has expired, of the steps and jobs `judged`
/// keeps.
pub fn sweep(
    sink: &Sink,
    store: &StoreSettings,
    judged: impl Fn(Subject) -> bool,
) -> Result<Expired> {
    let Some(keep_ms) = store.retention_ms() else {
        return Ok(Expired::default());
    };
    sink.expire(crate::now_ms(), keep_ms, judged)
}

/// Sweeps as soon as `ready` says the instance has caught up, then every minute, until
/// `shutdown` (a thread of its own), judging what `judged` keeps at each sweep.
pub fn run(
    sink: &Sink,
    store: &StoreSettings,
    judged: impl Fn(Subject) -> bool,
    ready: impl Fn() -> bool,
    shutdown: &Shutdown,
) {
    if store.retention_ms().is_none() {
        return;
    }
    let mut due = Instant::now();
    loop {
        if Instant::now() >= due && ready() {
            if let Err(e) = sweep(sink, store, &judged) {
                tracing::error!(
                    error = format!("{e:#}"),
                    "retention sweep failed; trying again"
                );
            }
            due = Instant::now() + SWEEP_EVERY;
        }
        if shutdown.sleep(LOOK_EVERY) {
            return;
        }
    }
}
