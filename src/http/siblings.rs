//! The sibling APIs (siblings.md): `get_job_instance_status`, `get_job_instance_ip_log` and
//! `batch_get_job_instance_ip_log`, with the same headers, authentication, scopes, envelope,
//! languages and error rules as `get_step_instance_status`.

use super::error::ApiError;
use super::i18n::Lang;
use super::limits::run;
use super::{authorized, count, json, params, render, request_id, to_api_error, AppState};
use axum::body::Bytes;
use axum::extract::{MatchedPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

pub const JOB_STATUS_ROUTE: &str = "/api/v3/get_job_instance_status";
pub const IP_LOG_ROUTE: &str = "/api/v3/get_job_instance_ip_log";
pub const BATCH_IP_LOG_ROUTE: &str = "/api/v3/batch_get_job_instance_ip_log";
/// On a shard: the steps of a job that this instance holds (a part of `get_job_instance_status`,
/// asked by the job's owner of every member).
pub const JOB_STEPS_ROUTE: &str = "/api/v3/internal/job_steps";

/// Answers one request: `answer` gives the body or the error; the rest is shared.
async fn respond(
    state: &Arc<AppState>,
    route: &str,
    headers: &HeaderMap,
    answer: impl std::future::Future<Output = Result<Vec<u8>, ApiError>>,
) -> Response {
    let started = Instant::now();
    let lang = Lang::of(headers);
    let request_id = request_id(headers);
    let (status, code, body) = match answer.await {
        Ok(body) => (StatusCode::OK, 0, body),
        Err(e) => (
            e.http_status(),
            e.code(),
            render::failure(&e, lang, &request_id),
        ),
    };
    count(state, route, status, code, started, &request_id);
    json(status, body, &request_id)
}

/// The job's record is on the member owning the job id's partition (requests are routed there);
/// its steps are on the members owning theirs: that member gathers them from every member.
pub async fn job_status(
    State(state): State<Arc<AppState>>,
    route: MatchedPath,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let request_id = request_id(&headers);
    respond(&state, route.as_str(), &headers, async {
        let q = authorized(&state, &headers, || params::job_query(raw.as_deref()))?;
        let lookup = q.clone();
        let job = run(&state, false, move |r, _| r.job(&lookup))
            .await
            .map_err(|e| to_api_error(&state, e, &request_id))?;
        let mut steps = local_steps(&state, q, &request_id).await?;
        if let Some(cluster) = &state.cluster {
            for member in cluster.live_members() {
                steps.extend(remote_steps(&state, &member, &headers, raw.as_deref()).await?);
            }
        }
        Ok(render::job_status(
            &job,
            steps,
            &request_id,
            crate::now_ms(),
        ))
    })
    .await
}

/// This instance's steps of a job, rendered (with their order, for merging).
async fn local_steps(
    state: &Arc<AppState>,
    q: crate::query::JobQuery,
    request_id: &str,
) -> Result<Vec<serde_json::Value>, ApiError> {
    let expensive = q.return_ip_result;
    let steps = run(state, expensive, move |r, c| r.job_steps(&q, c))
        .await
        .map_err(|e| to_api_error(state, e, request_id))?;
    Ok(render::job_steps(&steps, crate::now_ms()))
}

/// Another member's steps of a job, asked with the caller's own credentials.
async fn remote_steps(
    state: &AppState,
    member: &str,
    headers: &HeaderMap,
    raw: Option<&str>,
) -> Result<Vec<serde_json::Value>, ApiError> {
    let forwarder = state.forwarder.as_ref().ok_or(ApiError::Internal)?;
    let url = format!(
        "{}{JOB_STEPS_ROUTE}?{}",
        member.trim_end_matches('/'),
        raw.unwrap_or("")
    );
    let body = forwarder.get_json(&url, headers).await.map_err(|why| {
        tracing::warn!(member, why, "a member did not answer for its part of a job");
        ApiError::PartitionMoving(None)
    })?;
    match body["data"].as_array() {
        Some(steps) if body["result"] == true => Ok(steps.clone()),
        _ => Err(ApiError::PartitionMoving(None)),
    }
}

/// The internal part of `get_job_instance_status` (see `JOB_STEPS_ROUTE`).
pub async fn job_steps(
    State(state): State<Arc<AppState>>,
    route: MatchedPath,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let request_id = request_id(&headers);
    respond(&state, route.as_str(), &headers, async {
        let q = authorized(&state, &headers, || params::job_query(raw.as_deref()))?;
        let steps = local_steps(&state, q, &request_id).await?;
        Ok(render::job_part(steps, &request_id))
    })
    .await
}

pub async fn ip_log(
    State(state): State<Arc<AppState>>,
    route: MatchedPath,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let request_id = request_id(&headers);
    respond(&state, route.as_str(), &headers, async {
        let q = authorized(&state, &headers, || params::log_query(raw.as_deref()))?;
        let (script, log) = run(&state, true, move |r, c| r.ip_log(&q, c))
            .await
            .map_err(|e| to_api_error(&state, e, &request_id))?;
        Ok(render::ip_log(script, &log, &request_id))
    })
    .await
}

pub async fn batch_ip_log(
    State(state): State<Arc<AppState>>,
    route: MatchedPath,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = request_id(&headers);
    respond(&state, route.as_str(), &headers, async {
        let q = authorized(&state, &headers, || params::batch_log_query(&body))?;
        let (job, step) = (q.job_instance_id, q.step_instance_id);
        let answer = run(&state, true, move |r, c| r.batch_ip_logs(&q, c))
            .await
            .map_err(|e| to_api_error(&state, e, &request_id))?;
        Ok(render::batch_ip_logs(&answer, job, step, &request_id))
    })
    .await
}
