//! What a batch of events changes, given what the views held before: pure (the prior state is
//! read first, through [`Stored`], and the changes written after, by `commit`). The meaning of
//! each event kind lives here (events.md, "Ordering, duplicates and replays"): version
//! last-writer-wins for `job`, `step` and `host_result`, `step_targets` never downgrading a host
//! with a result, log chunks keyed by offset, identity fields merged by rank, so that any
//! permutation of the same events gives the same state; events of expired steps dropped.

use super::Times;
use crate::events::{Event, HostLog, JobEvent, StepEvent, Subject};
use crate::store::clock::{Clock, Position};
use crate::store::keys::RowKey;
use crate::store::row::{result_rank, HostRow, RANK_TARGETS};
use anyhow::Result;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{BTreeSet, HashMap};

/// A log chunk: its host row and its offset in the host's output.
pub type LogChunk = (RowKey, i64);

/// What the views hold, as a fold reads it (RocksDB for apply; a model in tests).
pub trait Stored {
    fn clocks(&self, subjects: &[Subject]) -> Result<Vec<Option<Clock>>>;
    fn rows(&self, keys: &[RowKey]) -> Result<Vec<Option<HostRow>>>;
    fn logs_exist(&self, chunks: &[LogChunk]) -> Result<Vec<bool>>;
    /// The stored versions of these jobs' records.
    fn job_versions(&self, ids: &[i64]) -> Result<Vec<Option<i64>>>;
    /// The stored versions of these steps' records.
    fn step_versions(&self, ids: &[i64]) -> Result<Vec<Option<i64>>>;
}

/// What a batch did, per event kind: `changed` events altered a view; `expired` ones were for
/// steps that had expired (dropped); the rest were duplicates or superseded versions.
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

/// The views' state that a batch touches, as it was before the batch.
pub struct Prior {
    clocks: FxHashMap<Subject, Clock>,
    rows: FxHashMap<RowKey, HostRow>,
    stored_logs: FxHashSet<LogChunk>,
    jobs: FxHashMap<i64, i64>,
    steps: FxHashMap<i64, i64>,
}

impl Prior {
    /// Reads what `events` touch: their subjects' clocks; the rows and log chunks of steps that
    /// have a clock (one without has never had an event, so it has none: nothing to read); the
    /// versions of the records they carry.
    pub fn read(events: &[Event], stored: &impl Stored) -> Result<Prior> {
        let subjects: Vec<Subject> = events
            .iter()
            .map(Event::subject)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let clocks: FxHashMap<Subject, Clock> = subjects
            .iter()
            .zip(stored.clocks(&subjects)?)
            .filter_map(|(s, clock)| Some((*s, clock?)))
            .collect();
        let has_clock = |step: i64| clocks.contains_key(&Subject::Step(step));
        let mut keys: Vec<RowKey> = Vec::new();
        let mut chunks: Vec<LogChunk> = Vec::new();
        let (mut jobs, mut steps) = (BTreeSet::new(), BTreeSet::new());
        for event in events {
            match event {
                Event::StepTargets(e) if has_clock(e.step_instance_id) => {
                    keys.extend(e.hosts.iter().map(|h| RowKey::of_target(e, h)));
                }
                Event::HostResult(e) if has_clock(e.step_instance_id) => {
                    keys.push(RowKey::of_result(e));
                }
                Event::HostLog(e) if has_clock(e.step_instance_id) => {
                    chunks.push((RowKey::of_log(e), e.offset));
                }
                Event::Job(e) => {
                    jobs.insert(e.job_instance_id);
                }
                Event::Step(e) => {
                    steps.insert(e.step_instance_id);
                }
                _ => {}
            }
        }
        keys.sort_unstable();
        keys.dedup();
        chunks.sort_unstable();
        chunks.dedup();
        let rows = keys
            .iter()
            .zip(stored.rows(&keys)?)
            .filter_map(|(k, row)| Some((*k, row?)))
            .collect();
        let stored_logs = chunks
            .iter()
            .zip(stored.logs_exist(&chunks)?)
            .filter_map(|(c, exists)| exists.then_some(*c))
            .collect();
        Ok(Prior {
            jobs: versions(jobs, |ids| stored.job_versions(ids))?,
            steps: versions(steps, |ids| stored.step_versions(ids))?,
            clocks,
            rows,
            stored_logs,
        })
    }
}

/// Stored versions of records, in the order asked.
type Versions = Result<Vec<Option<i64>>>;

/// The stored versions of the records `ids` name, by id (of those that have one).
fn versions(ids: BTreeSet<i64>, read: impl Fn(&[i64]) -> Versions) -> Result<FxHashMap<i64, i64>> {
    let ids: Vec<i64> = ids.into_iter().collect();
    Ok(ids
        .iter()
        .zip(read(&ids)?)
        .filter_map(|(id, v)| Some((*id, v?)))
        .collect())
}

/// A host row the batch changed: its group before (`None`: a new row) and the row now.
pub struct RowChange {
    pub key: RowKey,
    pub before: Option<(i32, String)>,
    pub row: HostRow,
}

/// What a batch changes.
pub struct Changes<'e> {
    pub stats: ApplyStats,
    /// The steps the batch has events of (changed or not), ascending.
    pub steps: Vec<i64>,
    pub new_jobs: Vec<&'e JobEvent>,
    pub new_steps: Vec<&'e StepEvent>,
    /// In key order (RocksDB's memtable inserts sorted keys faster).
    pub rows: Vec<RowChange>,
    /// New log chunks, in key and offset order.
    pub logs: Vec<(RowKey, &'e HostLog)>,
    /// The clock of every subject the batch has events of but expired ones.
    pub clocks: Vec<(Subject, Clock)>,
    /// Per step, the position of the last event that changed it.
    pub changed_at: FxHashMap<i64, Position>,
}

/// A host row while a batch is folded.
struct Slot {
    before: Option<(i32, String)>,
    row: Option<HostRow>,
    dirty: bool,
}

/// Folds `events` (at `positions`, produced at `times`) into `prior`: the changes to write.
pub fn fold<'e>(
    prior: Prior,
    events: &'e [Event],
    positions: &[Position],
    times: Times<'_>,
) -> Changes<'e> {
    let Prior {
        clocks,
        rows,
        stored_logs,
        mut jobs,
        steps: mut records,
    } = prior;
    let mut stats = ApplyStats::default();
    let expired = |s: Subject| matches!(clocks.get(&s), Some(Clock::Expired { .. }));
    let mut slots: FxHashMap<RowKey, Slot> = rows
        .into_iter()
        .map(|(key, row)| {
            let before = Some((row.status, row.tag.clone()));
            let slot = Slot {
                before,
                row: Some(row),
                dirty: false,
            };
            (key, slot)
        })
        .collect();
    let mut seen_logs = stored_logs;
    // Per subject, when its newest event of the batch was produced.
    let mut produced: FxHashMap<Subject, i64> = FxHashMap::default();
    let mut changed_at: FxHashMap<i64, Position> = FxHashMap::default();
    let mut new_jobs: FxHashMap<i64, &JobEvent> = FxHashMap::default();
    let mut new_steps: FxHashMap<i64, &StepEvent> = FxHashMap::default();
    let mut logs = Vec::new();

    for (i, (event, position)) in events.iter().zip(positions).enumerate() {
        let subject = event.subject();
        if expired(subject) {
            // A tombstone remembers the step: its late events are dropped.
            *stats.expired.entry(event.kind()).or_default() += 1;
            continue;
        }
        let at = produced.entry(subject).or_insert(i64::MIN);
        *at = (*at).max(times.of(i));
        let changed = match event {
            Event::Job(e) => {
                let newer = jobs.get(&e.job_instance_id).is_none_or(|v| e.version > *v);
                if newer {
                    jobs.insert(e.job_instance_id, e.version);
                    new_jobs.insert(e.job_instance_id, e);
                }
                newer
            }
            Event::Step(e) => {
                let newer = records
                    .get(&e.step_instance_id)
                    .is_none_or(|v| e.version > *v);
                if newer {
                    records.insert(e.step_instance_id, e.version);
                    new_steps.insert(e.step_instance_id, e);
                }
                newer
            }
            Event::StepTargets(e) => {
                let mut any = false;
                for h in &e.hosts {
                    let slot = slot(&mut slots, RowKey::of_target(e, h));
                    let created = slot.row.is_none();
                    let row = slot.row.get_or_insert_with(HostRow::waiting);
                    let changed = row.identity.merge(&h.info(), RANK_TARGETS) || created;
                    slot.dirty |= changed;
                    any |= changed;
                }
                any
            }
            Event::HostResult(e) => {
                let slot = slot(&mut slots, RowKey::of_result(e));
                let created = slot.row.is_none();
                let row = slot.row.get_or_insert_with(HostRow::waiting);
                // Identity merges by rank whatever the version order, so that an older event's
                // ip is not lost when it arrives after a newer one without it.
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
                    // Naming its own retry is the same as naming none: stored as none.
                    row.log_execute_count = e.log_execute_count.filter(|&c| c != e.execute_count);
                    changed = true;
                }
                slot.dirty |= changed || created;
                changed || created
            }
            Event::HostLog(e) => {
                let new = seen_logs.insert((RowKey::of_log(e), e.offset));
                if new {
                    logs.push((RowKey::of_log(e), e));
                }
                new
            }
        };
        stats.count(event.kind(), changed);
        if let (true, Subject::Step(step)) = (changed, subject) {
            changed_at.insert(step, *position);
        }
    }

    let mut subjects: Vec<Subject> = produced.keys().copied().collect();
    subjects.sort_unstable();
    let clocks_after = subjects
        .iter()
        .map(|subject| {
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
            (*subject, clock)
        })
        .collect();
    let mut rows: Vec<RowChange> = slots
        .into_iter()
        .filter(|(_, slot)| slot.dirty)
        .filter_map(|(key, slot)| {
            Some(RowChange {
                key,
                before: slot.before,
                row: slot.row?,
            })
        })
        .collect();
    rows.sort_unstable_by_key(|r| r.key);
    logs.sort_unstable_by_key(|(key, e)| (*key, e.offset));
    let steps = events
        .iter()
        .filter_map(|e| match e.subject() {
            Subject::Step(id) => Some(id),
            Subject::Job(_) => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Changes {
        stats,
        steps,
        new_jobs: new_jobs.into_values().collect(),
        new_steps: new_steps.into_values().collect(),
        rows,
        logs,
        clocks: clocks_after,
        changed_at,
    }
}

/// The slot of a row: as read, or new.
fn slot(slots: &mut FxHashMap<RowKey, Slot>, key: RowKey) -> &mut Slot {
    slots.entry(key).or_insert(Slot {
        before: None,
        row: None,
        dirty: false,
    })
}
