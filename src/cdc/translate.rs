//! One change event of bk-job's tables into stepview's events (cdc.md): applications become
//! the scope map, `task_instance` a `job`, `step_instance` a `step` (and, for a step that is not
//! rolling, `step_targets` of each retry), result rows `host_result` with the step's host
//! identity, log chunks `host_log` at their start byte. A change that needs what has not
//! arrived yet (an app's scope, a result's step) is answered [`Outcome::Waiting`]; the caller
//! keeps it and translates it again when [`Outcome::Emitted`] names what it released.
//!
//! Owns: the mapping. Must not: talk to Kafka or decide when state is written (`run` does).

use super::bkjob::{
    ApplicationRow, Int, LogChunk, ResultRow, StepInstanceRow, Target, TargetServers,
    TaskInstanceRow,
};
use super::source::{envelope, Op, Table};
use super::state::{Need, Scope, State, StepInfo};
use crate::events::{
    Event, HostLog, HostResult, JobEvent, ScopeType, StepEvent, StepTargets, TargetHost,
};
use anyhow::Result;
use std::sync::Arc;

/// Hosts per `step_targets` chunk: well inside events.md's 10 000 hosts and 1 MiB.
const TARGETS_PER_CHUNK: usize = 2_000;

/// bk-job's host task statuses (`ExecuteObjectTaskStatusEnum`); any other value becomes 0, as
/// its `valOf` makes of it.
const HOST_STATUSES: [i32; 32] = [
    0, 1, 2, 3, 5, 7, 9, 11, 12, 13, 15, 16, 17, 18, 101, 102, 103, 104, 202, 203, 301, 303, 310,
    311, 312, 320, 321, 329, 399, 403, 404, 500,
];

/// One change event, where it came from, and its version (`epoch × 2^48 + offset`).
pub struct Change<'a> {
    pub table: Table,
    pub version: i64,
    /// The message value; `None`: a tombstone.
    pub value: Option<&'a [u8]>,
}

/// Why a change produced nothing, by design.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// bk-job's archiving (and the tombstones after it): stepview's retention decides.
    Deleted,
    /// A container target: the v3 API serves hosts.
    Container,
    /// A file row of the upload side (`mode = 0`): not a target's result.
    UploadSide,
    /// A log chunk with no content.
    Empty,
}

impl Skip {
    pub fn label(self) -> &'static str {
        match self {
            Skip::Deleted => "skipped_delete",
            Skip::Container => "skipped_container",
            Skip::UploadSide => "skipped_upload_side",
            Skip::Empty => "skipped_empty",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Events were emitted; `released` names what waiting changes may now go on.
    Emitted {
        released: Option<Need>,
        /// Container targets of a step's `target_servers`, left out.
        containers: usize,
    },
    Waiting(Need),
    Skipped(Skip),
}

/// A change that cannot be translated: it goes to the dead-letter topic with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslatable(pub String);

/// Translates `change` into `out`, reading and updating `state`. The outer error is the
/// state's (RocksDB); the inner one the change's.
pub fn translate(
    change: &Change<'_>,
    state: &mut State,
    out: &mut Vec<Event>,
) -> Result<Result<Outcome, Untranslatable>> {
    let Some(value) = change.value else {
        return Ok(Ok(Outcome::Skipped(Skip::Deleted)));
    };
    let v = change.version;
    macro_rules! row {
        ($t:ty) => {
            match envelope::<$t>(value) {
                Ok((Op::Upsert, Some(row))) => row,
                Ok(_) => return Ok(Ok(Outcome::Skipped(Skip::Deleted))),
                Err(e) => return Ok(Err(Untranslatable(e))),
            }
        };
    }
    match change.table {
        Table::Application => Ok(application(row!(ApplicationRow), state)),
        Table::TaskInstance => Ok(Ok(job(row!(TaskInstanceRow), v, state, out))),
        Table::StepInstance => step(row!(StepInstanceRow), v, state, out),
        Table::ScriptResults
        | Table::FileResults
        | Table::ScriptAgentResults
        | Table::FileAgentResults => result(change.table, row!(ResultRow), v, state, out),
        Table::ScriptLog => {
            let document: String = row!(String);
            match serde_json::from_str::<LogChunk>(&document) {
                Ok(chunk) => log(chunk, state, out),
                Err(e) => Ok(Err(Untranslatable(format!(
                    "not a script-log document: {e}"
                )))),
            }
        }
    }
}

fn application(row: ApplicationRow<'_>, state: &mut State) -> Result<Outcome, Untranslatable> {
    let id = row.app_id.0;
    let scope_type = match row.bk_scope_type.as_deref() {
        Some(t) if !t.is_empty() => ScopeType::parse(t)
            .ok_or_else(|| Untranslatable(format!("app {id}: unknown bk_scope_type {t:?}")))?,
        // Rows from before the scope columns: as bk-job's own migration fills them.
        _ => match row.app_type.map_or(1, |t| t.0) {
            1 => ScopeType::Biz,
            _ => ScopeType::BizSet,
        },
    };
    let scope_id = match row.bk_scope_id.as_deref() {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => id.to_string(),
    };
    let new = state.set_app(
        id,
        Scope {
            scope_type,
            scope_id,
        },
    );
    Ok(Outcome::Emitted {
        released: new.then_some(Need::App(id)),
        containers: 0,
    })
}

fn time(t: Option<Int>) -> Option<i64> {
    t.map(|t| t.0)
}

fn job(row: TaskInstanceRow<'_>, version: i64, state: &mut State, out: &mut Vec<Event>) -> Outcome {
    let Some(scope) = state.app(row.app_id.0) else {
        return Outcome::Waiting(Need::App(row.app_id.0));
    };
    out.push(Event::Job(JobEvent {
        job_instance_id: row.id.0,
        bk_scope_type: scope.scope_type,
        bk_scope_id: scope.scope_id.clone(),
        name: row.name.map(|n| n.into_owned()).unwrap_or_default(),
        status: row.status.map_or(0, Int::i32),
        create_time: row.create_time.map_or(0, |t| t.0),
        start_time: time(row.start_time),
        end_time: time(row.end_time),
        total_time: time(row.total_time),
        version,
    }));
    Outcome::Emitted {
        released: None,
        containers: 0,
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// The hosts of `target_servers`, sorted by host id, and how many containers it named.
fn targets(json: &str) -> Result<(Vec<TargetHost>, usize), String> {
    let servers: TargetServers =
        serde_json::from_str(json).map_err(|e| format!("target_servers does not parse: {e}"))?;
    let (hosts, containers) = servers.hosts();
    let mut hosts: Vec<TargetHost> = hosts
        .into_iter()
        .filter_map(|h| {
            Some(TargetHost {
                bk_host_id: h.host_id?.0,
                batch: 0,
                ip: non_empty(h.ip),
                ipv6: non_empty(h.ipv6),
                bk_agent_id: non_empty(h.agent_id),
                bk_cloud_id: h.cloud_area_id.map(|c| c.0),
                bk_cloud_name: non_empty(h.bk_cloud_name),
            })
        })
        .collect();
    hosts.sort_by_key(|h| h.bk_host_id);
    hosts.dedup_by_key(|h| h.bk_host_id);
    Ok((hosts, containers))
}

fn step(
    row: StepInstanceRow<'_>,
    version: i64,
    state: &mut State,
    out: &mut Vec<Event>,
) -> Result<Result<Outcome, Untranslatable>> {
    let Some(scope) = state.app(row.app_id.0).cloned() else {
        return Ok(Ok(Outcome::Waiting(Need::App(row.app_id.0))));
    };
    let id = row.id.0;
    let job = row.task_instance_id.0;
    let execute_count = row.execute_count.map_or(0, Int::i32);
    let rolling = row.rolling_config_id.is_some_and(|r| r.0 != 0);
    let known = state.step(id)?;
    // Hosts are read once: `target_servers` is written at insert and never changes.
    let (hosts, containers) = match (&known, row.target_servers.as_deref()) {
        (Some(k), _) if !k.hosts.is_empty() => (None, 0),
        (_, Some(json)) if !json.is_empty() => match targets(json) {
            Ok((hosts, containers)) => (Some(hosts), containers),
            Err(e) => return Ok(Err(Untranslatable(format!("step {id}: {e}")))),
        },
        _ => (None, 0),
    };
    out.push(Event::Step(StepEvent {
        job_instance_id: job,
        step_instance_id: id,
        bk_scope_type: scope.scope_type,
        bk_scope_id: scope.scope_id.clone(),
        name: row.name.map(|n| n.into_owned()).unwrap_or_default(),
        step_type: row.step_type.i32(),
        status: row.status.map_or(0, Int::i32),
        execute_count,
        create_time: row.create_time.map_or(0, |t| t.0),
        start_time: time(row.start_time),
        end_time: time(row.end_time),
        total_time: time(row.total_time),
        step_order: row.step_order.map(Int::i32),
        version,
    }));
    let mut info = match &known {
        Some(k) => Arc::clone(k),
        None => Arc::new(StepInfo {
            job,
            scope,
            rolling,
            targets_sent_for: None,
            hosts: Vec::new(),
        }),
    };
    let mut changed = known.is_none();
    if let Some(hosts) = hosts {
        Arc::make_mut(&mut info).hosts = hosts;
        changed = true;
    }
    // Not rolling: on the first change, and at each new retry, every host waits (bk-job's API
    // shows a step's hosts before they run); a rolling step's batches are in its result rows.
    let targets_due = !rolling
        && !info.hosts.is_empty()
        && info
            .targets_sent_for
            .is_none_or(|sent| execute_count > sent);
    if targets_due {
        let chunks = info.hosts.chunks(TARGETS_PER_CHUNK);
        let chunk_count = chunks.len() as i32;
        for (chunk, hosts) in chunks.enumerate() {
            out.push(Event::StepTargets(StepTargets {
                job_instance_id: job,
                step_instance_id: id,
                execute_count,
                chunk: chunk as i32,
                chunk_count,
                hosts: hosts.to_vec(),
            }));
        }
        Arc::make_mut(&mut info).targets_sent_for = Some(execute_count);
        changed = true;
    }
    if changed {
        state.set_step(id, Arc::unwrap_or_clone(info));
    }
    Ok(Ok(Outcome::Emitted {
        released: known.is_none().then_some(Need::Step(id)),
        containers,
    }))
}

fn result(
    table: Table,
    row: ResultRow<'_>,
    version: i64,
    state: &mut State,
    out: &mut Vec<Event>,
) -> Result<Result<Outcome, Untranslatable>> {
    let files = matches!(table, Table::FileResults | Table::FileAgentResults);
    if files && row.mode.map(|m| m.0) != Some(1) {
        return Ok(Ok(Outcome::Skipped(Skip::UploadSide)));
    }
    let host = match row.target() {
        Some(Target::Host(host)) => host,
        Some(Target::Container) => return Ok(Ok(Outcome::Skipped(Skip::Container))),
        None => {
            return Ok(Err(Untranslatable(format!(
                "{}: a row of step {} names no host (execute_obj_id {:?})",
                table.label(),
                row.step_instance_id.0,
                row.execute_obj_id
            ))))
        }
    };
    let step_id = row.step_instance_id.0;
    let Some(info) = state.step(step_id)? else {
        return Ok(Ok(Outcome::Waiting(Need::Step(step_id))));
    };
    let execute_count = row.execute_count.i32();
    let status = row.status.map_or(0, Int::i32);
    let identity = info.host(host);
    let field = |f: fn(&TargetHost) -> &Option<String>| identity.and_then(|h| f(h).clone());
    out.push(Event::HostResult(HostResult {
        job_instance_id: info.job,
        step_instance_id: step_id,
        execute_count,
        batch: row.batch.map_or(0, Int::i32),
        bk_host_id: host,
        ip: field(|h| &h.ip),
        ipv6: field(|h| &h.ipv6),
        bk_agent_id: field(|h| &h.bk_agent_id),
        bk_cloud_id: identity.and_then(|h| h.bk_cloud_id),
        bk_cloud_name: field(|h| &h.bk_cloud_name),
        status: if HOST_STATUSES.contains(&status) {
            status
        } else {
            0
        },
        tag: row.tag.map(|t| t.into_owned()).filter(|t| !t.is_empty()),
        exit_code: row.exit_code.map(Int::i32),
        error_code: row.error_code.map_or(0, Int::i32),
        start_time: time(row.start_time),
        end_time: time(row.end_time),
        total_time: time(row.total_time),
        version,
        log_execute_count: row
            .actual_execute_count
            .map(Int::i32)
            .filter(|actual| *actual != execute_count && *actual >= 0),
    }));
    Ok(Ok(Outcome::Emitted {
        released: None,
        containers: 0,
    }))
}

/// A chunk at its start byte: normally its end `offset` minus its UTF-8 length. bk-job's rare
/// system lines break that rule (a start below 0, or equal to a chunk's already placed): such a
/// chunk is clamped at 0, or placed after the host's last known byte, so that none is lost and
/// bk-job's order is kept. The same chunk (by `_id`) always gets the same place.
fn log(
    chunk: LogChunk,
    state: &mut State,
    out: &mut Vec<Event>,
) -> Result<Result<Outcome, Untranslatable>> {
    let host = match chunk.target() {
        Some(Target::Host(host)) => host,
        Some(Target::Container) => return Ok(Ok(Outcome::Skipped(Skip::Container))),
        None => {
            return Ok(Err(Untranslatable(format!(
                "a log chunk of step {} names no host",
                chunk.step_id.0
            ))))
        }
    };
    if chunk.content.is_empty() {
        return Ok(Ok(Outcome::Skipped(Skip::Empty)));
    }
    let key = (
        chunk.step_id.0,
        chunk.execute_count.i32(),
        chunk.batch.map_or(0, Int::i32),
        host,
    );
    let mut placed = state.log_host(key)?;
    let start = match placed.chunks.iter().find(|(_, id)| *id == chunk.id.0) {
        Some((start, _)) => *start,
        None => {
            let length = chunk.content.len() as i64;
            let mut start = (chunk.offset.0 - length).max(0);
            if placed.chunks.iter().any(|(s, _)| *s == start) {
                start = placed.end;
            }
            placed.end = placed.end.max(start + length);
            placed.chunks.push((start, chunk.id.0.clone()));
            state.set_log_host(key, placed);
            start
        }
    };
    out.push(Event::HostLog(HostLog {
        step_instance_id: key.0,
        execute_count: key.1,
        batch: key.2,
        bk_host_id: host,
        offset: start,
        content: chunk.content,
    }));
    Ok(Ok(Outcome::Emitted {
        released: None,
        containers: 0,
    }))
}
