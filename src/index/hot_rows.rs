//! Hot rows: for the retries that capped queries poll, copies of the rows they returned, so
//! that a repeated poll reads no RocksDB at all; within their own budget, the least recently
//! polled retries' dropped first.
//!
//! They stay coherent because both sides hold the retry's lock: `apply` refreshes a hot row
//! under the write lock after the store has the new row; a query reads the store and adds hot
//! rows under the read lock, so it either finishes before the refresh or reads the new row.

use super::residency::{Slot, StepIndex};
use super::{Index, RetryGroups};
use crate::store::keys::RowKey;
use crate::store::row::StoredRow;
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Rows of one retry that capped queries returned, by (batch, host).
#[derive(Debug, Default)]
pub(super) struct HotRows {
    /// Fx hashing: a capped poll looks up thousands of rows here, and SipHash was a third of it.
    rows: FxHashMap<(i32, i64), StoredRow>,
    /// Their estimated bytes.
    bytes: usize,
    /// When a query last used them (index clock), for eviction.
    used: u64,
    /// The step left memory: queries still holding it must not add rows the budget no longer
    /// counts.
    gone: bool,
}

pub(super) fn hot_row_bytes(row: &StoredRow) -> usize {
    HOT_ROW_BYTES + row.encoded_len()
}

/// A hot row's map slot and shared allocation, beside its encoded bytes.
const HOT_ROW_BYTES: usize = 48 + 16;

impl Index {
    /// Drops the hot rows of a retry whose step leaves memory; queries still holding it add no
    /// more.
    pub(super) fn drop_hot_rows(&self, retry: &RetryGroups) {
        let mut hot = retry.hot.lock();
        let dropped = std::mem::take(&mut *hot);
        hot.gone = true;
        self.hot_rows
            .fetch_sub(dropped.rows.len(), Ordering::Relaxed);
        self.hot_bytes.fetch_sub(dropped.bytes, Ordering::Relaxed);
    }

    pub(super) fn refresh_hot_row(&self, retry: &mut RetryGroups, key: RowKey, encoded: &[u8]) {
        let hot = retry.hot.get_mut();
        if let Some(row) = hot.rows.get_mut(&(key.batch, key.host)) {
            let fresh = StoredRow::of_encoding(encoded);
            let (before, after) = (hot_row_bytes(row), hot_row_bytes(&fresh));
            *row = fresh;
            hot.bytes = hot.bytes + after - before;
            self.hot_bytes.fetch_add(after, Ordering::Relaxed);
            self.hot_bytes.fetch_sub(before, Ordering::Relaxed);
        }
    }

    /// The hot copies of `keys` (all of one retry), `None` where there is none.
    pub fn hot_rows(&self, retry: &RetryGroups, keys: &[RowKey]) -> Vec<Option<StoredRow>> {
        let mut hot = retry.hot.lock();
        if hot.rows.is_empty() {
            return vec![None; keys.len()];
        }
        hot.used = self.tick();
        keys.iter()
            .map(|k| hot.rows.get(&(k.batch, k.host)).cloned())
            .collect()
    }

    /// Keeps copies of rows a capped query just read from the store. The caller holds the
    /// retry's read lock across reading them and this call (see the module comment).
    pub fn add_hot_rows(&self, retry: &RetryGroups, rows: &[(RowKey, StoredRow)]) {
        if self.hot_budget == 0 || rows.is_empty() {
            return;
        }
        {
            let mut hot = retry.hot.lock();
            if hot.gone {
                return;
            }
            hot.used = self.tick();
            let (mut added_rows, mut added_bytes) = (0, 0);
            for (k, row) in rows {
                hot.rows.entry((k.batch, k.host)).or_insert_with(|| {
                    added_rows += 1;
                    added_bytes += hot_row_bytes(row);
                    row.clone()
                });
            }
            hot.bytes += added_bytes;
            self.hot_rows.fetch_add(added_rows, Ordering::Relaxed);
            self.hot_bytes.fetch_add(added_bytes, Ordering::Relaxed);
        }
        if self.hot_bytes.load(Ordering::Relaxed) > self.hot_budget {
            self.evict_hot_rows(retry);
        }
    }

    /// Drops the hot rows of the least recently polled retries until 3/4 of the hot budget is
    /// used. Rare, and O(resident retries) when it happens.
    fn evict_hot_rows(&self, keep: &RetryGroups) {
        let resident: Vec<Arc<StepIndex>> = self
            .steps
            .iter()
            .filter_map(|e| match e.value() {
                Slot::Resident(index) => Some(Arc::clone(index)),
                Slot::Loading(_) => None,
            })
            .collect();
        let mut by_age: Vec<(u64, Arc<RwLock<RetryGroups>>)> = resident
            .iter()
            .flat_map(|index| index.retries.read().values().cloned().collect::<Vec<_>>())
            .filter_map(|r| {
                let used = r.try_read()?.hot.lock().used;
                Some((used, r))
            })
            .collect();
        by_age.sort_by_key(|(used, _)| *used);
        for (_, retry) in by_age {
            if self.hot_bytes.load(Ordering::Relaxed) <= self.hot_budget / 4 * 3 {
                break;
            }
            // The caller's retry is read-locked by the caller already; reading again is fine.
            let Some(retry) = retry.try_read() else {
                continue;
            };
            if std::ptr::eq(&*retry, keep) {
                continue;
            }
            let mut hot = retry.hot.lock();
            let (rows, bytes) = (hot.rows.len(), hot.bytes);
            hot.rows = FxHashMap::default();
            hot.bytes = 0;
            self.hot_rows.fetch_sub(rows, Ordering::Relaxed);
            self.hot_bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}
