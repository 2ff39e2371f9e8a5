//! The in-memory indexes that make queries cheap: step records by id, and for every step / retry /
//! batch the hosts of each (status, tag) group in `bk_host_id` order.
//!
//! Owns: the group sets and the step cache. Must not: write to the store or be changed by anyone
//! but `apply` (and the rebuild at start). It is derived state: `rebuild` recreates it from RocksDB.

use crate::events::StepEvent;
use crate::store::keys::RowKey;
use crate::store::Store;
use anyhow::Result;
use dashmap::DashMap;
use parking_lot::RwLock;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
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

/// The groups of one step's retry, per batch.
#[derive(Debug, Default)]
pub struct RetryGroups {
    pub batches: BTreeMap<i32, BatchGroups>,
}

impl RetryGroups {
    /// Every group that has a host in any batch, in api.md order.
    pub fn group_keys(&self) -> BTreeSet<GroupKey> {
        self.batches
            .values()
            .flat_map(|b| b.groups.keys().cloned())
            .collect()
    }
}

type RetryId = (i64, i32);

#[derive(Default)]
pub struct Index {
    steps: DashMap<i64, Arc<StepEvent>>,
    retries: DashMap<RetryId, Arc<RwLock<RetryGroups>>>,
    hosts: AtomicI64,
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

    /// Moves a host from its old group (None: a new row) to `new`.
    pub fn place(&self, key: RowKey, old: Option<(i32, &str)>, new: (i32, &str)) {
        if old == Some(new) {
            return;
        }
        let retry = Arc::clone(
            &self
                .retries
                .entry((key.step, key.execute_count))
                .or_default(),
        );
        let mut retry = retry.write();
        let batch = retry.batches.entry(key.batch).or_default();
        match old {
            Some((status, tag)) => {
                let old_key = GroupKey {
                    status,
                    tag: tag.into(),
                };
                if let Some(set) = batch.groups.get_mut(&old_key) {
                    set.remove(&key.host);
                    if set.is_empty() {
                        batch.groups.remove(&old_key);
                    }
                }
            }
            None => {
                self.hosts.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Reuse the group's tag allocation when the group exists.
        let probe = GroupKey {
            status: new.0,
            tag: new.1.into(),
        };
        batch.groups.entry(probe).or_default().insert(key.host);
    }

    /// Recreates the index from the store (service start).
    pub fn rebuild(store: &Store) -> Result<Index> {
        let index = Index::default();
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
            groups
                .batches
                .entry(key.batch)
                .or_default()
                .groups
                .entry(GroupKey {
                    status,
                    tag: tag.into(),
                })
                .or_default()
                .insert(key.host);
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
                RETRY_BYTES
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
/// A step record in the step map, its `Arc` and map slot.
const STEP_BYTES: usize = std::mem::size_of::<StepEvent>() + 64;
