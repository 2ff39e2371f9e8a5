//! The sibling APIs (siblings.md): `get_job_instance_status`, `get_job_instance_ip_log` and
//! `batch_get_job_instance_ip_log`, with the same headers, authentication, scopes, envelope,
//! languages and error rules as `get_step_instance_status`.

use super::error::ApiError;
use super::i18n::Lang;
use super::limits::run;
use super::{authenticated, count, json, params, render, request_id, to_api_error, AppState};
use axum::body::Bytes;
use axum::extract::{MatchedPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

pub const JOB_STATUS_ROUTE: &str = "/api/v3/get_job_instance_status";
pub const IP_LOG_ROUTE: &str = "/api/v3/get_job_instance_ip_log";
pub const BATCH_IP_LOG_ROUTE: &str = "/api/v3/batch_get_job_instance_ip_log";

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

pub async fn job_status(
    State(state): State<Arc<AppState>>,
    route: MatchedPath,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let request_id = request_id(&headers);
    respond(&state, route.as_str(), &headers, async {
        let caller = authenticated(&state, &headers)?;
        let q = params::job_query(raw.as_deref())?;
        caller.check_scope(q.scope_type, &q.scope_id)?;
        let expensive = q.return_ip_result;
        let answer = run(&state, expensive, move |r, c| r.job_status(&q, c))
            .await
            .map_err(|e| to_api_error(&state, e, &request_id))?;
        Ok(render::job_status(&answer, &request_id, crate::now_ms()))
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
        let caller = authenticated(&state, &headers)?;
        let q = params::log_query(raw.as_deref())?;
        caller.check_scope(q.scope_type, &q.scope_id)?;
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
        let caller = authenticated(&state, &headers)?;
        let q = params::batch_log_query(&body)?;
        caller.check_scope(q.scope_type, &q.scope_id)?;
        let (job, step) = (q.job_instance_id, q.step_instance_id);
        let answer = run(&state, true, move |r, c| r.batch_ip_logs(&q, c))
            .await
            .map_err(|e| to_api_error(&state, e, &request_id))?;
        Ok(render::batch_ip_logs(&answer, job, step, &request_id))
    })
    .await
}
