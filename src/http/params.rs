//! Turns the query string into a `StepQuery`, or into the api.md error naming the parameter.
//! An empty value means "not given"; of repeated parameters the first counts; unknown ones are
//! ignored.

use super::error::{ApiError, Problem};
use super::i18n::is_host_status;
use crate::events::ScopeType;
use crate::query::StepQuery;
use std::collections::HashMap;

struct Params(HashMap<String, String>);

impl Params {
    fn parse(raw: Option<&str>) -> Self {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !v.is_empty() {
                map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
            }
        }
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
}

fn required<T>(v: Option<T>, name: &'static str) -> Result<T, ApiError> {
    v.ok_or(ApiError::BadParam(name, Problem::Missing))
}

/// Validates every parameter, in the order of api.md's table.
pub fn parse(raw: Option<&str>) -> Result<StepQuery, ApiError> {
    let p = Params::parse(raw);
    let scope_type = required(p.text("bk_scope_type", usize::MAX)?, "bk_scope_type")?;
    let scope_type =
        ScopeType::parse(&scope_type).ok_or(ApiError::InvalidParam("bk_scope_type"))?;
    let scope_id = required(p.text("bk_scope_id", usize::MAX)?, "bk_scope_id")?;
    let job_instance_id: i64 = required(p.int("job_instance_id", i64::MIN)?, "job_instance_id")?;
    if job_instance_id < 1 {
        return Err(ApiError::JobIdNotPositive);
    }
    let step_instance_id: i64 = required(p.int("step_instance_id", i64::MIN)?, "step_instance_id")?;
    if step_instance_id < 1 {
        return Err(ApiError::StepIdNotPositive);
    }
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
