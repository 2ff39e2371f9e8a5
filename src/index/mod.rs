//! The in-memory index that makes queries cheap, for the steps being read, within a byte budget:
//! per resident step its record and, for every retry and batch, the hosts of each (status, tag)
//! group in `bk_host_id` order; plus, for the retries that capped queries poll, copies of the
//! rows they returned ("hot rows"), so that a repeated poll reads no RocksDB at all.
//!
//! - [`groups`]: a retry's (status, tag) groups per batch, and what each change costs.
//! - [`residency`]: which steps are in memory: loads, the budget, eviction, where apply's changes
//!   go.
//! - [`hot_rows`]: the rows capped queries returned, kept within their own budget.
//! - [`host_set`]: a group's hosts, in compact sorted chunks.
//!
//! Owns: which steps are in memory, loading them, evicting them, and their groups and hot rows.
//! Must not: write to the store, or be changed by anyone but `apply` (and the loads and hot rows
//! that queries cause). It is derived state, rebuilt from the store as steps are read.

mod groups;
mod host_set;
mod hot_rows;
mod residency;
pub mod settings;

pub use groups::{BatchGroups, GroupKey, Head, RetryGroups, RetryId};
pub use host_set::HostSet;
pub use residency::{Load, StepIndex, Target};
pub use settings::IndexSettings;

use dashmap::DashMap;
use parking_lot::Mutex;
use residency::Slot;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize};

const STRIPES: usize = 256;

pub struct Index {
    steps: DashMap<i64, Slot>,
    stripes: Box<[Mutex<()>]>,
    /// Most estimated bytes of resident steps (their hot rows apart).
    budget: usize,
    /// Running totals over resident steps.
    bytes: AtomicI64,
    hosts: AtomicI64,
    /// Most bytes of hot rows kept over all retries (0: none).
    hot_budget: usize,
    hot_rows: AtomicUsize,
    hot_bytes: AtomicUsize,
    clock: AtomicU64,
    loads: AtomicU64,
    evictions: AtomicU64,
}
