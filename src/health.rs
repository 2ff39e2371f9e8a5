//! Liveness and readiness: what `/healthz` and `/readyz` report.
//!
//! Ready means: the index was rebuilt from the store, the consumer (if any) has caught up to
//! within the configured lag since start, and the last apply succeeded.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    index_ready: AtomicBool,
    caught_up: AtomicBool,
    apply_failing: AtomicBool,
}

impl Health {
    pub fn set_index_ready(&self) {
        self.index_ready.store(true, Ordering::SeqCst);
    }

    /// Once caught up, a later lag spike does not make the service unready: it still answers.
    pub fn set_caught_up(&self) {
        self.caught_up.store(true, Ordering::SeqCst);
    }

    pub fn set_apply_failing(&self, failing: bool) {
        self.apply_failing.store(failing, Ordering::SeqCst);
    }

    /// `Ok` when ready, else what is missing.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.index_ready.load(Ordering::SeqCst) {
            return Err("rebuilding the index");
        }
        if self.apply_failing.load(Ordering::SeqCst) {
            return Err("applying events fails");
        }
        if !self.caught_up.load(Ordering::SeqCst) {
            return Err("catching up with the topic");
        }
        Ok(())
    }
}
