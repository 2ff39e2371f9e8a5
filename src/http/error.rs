//! The error rows of api.md, with their codes, HTTP statuses and messages in both languages.

use super::i18n::Lang;
use axum::http::StatusCode;
use std::time::Duration;

/// What is wrong with one parameter (code 1240003, "Bad Request: …").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Missing,
    NotInteger,
    /// Must be ≥ this.
    Below(i64),
    TooLong(usize),
    UnknownStatus,
    NotBool,
    /// A list longer than this.
    TooMany(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    BadParam(&'static str, Problem),
    JobIdNotPositive,
    StepIdNotPositive,
    InvalidParam(&'static str),
    /// The request body is not what the API takes (1240003), with what to change.
    BadBody(String),
    /// The answer would carry more output than this many bytes (1240003).
    TooMuchOutput(usize),
    JobNotFound,
    StepNotFound,
    Unsupported,
    AuthFailed,
    PermissionDenied,
    /// No such route (HTTP 404): still a JSON body.
    NoSuchApi,
    /// A route of the API, with another method than the one it takes (HTTP 405).
    MethodNotAllowed(&'static str),
    /// The query did not finish within the timeout, its wait for a turn included (HTTP 503).
    Timeout(Duration),
    /// On a shard: no live member serves the partition right now (HTTP 503).
    PartitionMoving(Option<i32>),
    Internal,
}

impl ApiError {
    pub fn code(&self) -> i64 {
        match self {
            ApiError::BadParam(..)
            | ApiError::JobIdNotPositive
            | ApiError::StepIdNotPositive
            | ApiError::BadBody(_)
            | ApiError::TooMuchOutput(_)
            | ApiError::NoSuchApi
            | ApiError::MethodNotAllowed(_) => 1240003,
            ApiError::InvalidParam(_) => 1241005,
            ApiError::JobNotFound => 1244006,
            ApiError::StepNotFound => 1244007,
            ApiError::Unsupported => 1241003,
            ApiError::AuthFailed => 1240005,
            ApiError::PermissionDenied => 9900403,
            ApiError::Timeout(_) | ApiError::PartitionMoving(_) | ApiError::Internal => 1240002,
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self {
            ApiError::AuthFailed => StatusCode::UNAUTHORIZED,
            ApiError::PermissionDenied => StatusCode::FORBIDDEN,
            ApiError::NoSuchApi => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Timeout(_) | ApiError::PartitionMoving(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::OK,
        }
    }

    pub fn message(&self, lang: Lang) -> String {
        match self {
            ApiError::BadParam(name, problem) => {
                let (zh, en) = match problem {
                    Problem::Missing => (
                        format!("参数[{name}]不能为空"),
                        format!("{name} is required"),
                    ),
                    Problem::NotInteger => (
                        format!("参数[{name}]必须为整数"),
                        format!("{name} must be an integer"),
                    ),
                    Problem::Below(min) => (
                        format!("参数[{name}]必须大于等于{min}"),
                        format!("{name} must be >= {min}"),
                    ),
                    Problem::TooLong(max) => (
                        format!("参数[{name}]长度不能超过{max}字节"),
                        format!("{name} must be at most {max} bytes"),
                    ),
                    Problem::UnknownStatus => (
                        format!("参数[{name}]不是已知的主机状态码"),
                        format!("{name} is not a known host status code"),
                    ),
                    Problem::NotBool => (
                        format!("参数[{name}]必须为 true 或 false"),
                        format!("{name} must be true or false"),
                    ),
                    Problem::TooMany(max) => (
                        format!("参数[{name}]最多{max}项"),
                        format!("{name} takes at most {max} entries"),
                    ),
                };
                match lang {
                    Lang::Zh => format!("错误的请求：{zh}"),
                    Lang::En => format!("Bad Request: {en}"),
                }
            }
            ApiError::JobIdNotPositive => lang
                .pick(
                    "任务实例ID必须为正整数",
                    "Job instance id must be a positive number",
                )
                .into(),
            ApiError::StepIdNotPositive => lang
                .pick(
                    "步骤实例ID必须为正整数",
                    "Step instance id must be a positive number",
                )
                .into(),
            ApiError::InvalidParam(name) => match lang {
                Lang::Zh => format!("请求参数[{name}]不合法"),
                Lang::En => format!("Invalid request parameter [{name}]"),
            },
            ApiError::BadBody(why) => match lang {
                Lang::Zh => format!("错误的请求：请求体须为 JSON 对象：{why}"),
                Lang::En => format!("Bad Request: the request body must be a JSON object: {why}"),
            },
            ApiError::TooMuchOutput(max) => {
                let mib = max >> 20;
                match lang {
                    Lang::Zh => format!("错误的请求：结果超过{mib}MiB，请减少 host_id_list / ip_list 中的主机，或分步骤查询"),
                    Lang::En => format!(
                        "Bad Request: the answer exceeds {mib} MiB; ask for fewer hosts in host_id_list / ip_list, or step by step"
                    ),
                }
            }
            ApiError::JobNotFound => lang
                .pick("作业实例不存在", "Job instance does not exist")
                .into(),
            ApiError::StepNotFound => lang
                .pick("作业步骤实例不存在", "Task step instance does not exist")
                .into(),
            ApiError::Unsupported => lang.pick("不支持的操作", "Unsupported operation").into(),
            ApiError::AuthFailed => lang.pick("认证失败", "Authentication failed").into(),
            ApiError::PermissionDenied => lang.pick("权限不足", "Permission denied").into(),
            ApiError::MethodNotAllowed(method) => match lang {
                Lang::Zh => format!("错误的请求：此接口只支持 {method}"),
                Lang::En => format!("Bad Request: this API takes {method} only"),
            },
            ApiError::NoSuchApi => lang
                .pick("错误的请求：没有这个接口", "Bad Request: no such API")
                .into(),
            ApiError::Timeout(limit) => {
                let ms = limit.as_millis();
                match lang {
                    Lang::Zh => format!(
                        "服务繁忙：查询未能在{ms}毫秒内完成，请稍后重试，或用 max_host_num_per_group、batch 缩小查询"
                    ),
                    Lang::En => format!(
                        "Service busy: the query did not finish within {ms} ms; retry later, or narrow it with max_host_num_per_group or batch"
                    ),
                }
            }
            ApiError::PartitionMoving(partition) => {
                let which = partition.map_or_else(String::new, |p| format!(" {p}"));
                match lang {
                    Lang::Zh => format!("服务暂不可用：分区{which}正在迁移到其他实例，请稍后重试"),
                    Lang::En => format!(
                        "Service unavailable: partition{which} is moving between instances; retry in a second"
                    ),
                }
            }
            ApiError::Internal => lang.pick("内部服务器异常", "Internal Server Error").into(),
        }
    }
}
