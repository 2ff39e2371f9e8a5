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
    /// Their estimated bytes.
    bytes: usize,
    /// When a query last used them (index clock), for eviction.
    used: u64,
}

fn hot_row_bytes(row: &StoredRow) -> usize {
    HOT_ROW_BYTES + row.encoded_len()
}

impl RetryGroups {
    /// Adds `host` to a group; the estimated bytes this added.
    fn insert(&mut self, batch: i32, (status, tag): (i32, &str), host: i64) -> i64 {
        let group = GroupKey {
            status,
            tag: tag.into(),
        };
        let groups = &mut self.batches.entry(batch).or_default().groups;
        let mut added = HOST_BYTES;
        let set = groups.entry(group).or_insert_with(|| {
            added += GROUP_BYTES + tag.len() as i64;
            BTreeSet::new()
        });
        set.insert(host);
        added
    }

    /// Takes `host` out of a group; the estimated bytes this freed.
    fn remove(&mut self, batch: i32, (status, tag): (i32, &str), host: i64) -> i64 {
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
        let mut freed = if set.remove(&host) { HOST_BYTES } else { 0 };
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

/// (step, execute_count)
pub type RetryId = (i64, i32);

#[derive(Default)]
pub struct Index {
    steps: DashMap<i64, Arc<StepEvent>>,
    retries: DashMap<RetryId, Arc<RwLock<RetryGroups>>>,
    hosts: AtomicI64,
    /// Estimated heap bytes of steps, retries and groups, kept up to date as they change (a
    /// scrape reads it, never walks the index).
    bytes: AtomicI64,
    /// Most bytes of hot rows kept over all retries (0: none).
    hot_budget: usize,
    hot_rows: AtomicUsize,
    hot_bytes: AtomicUsize,
    clock: AtomicU64,
}

impl Index {
    pub fn step(&self, id: i64) -> Option<Arc<StepEvent>> {
        self.steps.get(&id).map(|s| Arc::clone(&s))
    }

    pub fn set_step(&self, step: StepEvent) {
        let added = step_bytes(&step);
        let replaced = self.steps.insert(step.step_instance_id, Arc::new(step));
        let freed = replaced.map_or(0, |old| step_bytes(&old));
        self.bytes.fetch_add(added - freed, Ordering::Relaxed);
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
            .map(|id| {
                let retry = self.retries.entry(id).or_insert_with(|| {
                    self.bytes.fetch_add(RETRY_BYTES, Ordering::Relaxed);
                    Arc::default()
                });
                (id, Arc::clone(&retry))
            })
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
        let hot = retry.hot.get_mut();
        if let Some(row) = hot.rows.get_mut(&(key.batch, key.host)) {
            let fresh = StoredRow::of_encoding(encoded);
            let (before, after) = (hot_row_bytes(row), hot_row_bytes(&fresh));
            *row = fresh;
            hot.bytes = hot.bytes + after - before;
            self.hot_bytes.fetch_add(after, Ordering::Relaxed);
            self.hot_bytes.fetch_sub(before, Ordering::Relaxed);
        }
        if old == Some(new) {
            return;
        }
        let mut delta = 0;
        match old {
            Some(old) => delta -= retry.remove(key.batch, old, key.host),
            None => {
                self.hosts.fetch_add(1, Ordering::Relaxed);
            }
        }
        delta += retry.insert(key.batch, new, key.host);
        self.bytes.fetch_add(delta, Ordering::Relaxed);
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
            let dropped = std::mem::take(&mut *retry.hot.lock());
            self.hot_rows
                .fetch_sub(dropped.rows.len(), Ordering::Relaxed);
            self.hot_bytes.fetch_sub(dropped.bytes, Ordering::Relaxed);
        }
    }

    pub fn hot_row_count(&self) -> usize {
        self.hot_rows.load(Ordering::Relaxed)
    }

    /// An empty index that keeps at most `hot_budget` bytes of hot rows.
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
        let (mut hosts, mut bytes) = (0i64, 0i64);
        store.for_each_row_head(|key, status, tag| {
            let id = (key.step, key.execute_count);
            if current.as_ref().is_none_or(|(c, _)| *c != id) {
                if let Some((done, groups)) = current.take() {
                    index.retries.insert(done, Arc::new(RwLock::new(groups)));
                }
                current = Some((id, RetryGroups::default()));
                bytes += RETRY_BYTES;
            }
            let (_, groups) = current.as_mut().expect("set above");
            bytes += groups.insert(key.batch, (status, tag), key.host);
            hosts += 1;
        })?;
        if let Some((done, groups)) = current {
            index.retries.insert(done, Arc::new(RwLock::new(groups)));
        }
        index.hosts.store(hosts, Ordering::Relaxed);
        index.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(index)
    }

    pub fn step_count(&self) -> usize {
        self.steps.len()
    }

    pub fn host_count(&self) -> i64 {
        self.hosts.load(Ordering::Relaxed)
    }

    /// Estimated heap bytes of the index, hot rows included: a running figure, O(1) to read.
    /// `cargo bench --bench query` measures the real figure with a counting allocator and prints
    /// it beside this estimate.
    pub fn estimated_bytes(&self) -> usize {
        let bytes = self.bytes.load(Ordering::Relaxed).max(0) as usize;
        bytes + self.hot_bytes.load(Ordering::Relaxed)
    }
}

fn step_bytes(step: &StepEvent) -> i64 {
    STEP_BYTES + (step.name.len() + step.bk_scope_id.len()) as i64
}

/// A host id in a group's B-tree set: 8 bytes of key in nodes that are about 60% full after
/// the mostly ascending inserts that targets produce.
const HOST_BYTES: i64 = 16;
/// A group entry: its key and set header in the batch's map, the tag's shared allocation.
const GROUP_BYTES: i64 = 112;
/// A retry's map entry, lock and batch map.
const RETRY_BYTES: i64 = 160;
/// A hot row's map slot and shared allocation, beside its encoded bytes.
const HOT_ROW_BYTES: usize = 48 + 16;
/// A step record in the step map, its `Arc` and map slot.
const STEP_BYTES: i64 = std::mem::size_of::<StepEvent>() as i64 + 64;
