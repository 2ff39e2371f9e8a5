//! Folds events into the views: the only writer of the store and the index.
//!
//! Owns: the meaning of each event kind (events.md, "Ordering, duplicates and replays"):
//! version last-writer-wins for `step` and `host_result`, `step_targets` never downgrading a host
//! with a result, log chunks keyed by offset, identity fields merged by rank so that any
//! permutation of the same events gives the same state. Must not: read Kafka or answer queries.
//!
//! One call applies one batch as one RocksDB WriteBatch, together with the consumer offsets the
//! batch advances to and the retention clocks of its steps, and only then updates the in-memory
//! index of the steps that are in memory (or being loaded); the batch's steps stay locked in the
//! index, and the retries it changes write-locked, from before the store write until the index
//! has the batch. Expiry (retention) is applied here too, the same way: the only writer.

use crate::events::{Event, JobEvent, StepEvent, Subject};
use crate::index::Index;
use crate::store::clock::{Clock, Position};
use crate::store::keys::RowKey;
use crate::store::row::{result_rank, HostRow, RANK_TARGETS};
use crate::store::{Store, StoreBatch};
use anyhow::Result;
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::watch::Watches;

/// A log chunk: its host row and its offset in the host's log.
type LogChunk = (RowKey, i64);

/// Where the next message of a partition starts, stored with the state it follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOffset {
    pub topic: String,
    pub partition: i32,
    pub next: i64,
}

/// Events to apply together, with where they come from.
pub struct Batch<'a> {
    pub events: &'a [Event],
    /// Each event's position in its topic; `None` for events from no topic (files, tests),
    /// which the store numbers in the order they are applied.
    pub positions: Option<&'a [Position]>,
    /// When the events were produced (their broker time): their steps' retention clock.
    pub times: Times<'a>,
    /// The offsets the batch advances its partitions to, stored with it.
    pub offsets: &'a [SourceOffset],
}

impl<'a> Batch<'a> {
    /// Events from no topic, produced now.
    pub fn local(events: &'a [Event]) -> Batch<'a> {
        Batch {
            events,
            positions: None,
            times: Times::All(crate::now_ms()),
            offsets: &[],
        }
    }
}

/// When a batch's events were produced (Unix ms): a step's retention counts from its newest.
#[derive(Debug, Clone, Copy)]
pub enum Times<'a> {
    /// Each event's own (its message's broker time).
    Each(&'a [i64]),
    /// One for all of them.
    All(i64),
}

impl Times<'_> {
    fn of(&self, i: usize) -> i64 {
        match self {
            Times::Each(times) => times[i],
            Times::All(at) => *at,
        }
    }
}

/// What a batch did, per event: `changed` events altered a view; `expired` ones were for steps
/// that had expired (dropped); the rest were duplicates or superseded versions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    pub changed: HashMap<&'static str, u64>,
    pub unchanged: HashMap<&'static str, u64>,
    pub expired: HashMap<&'static str, u64>,
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

/// What one expiry pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// Steps whose views were deleted.
    pub steps: u64,
    /// Jobs whose records were deleted.
    pub jobs: u64,
    /// Tombstones of steps expired more than a retention period ago, forgotten.
    pub tombstones: u64,
}

pub struct Applier {
    store: Arc<Store>,
    index: Arc<Index>,
    watches: Arc<Watches>,
    /// Batches and expiry passes write one at a time.
    writing: Mutex<()>,
}

/// A host row while a batch is folded: what the store held before, and what it holds now.
struct Slot {
    before: Option<(i32, String)>,
    row: Option<HostRow>,
    dirty: bool,
}

impl Applier {
    pub fn new(store: Arc<Store>, index: Arc<Index>, watches: Arc<Watches>) -> Applier {
        Applier {
            store,
            index,
            watches,
            writing: Mutex::new(()),
        }
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

    /// Applies a batch's events in order, and records its offsets, atomically; then wakes the
    /// waiters of the steps it changed.
    pub fn apply(&self, batch: &Batch<'_>) -> Result<ApplyStats> {
        let _writing = self.writing.lock();
        let Batch {
            events,
            times,
            offsets,
            ..
        } = *batch;
        if let Times::Each(each) = times {
            anyhow::ensure!(each.len() == events.len(), "a time per event");
        }
        let mut store_batch = StoreBatch::default();
        let positions = self.positions(batch, &mut store_batch)?;
        let mut stats = ApplyStats::default();
        let subjects: Vec<Subject> = events
            .iter()
            .map(Event::subject)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let step_ids: Vec<i64> = subjects
            .iter()
            .filter_map(|s| match s {
                Subject::Step(id) => Some(*id),
                Subject::Job(_) => None,
            })
            .collect();
        // Per subject, when its newest event of the batch was produced.
        let mut produced: FxHashMap<Subject, i64> = FxHashMap::default();
        for (i, e) in events.iter().enumerate() {
            let at = produced.entry(e.subject()).or_insert(i64::MIN);
            *at = (*at).max(times.of(i));
        }
        let clocks: FxHashMap<Subject, Clock> = subjects
            .iter()
            .zip(self.store.get_clocks(&subjects)?)
            .filter_map(|(subject, clock)| Some((*subject, clock?)))
            .collect();
        // Events of steps and jobs that expired are dropped (their tombstone remembers them).
        let expired = |s: Subject| matches!(clocks.get(&s), Some(Clock::Expired { .. }));
        let kept: Vec<(&Event, Position)> = events
            .iter()
            .zip(positions)
            .filter(|(e, _)| {
                let gone = expired(e.subject());
                if gone {
                    *stats.expired.entry(e.kind()).or_default() += 1;
                }
                !gone
            })
            .collect();
        let kept_events: Vec<&Event> = kept.iter().map(|(e, _)| *e).collect();
        // A step the store has no clock for has never had an event: none of its rows or log
        // chunks exist, so there is nothing to read.
        let stored = |step: i64| clocks.contains_key(&Subject::Step(step));
        let mut slots = self.read_rows(&kept_events, stored)?;
        let mut unseen_logs = self.unseen_logs(&kept_events, stored)?;
        let (mut jobs, mut records) = self.read_versions(&kept_events)?;
        // Per step, the position of the last event that changed it.
        let mut changed_at: FxHashMap<i64, Position> = FxHashMap::default();
        let mut new_records: FxHashMap<i64, &StepEvent> = FxHashMap::default();
        let mut new_jobs: FxHashMap<i64, &JobEvent> = FxHashMap::default();
        let mut logs = Vec::new();

        for (event, position) in kept {
            let changed = match event {
                Event::Job(e) => {
                    let current = jobs.get(&e.job_instance_id).copied();
                    let newer = current.is_none_or(|v| e.version > v);
                    if newer {
                        jobs.insert(e.job_instance_id, e.version);
                        new_jobs.insert(e.job_instance_id, e);
                    }
                    newer
                }
                Event::Step(e) => {
                    let current = records.get(&e.step_instance_id).copied();
                    let newer = current.is_none_or(|v| e.version > v);
                    if newer {
                        records.insert(e.step_instance_id, e.version);
                        new_records.insert(e.step_instance_id, e);
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
                        row.error_code = e.error_code;
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
            if let (true, Subject::Step(step)) = (changed, event.subject()) {
                changed_at.insert(step, position);
            }
        }

        let mut batch = store_batch;
        for job in new_jobs.values() {
            self.store.put_job(&mut batch, job);
        }
        for step in new_records.values() {
            self.store.put_step(&mut batch, step);
            self.store
                .put_job_step(&mut batch, step.job_instance_id, step.step_instance_id);
        }
        for subject in subjects.iter().filter(|s| !expired(**s)) {
            let (before, last_before) = match clocks.get(subject) {
                Some(Clock::Live {
                    changed_at,
                    last_event_ms,
                }) => (*changed_at, *last_event_ms),
                _ => (Position::default(), i64::MIN),
            };
            let changed = match subject {
                Subject::Step(step) => changed_at.get(step).copied(),
                Subject::Job(_) => None,
            };
            // The newest event's time, in whatever order and batches the events came.
            let clock = Clock::Live {
                last_event_ms: last_before.max(produced[subject]),
                changed_at: changed.unwrap_or(before),
            };
            self.store.put_clock(&mut batch, *subject, clock);
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

        let (stripes, targets) = self.index.lock_steps(&step_ids);
        let retries = self.index.retries_for_update(
            &targets,
            changed
                .iter()
                .map(|(key, ..)| (key.step, key.execute_count))
                .collect(),
        );
        let mut locked: BTreeMap<(i64, i32), _> =
            retries.iter().map(|(id, r)| (*id, r.write())).collect();
        if !batch.is_empty() {
            self.store.write(batch)?;
        }

        // The store holds the batch now; make it visible to queries.
        for step in new_records.into_values() {
            self.index
                .set_record(&targets[&step.step_instance_id], step.clone());
        }
        for (key, slot, row, encoded) in &changed {
            let before = slot.before.as_ref().map(|(s, t)| (*s, t.as_str()));
            let retry = locked.get_mut(&(key.step, key.execute_count));
            let target = &targets[&key.step];
            self.index
                .place(target, retry, *key, before, (row.status, &row.tag), encoded);
        }
        drop(locked);
        // The position last, once what it stands for is visible (an answer reads it first).
        for (step, at) in &changed_at {
            self.index.set_changed_at(&targets[step], *at);
        }
        drop(stripes);
        for (step, at) in changed_at {
            self.watches.changed(step, at);
        }
        if let Some(step) = step_ids.first() {
            self.index.enforce_budget(*step);
        }
        Ok(stats)
    }

    /// Deletes the views of every step (and job) that `judged` says this instance may judge and
    /// whose last event is older than `keep_ms` at `now_ms`, leaving a tombstone that drops its
    /// late events, and forgets tombstones older than `keep_ms` too. RocksDB drops the data in
    /// compaction (range deletes): a pass costs one small write per step, whatever its size.
    pub fn expire(
        &self,
        now_ms: i64,
        keep_ms: i64,
        judged: impl Fn(Subject) -> bool,
    ) -> Result<Expired> {
        let _writing = self.writing.lock();
        let older = |ms: i64| ms.checked_add(keep_ms).is_some_and(|until| until < now_ms);
        let (mut expiring, mut forgotten) = (Vec::new(), Vec::new());
        self.store.for_each_clock(|subject, clock| match clock {
            Clock::Live { last_event_ms, .. } if older(last_event_ms) && judged(subject) => {
                expiring.push(subject)
            }
            Clock::Expired { at_ms } if older(at_ms) => forgotten.push(subject),
            _ => {}
        })?;
        let mut done = Expired::default();
        for subjects in expiring.chunks(1000) {
            let steps: Vec<i64> = subjects
                .iter()
                .filter_map(|s| match s {
                    Subject::Step(id) => Some(*id),
                    Subject::Job(_) => None,
                })
                .collect();
            let records = self.store.get_steps(&steps)?;
            let mut batch = StoreBatch::default();
            for (step, record) in steps.iter().zip(&records) {
                let job = record.as_ref().map(|r| r.job_instance_id);
                self.store.delete_step(&mut batch, *step, job);
            }
            for subject in subjects {
                if let Subject::Job(job) = subject {
                    self.store.delete_job(&mut batch, *job);
                }
                let clock = Clock::Expired { at_ms: now_ms };
                self.store.put_clock(&mut batch, *subject, clock);
            }
            let (stripes, _) = self.index.lock_steps(&steps);
            self.store.write(batch)?;
            for step in &steps {
                self.index.forget(*step);
            }
            drop(stripes);
            done.steps += steps.len() as u64;
            done.jobs += (subjects.len() - steps.len()) as u64;
        }
        if !forgotten.is_empty() {
            let mut batch = StoreBatch::default();
            for subject in &forgotten {
                self.store.delete_clock(&mut batch, *subject);
            }
            self.store.write(batch)?;
            done.tombstones = forgotten.len() as u64;
        }
        Ok(done)
    }

    /// Each event's position: the batch's own, or the next of the store's local sequence.
    fn positions(&self, batch: &Batch<'_>, store_batch: &mut StoreBatch) -> Result<Vec<Position>> {
        if let Some(positions) = batch.positions {
            anyhow::ensure!(
                positions.len() == batch.events.len(),
                "a position per event"
            );
            return Ok(positions.to_vec());
        }
        let first = self.store.local_sequence()?;
        let next = first + batch.events.len() as i64;
        self.store.put_local_sequence(store_batch, next);
        Ok((first..next)
            .map(|offset| Position {
                partition: Position::LOCAL,
                offset,
            })
            .collect())
    }

    /// The stored versions of the jobs and steps the batch has `job` and `step` events for.
    fn read_versions(
        &self,
        events: &[&Event],
    ) -> Result<(FxHashMap<i64, i64>, FxHashMap<i64, i64>)> {
        let jobs = stored_versions(
            events,
            |e| match e {
                Event::Job(j) => Some(j.job_instance_id),
                _ => None,
            },
            |ids| self.store.get_jobs(ids),
            |j| j.version,
        )?;
        let steps = stored_versions(
            events,
            |e| match e {
                Event::Step(s) => Some(s.step_instance_id),
                _ => None,
            },
            |ids| self.store.get_steps(ids),
            |s| s.version,
        )?;
        Ok((jobs, steps))
    }

    /// Reads, in one multi-get, every host row the batch touches of the steps that `stored`
    /// says the store may hold rows of; the others' rows are new.
    fn read_rows(
        &self,
        events: &[&Event],
        stored: impl Fn(i64) -> bool,
    ) -> Result<FxHashMap<RowKey, Slot>> {
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
                Event::Job(_) | Event::Step(_) | Event::HostLog(_) => {}
            }
        }
        let (read, new): (Vec<RowKey>, Vec<RowKey>) =
            keys.into_iter().partition(|key| stored(key.step));
        let rows = self.store.get_rows(&read)?;
        Ok(read
            .into_iter()
            .zip(rows)
            .chain(new.into_iter().map(|key| (key, None)))
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
    /// (Only the chunks of steps that `stored` says the store may hold are looked up.)
    fn unseen_logs(
        &self,
        events: &[&Event],
        stored: impl Fn(i64) -> bool,
    ) -> Result<FxHashSet<LogChunk>> {
        let (read, new): (Vec<LogChunk>, Vec<LogChunk>) = events
            .iter()
            .filter_map(|event| match event {
                Event::HostLog(e) => Some((RowKey::of_log(e), e.offset)),
                _ => None,
            })
            .partition(|(key, _)| stored(key.step));
        let exists = self.store.logs_exist(&read)?;
        Ok(read
            .into_iter()
            .zip(exists)
            .filter_map(|(c, e)| (!e).then_some(c))
            .chain(new)
            .collect())
    }
}

/// The stored versions of the records `id_of` picks events for, read in one multi-get.
fn stored_versions<T>(
    events: &[&Event],
    id_of: impl Fn(&Event) -> Option<i64>,
    read: impl Fn(&[i64]) -> Result<Vec<Option<T>>>,
    version: impl Fn(&T) -> i64,
) -> Result<FxHashMap<i64, i64>> {
    let ids: Vec<i64> = events
        .iter()
        .filter_map(|e| id_of(e))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(ids
        .iter()
        .zip(read(&ids)?)
        .filter_map(|(id, record)| Some((*id, version(&record?))))
        .collect())
}
