//! Which steps are in memory: loading a step on its first query (once, however many ask at the
//! same moment), evicting the least recently used when the estimate passes the budget, and
//! where apply's changes go meanwhile. Nothing is loaded at start.
//!
//! Apply and loads meet per step through a striped lock: apply holds the stripes of a batch's
//! steps from before its store write until the index has the batch; a load registers itself and
//! takes its RocksDB snapshot under the stripe, builds without it, and installs under it again,
//! replaying what apply recorded for the step meanwhile. A step neither in memory nor loading is
//! only written to the store.

use super::groups::{move_host, Head, RetryGroups, RetryId, RETRY_BYTES};
use super::{Index, STRIPES};
use crate::events::StepEvent;
use crate::store::clock::{Clock, Position};
use crate::store::keys::RowKey;
use crate::store::{Store, StoreSnapshot};
use crate::telemetry::IndexFigures;
use anyhow::Result;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock, RwLockWriteGuard};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// One step in memory: its record (if its `step` event came) and its retries' groups.
#[derive(Default)]
pub struct StepIndex {
    record: RwLock<Option<Arc<StepEvent>>>,
    retries: RwLock<BTreeMap<i32, Arc<RwLock<RetryGroups>>>>,
    /// The position of the last event that changed the step, once the change is visible.
    changed_at: Mutex<Position>,
    /// When a query last used it (index clock), for eviction.
    used: AtomicU64,
    /// Estimated bytes of the record and the groups (hot rows apart), and host rows held.
    bytes: AtomicI64,
    hosts: AtomicI64,
}

impl StepIndex {
    pub fn record(&self) -> Option<Arc<StepEvent>> {
        self.record.read().clone()
    }

    /// Where the step's answers stand (their ETag). Read it before the answer: apply sets it
    /// after the change it names is visible, so it is never ahead of what is read after it.
    pub fn changed_at(&self) -> Position {
        *self.changed_at.lock()
    }

    pub fn retry(&self, execute_count: i32) -> Option<Arc<RwLock<RetryGroups>>> {
        self.retries.read().get(&execute_count).cloned()
    }

    /// The retry, created when new; the bytes that creating it added.
    fn retry_or_new(&self, execute_count: i32) -> (Arc<RwLock<RetryGroups>>, i64) {
        if let Some(r) = self.retry(execute_count) {
            return (r, 0);
        }
        let mut retries = self.retries.write();
        let mut added = 0;
        let retry = retries.entry(execute_count).or_insert_with(|| {
            added = RETRY_BYTES;
            Arc::default()
        });
        (Arc::clone(retry), added)
    }

    /// Replaces the record; the bytes this added.
    fn set_record(&self, step: Arc<StepEvent>) -> i64 {
        let added = step_bytes(&step);
        let old = self.record.write().replace(step);
        added - old.map_or(0, |o| step_bytes(&o))
    }

    /// Builds a step's index from a snapshot of the store.
    fn load(snapshot: &StoreSnapshot<'_>, step: i64) -> Result<StepIndex> {
        let mut index = StepIndex::default();
        let mut bytes = STEP_INDEX_BYTES;
        if let Some(record) = snapshot.step(step)? {
            bytes += index.set_record(Arc::new(record));
        }
        if let Some(Clock::Live { changed_at, .. }) = snapshot.clock(step)? {
            *index.changed_at.get_mut() = changed_at;
        }
        let mut current: Option<(i32, RetryGroups)> = None;
        let mut retries = BTreeMap::new();
        let mut hosts = 0;
        snapshot.for_each_row_head(step, |key, status, tag| {
            if current
                .as_ref()
                .is_none_or(|(ec, _)| *ec != key.execute_count)
            {
                if let Some((ec, groups)) = current.take() {
                    retries.insert(ec, Arc::new(RwLock::new(groups)));
                }
                current = Some((key.execute_count, RetryGroups::default()));
                bytes += RETRY_BYTES;
            }
            let (_, groups) = current.as_mut().expect("set above");
            bytes += groups.insert(key.batch, (status, tag), key.host);
            hosts += 1;
        })?;
        if let Some((ec, groups)) = current {
            retries.insert(ec, Arc::new(RwLock::new(groups)));
        }
        *index.retries.get_mut() = retries;
        index.bytes.store(bytes, Ordering::Relaxed);
        index.hosts.store(hosts, Ordering::Relaxed);
        Ok(index)
    }

    /// Applies a change that apply recorded while the step was loading.
    fn replay(&self, change: Change) {
        let (bytes, hosts) = match change {
            Change::Record(record) => (self.set_record(record), 0),
            Change::ChangedAt(at) => {
                *self.changed_at.lock() = at;
                (0, 0)
            }
            Change::Place { key, old, new } => {
                let (retry, created) = self.retry_or_new(key.execute_count);
                let mut retry = retry.write();
                let old = old.as_ref().map(|(s, t)| (*s, &**t));
                let (bytes, hosts) = move_host(&mut retry, key, old, (new.0, &new.1));
                (created + bytes, hosts)
            }
        };
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.hosts.fetch_add(hosts, Ordering::Relaxed);
    }
}

/// What apply did to a step while it was being loaded, replayed onto the loaded index.
enum Change {
    Record(Arc<StepEvent>),
    ChangedAt(Position),
    Place {
        key: RowKey,
        old: Option<(i32, Arc<str>)>,
        new: (i32, Arc<str>),
    },
}

/// A load in progress: what apply did meanwhile, and a gate for the queries that wait for it.
#[derive(Default)]
pub struct Load {
    pending: Mutex<Vec<Change>>,
    done: Mutex<bool>,
    finished: Condvar,
}

impl Load {
    fn wait(&self) {
        let mut done = self.done.lock();
        while !*done {
            self.finished.wait(&mut done);
        }
    }

    fn finish(&self) {
        *self.done.lock() = true;
        self.finished.notify_all();
    }
}

#[derive(Clone)]
pub(super) enum Slot {
    Resident(Arc<StepIndex>),
    Loading(Arc<Load>),
}

/// Where apply's changes to one step go: the index in memory, a load in progress, or nowhere
/// (the step is only in the store).
pub enum Target {
    Resident(Arc<StepIndex>),
    Loading(Arc<Load>),
    Cold,
}

impl Index {
    /// An empty index holding at most `budget` bytes of steps and `hot_budget` bytes of hot
    /// rows.
    pub fn new(budget: usize, hot_budget: usize) -> Index {
        Index {
            steps: DashMap::new(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            budget,
            bytes: AtomicI64::new(0),
            hosts: AtomicI64::new(0),
            hot_budget,
            hot_rows: AtomicUsize::new(0),
            hot_bytes: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn stripe(&self, step: i64) -> usize {
        ((step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % STRIPES
    }

    pub(super) fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    fn slot(&self, step: i64) -> Option<Slot> {
        self.steps.get(&step).map(|s| s.clone())
    }

    /// Counts a use of a resident step, for eviction (least recently used leave first).
    fn used(&self, index: Arc<StepIndex>) -> Arc<StepIndex> {
        index.used.store(self.tick(), Ordering::Relaxed);
        index
    }

    /// The step's index if it is in memory (counted as a use); nothing is loaded.
    pub fn resident(&self, step: i64) -> Option<Arc<StepIndex>> {
        match self.slot(step)? {
            Slot::Resident(index) => Some(self.used(index)),
            Slot::Loading(_) => None,
        }
    }

    /// The step's index, loaded from the store if it is not in memory, when its record is one
    /// `admits` (the caller may read it); `None` otherwise. The record is checked first, from
    /// memory or by one point read of the store, so that a step the caller may not read is
    /// never loaded: neither the time an answer takes nor what it pushes out of memory tells
    /// anything about it.
    pub fn step(
        &self,
        step: i64,
        store: &Store,
        admits: impl Fn(&StepEvent) -> bool,
    ) -> Result<Option<Arc<StepIndex>>> {
        loop {
            match self.slot(step) {
                Some(Slot::Resident(index)) => {
                    let admitted = index.record().is_some_and(|r| admits(&r));
                    return Ok(admitted.then(|| self.used(index)));
                }
                Some(Slot::Loading(load)) => {
                    load.wait();
                    continue;
                }
                None => {}
            }
            if !store.get_steps(&[step])?[0].as_ref().is_some_and(&admits) {
                return Ok(None);
            }
            let load = Arc::new(Load::default());
            let snapshot = {
                let _stripe = self.stripes[self.stripe(step)].lock();
                match self.steps.entry(step) {
                    Entry::Occupied(_) => continue, // another query got there first
                    Entry::Vacant(v) => {
                        v.insert(Slot::Loading(Arc::clone(&load)));
                    }
                }
                store.snapshot()
            };
            let built = StepIndex::load(&snapshot, step);
            drop(snapshot);
            let installed = {
                let _stripe = self.stripes[self.stripe(step)].lock();
                let ours =
                    matches!(self.slot(step), Some(Slot::Loading(l)) if Arc::ptr_eq(&l, &load));
                match built {
                    // The step expired while it loaded: look again (it is gone from the store).
                    _ if !ours => None,
                    Ok(index) => {
                        for change in std::mem::take(&mut *load.pending.lock()) {
                            index.replay(change);
                        }
                        let index = self.used(Arc::new(index));
                        self.bytes
                            .fetch_add(index.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
                        self.hosts
                            .fetch_add(index.hosts.load(Ordering::Relaxed), Ordering::Relaxed);
                        self.steps.insert(step, Slot::Resident(Arc::clone(&index)));
                        Some(Ok(index))
                    }
                    Err(e) => {
                        self.steps.remove(&step);
                        Some(Err(e))
                    }
                }
            };
            load.finish();
            let Some(installed) = installed else {
                continue;
            };
            let index = installed?;
            self.loads.fetch_add(1, Ordering::Relaxed);
            self.enforce_budget(step);
            return Ok(Some(index));
        }
    }

    /// Locks the stripes of `steps` (apply and expiry hold them from before their store write
    /// until the index has it) and says where each step's changes go.
    pub fn lock_steps(&self, steps: &[i64]) -> (Vec<MutexGuard<'_, ()>>, HashMap<i64, Target>) {
        let stripes: BTreeSet<usize> = steps.iter().map(|s| self.stripe(*s)).collect();
        let guards = stripes
            .into_iter()
            .map(|i| self.stripes[i].lock())
            .collect();
        let targets = steps
            .iter()
            .map(|s| {
                let target = match self.slot(*s) {
                    Some(Slot::Resident(index)) => Target::Resident(index),
                    Some(Slot::Loading(load)) => Target::Loading(load),
                    None => Target::Cold,
                };
                (*s, target)
            })
            .collect();
        (guards, targets)
    }

    /// The retries of resident steps that a batch is about to change (created when new), in id
    /// order: `apply` write-locks them before it writes the batch to the store and holds them
    /// until every row is placed, so that a query sees a retry's groups and rows both before or
    /// both after.
    pub fn retries_for_update(
        &self,
        targets: &HashMap<i64, Target>,
        retries: BTreeSet<RetryId>,
    ) -> Vec<(RetryId, Arc<RwLock<RetryGroups>>)> {
        retries
            .into_iter()
            .filter_map(|(step, ec)| match targets.get(&step) {
                Some(Target::Resident(index)) => {
                    let (retry, added) = index.retry_or_new(ec);
                    self.grow(index, added, 0);
                    Some(((step, ec), retry))
                }
                _ => None,
            })
            .collect()
    }

    fn grow(&self, index: &StepIndex, bytes: i64, hosts: i64) {
        index.bytes.fetch_add(bytes, Ordering::Relaxed);
        index.hosts.fetch_add(hosts, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.hosts.fetch_add(hosts, Ordering::Relaxed);
    }

    /// A new step record, where its step's changes go (the stripe is held).
    pub fn set_record(&self, target: &Target, record: StepEvent) {
        let record = Arc::new(record);
        match target {
            Target::Resident(index) => {
                let added = index.set_record(record);
                self.grow(index, added, 0);
            }
            Target::Loading(load) => load.pending.lock().push(Change::Record(record)),
            Target::Cold => {}
        }
    }

    /// Moves a host from its old group (`None`: a new row) to its new one, and refreshes its
    /// hot copy, if it has one, with `encoded` (the row as the store now holds it). `retry` is
    /// the write-locked retry of a resident step (the stripe is held).
    pub fn place(
        &self,
        target: &Target,
        retry: Option<&mut RwLockWriteGuard<'_, RetryGroups>>,
        key: RowKey,
        old: Option<Head<'_>>,
        new: Head<'_>,
        encoded: &[u8],
    ) {
        match (target, retry) {
            (Target::Resident(index), Some(retry)) => {
                let (added, freed) = retry.refresh_hot_row(key, encoded);
                self.hot_bytes.fetch_add(added, Ordering::Relaxed);
                self.hot_bytes.fetch_sub(freed, Ordering::Relaxed);
                let (bytes, hosts) = move_host(retry, key, old, new);
                self.grow(index, bytes, hosts);
            }
            (Target::Loading(load), _) => load.pending.lock().push(Change::Place {
                key,
                old: old.map(|(s, t)| (s, t.into())),
                new: (new.0, new.1.into()),
            }),
            _ => {}
        }
    }

    /// Where the step now stands (the stripe is held; after its changes are placed).
    pub fn set_changed_at(&self, target: &Target, at: Position) {
        match target {
            Target::Resident(index) => *index.changed_at.lock() = at,
            Target::Loading(load) => load.pending.lock().push(Change::ChangedAt(at)),
            Target::Cold => {}
        }
    }

    /// Forgets a step that expired (its stripe is held): it leaves memory, and a load in
    /// progress is dropped (its snapshot may predate the expiry).
    pub fn forget(&self, step: i64) {
        if let Some((_, Slot::Resident(index))) = self.steps.remove(&step) {
            self.release(&index);
        }
    }

    /// Drops from memory the steps `leaves` names (their partition moved to another shard);
    /// they stay on disk.
    pub fn evict_where(&self, leaves: impl Fn(i64) -> bool) {
        let going: Vec<(i64, Arc<StepIndex>)> = self
            .steps
            .iter()
            .filter(|e| leaves(*e.key()))
            .filter_map(|e| match e.value() {
                Slot::Resident(index) => Some((*e.key(), Arc::clone(index))),
                Slot::Loading(_) => None,
            })
            .collect();
        for (step, index) in going {
            let _stripe = self.stripes[self.stripe(step)].lock();
            let removed = self.steps.remove_if(
                &step,
                |_, slot| matches!(slot, Slot::Resident(i) if Arc::ptr_eq(i, &index)),
            );
            if removed.is_some() {
                self.release(&index);
            }
        }
    }

    /// Takes an evicted or forgotten step's figures out of the totals, and its hot rows.
    fn release(&self, index: &StepIndex) {
        self.bytes
            .fetch_sub(index.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        self.hosts
            .fetch_sub(index.hosts.load(Ordering::Relaxed), Ordering::Relaxed);
        for retry in index.retries.read().values() {
            let (rows, bytes) = retry.read().drop_hot_rows();
            self.hot_rows.fetch_sub(rows, Ordering::Relaxed);
            self.hot_bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// The retries of the steps in memory (for the hot rows' eviction).
    pub(super) fn retries_in_memory(&self) -> Vec<Arc<RwLock<RetryGroups>>> {
        self.steps
            .iter()
            .filter_map(|e| match e.value() {
                Slot::Resident(index) => Some(Arc::clone(index)),
                Slot::Loading(_) => None,
            })
            .flat_map(|index| index.retries.read().values().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Evicts the least recently used steps (but `keep`) until 7/8 of the budget is used, when
    /// the budget is passed. O(resident steps) when it happens, which a margin keeps rare.
    pub fn enforce_budget(&self, keep: i64) {
        if self.bytes.load(Ordering::Relaxed) <= self.budget as i64 {
            return;
        }
        let mut by_age: Vec<(u64, i64, Arc<StepIndex>)> = self
            .steps
            .iter()
            .filter(|e| *e.key() != keep)
            .filter_map(|e| match e.value() {
                Slot::Resident(index) => Some((
                    index.used.load(Ordering::Relaxed),
                    *e.key(),
                    Arc::clone(index),
                )),
                Slot::Loading(_) => None,
            })
            .collect();
        by_age.sort_unstable_by_key(|(used, ..)| *used);
        let target = self.budget as i64 / 8 * 7;
        for (_, step, index) in by_age {
            if self.bytes.load(Ordering::Relaxed) <= target {
                break;
            }
            // A step that apply is changing right now stays; it can go next time.
            let Some(_stripe) = self.stripes[self.stripe(step)].try_lock() else {
                continue;
            };
            let removed = self.steps.remove_if(
                &step,
                |_, slot| matches!(slot, Slot::Resident(i) if Arc::ptr_eq(i, &index)),
            );
            if removed.is_some() {
                self.release(&index);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Running figures, O(1) to read (but the count of steps, O(map shards)).
    pub fn figures(&self) -> IndexFigures {
        IndexFigures {
            steps: self.steps.len(),
            hosts: self.hosts.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed).max(0) as usize,
            budget: self.budget,
            hot_rows: self.hot_rows.load(Ordering::Relaxed),
            hot_bytes: self.hot_bytes.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// Estimated heap bytes of the index, hot rows included: a running figure.
    /// `cargo bench --bench query` measures the real figure with a counting allocator and prints
    /// it beside this estimate.
    pub fn estimated_bytes(&self) -> usize {
        let figures = self.figures();
        figures.bytes + figures.hot_bytes
    }
}

fn step_bytes(step: &StepEvent) -> i64 {
    STEP_BYTES + (step.name.len() + step.bk_scope_id.len()) as i64
}

/// A resident step's map slot, locks and retry map.
const STEP_INDEX_BYTES: i64 = 192;
/// A step record, its `Arc` and strings' headers.
const STEP_BYTES: i64 = std::mem::size_of::<StepEvent>() as i64 + 32;
