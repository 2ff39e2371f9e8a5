//! What the store reports: RocksDB operations that failed, and checkpoints made.

use super::Telemetry;
use std::time::Duration;

/// Log lines go under the part they are about (`STEPVIEW_LOG=stepview::store=debug`).
const TARGET: &str = "stepview::store";

/// A RocksDB operation failed (`store::StoreFailure` says which and why).
pub struct StoreFailed<'a> {
    /// write, read, flush, checkpoint.
    pub op: &'static str,
    /// no_space, io, corruption, busy, other.
    pub kind: &'static str,
    pub dir: &'a str,
    /// RocksDB's own message.
    pub message: &'a str,
}

impl StoreFailed<'_> {
    pub fn emit(&self, t: &Telemetry) {
        t.store_errors
            .with_label_values(&[self.op, self.kind])
            .inc();
        tracing::warn!(
            target: TARGET,
            dir = self.dir,
            op = self.op,
            kind = self.kind,
            rocksdb = self.message,
            "RocksDB {} failed",
            self.op
        );
    }
}

/// A checkpoint of the store was made.
pub struct CheckpointMade<'a> {
    pub name: &'a str,
    pub took: Duration,
    pub files: usize,
    pub bytes: u64,
    /// Older checkpoints removed to keep `store.checkpoint_keep`.
    pub removed: &'a [String],
}

impl CheckpointMade<'_> {
    pub fn emit(&self, t: &Telemetry) {
        t.checkpoints_made.inc();
        tracing::info!(
            target: TARGET,
            name = self.name,
            millis = self.took.as_millis() as u64,
            files = self.files,
            bytes = self.bytes,
            removed = ?self.removed,
            "checkpoint made"
        );
    }
}
