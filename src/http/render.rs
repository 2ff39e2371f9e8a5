//! The JSON bodies of api.md, "Response" (the envelope, the step, its groups and hosts), and of
//! the sibling APIs (siblings.md).

use super::encoding::{self, Coding, Kept, Parts};
use super::error::ApiError;
use super::i18n::{host_status_desc, Lang};
use crate::events::JobEvent;
use crate::events::{ScopeType, StepEvent};
use crate::query::{
    job_total_time, step_total_time, BatchLogAnswer, GroupAnswer, HostAnswer, HostLog, JobStep,
    Position, StepAnswer,
};
use axum::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;

#[derive(Serialize)]
struct Envelope<'a, T> {
    result: bool,
    code: i64,
    message: &'a str,
    job_request_id: &'a str,
    data: Option<T>,
}

#[derive(Serialize)]
struct StepOut<'a, G> {
    step_instance_id: i64,
    execute_count: i32,
    name: &'a str,
    #[serde(rename = "type")]
    step_type: i32,
    status: i32,
    create_time: i64,
    start_time: Option<i64>,
    end_time: Option<i64>,
    total_time: Option<i64>,
    step_result_group_list: G,
}

#[derive(Serialize)]
struct GroupOut<'a> {
    result_type: i32,
    result_type_desc: &'static str,
    tag: &'a str,
    host_size: usize,
    host_result_list: Vec<HostOut<'a>>,
}

#[derive(Serialize)]
struct HostOut<'a> {
    bk_host_id: i64,
    ip: Option<&'a str>,
    ipv6: Option<&'a str>,
    bk_agent_id: Option<&'a str>,
    bk_cloud_id: Option<i64>,
    bk_cloud_name: Option<&'a str>,
    status: i32,
    status_desc: &'static str,
    tag: &'a str,
    exit_code: Option<i32>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    total_time: Option<i64>,
}

fn host(host: &HostAnswer, lang: Lang) -> HostOut<'_> {
    let row = host.view();
    let id = &row.identity;
    HostOut {
        bk_host_id: host.bk_host_id,
        ip: id.ip.value,
        ipv6: id.ipv6.value,
        bk_agent_id: id.bk_agent_id.value,
        bk_cloud_id: id.bk_cloud_id.value,
        bk_cloud_name: id.bk_cloud_name.value,
        status: row.status,
        status_desc: host_status_desc(row.status, lang),
        tag: row.tag,
        exit_code: row.exit_code,
        start_time: row.start_time,
        end_time: row.end_time,
        total_time: row.total_time,
    }
}

/// A `get_step_instance_status` answer ready to be written: the step that the body's head comes
/// from, and its groups (nearly all of the bytes). What differs per request (the request id, a
/// running step's `total_time`) is written per request, so that one rendering of the groups can
/// answer many polls (`answer_cache`): a body is then a small head, the shared groups and a
/// tail, never a copy of them (`encoding::Parts`).
pub struct RenderedStep {
    /// Where the step stood when the answer was read (its ETag).
    pub position: Position,
    pub step: Arc<StepEvent>,
    execute_count: i32,
    groups: Groups,
}

/// The groups as JSON, rendered once for an answer that is kept (and compressed once, for the
/// first client that asks for gzip); or as read, for an answer sent once (rendering a 24-MB
/// answer to JSON and then into its body took a tenth of its time).
enum Groups {
    Json { json: Bytes, coded: Kept },
    Read(Vec<GroupAnswer>, Lang),
}

/// About what one host of an answer renders to (benches/http: 28 MB for 100 000 hosts): what
/// buffers are sized by, and what the answer cache estimates an answer's size by.
pub const HOST_JSON_BYTES: usize = 300;

/// What closes a body after its groups: `data`, then the envelope.
const TAIL: &[u8] = b"}}";

fn hosts_of(groups: &[GroupAnswer]) -> usize {
    groups.iter().map(|g| g.hosts.len()).sum()
}

fn group_outs(groups: &[GroupAnswer], lang: Lang) -> Vec<GroupOut<'_>> {
    groups
        .iter()
        .map(|g| GroupOut {
            result_type: g.status,
            result_type_desc: host_status_desc(g.status, lang),
            tag: &g.tag,
            host_size: g.host_size,
            host_result_list: g.hosts.iter().map(|h| host(h, lang)).collect(),
        })
        .collect()
}

impl RenderedStep {
    /// `keep`: the groups are rendered to JSON now, for many bodies; else at `body`, once.
    pub fn of(answer: StepAnswer, lang: Lang, keep: bool) -> RenderedStep {
        let groups = if keep {
            // Sized up front: a large answer grown by doubling is copied and faulted in again
            // at every step (a tenth of a 28-MB answer's rendering).
            let mut json = Vec::with_capacity(hosts_of(&answer.groups) * HOST_JSON_BYTES);
            serde_json::to_writer(&mut json, &group_outs(&answer.groups, lang))
                .expect("groups always serialize");
            Groups::Json {
                json: json.into(),
                coded: Kept::default(),
            }
        } else {
            Groups::Read(answer.groups, lang)
        };
        RenderedStep {
            position: answer.position,
            step: answer.step,
            execute_count: answer.execute_count,
            groups,
        }
    }

    /// The response body, as api.md's "Response" gives it, at `now_ms`, in one buffer.
    pub fn body(&self, request_id: &str, now_ms: i64) -> Vec<u8> {
        match &self.groups {
            Groups::Json { json, .. } => {
                let mut body = self.head(request_id, now_ms);
                body.extend_from_slice(json);
                body.extend_from_slice(TAIL);
                body
            }
            Groups::Read(groups, lang) => {
                let size = hosts_of(groups) * HOST_JSON_BYTES + ENVELOPE_BYTES;
                self.body_with(group_outs(groups, *lang), request_id, now_ms, size)
            }
        }
    }

    /// Whether the groups are rendered (a kept answer, written from shared bytes).
    pub fn is_rendered(&self) -> bool {
        matches!(self.groups, Groups::Json { .. })
    }

    /// Whether a body coded as `coding` is made without compressing the groups now.
    pub fn prepared(&self, coding: Coding) -> bool {
        match &self.groups {
            Groups::Json { coded, .. } => coded.ready(coding),
            Groups::Read(..) => true,
        }
    }

    /// Compresses the rendered groups for `coding` unless done already (a kept answer: on the
    /// blocking pool before its first body so coded, which then costs only its head and tail).
    pub fn prepare(&self, coding: Coding) {
        if let Groups::Json { json, coded } = &self.groups {
            coded.prepare(coding, json);
        }
    }

    /// The response body at `now_ms` coded as `coding` asks; the coding used. Rendered groups
    /// are shared with the body, not copied.
    pub fn parts(&self, request_id: &str, now_ms: i64, coding: Coding) -> (Parts, Coding) {
        let Groups::Json { json, coded } = &self.groups else {
            let (body, coding) = encoding::encode(self.body(request_id, now_ms), coding);
            return (Parts::from(Bytes::from(body)), coding);
        };
        let head = self.head(request_id, now_ms);
        (coded.body(head, json, TAIL, coding), coding)
    }

    /// The body up to its groups: the envelope and the step, up to `"step_result_group_list":`.
    fn head(&self, request_id: &str, now_ms: i64) -> Vec<u8> {
        const EMPTY: &str = "[]";
        let empty: &RawValue = serde_json::from_str(EMPTY).expect("valid JSON");
        let mut head = self.body_with(empty, request_id, now_ms, ENVELOPE_BYTES);
        // The groups are the step's last field and the step the envelope's: the body ends
        // with them and the tail.
        let cut = head.len() - EMPTY.len() - TAIL.len();
        debug_assert!(head.ends_with(b"[]}}"));
        head.truncate(cut);
        head
    }

    fn body_with<G: Serialize>(
        &self,
        groups: G,
        request_id: &str,
        now_ms: i64,
        size: usize,
    ) -> Vec<u8> {
        let step = &self.step;
        let data = StepOut {
            step_instance_id: step.step_instance_id,
            execute_count: self.execute_count,
            name: &step.name,
            step_type: step.step_type,
            status: step.status,
            create_time: step.create_time,
            start_time: step.start_time,
            end_time: step.end_time,
            total_time: step_total_time(step, now_ms),
            step_result_group_list: groups,
        };
        succeeded_sized(data, request_id, size)
    }

    /// Bytes held by rendered groups, and by their compressed forms (gzip and zstd, each
    /// counted as an eighth of them before it exists: entries are weighed once); 0 for groups
    /// as read, never kept.
    pub fn weight(&self) -> usize {
        match &self.groups {
            Groups::Json { json, .. } => {
                json.len() + json.len() / 4 + std::mem::size_of::<RenderedStep>()
            }
            Groups::Read(..) => 0,
        }
    }
}

#[derive(Serialize)]
struct JobStatusOut<'a> {
    finished: bool,
    job_instance: JobOut<'a>,
    step_instance_list: Vec<&'a RawValue>,
}

/// One step of a job, rendered, with what orders it among the job's steps: the parts of a job
/// that several members hold are merged by it without parsing them again.
#[derive(Serialize, Deserialize)]
pub struct JobStepPart {
    pub step_order: Option<i32>,
    pub step_instance_id: i64,
    pub step: Box<RawValue>,
}

#[derive(Serialize)]
struct JobOut<'a> {
    job_instance_id: i64,
    bk_scope_type: ScopeType,
    bk_scope_id: &'a str,
    name: &'a str,
    status: i32,
    create_time: i64,
    start_time: Option<i64>,
    end_time: Option<i64>,
    total_time: Option<i64>,
}

#[derive(Serialize)]
struct JobStepOut<'a> {
    step_instance_id: i64,
    #[serde(rename = "type")]
    step_type: i32,
    name: &'a str,
    status: i32,
    create_time: i64,
    start_time: Option<i64>,
    end_time: Option<i64>,
    total_time: Option<i64>,
    execute_count: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    step_ip_result_list: Option<Vec<IpResultOut<'a>>>,
}

#[derive(Serialize)]
struct IpResultOut<'a> {
    bk_host_id: i64,
    ip: Option<&'a str>,
    bk_cloud_id: Option<i64>,
    status: i32,
    tag: &'a str,
    exit_code: Option<i32>,
    error_code: i32,
    start_time: Option<i64>,
    end_time: Option<i64>,
    total_time: Option<i64>,
}

/// Job statuses that mean the job has finished (siblings.md; 12 counts here).
fn job_finished(status: i32) -> bool {
    matches!(status, 3 | 4 | 5 | 6 | 8 | 9 | 11 | 12 | 13 | 14)
}

/// A job's steps as `step_instance_list` entries, each with its order.
pub fn job_steps(steps: &[JobStep], now_ms: i64) -> Vec<JobStepPart> {
    steps
        .iter()
        .map(|s| {
            let out = JobStepOut {
                step_instance_id: s.step.step_instance_id,
                step_type: s.step.step_type,
                name: &s.step.name,
                status: s.step.status,
                create_time: s.step.create_time,
                start_time: s.step.start_time,
                end_time: s.step.end_time,
                total_time: step_total_time(&s.step, now_ms),
                execute_count: s.step.execute_count,
                step_ip_result_list: s.hosts.as_ref().map(|hosts| {
                    hosts
                        .iter()
                        .map(|h| {
                            let row = h.view();
                            IpResultOut {
                                bk_host_id: h.bk_host_id,
                                ip: row.identity.ip.value,
                                bk_cloud_id: row.identity.bk_cloud_id.value,
                                status: row.status,
                                tag: row.tag,
                                exit_code: row.exit_code,
                                error_code: row.error_code,
                                start_time: row.start_time,
                                end_time: row.end_time,
                                total_time: row.total_time,
                            }
                        })
                        .collect()
                }),
            };
            JobStepPart {
                step_order: s.step.step_order,
                step_instance_id: s.step.step_instance_id,
                step: serde_json::value::to_raw_value(&out).expect("steps serialize"),
            }
        })
        .collect()
}

/// `get_job_instance_status`: the job and its steps (from `job_steps`, of one instance or
/// several), ordered by `step_order`, then id (steps without an order last), each step once.
pub fn job_status(
    job: &JobEvent,
    mut steps: Vec<JobStepPart>,
    request_id: &str,
    now_ms: i64,
) -> Vec<u8> {
    steps.sort_by_key(|s| (s.step_order.is_none(), s.step_order, s.step_instance_id));
    steps.dedup_by_key(|s| s.step_instance_id);
    let data = JobStatusOut {
        finished: job_finished(job.status),
        job_instance: JobOut {
            job_instance_id: job.job_instance_id,
            bk_scope_type: job.bk_scope_type,
            bk_scope_id: &job.bk_scope_id,
            name: &job.name,
            status: job.status,
            create_time: job.create_time,
            start_time: job.start_time,
            end_time: job.end_time,
            total_time: job_total_time(job, now_ms),
        },
        step_instance_list: steps.iter().map(|s| &*s.step).collect(),
    };
    succeeded(data, request_id)
}

/// The answer of one member's part of a job (the partitions it was asked for): its steps, as
/// `job_steps` renders them.
pub fn job_part(steps: &[JobStepPart], request_id: &str) -> Vec<u8> {
    succeeded(steps, request_id)
}

#[derive(Serialize)]
struct HostLogOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    log_type: Option<i32>,
    bk_host_id: Option<i64>,
    ip: Option<&'a str>,
    bk_cloud_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_content: Option<&'a str>,
    /// File steps: the events carry no file-transfer logs (README).
    #[serde(skip_serializing_if = "Option::is_none")]
    file_logs: Option<[(); 0]>,
}

fn log_type(script: bool) -> i32 {
    if script {
        1
    } else {
        2
    }
}

fn host_log_out(log: &HostLog, script: bool, with_type: bool) -> HostLogOut<'_> {
    HostLogOut {
        log_type: with_type.then_some(log_type(script)),
        bk_host_id: log.bk_host_id,
        ip: log.ip.as_deref(),
        bk_cloud_id: log.bk_cloud_id,
        log_content: script.then_some(log.log_content.as_str()),
        file_logs: (!script).then_some([]),
    }
}

pub fn ip_log(script: bool, log: &HostLog, request_id: &str) -> Vec<u8> {
    let size = log.log_content.len() + ENVELOPE_BYTES;
    succeeded_sized(host_log_out(log, script, true), request_id, size)
}

/// About what an envelope and a host's log entry add to its output, beside escapes.
const ENVELOPE_BYTES: usize = 256;

#[derive(Serialize)]
struct BatchLogOut<'a> {
    log_type: i32,
    job_instance_id: i64,
    step_instance_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    script_task_logs: Option<Vec<HostLogOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_task_logs: Option<[(); 0]>,
}

pub fn batch_ip_logs(answer: &BatchLogAnswer, job: i64, step: i64, request_id: &str) -> Vec<u8> {
    let data = BatchLogOut {
        log_type: log_type(answer.script),
        job_instance_id: job,
        step_instance_id: step,
        script_task_logs: answer.script.then(|| {
            answer
                .logs
                .iter()
                .map(|l| host_log_out(l, true, false))
                .collect()
        }),
        file_task_logs: (!answer.script).then_some([]),
    };
    let size: usize = answer
        .logs
        .iter()
        .map(|l| l.log_content.len() + ENVELOPE_BYTES)
        .sum();
    succeeded_sized(data, request_id, size + ENVELOPE_BYTES)
}

fn succeeded<T: Serialize>(data: T, request_id: &str) -> Vec<u8> {
    succeeded_sized(data, request_id, 0)
}

/// A success envelope rendered into a buffer of about `size` bytes: a large answer is not
/// grown by doubling (its peak would be twice its size).
fn succeeded_sized<T: Serialize>(data: T, request_id: &str, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    let envelope = Envelope {
        result: true,
        code: 0,
        message: "",
        job_request_id: request_id,
        data: Some(data),
    };
    serde_json::to_writer(&mut out, &envelope).expect("response bodies always serialize");
    out
}

pub fn failure(err: &ApiError, lang: Lang, request_id: &str) -> Vec<u8> {
    to_json(&Envelope::<()> {
        result: false,
        code: err.code(),
        message: &err.message(lang),
        job_request_id: request_id,
        data: None,
    })
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("response bodies always serialize")
}
