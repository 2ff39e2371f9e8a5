//! What every route's answer shares: the request id, the JSON envelope's headers, the caller's
//! authentication, query errors as api.md's codes, and the request's log line and metrics.

use super::auth::Caller;
use super::error::ApiError;
use super::state::AppState;
use crate::query::QueryError;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub(super) const JSON_UTF8: &str = "application/json; charset=utf-8";

/// The request's id: the caller's `X-Request-Id`, else the API gateway's
/// `X-Bkapi-Request-Id`, when usable as a header value; else a new one.
pub(super) fn request_id(headers: &HeaderMap) -> String {
    ["x-request-id", GATEWAY_REQUEST_ID]
        .iter()
        .find_map(|name| usable_id(headers, name))
        .map_or_else(new_request_id, str::to_owned)
}

/// The header the API gateway names its request in.
pub(super) const GATEWAY_REQUEST_ID: &str = "x-bkapi-request-id";

/// A request-id header's value, when it can be echoed.
pub(super) fn usable_id<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

pub(super) fn new_request_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

pub(super) fn json(status: StatusCode, body: Vec<u8>, request_id: &str) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    resp
}

/// The caller, from its credentials (api.md, "Authentication"): checked before anything else.
pub(super) fn authenticated<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
) -> Result<Caller<'a>, ApiError> {
    state.auth.authenticate(headers).ok_or(ApiError::AuthFailed)
}

pub(super) fn to_api_error(state: &AppState, e: QueryError, request_id: &str) -> ApiError {
    match e {
        QueryError::JobNotFound => ApiError::JobNotFound,
        QueryError::TooMuchOutput(max) => ApiError::TooMuchOutput(max),
        QueryError::StepNotFound => ApiError::StepNotFound,
        QueryError::ManualStep => ApiError::Unsupported,
        QueryError::KeywordOnFileStep => ApiError::InvalidParam("keyword"),
        QueryError::Cancelled => ApiError::Timeout(state.limits.timeout),
        QueryError::Internal(err) => {
            tracing::error!(request_id, error = %format!("{err:#}"), "query failed");
            ApiError::Internal
        }
    }
}

/// The API code a response answers with, for the request's log line (admission writes it).
#[derive(Debug, Clone, Copy)]
pub(super) struct ApiCode(pub i64);

/// `resp`, tagged with its API code.
pub(super) fn with_code(mut resp: Response, code: i64) -> Response {
    resp.extensions_mut().insert(ApiCode(code));
    resp
}
