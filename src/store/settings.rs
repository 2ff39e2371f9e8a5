//! The `[store]` settings: RocksDB's memory, how long steps are kept, and where checkpoints go.

use super::{CheckpointPlace, StoreOptions};
use crate::settings::{Days, Mebibytes};
use std::path::{Path, PathBuf};

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
    /// Directory the checkpoints go in (POST /admin/checkpoint), on the data directory's
    /// filesystem and outside it; unset: `<data_dir>.checkpoints` beside it.
    #[arg(long, env = "STEPVIEW_CHECKPOINT_DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Checkpoints kept: making one removes the oldest beyond this many.
    #[arg(long, env = "STEPVIEW_CHECKPOINT_KEEP", default_value = "3", value_parser = clap::value_parser!(u32).range(1..))]
    pub checkpoint_keep: u32,
}

impl Default for StoreSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

impl StoreSettings {
    /// RocksDB's memory bounds, in bytes, and where the checkpoints of the store at
    /// `data_dir` go.
    pub fn options(&self, data_dir: &Path) -> StoreOptions {
        let beside = || {
            // Components drop a trailing slash: `data/` is beside as `data.checkpoints` too.
            let mut name = data_dir.components().collect::<PathBuf>().into_os_string();
            name.push(".checkpoints");
            PathBuf::from(name)
        };
        StoreOptions {
            block_cache_bytes: self.block_cache_mb.bytes(),
            write_buffer_bytes: self.write_buffer_mb.bytes(),
            checkpoints: Some(CheckpointPlace {
                dir: self.checkpoint_dir.clone().unwrap_or_else(beside),
                keep: self.checkpoint_keep as usize,
            }),
        }
    }

    /// How long a step is kept after its last event, ms; `None`: forever.
    pub fn retention_ms(&self) -> Option<i64> {
        self.retention_days.millis()
    }
}
