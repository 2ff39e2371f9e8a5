//! The `[store]` settings: RocksDB's memory, and how long steps are kept.

use super::StoreOptions;
use crate::settings::{Days, Mebibytes};

/// The views on disk (`[store]`).
#[derive(Debug, Clone, clap::Args)]
pub struct StoreSettings {
    /// RocksDB block cache, one for all column families (data, index and filter blocks; the
    /// write buffers are charged to it), MiB.
    #[arg(long, env = "STEPVIEW_BLOCK_CACHE_MB", default_value = "256")]
    pub block_cache_mb: Mebibytes,
    /// RocksDB write-buffer budget (memtables), MiB.
    #[arg(long, env = "STEPVIEW_WRITE_BUFFER_MB", default_value = "256")]
    pub write_buffer_mb: Mebibytes,
    /// Days a step is kept after the broker time of its last event, then deleted; 0: forever.
    /// The topic's retention must be at least this plus the longest step.
    #[arg(long, env = "STEPVIEW_RETENTION_DAYS", default_value = "30")]
    pub retention_days: Days,
}

impl Default for StoreSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

impl StoreSettings {
    /// RocksDB's memory bounds, in bytes.
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            block_cache_bytes: self.block_cache_mb.bytes(),
            write_buffer_bytes: self.write_buffer_mb.bytes(),
        }
    }

    /// How long a step is kept after its last event, ms; `None`: forever.
    pub fn retention_ms(&self) -> Option<i64> {
        self.retention_days.millis()
    }
}
