//! The groups of a step's retry: per batch, the hosts of each (status, tag) group in
//! `bk_host_id` order (in compact sorted chunks, `host_set`), with the bytes each change adds or
//! frees (what the budget counts).

use super::HostSet;
use crate::store::keys::RowKey;
use crate::store::row::StoredRow;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A (status, tag) group. Ordered as api.md orders groups: status ascending, then tag bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub status: i32,
    pub tag: Arc<str>,
}

/// The groups of one batch of one retry: hosts per group, ascending.
#[derive(Debug, Default)]
pub struct BatchGroups {
    pub groups: BTreeMap<GroupKey, HostSet>,
}

/// The groups of one step's retry, per batch, and its hot rows.
#[derive(Debug, Default)]
pub struct RetryGroups {
    pub batches: BTreeMap<i32, BatchGroups>,
    pub(super) hot: Mutex<HotRows>,
}

/// (step, execute_count)
pub type RetryId = (i64, i32);

/// A host's group in a batch: (status, tag).
pub type Head<'a> = (i32, &'a str);

impl RetryGroups {
    /// Adds `host` to a group; the estimated bytes this added.
    pub(super) fn insert(&mut self, batch: i32, (status, tag): Head<'_>, host: i64) -> i64 {
        let group = GroupKey {
            status,
            tag: tag.into(),
        };
        let groups = &mut self.batches.entry(batch).or_default().groups;
        let mut added = 0;
        let set = groups.entry(group).or_insert_with(|| {
            added += GROUP_BYTES + tag.len() as i64;
            HostSet::default()
        });
        added + set.insert(host).1
    }

    /// Takes `host` out of a group; the estimated bytes this freed.
    pub(super) fn remove(&mut self, batch: i32, (status, tag): Head<'_>, host: i64) -> i64 {
        let Some(batch) = self.batches.get_mut(&batch) else {
            return 0;
        };
        let group = GroupKey {
            status,
            tag: tag.into(),
        };
        let Some(set) = batch.groups.get_mut(&group) else {
            return 0;
        };
        let mut freed = set.remove(host).1;
        if set.is_empty() {
            batch.groups.remove(&group);
            freed += GROUP_BYTES + tag.len() as i64;
        }
        freed
    }

    /// Every group that has a host in the batches `batch` selects (all, or one), in api.md
    /// order.
    pub fn group_keys(&self, batch: Option<i32>) -> BTreeSet<GroupKey> {
        self.batches
            .iter()
            .filter(|(b, _)| batch.is_none_or(|want| want == **b))
            .flat_map(|(_, g)| g.groups.keys().cloned())
            .collect()
    }
}

/// Moves a host of a (write-locked) retry from its old group (`None`: a new row) to its new
/// one; the bytes and host rows this added.
pub(super) fn move_host(
    retry: &mut RetryGroups,
    key: RowKey,
    old: Option<Head<'_>>,
    new: Head<'_>,
) -> (i64, i64) {
    if old == Some(new) {
        return (0, 0);
    }
    let (freed, hosts) = match old {
        Some(old) => (retry.remove(key.batch, old, key.host), 0),
        None => (0, 1),
    };
    (retry.insert(key.batch, new, key.host) - freed, hosts)
}

impl RetryGroups {
    /// Replaces a hot copy of a row with the row as the store now holds it (`encoded`), if it
    /// has one; the bytes (added, freed).
    pub(super) fn refresh_hot_row(&mut self, key: RowKey, encoded: &[u8]) -> (usize, usize) {
        let hot = self.hot.get_mut();
        let Some(row) = hot.rows.get_mut(&(key.batch, key.host)) else {
            return (0, 0);
        };
        let fresh = StoredRow::of_encoding(encoded);
        let (before, after) = (hot_row_bytes(row), hot_row_bytes(&fresh));
        *row = fresh;
        hot.bytes = hot.bytes + after - before;
        (after, before)
    }

    /// Drops the retry's hot rows as its step leaves memory (queries still holding it add no
    /// more); the rows and bytes dropped.
    pub(super) fn drop_hot_rows(&self) -> (usize, usize) {
        let mut hot = self.hot.lock();
        let dropped = std::mem::take(&mut *hot);
        hot.gone = true;
        (dropped.rows.len(), dropped.bytes)
    }
}

/// A group entry: its key and set header in the batch's map, the tag's shared allocation (the
/// set's ids count as `HostSet` reports them).
const GROUP_BYTES: i64 = 112;
/// A retry's map entry, lock and batch map.
pub(super) const RETRY_BYTES: i64 = 160;

/// Rows of one retry that capped queries returned, by (batch, host).
#[derive(Debug, Default)]
pub(super) struct HotRows {
    /// Fx hashing: a capped poll looks up thousands of rows here, and SipHash was a third of it.
    pub(super) rows: FxHashMap<(i32, i64), StoredRow>,
    /// Their estimated bytes.
    pub(super) bytes: usize,
    /// When a query last used them (index clock), for eviction.
    pub(super) used: u64,
    /// The step left memory: queries still holding it must not add rows the budget no longer
    /// counts.
    pub(super) gone: bool,
}

pub(super) fn hot_row_bytes(row: &StoredRow) -> usize {
    HOT_ROW_BYTES + row.encoded_len()
}

/// A hot row's map slot and shared allocation, beside its encoded bytes.
const HOT_ROW_BYTES: usize = 48 + 16;
