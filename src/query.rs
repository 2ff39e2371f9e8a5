//! The semantics of `get_step_instance_status` (api.md, "Semantics") over the index and the store.
//!
//! Owns: which groups and hosts an answer holds, in which order, with which counts. Must not: parse
//! HTTP, choose a language or format JSON (that is `http`), or write anything.
//!
//! Cost: without `search_ip`/`keyword` an answer reads the group index (sizes and the first N hosts
//! of each selected group) and then only the rows it returns. With them, it scans the retry's rows
//! (and logs), as any substring search must.

use crate::events::{ScopeType, StepEvent};
use crate::index::{GroupKey, Index, RetryGroups};
use crate::store::keys::RowKey;
use crate::store::row::StoredRow;
use crate::store::Store;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::sync::Arc;

/// Step types (api.md, "Step types").
pub const STEP_TYPE_SCRIPT: i32 = 1;
pub const STEP_TYPE_MANUAL: i32 = 3;
pub const STEP_TYPE_SQL: i32 = 4;

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub struct GroupAnswer {
    pub status: i32,
    pub tag: String,
    pub host_size: usize,
    pub hosts: Vec<(RowKey, StoredRow)>,
}

pub struct StepAnswer {
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
}

pub fn answer(index: &Index, store: &Store, q: &StepQuery) -> Result<StepAnswer, QueryError> {
    let step = index
        .step(q.step_instance_id)
        .filter(|s| {
            s.bk_scope_type == q.scope_type
                && s.bk_scope_id == q.scope_id
                && s.job_instance_id == q.job_instance_id
        })
        .ok_or(QueryError::StepNotFound)?;
    if step.step_type == STEP_TYPE_MANUAL {
        return Err(QueryError::ManualStep);
    }
    if q.keyword.is_some() && !matches!(step.step_type, STEP_TYPE_SCRIPT | STEP_TYPE_SQL) {
        return Err(QueryError::KeywordOnFileStep);
    }
    let execute_count = q.execute_count.unwrap_or(step.execute_count);
    let groups = match index.retry(step.step_instance_id, execute_count) {
        None => Vec::new(),
        Some(retry) if q.search_ip.is_none() && q.keyword.is_none() => {
            from_index(index, store, q, execute_count, &retry.read())?
        }
        Some(retry) => {
            let known = retry.read().group_keys();
            by_scan(store, q, step.step_instance_id, execute_count, known)?
        }
    };
    Ok(StepAnswer {
        step,
        execute_count,
        groups,
    })
}

/// Sizes from the index; rows read only for the hosts returned.
fn from_index(
    index: &Index,
    store: &Store,
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
    for group in retry.group_keys() {
        let sets: Vec<(i32, &BTreeSet<i64>)> = batches
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
    let mut rows = fetch_rows(index, store, q, retry, &keys, in_scope)?.into_iter();
    Ok(plan
        .into_iter()
        .map(|(group, host_size, keys)| GroupAnswer {
            status: group.status,
            tag: group.tag.to_string(),
            host_size,
            hosts: keys
                .into_iter()
                .filter_map(|k| rows.next().flatten().map(|r| (k, r)))
                .collect(),
        })
        .collect())
}

/// Rows for `keys` (all of one retry; `in_scope` rows pass the batch filter): hot copies first,
/// the rest from the store, by point lookups or, when most of the scope is wanted, by one range
/// scan (cheaper per row). Rows a capped query read become hot.
fn fetch_rows(
    index: &Index,
    store: &Store,
    q: &StepQuery,
    retry: &RetryGroups,
    keys: &[RowKey],
    in_scope: usize,
) -> anyhow::Result<Vec<Option<StoredRow>>> {
    let mut rows = index.hot_rows(retry, keys);
    let missing: Vec<usize> = (0..keys.len()).filter(|&i| rows[i].is_none()).collect();
    if missing.is_empty() {
        return Ok(rows);
    }
    let wanted: Vec<RowKey> = missing.iter().map(|&i| keys[i]).collect();
    let fetched = if wanted.len() * SCAN_WHEN_ONE_IN >= in_scope {
        let retry_of = wanted[0];
        store.get_stored_rows_by_scan(retry_of.step, retry_of.execute_count, q.batch, &wanted)?
    } else {
        store.get_stored_rows(&wanted)?
    };
    for (i, row) in missing.iter().zip(fetched) {
        rows[*i] = row;
    }
    if q.max_host_num_per_group.is_some() {
        let fresh: Vec<(RowKey, StoredRow)> = missing
            .into_iter()
            .filter_map(|i| rows[i].clone().map(|row| (keys[i], row)))
            .collect();
        index.add_hot_rows(retry, &fresh);
    }
    Ok(rows)
}

/// A range scan beats point lookups once at least one row in this many is wanted.
const SCAN_WHEN_ONE_IN: usize = 4;

/// The first `n` (host, batch) pairs of the union of per-batch sorted sets, ordered by host, then
/// batch: a k-way merge, O(n log batches), whatever the step's host count.
fn first_hosts(sets: &[(i32, &BTreeSet<i64>)], n: usize) -> Vec<(i64, i32)> {
    let mut iters: Vec<_> = sets.iter().map(|(b, s)| (*b, s.iter())).collect();
    let mut heads: BinaryHeap<Reverse<(i64, i32, usize)>> = iters
        .iter_mut()
        .enumerate()
        .filter_map(|(i, (b, it))| it.next().map(|h| Reverse((*h, *b, i))))
        .collect();
    let total: usize = sets.iter().map(|(_, s)| s.len()).sum();
    let mut out = Vec::with_capacity(n.min(total));
    while out.len() < n {
        let Some(Reverse((host, batch, i))) = heads.pop() else {
            break;
        };
        out.push((host, batch));
        if let Some(next) = iters[i].1.next() {
            heads.push(Reverse((*next, batch, i)));
        }
    }
    out
}

/// Rows scanned from the store and filtered by `search_ip` / `keyword`.
fn by_scan(
    store: &Store,
    q: &StepQuery,
    step: i64,
    execute_count: i32,
    known: BTreeSet<GroupKey>,
) -> Result<Vec<GroupAnswer>, QueryError> {
    let matching_logs = match &q.keyword {
        Some(k) => Some(hosts_with_output(store, step, execute_count, q.batch, k)?),
        None => None,
    };
    let ip_needle = q.search_ip.as_deref();
    let ipv6_needle = ip_needle.map(str::to_lowercase);
    let mut groups: BTreeMap<GroupKey, Vec<(RowKey, StoredRow)>> =
        known.into_iter().map(|k| (k, Vec::new())).collect();
    for (key, row) in store.rows_in(step, execute_count, q.batch)? {
        let view = row.view();
        if let Some(needle) = ip_needle {
            let ip_hit = view.identity.ip.value.is_some_and(|ip| ip.contains(needle));
            let ipv6_hit = view.identity.ipv6.value.is_some_and(|v6| {
                v6.to_lowercase()
                    .contains(ipv6_needle.as_deref().expect("set with ip_needle"))
            });
            if !ip_hit && !ipv6_hit {
                continue;
            }
        }
        if let Some(hits) = &matching_logs {
            if !hits.contains(&key) {
                continue;
            }
        }
        let group = GroupKey {
            status: view.status,
            tag: view.tag.into(),
        };
        groups.entry(group).or_default().push((key, row));
    }
    let cap = q.cap();
    Ok(groups
        .into_iter()
        .map(|(group, mut hosts)| {
            let host_size = hosts.len();
            if q.selects(&group) {
                hosts.sort_by_key(|(k, _)| (k.host, k.batch));
                hosts.truncate(cap);
            } else {
                hosts.clear();
            }
            GroupAnswer {
                status: group.status,
                tag: group.tag.to_string(),
                host_size,
                hosts,
            }
        })
        .collect())
}

/// The rows whose captured output contains `keyword`, case-insensitively. Chunks are joined by
/// offset first, so that a match may span chunk boundaries; a gap in the offsets breaks a match.
fn hosts_with_output(
    store: &Store,
    step: i64,
    execute_count: i32,
    batch: Option<i32>,
    keyword: &str,
) -> anyhow::Result<HashSet<RowKey>> {
    let needle = keyword.to_lowercase();
    let mut hits = HashSet::new();
    let mut current: Option<RowKey> = None;
    let mut text: Vec<u8> = Vec::new();
    let mut end = 0i64;
    let mut flush = |row: Option<RowKey>, text: &mut Vec<u8>| {
        if let Some(row) = row {
            if String::from_utf8_lossy(text)
                .to_lowercase()
                .contains(&needle)
            {
                hits.insert(row);
            }
        }
        text.clear();
    };
    store.for_each_log_chunk(step, execute_count, batch, |row, offset, content| {
        if current != Some(row) {
            flush(current.take(), &mut text);
            current = Some(row);
            end = offset;
        }
        if offset > end {
            // A gap: what is before it cannot join what is after it.
            flush(current, &mut text);
            end = offset;
        }
        let skip = (end - offset) as usize;
        if skip < content.len() {
            text.extend_from_slice(&content[skip..]);
            end = offset.saturating_add(content.len() as i64);
        }
    })?;
    flush(current, &mut text);
    Ok(hits)
}

/// Step `total_time` per api.md: end − start when ended, now − start while running.
pub fn step_total_time(step: &StepEvent, now_ms: i64) -> Option<i64> {
    let start = step.start_time?;
    Some(step.end_time.unwrap_or(now_ms) - start)
}
