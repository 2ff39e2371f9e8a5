//! The JSON bodies of api.md, "Response": the envelope, the step, its groups and hosts.

use super::error::ApiError;
use super::i18n::{host_status_desc, Lang};
use crate::query::{step_total_time, HostAnswer, StepAnswer};
use serde::Serialize;

#[derive(Serialize)]
struct Envelope<'a, T> {
    result: bool,
    code: i64,
    message: &'a str,
    job_request_id: &'a str,
    data: Option<T>,
}

#[derive(Serialize)]
struct StepOut<'a> {
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
    step_result_group_list: Vec<GroupOut<'a>>,
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

pub fn success(answer: &StepAnswer, lang: Lang, request_id: &str, now_ms: i64) -> Vec<u8> {
    let step = &answer.step;
    let data = StepOut {
        step_instance_id: step.step_instance_id,
        execute_count: answer.execute_count,
        name: &step.name,
        step_type: step.step_type,
        status: step.status,
        create_time: step.create_time,
        start_time: step.start_time,
        end_time: step.end_time,
        total_time: step_total_time(step, now_ms),
        step_result_group_list: answer
            .groups
            .iter()
            .map(|g| GroupOut {
                result_type: g.status,
                result_type_desc: host_status_desc(g.status, lang),
                tag: &g.tag,
                host_size: g.host_size,
                host_result_list: g.hosts.iter().map(|h| host(h, lang)).collect(),
            })
            .collect(),
    };
    to_json(&Envelope {
        result: true,
        code: 0,
        message: "",
        job_request_id: request_id,
        data: Some(data),
    })
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
