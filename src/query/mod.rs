//! The semantics of `get_step_instance_status` (api.md, "Semantics") over the index and the store,
//! behind one door: [`Reader`], which owns the answer types. `http` reads the views through it
//! and nothing else.
//!
//! Owns: which groups and hosts an answer holds, in which order, with which counts. Must not: parse
//! HTTP, choose a language or format JSON (that is `http`), or write the store (it holds a
//! read-only handle). It does fill the index's caches: a step is loaded on its first query (once
//! the caller may read it), and the rows capped queries return are kept as hot rows.
//!
//! Cost: without `search_ip`/`keyword` an answer reads the group index (sizes and the first N hosts
//! of each selected group) and then only the rows it returns. With them, it scans the retry's rows
//! (and logs, chunk by chunk) from one RocksDB snapshot, as any substring search must, checking
//! every few hundred rows whether its caller still wants the answer.
//!
//! Every call takes locks and may read RocksDB: call it from a blocking thread, never from an
//! async task.

use crate::events::{ScopeType, StepEvent};
use crate::index::{GroupKey, HostSet, Index, RetryGroups};
use crate::store::keys::RowKey;
use crate::store::row::StoredRow;
use crate::store::Store;
use crate::telemetry::ViewFigures;
use crate::watch::Watches;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use crate::store::clock::Position;
pub use crate::store::row::RowView;
pub use crate::store::CheckpointMade;
pub use crate::watch::Waiter;

mod jobs;
mod scan;

use scan::by_scan;

pub use jobs::{
    job_total_time, BatchLogAnswer, BatchLogQuery, HostLog, HostRef, JobQuery, JobStep, LogQuery,
    MAX_LOG_BYTES,
};

/// Step types (api.md, "Step types").
pub const STEP_TYPE_SCRIPT: i32 = 1;
pub const STEP_TYPE_MANUAL: i32 = 3;
pub const STEP_TYPE_SQL: i32 = 4;

/// Whether a step status means the step has finished (api.md, "Server-sent events"; 12,
/// "terminate failed", is still running).
pub fn is_finished(status: i32) -> bool {
    matches!(status, 3 | 4 | 5 | 6 | 8 | 9 | 11 | 13 | 14)
}

/// Capped answers up to this many hosts per group (and no search) are cheap: they read the index
/// and the rows they return. Anything else may cost time proportional to the step.
const CHEAP_CAP: i32 = 1000;

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StepQuery {
    pub scope_type: ScopeType,
    pub scope_id: String,
    pub job_instance_id: i64,
    pub step_instance_id: i64,
    pub execute_count: Option<i32>,
    pub batch: Option<i32>,
    pub max_host_num_per_group: Option<i32>,
    pub keyword: Option<String>,
    pub search_ip: Option<String>,
    pub status: Option<i32>,
    pub tag: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No such step, or it is in another scope or job: answered alike (api.md, "Errors").
    #[error("step not found")]
    StepNotFound,
    #[error("manual-confirmation steps have no host status")]
    ManualStep,
    #[error("keyword is only defined for script steps")]
    KeywordOnFileStep,
    /// No such job, or it is in another scope (siblings.md).
    #[error("job not found")]
    JobNotFound,
    /// An answer would carry more script output than this many bytes.
    #[error("more than {0} bytes of output")]
    TooMuchOutput(usize),
    /// The caller stopped waiting (went away, or its deadline passed).
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Set by whoever waits for an answer when it no longer wants it; scans stop soon after.
#[derive(Debug, Default)]
pub struct Cancel(AtomicBool);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub(super) fn check(&self) -> Result<(), QueryError> {
        if self.0.load(Ordering::Relaxed) {
            Err(QueryError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// How often (in rows or log chunks) a scan checks its [`Cancel`].
const CHECK_EVERY: usize = 256;

/// One host of an answer, as stored.
pub struct HostAnswer {
    pub bk_host_id: i64,
    row: StoredRow,
}

impl HostAnswer {
    pub fn view(&self) -> RowView<'_> {
        self.row.view()
    }
}

pub struct GroupAnswer {
    pub status: i32,
    pub tag: String,
    pub host_size: usize,
    pub hosts: Vec<HostAnswer>,
}

pub struct StepAnswer {
    /// Where the step stood when the answer was read: its ETag (never ahead of the answer).
    pub position: Position,
    pub step: Arc<StepEvent>,
    pub execute_count: i32,
    pub groups: Vec<GroupAnswer>,
}

impl StepQuery {
    fn selects(&self, group: &GroupKey) -> bool {
        self.status.is_none_or(|s| s == group.status)
            && self.tag.as_deref().is_none_or(|t| t == &*group.tag)
    }

    fn cap(&self) -> usize {
        self.max_host_num_per_group
            .map_or(usize::MAX, |n| n as usize)
    }

    /// True when the answer may cost time proportional to the step's host count: uncapped or
    /// largely capped answers, and substring searches.
    pub fn is_expensive(&self) -> bool {
        self.search_ip.is_some()
            || self.keyword.is_some()
            || self
                .max_host_num_per_group
                .is_none_or(|cap| cap > CHEAP_CAP)
    }
}

/// The views, read-only: the one way to them for answering requests, and to wait for their
/// changes.
#[derive(Clone)]
pub struct Reader {
    index: Arc<Index>,
    store: Store,
    watches: Arc<Watches>,
}

impl Reader {
    pub fn new(index: Arc<Index>, store: Store, watches: Arc<Watches>) -> Reader {
        Reader {
            index,
            store,
            watches,
        }
    }

    /// Starts waiting for changes of `step`; make it before reading the answer it is compared
    /// with.
    pub fn waiter(&self, step: i64) -> Waiter {
        self.watches.waiter(step)
    }

    /// Where a step that is in memory stands now (its ETag); `None` when it is not in memory.
    /// Loads nothing and reads no store: what a cache of answers checks its entries against.
    pub fn position_of(&self, step: i64) -> Option<Position> {
        self.index.resident(step).map(|index| index.changed_at())
    }

    /// Where `q`'s step stands now, if it is in memory and `q` may read it (its scope and job):
    /// what a conditional request is compared with before any answer is computed.
    pub fn position_for(&self, q: &StepQuery) -> Option<Position> {
        let index = self.index.resident(q.step_instance_id)?;
        let position = index.changed_at();
        let record = index.record()?;
        let readable = record.bk_scope_type == q.scope_type
            && record.bk_scope_id == q.scope_id
            && record.job_instance_id == q.job_instance_id;
        readable.then_some(position)
    }

    /// The answer to `q` (blocking: see the module comment). A step that is not in memory is
    /// loaded first.
    pub fn answer(&self, q: &StepQuery, cancel: &Cancel) -> Result<StepAnswer, QueryError> {
        let admits = |s: &StepEvent| {
            s.bk_scope_type == q.scope_type
                && s.bk_scope_id == q.scope_id
                && s.job_instance_id == q.job_instance_id
        };
        let index = self
            .index
            .step(q.step_instance_id, &self.store, admits)?
            .ok_or(QueryError::StepNotFound)?;
        // Before anything it stands for (see StepIndex::changed_at).
        let position = index.changed_at();
        let step = index
            .record()
            .filter(|s| admits(s))
            .ok_or(QueryError::StepNotFound)?;
        if step.step_type == STEP_TYPE_MANUAL {
            return Err(QueryError::ManualStep);
        }
        if q.keyword.is_some() && !matches!(step.step_type, STEP_TYPE_SCRIPT | STEP_TYPE_SQL) {
            return Err(QueryError::KeywordOnFileStep);
        }
        let execute_count = q.execute_count.unwrap_or(step.execute_count);
        let groups = match index.retry(execute_count) {
            None => Vec::new(),
            Some(retry) if q.search_ip.is_none() && q.keyword.is_none() => {
                self.groups_from_index(q, execute_count, &retry.read())?
            }
            Some(retry) => {
                // The groups and the snapshot are taken together under the retry's lock, which
                // apply holds across its store write and index update: one moment for both.
                let (known, snapshot) = {
                    let retry = retry.read();
                    (retry.group_keys(q.batch), self.store.snapshot())
                };
                by_scan(&snapshot, q, execute_count, known, cancel)?
            }
        };
        Ok(StepAnswer {
            position,
            step,
            execute_count,
            groups,
        })
    }

    /// Figures for `/metrics`: running values, as cheap at 10 hosts as at 10 million.
    pub fn figures(&self) -> ViewFigures {
        ViewFigures {
            index: self.index.figures(),
            members: None,
            rocksdb: self.store.figures(),
            checkpoints: self.store.checkpoint_figures(),
        }
    }

    /// A checkpoint of the views (`store::checkpoint`): a complete data directory of this
    /// moment. It reads the store and writes nothing to it.
    pub fn checkpoint(&self) -> anyhow::Result<CheckpointMade> {
        self.store.checkpoint()
    }

    /// Sizes from the index; rows read only for the hosts returned.
    fn groups_from_index(
        &self,
        q: &StepQuery,
        execute_count: i32,
        retry: &RetryGroups,
    ) -> Result<Vec<GroupAnswer>, QueryError> {
        let step = q.step_instance_id;
        let batches: Vec<_> = retry
            .batches
            .iter()
            .filter(|(b, _)| q.batch.is_none_or(|want| want == **b))
            .collect();
        let mut plan: Vec<(GroupKey, usize, Vec<RowKey>)> = Vec::new();
        for group in retry.group_keys(q.batch) {
            let sets: Vec<(i32, &HostSet)> = batches
                .iter()
                .filter_map(|(b, g)| g.groups.get(&group).map(|set| (**b, set)))
                .collect();
            let size = sets.iter().map(|(_, s)| s.len()).sum();
            let keys = if q.selects(&group) {
                first_hosts(&sets, q.cap())
                    .into_iter()
                    .map(|(host, batch)| RowKey::of_event(step, execute_count, batch, host))
                    .collect()
            } else {
                Vec::new()
            };
            plan.push((group, size, keys));
        }
        let keys: Vec<RowKey> = plan
            .iter()
            .flat_map(|(_, _, k)| k.iter().copied())
            .collect();
        let in_scope: usize = plan.iter().map(|(_, size, _)| size).sum();
        let mut rows = self.fetch_rows(q, retry, &keys, in_scope)?.into_iter();
        Ok(plan
            .into_iter()
            .map(|(group, host_size, keys)| GroupAnswer {
                status: group.status,
                tag: group.tag.to_string(),
                host_size,
                hosts: keys
                    .into_iter()
                    .filter_map(|k| {
                        rows.next().flatten().map(|row| HostAnswer {
                            bk_host_id: k.host,
                            row,
                        })
                    })
                    .collect(),
            })
            .collect())
    }

    /// Rows for `keys` (all of one retry; `in_scope` rows pass the batch filter): hot copies
    /// first, the rest from the store, by point lookups or, when most of the scope is wanted, by
    /// one range scan (cheaper per row). Rows a capped query read become hot.
    fn fetch_rows(
        &self,
        q: &StepQuery,
        retry: &RetryGroups,
        keys: &[RowKey],
        in_scope: usize,
    ) -> anyhow::Result<Vec<Option<StoredRow>>> {
        let mut rows = self.index.hot_rows(retry, keys);
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| rows[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(rows);
        }
        let wanted: Vec<RowKey> = missing.iter().map(|&i| keys[i]).collect();
        let fetched = if wanted.len() * SCAN_WHEN_ONE_IN >= in_scope {
            let retry_of = wanted[0];
            self.store.get_stored_rows_by_scan(
                retry_of.step,
                retry_of.execute_count,
                q.batch,
                &wanted,
            )?
        } else {
            self.store.get_stored_rows(&wanted)?
        };
        for (i, row) in missing.iter().zip(fetched) {
            rows[*i] = row;
        }
        if q.max_host_num_per_group.is_some() {
            let fresh: Vec<(RowKey, StoredRow)> = missing
                .into_iter()
                .filter_map(|i| rows[i].clone().map(|row| (keys[i], row)))
                .collect();
            self.index.add_hot_rows(retry, &fresh);
        }
        Ok(rows)
    }
}

/// A range scan beats point lookups once at least one row in this many is wanted.
const SCAN_WHEN_ONE_IN: usize = 4;

/// The first `n` (host, batch) pairs of the union of per-batch sorted sets, ordered by host, then
/// batch: a k-way merge, O(n log batches), whatever the step's host count.
fn first_hosts(sets: &[(i32, &HostSet)], n: usize) -> Vec<(i64, i32)> {
    let mut iters: Vec<_> = sets.iter().map(|(b, s)| (*b, s.iter())).collect();
    let mut heads: BinaryHeap<Reverse<(i64, i32, usize)>> = iters
        .iter_mut()
        .enumerate()
        .filter_map(|(i, (b, it))| it.next().map(|h| Reverse((h, *b, i))))
        .collect();
    let total: usize = sets.iter().map(|(_, s)| s.len()).sum();
    let mut out = Vec::with_capacity(n.min(total));
    while out.len() < n {
        let Some(Reverse((host, batch, i))) = heads.pop() else {
            break;
        };
        out.push((host, batch));
        if let Some(next) = iters[i].1.next() {
            heads.push(Reverse((next, batch, i)));
        }
    }
    out
}

/// Step `total_time` per api.md.
pub fn step_total_time(step: &StepEvent, now_ms: i64) -> Option<i64> {
    total_time(step.start_time, step.end_time, step.total_time, now_ms)
}

/// `total_time` per api.md: the event's when ended and given, else end − start; now − start
/// while running; null before start, or when a difference does not fit.
pub fn total_time(
    start: Option<i64>,
    end: Option<i64>,
    given: Option<i64>,
    now_ms: i64,
) -> Option<i64> {
    let start = start?;
    match end {
        Some(end) => given.or_else(|| end.checked_sub(start)),
        None => now_ms.checked_sub(start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_total_time_never_overflows() {
        let mut step: StepEvent = serde_json::from_str(
            r#"{"job_instance_id":1,"step_instance_id":1,"bk_scope_type":"biz","bk_scope_id":"2",
                "name":"s","type":1,"status":2,"execute_count":0,"create_time":0,"version":1}"#,
        )
        .unwrap();
        assert_eq!(step_total_time(&step, 10), None);
        step.start_time = Some(i64::MIN);
        assert_eq!(step_total_time(&step, i64::MAX), None);
        step.start_time = Some(5);
        assert_eq!(step_total_time(&step, 12), Some(7));
        step.end_time = Some(i64::MIN);
        assert_eq!(step_total_time(&step, 12), None);
    }
}
