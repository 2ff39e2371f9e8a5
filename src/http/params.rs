//! Turns a query string (or, for the batch log API, a JSON body) into a validated query, or into
//! the api.md error naming the parameter. An empty value means "not given"; of repeated
//! parameters the first counts; unknown ones are ignored.

use super::error::{ApiError, Problem};
use super::i18n::is_host_status;
use crate::events::ScopeType;
use crate::query::{BatchLogQuery, HostRef, JobQuery, LogQuery, StepQuery};
use serde_json::Value;
use std::collections::HashMap;

/// Most hosts one batch log request may name (siblings.md).
pub const MAX_BATCH_HOSTS: usize = 500;

struct Params(HashMap<String, String>);

impl Params {
    fn of_query(raw: Option<&str>) -> Self {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !v.is_empty() {
                map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
            }
        }
        Params(map)
    }

    /// The scalar members of a JSON object, as their text (numbers in decimal); others as JSON,
    /// which then fail the parameter's own check.
    fn of_json(body: &serde_json::Map<String, Value>) -> Self {
        let map = body
            .iter()
            .filter_map(|(k, v)| {
                let text = match v {
                    Value::Null => return None,
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (!text.is_empty()).then(|| (k.clone(), text))
            })
            .collect();
        Params(map)
    }

    fn text(&self, name: &'static str, max_bytes: usize) -> Result<Option<String>, ApiError> {
        match self.0.get(name) {
            Some(v) if v.len() > max_bytes => {
                Err(ApiError::BadParam(name, Problem::TooLong(max_bytes)))
            }
            v => Ok(v.cloned()),
        }
    }

    fn int<T: TryFrom<i64>>(&self, name: &'static str, min: i64) -> Result<Option<T>, ApiError> {
        let Some(raw) = self.0.get(name) else {
            return Ok(None);
        };
        let v: i64 = raw
            .trim()
            .parse()
            .map_err(|_| ApiError::BadParam(name, Problem::NotInteger))?;
        if v < min {
            return Err(ApiError::BadParam(name, Problem::Below(min)));
        }
        T::try_from(v)
            .map(Some)
            .map_err(|_| ApiError::BadParam(name, Problem::NotInteger))
    }

    fn bool(&self, name: &'static str) -> Result<Option<bool>, ApiError> {
        match self.0.get(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(None),
            Some(v) if v == "true" || v == "1" => Ok(Some(true)),
            Some(v) if v == "false" || v == "0" => Ok(Some(false)),
            Some(_) => Err(ApiError::BadParam(name, Problem::NotBool)),
        }
    }

    /// `bk_scope_type` and `bk_scope_id`.
    fn scope(&self) -> Result<(ScopeType, String), ApiError> {
        let scope_type = required(self.text("bk_scope_type", usize::MAX)?, "bk_scope_type")?;
        let scope_type =
            ScopeType::parse(&scope_type).ok_or(ApiError::InvalidParam("bk_scope_type"))?;
        let scope_id = required(self.text("bk_scope_id", usize::MAX)?, "bk_scope_id")?;
        Ok((scope_type, scope_id))
    }

    fn job_id(&self) -> Result<i64, ApiError> {
        let id: i64 = required(self.int("job_instance_id", i64::MIN)?, "job_instance_id")?;
        if id < 1 {
            return Err(ApiError::JobIdNotPositive);
        }
        Ok(id)
    }

    fn step_id(&self) -> Result<i64, ApiError> {
        let id: i64 = required(self.int("step_instance_id", i64::MIN)?, "step_instance_id")?;
        if id < 1 {
            return Err(ApiError::StepIdNotPositive);
        }
        Ok(id)
    }
}

fn required<T>(v: Option<T>, name: &'static str) -> Result<T, ApiError> {
    v.ok_or(ApiError::BadParam(name, Problem::Missing))
}

/// `get_step_instance_status`: every parameter, in the order of api.md's table.
pub fn step_query(raw: Option<&str>) -> Result<StepQuery, ApiError> {
    let p = Params::of_query(raw);
    let (scope_type, scope_id) = p.scope()?;
    let job_instance_id = p.job_id()?;
    let step_instance_id = p.step_id()?;
    let status: Option<i32> = p.int("status", i64::MIN)?;
    if status.is_some_and(|s| !is_host_status(s)) {
        return Err(ApiError::BadParam("status", Problem::UnknownStatus));
    }
    Ok(StepQuery {
        scope_type,
        scope_id,
        job_instance_id,
        step_instance_id,
        execute_count: p.int("execute_count", 0)?,
        batch: p.int("batch", 0)?,
        max_host_num_per_group: p.int("max_host_num_per_group", 0)?,
        keyword: p.text("keyword", 1024)?,
        search_ip: p.text("search_ip", 64)?,
        status,
        tag: p.text("tag", 256)?,
    })
}

/// `get_job_instance_status`.
pub fn job_query(raw: Option<&str>) -> Result<JobQuery, ApiError> {
    let p = Params::of_query(raw);
    let (scope_type, scope_id) = p.scope()?;
    Ok(JobQuery {
        scope_type,
        scope_id,
        job_instance_id: p.job_id()?,
        return_ip_result: p.bool("return_ip_result")?.unwrap_or(false),
    })
}

/// `get_job_instance_ip_log`: the host by `bk_host_id`, or else by `bk_cloud_id` + `ip`.
pub fn log_query(raw: Option<&str>) -> Result<LogQuery, ApiError> {
    let p = Params::of_query(raw);
    let (scope_type, scope_id) = p.scope()?;
    let job_instance_id = p.job_id()?;
    let step_instance_id = p.step_id()?;
    let host = match (p.int("bk_host_id", 1)?, p.text("ip", 64)?) {
        (Some(id), _) => HostRef::Id(id),
        (None, Some(ip)) => HostRef::CloudIp {
            bk_cloud_id: required(p.int("bk_cloud_id", 0)?, "bk_cloud_id")?,
            ip,
        },
        (None, None) => return Err(ApiError::BadParam("bk_host_id or ip", Problem::Missing)),
    };
    Ok(LogQuery {
        scope_type,
        scope_id,
        job_instance_id,
        step_instance_id,
        host,
        execute_count: p.int("execute_count", 0)?,
        batch: p.int("batch", 0)?,
    })
}

/// `batch_get_job_instance_ip_log`'s JSON body: `host_id_list`, or else `ip_list`, of at most
/// 500 hosts.
pub fn batch_log_query(body: &[u8]) -> Result<BatchLogQuery, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadBody(e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(ApiError::BadBody("not an object".into()));
    };
    let p = Params::of_json(&object);
    let (scope_type, scope_id) = p.scope()?;
    let job_instance_id = p.job_id()?;
    let step_instance_id = p.step_id()?;
    let list = |name: &'static str| -> Result<Option<&Vec<Value>>, ApiError> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) if items.len() > MAX_BATCH_HOSTS => {
                Err(ApiError::BadParam(name, Problem::TooMany(MAX_BATCH_HOSTS)))
            }
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(ApiError::BadParam(name, Problem::NotInteger)),
        }
    };
    let hosts = match (list("host_id_list")?, list("ip_list")?) {
        (Some(ids), _) => ids
            .iter()
            .map(|id| {
                id.as_i64()
                    .filter(|id| *id >= 1)
                    .map(HostRef::Id)
                    .ok_or(ApiError::BadParam("host_id_list", Problem::Below(1)))
            })
            .collect::<Result<_, _>>()?,
        (None, Some(ips)) => ips
            .iter()
            .map(|entry| {
                let bk_cloud_id = entry.get("bk_cloud_id").and_then(Value::as_i64);
                let ip = entry.get("ip").and_then(Value::as_str);
                match (bk_cloud_id, ip) {
                    (Some(bk_cloud_id), Some(ip)) if ip.len() <= 64 => Ok(HostRef::CloudIp {
                        bk_cloud_id,
                        ip: ip.to_owned(),
                    }),
                    _ => Err(ApiError::BadParam(
                        "ip_list[].bk_cloud_id / ip_list[].ip",
                        Problem::Missing,
                    )),
                }
            })
            .collect::<Result<_, _>>()?,
        (None, None) => {
            return Err(ApiError::BadParam(
                "host_id_list or ip_list",
                Problem::Missing,
            ))
        }
    };
    Ok(BatchLogQuery {
        scope_type,
        scope_id,
        job_instance_id,
        step_instance_id,
        hosts,
        execute_count: p.int("execute_count", 0)?,
    })
}
