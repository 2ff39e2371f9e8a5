//! Folds events into the views: the only writer of the store and the index.
//!
//! Owns: the meaning of each event kind (events.md, "Ordering, duplicates and replays"):
//! version last-writer-wins for `step` and `host_result`, `step_targets` never downgrading a host
//! with a result, log chunks keyed by offset, identity fields merged by rank so that any
//! permutation of the same events gives the same state. Must not: read Kafka or answer queries.
//!
//! One call applies one batch as one RocksDB WriteBatch, together with the consumer offsets the
//! batch advances to, and only then updates the in-memory index; the retries it changes stay
//! write-locked from before the store write until the index has the batch.

use crate::events::{Event, StepEvent};
use crate::index::{Index, RetryId};
use crate::store::keys::RowKey;
use crate::store::row::{result_rank, HostRow, RANK_TARGETS};
use crate::store::{Store, StoreBatch};
use anyhow::Result;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Where the next message of a partition starts, stored with the state it follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOffset {
    pub topic: String,
    pub partition: i32,
    pub next: i64,
}

/// What a batch did, per event: `changed` events altered a view; the rest were duplicates or
/// superseded versions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    pub changed: HashMap<&'static str, u64>,
    pub unchanged: HashMap<&'static str, u64>,
}

impl ApplyStats {
    fn count(&mut self, kind: &'static str, changed: bool) {
        let map = if changed {
            &mut self.changed
        } else {
            &mut self.unchanged
        };
        *map.entry(kind).or_default() += 1;
    }
}

pub struct Applier {
    store: Arc<Store>,
    index: Arc<Index>,
}

/// A host row while a batch is folded: what the store held before, and what it holds now.
struct Slot {
    before: Option<(i32, String)>,
    row: Option<HostRow>,
    dirty: bool,
}

impl Applier {
    pub fn new(store: Arc<Store>, index: Arc<Index>) -> Applier {
        Applier { store, index }
    }

    /// Where each partition of `topic` resumes: the offsets stored with the views.
    pub fn resume_offsets(&self, topic: &str) -> Result<HashMap<i32, i64>> {
        Ok(self
            .store
            .offsets()?
            .into_iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, partition, next)| (partition, next))
            .collect())
    }

    /// Applies `events` in order, and records `offsets`, atomically.
    pub fn apply(&self, events: &[Event], offsets: &[SourceOffset]) -> Result<ApplyStats> {
        let mut slots = self.read_rows(events)?;
        let mut unseen_logs = self.unseen_logs(events)?;
        let mut logs = Vec::new();
        let mut steps: FxHashMap<i64, StepEvent> = FxHashMap::default();
        let mut stats = ApplyStats::default();

        for event in events {
            let changed = match event {
                Event::Step(e) => {
                    let current = steps
                        .get(&e.step_instance_id)
                        .map(|s| s.version)
                        .or_else(|| self.index.step(e.step_instance_id).map(|s| s.version));
                    let newer = current.is_none_or(|v| e.version > v);
                    if newer {
                        steps.insert(e.step_instance_id, e.clone());
                    }
                    newer
                }
                Event::StepTargets(e) => {
                    let mut any = false;
                    for h in &e.hosts {
                        let key = RowKey::of_target(e, h);
                        let slot = slots.get_mut(&key).expect("read_rows covers every row");
                        let created = slot.row.is_none();
                        let row = slot.row.get_or_insert_with(HostRow::waiting);
                        let changed = row.identity.merge(&h.info(), RANK_TARGETS) || created;
                        slot.dirty |= changed;
                        any |= changed;
                    }
                    any
                }
                Event::HostResult(e) => {
                    let key = RowKey::of_result(e);
                    let slot = slots.get_mut(&key).expect("read_rows covers every row");
                    let created = slot.row.is_none();
                    let row = slot.row.get_or_insert_with(HostRow::waiting);
                    // Identity merges by rank whatever the version order, so that an older
                    // event's ip is not lost when it arrives after a newer one without it.
                    let mut changed = row.identity.merge(&e.info(), result_rank(e.version));
                    if row.version.is_none_or(|v| e.version > v) {
                        row.status = e.status;
                        row.tag = e.tag.clone().unwrap_or_default();
                        row.version = Some(e.version);
                        row.exit_code = e.exit_code;
                        row.start_time = e.start_time;
                        row.end_time = e.end_time;
                        row.total_time = e.total_time;
                        changed = true;
                    }
                    slot.dirty |= changed || created;
                    changed || created
                }
                Event::HostLog(e) => {
                    let key = RowKey::of_log(e);
                    let new = unseen_logs.remove(&(key, e.offset));
                    if new {
                        logs.push((key, e));
                    }
                    new
                }
            };
            stats.count(event.kind(), changed);
        }

        let mut batch = StoreBatch::default();
        for step in steps.values() {
            self.store.put_step(&mut batch, step);
        }
        // The rows the batch changed, each encoded once (for the store and any hot copy), in key
        // order: RocksDB's memtable inserts sorted keys faster (it remembers where the previous
        // one went).
        let mut changed: Vec<(RowKey, &Slot, &HostRow, Vec<u8>)> = slots
            .iter()
            .filter(|(_, slot)| slot.dirty)
            .filter_map(|(key, slot)| {
                let row = slot.row.as_ref()?;
                Some((*key, slot, row, row.to_bytes()))
            })
            .collect();
        changed.sort_unstable_by_key(|(key, ..)| *key);
        for (key, _, _, encoded) in &changed {
            self.store.put_row(&mut batch, *key, encoded);
        }
        logs.sort_unstable_by_key(|(key, e)| (*key, e.offset));
        for (key, e) in logs {
            self.store.put_log(&mut batch, key, e.offset, &e.content);
        }
        for o in offsets {
            self.store
                .put_offset(&mut batch, &o.topic, o.partition, o.next);
        }
        let retries = self.index.retries_for_update(
            changed
                .iter()
                .map(|(key, ..)| (key.step, key.execute_count))
                .collect(),
        );
        let mut locked: BTreeMap<RetryId, _> =
            retries.iter().map(|(id, r)| (*id, r.write())).collect();
        if !batch.is_empty() {
            self.store.write(batch)?;
        }

        // The store holds the batch now; make it visible to queries.
        for step in steps.into_values() {
            self.index.set_step(step);
        }
        for (key, slot, row, encoded) in &changed {
            let before = slot.before.as_ref().map(|(s, t)| (*s, t.as_str()));
            let retry = locked
                .get_mut(&(key.step, key.execute_count))
                .expect("every changed retry is locked");
            self.index
                .place(retry, *key, before, (row.status, &row.tag), encoded);
        }
        Ok(stats)
    }

    /// Reads, in one multi-get, every host row the batch touches.
    fn read_rows(&self, events: &[Event]) -> Result<FxHashMap<RowKey, Slot>> {
        let mut keys: Vec<RowKey> = Vec::new();
        let mut seen: FxHashSet<RowKey> = FxHashSet::default();
        for event in events {
            match event {
                Event::StepTargets(e) => {
                    for h in &e.hosts {
                        let key = RowKey::of_target(e, h);
                        if seen.insert(key) {
                            keys.push(key);
                        }
                    }
                }
                Event::HostResult(e) => {
                    let key = RowKey::of_result(e);
                    if seen.insert(key) {
                        keys.push(key);
                    }
                }
                Event::Step(_) | Event::HostLog(_) => {}
            }
        }
        let rows = self.store.get_rows(&keys)?;
        Ok(keys
            .into_iter()
            .zip(rows)
            .map(|(key, row)| {
                let before = row.as_ref().map(|r| (r.status, r.tag.clone()));
                (
                    key,
                    Slot {
                        before,
                        row,
                        dirty: false,
                    },
                )
            })
            .collect())
    }

    /// The log chunks of the batch that the store does not hold yet.
    fn unseen_logs(&self, events: &[Event]) -> Result<FxHashSet<(RowKey, i64)>> {
        let chunks: Vec<(RowKey, i64)> = events
            .iter()
            .filter_map(|event| match event {
                Event::HostLog(e) => Some((RowKey::of_log(e), e.offset)),
                _ => None,
            })
            .collect();
        let exists = self.store.logs_exist(&chunks)?;
        Ok(chunks
            .into_iter()
            .zip(exists)
            .filter_map(|(c, e)| (!e).then_some(c))
            .collect())
    }
}
