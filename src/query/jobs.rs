//! The sibling APIs' semantics (siblings.md) over the same views: a job's status with its steps
//! (and their hosts), and hosts' script output.

use super::{total_time, Cancel, HostAnswer, QueryError, Reader, CHECK_EVERY};
use crate::events::{JobEvent, ScopeType, StepEvent};
use crate::store::keys::RowKey;
use crate::store::row::StoredRow;
use crate::store::StoreSnapshot;

/// Step types whose hosts have script output (api.md, "Step types").
const SCRIPT_TYPES: [i32; 2] = [super::STEP_TYPE_SCRIPT, super::STEP_TYPE_SQL];

/// Most bytes of output one answer carries (siblings.md gives it for the batch API; one host's
/// log is bounded the same way): more is refused with 1240003 before it is all read.
pub const MAX_LOG_BYTES: usize = 64 << 20;

/// `get_job_instance_status`, validated.
#[derive(Debug, Clone)]
pub struct JobQuery {
    pub scope_type: ScopeType,
    pub scope_id: String,
    pub job_instance_id: i64,
    pub return_ip_result: bool,
}

pub struct JobStep {
    pub step: StepEvent,
    /// With `return_ip_result`: every host row of the latest retry, by host then batch.
    pub hosts: Option<Vec<HostAnswer>>,
}

/// A host as the log APIs name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRef {
    Id(i64),
    CloudIp { bk_cloud_id: i64, ip: String },
}

/// `get_job_instance_ip_log`, validated.
#[derive(Debug, Clone)]
pub struct LogQuery {
    pub scope_type: ScopeType,
    pub scope_id: String,
    pub job_instance_id: i64,
    pub step_instance_id: i64,
    pub host: HostRef,
    pub execute_count: Option<i32>,
    pub batch: Option<i32>,
}

/// `batch_get_job_instance_ip_log`, validated.
#[derive(Debug, Clone)]
pub struct BatchLogQuery {
    pub scope_type: ScopeType,
    pub scope_id: String,
    pub job_instance_id: i64,
    pub step_instance_id: i64,
    pub hosts: Vec<HostRef>,
    pub execute_count: Option<i32>,
}

/// One host's output (script steps) or its place (file steps, which carry no logs).
pub struct HostLog {
    pub bk_host_id: Option<i64>,
    pub ip: Option<String>,
    pub bk_cloud_id: Option<i64>,
    pub log_content: String,
}

pub struct BatchLogAnswer {
    /// True for script and SQL steps (log type 1); file steps answer no logs (type 2).
    pub script: bool,
    pub logs: Vec<HostLog>,
}

/// The step a log query names, checked against its job and scope.
struct LogStep {
    step: StepEvent,
    execute_count: i32,
    /// A script or SQL step: its hosts have output.
    script: bool,
}

impl HostRef {
    fn matches(&self, key: &RowKey, row: &StoredRow) -> bool {
        match self {
            HostRef::Id(id) => key.host == *id,
            HostRef::CloudIp { bk_cloud_id, ip } => {
                let view = row.view();
                view.identity.ip.value == Some(ip.as_str())
                    && view.identity.bk_cloud_id.value == Some(*bk_cloud_id)
            }
        }
    }

    /// What the answer says of a host that is not a target of the step.
    fn unknown(&self) -> HostLog {
        let (bk_host_id, ip, bk_cloud_id) = match self {
            HostRef::Id(id) => (Some(*id), None, None),
            HostRef::CloudIp { bk_cloud_id, ip } => (None, Some(ip.clone()), Some(*bk_cloud_id)),
        };
        HostLog {
            bk_host_id,
            ip,
            bk_cloud_id,
            log_content: String::new(),
        }
    }
}

impl Reader {
    /// The job's record (1244006 when it has none, or is in another scope).
    pub fn job(&self, q: &JobQuery) -> Result<JobEvent, QueryError> {
        let job = self.store.get_jobs(&[q.job_instance_id])?.remove(0);
        job.filter(|j| j.bk_scope_type == q.scope_type && j.bk_scope_id == q.scope_id)
            .ok_or(QueryError::JobNotFound)
    }

    /// The job's steps in the query's scope that `held` keeps (on a shard: those of the
    /// partitions it serves), ordered by `step_order`, then id (steps without an order last);
    /// with `return_ip_result` the hosts of each step's latest retry. A step of another scope is
    /// never returned, whatever job it names.
    pub fn job_steps(
        &self,
        q: &JobQuery,
        held: impl Fn(i64) -> bool,
        cancel: &Cancel,
    ) -> Result<Vec<JobStep>, QueryError> {
        let ids: Vec<i64> = self
            .store
            .job_steps(q.job_instance_id)?
            .into_iter()
            .filter(|id| held(*id))
            .collect();
        let mut steps: Vec<StepEvent> = self
            .store
            .get_steps(&ids)?
            .into_iter()
            .flatten()
            .filter(|s| {
                s.job_instance_id == q.job_instance_id
                    && s.bk_scope_type == q.scope_type
                    && s.bk_scope_id == q.scope_id
            })
            .collect();
        steps.sort_by_key(|s| (s.step_order.is_none(), s.step_order, s.step_instance_id));
        let snapshot = q.return_ip_result.then(|| self.store.snapshot());
        steps
            .into_iter()
            .map(|step| {
                cancel.check()?;
                let hosts = match &snapshot {
                    None => None,
                    Some(snapshot) => Some(retry_hosts(
                        snapshot,
                        step.step_instance_id,
                        step.execute_count,
                    )?),
                };
                Ok(JobStep { step, hosts })
            })
            .collect()
    }

    /// `get_job_instance_ip_log`: one host's output for one retry and batch (by default the
    /// latest retry and the host's lowest batch).
    pub fn ip_log(&self, q: &LogQuery, cancel: &Cancel) -> Result<(bool, HostLog), QueryError> {
        let ids = (q.job_instance_id, q.step_instance_id);
        let LogStep {
            step,
            execute_count,
            script,
        } = self.log_step(q.scope_type, &q.scope_id, ids, q.execute_count)?;
        let snapshot = self.store.snapshot();
        let rows = host_rows(&snapshot, &step, execute_count, &q.host, q.batch, cancel)?;
        let Some((key, row)) = rows.first() else {
            return Ok((script, q.host.unknown()));
        };
        let log_content = if script {
            output_of(&snapshot, &rows[..1], MAX_LOG_BYTES)?
        } else {
            String::new()
        };
        Ok((script, host_log(*key, row, log_content)))
    }

    /// `batch_get_job_instance_ip_log`: the output of each host asked, in the order asked,
    /// leaving out hosts that are not targets; a host in several batches has its output joined
    /// by batch.
    pub fn batch_ip_logs(
        &self,
        q: &BatchLogQuery,
        cancel: &Cancel,
    ) -> Result<BatchLogAnswer, QueryError> {
        let ids = (q.job_instance_id, q.step_instance_id);
        let LogStep {
            step,
            execute_count,
            script,
        } = self.log_step(q.scope_type, &q.scope_id, ids, q.execute_count)?;
        if !script {
            return Ok(BatchLogAnswer {
                script,
                logs: Vec::new(),
            });
        }
        let snapshot = self.store.snapshot();
        let mut logs = Vec::new();
        let mut bytes = 0;
        for host in &q.hosts {
            let rows = host_rows(&snapshot, &step, execute_count, host, None, cancel)?;
            let Some((first, row)) = rows.first() else {
                continue;
            };
            let content = output_of(&snapshot, &rows, MAX_LOG_BYTES - bytes)?;
            bytes += content.len();
            logs.push(host_log(*first, row, content));
        }
        Ok(BatchLogAnswer { script, logs })
    }

    /// The step of a log query (its job and step ids, in a scope): its job must be known in the
    /// scope (1244006), and the step be the job's (1244007).
    fn log_step(
        &self,
        scope_type: ScopeType,
        scope_id: &str,
        (job, step): (i64, i64),
        execute_count: Option<i32>,
    ) -> Result<LogStep, QueryError> {
        let scope = (scope_type, scope_id);
        let record = self.store.get_steps(&[step])?.remove(0);
        let job_record = self.store.get_jobs(&[job])?.remove(0);
        let job_scope = match &job_record {
            Some(j) => Some((j.bk_scope_type, j.bk_scope_id.clone())),
            // No job event yet: the job is known by its steps, in their scope.
            None => {
                let steps = self.store.job_steps(job)?;
                let first = self.store.get_steps(&steps[..steps.len().min(1)])?;
                first
                    .into_iter()
                    .flatten()
                    .next()
                    .map(|s| (s.bk_scope_type, s.bk_scope_id))
            }
        };
        let known = job_scope.is_some_and(|(t, id)| (t, id.as_str()) == scope);
        if !known {
            return Err(QueryError::JobNotFound);
        }
        let step = record
            .filter(|s| s.job_instance_id == job)
            .filter(|s| (s.bk_scope_type, s.bk_scope_id.as_str()) == scope)
            .ok_or(QueryError::StepNotFound)?;
        Ok(LogStep {
            execute_count: execute_count.unwrap_or(step.execute_count),
            script: SCRIPT_TYPES.contains(&step.step_type),
            step,
        })
    }
}

/// Every host row of one retry, ordered by host then batch.
fn retry_hosts(
    snapshot: &StoreSnapshot<'_>,
    step: i64,
    execute_count: i32,
) -> Result<Vec<HostAnswer>, QueryError> {
    let mut rows = snapshot.rows_in(step, execute_count, None)?;
    rows.sort_by_key(|(k, _)| (k.host, k.batch));
    Ok(rows
        .into_iter()
        .map(|(k, row)| HostAnswer {
            bk_host_id: k.host,
            row,
        })
        .collect())
}

/// The rows of `host` in one retry (in one batch, or in all, lowest first).
fn host_rows(
    snapshot: &StoreSnapshot<'_>,
    step: &StepEvent,
    execute_count: i32,
    host: &HostRef,
    batch: Option<i32>,
    cancel: &Cancel,
) -> Result<Vec<(RowKey, StoredRow)>, QueryError> {
    let mut rows = Vec::new();
    let mut seen = 0usize;
    snapshot.for_each_row_in(step.step_instance_id, execute_count, batch, |key, row| {
        seen += 1;
        if seen.is_multiple_of(CHECK_EVERY) && cancel.check().is_err() {
            anyhow::bail!("cancelled");
        }
        if host.matches(&key, &row) {
            rows.push((key, row));
        }
        Ok(())
    })?;
    cancel.check()?;
    Ok(rows)
}

/// The output of these rows joined: each row's chunks (those of the retry whose output it shows)
/// in offset order (an overlap read once, a gap left out), the rows one after the other; refused
/// as soon as it passes `budget` bytes.
fn output_of(
    snapshot: &StoreSnapshot<'_>,
    rows: &[(RowKey, StoredRow)],
    budget: usize,
) -> Result<String, QueryError> {
    let mut out = Vec::new();
    for (key, row) in rows {
        let mut end = 0i64;
        let output = row.view().output_key(*key);
        let read = snapshot.for_each_log_chunk_of(output, |offset, content| {
            let skip = usize::try_from(end.saturating_sub(offset).max(0)).unwrap_or(usize::MAX);
            if skip < content.len() {
                out.extend_from_slice(&content[skip..]);
                anyhow::ensure!(out.len() <= budget, TooMuch);
            }
            end = end.max(offset.saturating_add(content.len() as i64));
            Ok(())
        });
        match read {
            Err(e) if e.is::<TooMuch>() => return Err(QueryError::TooMuchOutput(MAX_LOG_BYTES)),
            other => other?,
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Output past its budget: stops a chunk walk.
#[derive(Debug, thiserror::Error)]
#[error("output over its budget")]
struct TooMuch;

fn host_log(key: RowKey, row: &StoredRow, log_content: String) -> HostLog {
    let view = row.view();
    HostLog {
        bk_host_id: Some(key.host),
        ip: view.identity.ip.value.map(str::to_owned),
        bk_cloud_id: view.identity.bk_cloud_id.value,
        log_content,
    }
}

/// A job's or step's `total_time` (api.md): as for a step.
pub fn job_total_time(job: &JobEvent, now_ms: i64) -> Option<i64> {
    total_time(job.start_time, job.end_time, job.total_time, now_ms)
}
