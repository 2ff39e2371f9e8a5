//! The in-memory indexes that make queries cheap: step records by id, and for every step / retry /
//! batch the hosts of each (status, tag) group in `bk_host_id` order; plus, for the retries that
//! capped queries poll, copies of the rows they returned ("hot rows"), so that a repeated poll
//! reads no RocksDB at all.
//!
//! Owns: the group sets, the step cache and the hot rows. Must not: write to the store or be
//! changed by anyone but `apply` (and the rebuild at start, and queries adding hot rows). It is
//! derived state: `rebuild` recreates it from RocksDB.
//!
//! Hot rows stay coherent because both sides hold the retry's lock: `apply` refreshes a hot row
//! under the write lock after the store has the new row; a query reads the store and adds hot rows
//! under the read lock, so it either finishes before the refresh or reads the new row.

use crate::events::StepEvent;
use crate::store::keys::RowKey;
use crate::store::row::StoredRow;
use crate::store::Store;
use anyhow::Result;
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
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
    pub groups: BTreeMap<GroupKey, BTreeSet<i64>>,
}

/// The groups of one step's retry, per batch, and its hot rows.
#[derive(Debug, Default)]
pub struct RetryGroups {
    pub batches: BTreeMap<i32, BatchGroups>,
    hot: Mutex<HotRows>,
}

/// Rows of one retry that capped queries returned, by (batch, host).
#[derive(Debug, Default)]
struct HotRows {
    rows: HashMap<(i32, i64), StoredRow>,
    /// When a query last used them (index clock), for eviction.
    used: u64,
}

impl RetryGroups {
    fn insert(&mut self, batch: i32, (status, tag): (i32, &str), host: i64) {
        let group = GroupKey {
            status,
            tag: tag.into(),
        };
        let groups = &mut self.batches.entry(batch).or_default().groups;
        groups.entry(group).or_default().insert(host);
    }

    fn remove(&mut self, batch: i32, (status, tag): (i32, &str), host: i64) {
        let Some(batch) = self.batches.get_mut(&batch) else {
            return;
        };
        let group = GroupKey {
            status,
            tag: tag.into(),
        };
        if let Some(set) = batch.groups.get_mut(&group) {
            set.remove(&host);
            if set.is_empty() {
                batch.groups.remove(&group);
            }
        }
    }

    /// Every group that has a host in any batch, in api.md order.
    pub fn group_keys(&self) -> BTreeSet<GroupKey> {
        self.batches
            .values()
            .flat_map(|b| b.groups.keys().cloned())
            .collect()
    }
}

/// (step, execute_count)
pub type RetryId = (i64, i32);

#[derive(Default)]
pub struct Index {
    steps: DashMap<i64, Arc<StepEvent>>,
    retries: DashMap<RetryId, Arc<RwLock<RetryGroups>>>,
    hosts: AtomicI64,
    /// Most hot rows kept over all retries (0: none).
    hot_budget: usize,
    hot_count: AtomicUsize,
    clock: AtomicU64,
}

impl Index {
    pub fn step(&self, id: i64) -> Option<Arc<StepEvent>> {
        self.steps.get(&id).map(|s| Arc::clone(&s))
    }

    pub fn set_step(&self, step: StepEvent) {
        self.steps.insert(step.step_instance_id, Arc::new(step));
    }

    pub fn retry(&self, step: i64, execute_count: i32) -> Option<Arc<RwLock<RetryGroups>>> {
        self.retries
            .get(&(step, execute_count))
            .map(|r| Arc::clone(&r))
    }

    /// The retries (created when new) that a batch is about to change, in id order: `apply`
    /// write-locks them before it writes the batch to the store and holds them until every row
    /// is placed, so that a query sees a retry's groups and rows both before or both after.
    pub fn retries_for_update(
        &self,
        ids: BTreeSet<RetryId>,
    ) -> Vec<(RetryId, Arc<RwLock<RetryGroups>>)> {
        ids.into_iter()
            .map(|id| (id, Arc::clone(&self.retries.entry(id).or_default())))
            .collect()
    }

    /// Moves a host of `retry` (write-locked by the caller) from its old group (None: a new
    /// row) to its new one, and refreshes its hot copy, if it has one, with `encoded` (the row as
    /// the store now holds it).
    pub fn place(
        &self,
        retry: &mut RetryGroups,
        key: RowKey,
        old: Option<(i32, &str)>,
        new: (i32, &str),
        encoded: &[u8],
    ) {
        if let Some(hot) = retry.hot.get_mut().rows.get_mut(&(key.batch, key.host)) {
            *hot = StoredRow::of_encoding(encoded);
        }
        if old == Some(new) {
            return;
        }
        match old {
            Some(old) => retry.remove(key.batch, old, key.host),
            None => {
                self.hosts.fetch_add(1, Ordering::Relaxed);
            }
        }
        retry.insert(key.batch, new, key.host);
    }

    /// The hot copies of `keys` (all of one retry), `None` where there is none.
    pub fn hot_rows(&self, retry: &RetryGroups, keys: &[RowKey]) -> Vec<Option<StoredRow>> {
        let mut hot = retry.hot.lock();
        if hot.rows.is_empty() {
            return vec![None; keys.len()];
        }
        hot.used = self.clock.fetch_add(1, Ordering::Relaxed);
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
            hot.used = self.clock.fetch_add(1, Ordering::Relaxed);
            let before = hot.rows.len();
            for (k, row) in rows {
                hot.rows
                    .entry((k.batch, k.host))
                    .or_insert_with(|| row.clone());
            }
            self.hot_count
                .fetch_add(hot.rows.len() - before, Ordering::Relaxed);
        }
        if self.hot_count.load(Ordering::Relaxed) > self.hot_budget {
            self.evict_hot_rows(retry);
        }
    }

    /// Drops the hot rows of the least recently polled retries until 3/4 of the budget is used.
    /// Rare, and O(retries) when it happens.
    fn evict_hot_rows(&self, keep: &RetryGroups) {
        let mut by_age: Vec<(u64, Arc<RwLock<RetryGroups>>)> = self
            .retries
            .iter()
            .map(|r| Arc::clone(r.value()))
            .filter_map(|r| {
                let used = r.try_read()?.hot.lock().used;
                Some((used, r))
            })
            .collect();
        by_age.sort_by_key(|(used, _)| *used);
        for (_, retry) in by_age {
            if self.hot_count.load(Ordering::Relaxed) <= self.hot_budget / 4 * 3 {
                break;
            }
            // The caller's retry is read-locked by the caller already; reading again is fine.
            let Some(retry) = retry.try_read() else {
                continue;
            };
            if std::ptr::eq(&*retry, keep) {
                continue;
            }
            let dropped = std::mem::take(&mut retry.hot.lock().rows).len();
            self.hot_count.fetch_sub(dropped, Ordering::Relaxed);
        }
    }

    pub fn hot_row_count(&self) -> usize {
        self.hot_count.load(Ordering::Relaxed)
    }

    /// An empty index that keeps at most `hot_budget` hot rows.
    pub fn new(hot_budget: usize) -> Index {
        Index {
            hot_budget,
            ..Index::default()
        }
    }

    /// Recreates the index from the store (service start).
    pub fn rebuild(store: &Store, hot_budget: usize) -> Result<Index> {
        let index = Index::new(hot_budget);
        for step in store.steps()? {
            index.set_step(step);
        }
        let mut current: Option<(RetryId, RetryGroups)> = None;
        let mut hosts = 0i64;
        store.for_each_row_head(|key, status, tag| {
            let id = (key.step, key.execute_count);
            if current.as_ref().is_none_or(|(c, _)| *c != id) {
                if let Some((done, groups)) = current.take() {
                    index.retries.insert(done, Arc::new(RwLock::new(groups)));
                }
                current = Some((id, RetryGroups::default()));
            }
            let (_, groups) = current.as_mut().expect("set above");
            groups.insert(key.batch, (status, tag), key.host);
            hosts += 1;
        })?;
        if let Some((done, groups)) = current {
            index.retries.insert(done, Arc::new(RwLock::new(groups)));
        }
        index.hosts.store(hosts, Ordering::Relaxed);
        Ok(index)
    }

    pub fn step_count(&self) -> usize {
        self.steps.len()
    }

    pub fn host_count(&self) -> i64 {
        self.hosts.load(Ordering::Relaxed)
    }

    /// Estimated heap bytes of the index, from its shape: costs per host entry, per group and per
    /// step. `cargo bench --bench query` measures the real figure with a counting allocator and
    /// prints it beside this estimate. Costs O(groups), not O(hosts).
    pub fn estimated_bytes(&self) -> usize {
        let steps: usize = self
            .steps
            .iter()
            .map(|s| STEP_BYTES + s.name.len() + s.bk_scope_id.len())
            .sum();
        let groups: usize = self
            .retries
            .iter()
            .map(|r| {
                let r = r.read();
                let hot = r.hot.lock().rows.len();
                RETRY_BYTES
                    + hot * HOT_ROW_BYTES
                    + r.batches
                        .values()
                        .flat_map(|b| b.groups.iter())
                        .map(|(k, set)| GROUP_BYTES + k.tag.len() + set.len() * HOST_BYTES)
                        .sum::<usize>()
            })
            .sum();
        steps + groups
    }
}

/// A host id in a group's B-tree set: 8 bytes of key in nodes that are about 60% full after
/// the mostly ascending inserts that targets produce.
const HOST_BYTES: usize = 16;
/// A group entry: its key and set header in the batch's map, the tag's shared allocation.
const GROUP_BYTES: usize = 112;
/// A retry's map entry, lock and batch map.
const RETRY_BYTES: usize = 160;
/// A hot row: its map slot and its shared encoded bytes (~90 for a typical row).
const HOT_ROW_BYTES: usize = 48 + 16 + 96;
/// A step record in the step map, its `Arc` and map slot.
const STEP_BYTES: usize = std::mem::size_of::<StepEvent>() + 64;
