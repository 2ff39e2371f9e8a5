//! The `[index]` settings: the memory the steps being read may take.

use crate::settings::Mebibytes;

/// The in-memory index (`[index]`).
#[derive(Debug, Clone, clap::Args)]
pub struct IndexSettings {
    /// Memory for the steps held in memory (estimated: 8 to 12.5 bytes per host row), MiB; the
    /// least recently read leave.
    #[arg(
        long = "index-memory-mb",
        env = "STEPVIEW_INDEX_MEMORY_MB",
        default_value = "256"
    )]
    pub memory_mb: Mebibytes,
    /// Memory for the rows of the steps that capped queries poll, MiB; 0: none.
    #[arg(long, env = "STEPVIEW_HOT_ROWS_MB", default_value = "32")]
    pub hot_rows_mb: Mebibytes,
}

impl Default for IndexSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}
