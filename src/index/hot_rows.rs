//! Hot rows: for the retries that capped queries poll, copies of the rows they returned, so
//! that a repeated poll reads no RocksDB at all; within their own budget, the least recently
//! polled retries' dropped first.
//!
//! They stay coherent because both sides hold the retry's lock: `apply` refreshes a hot row
//! under the write lock after the store has the new row; a query reads the store and adds hot
//! rows under the read lock, so it either finishes before the refresh or reads the new row.

use super::groups::hot_row_bytes;
use super::{Index, RetryGroups};
use crate::store::keys::RowKey;
use crate::store::row::StoredRow;
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Index {
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
        let mut by_age: Vec<(u64, Arc<RwLock<RetryGroups>>)> = self
            .retries_in_memory()
            .into_iter()
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
