//! The HTTP surface (axum): both `get_step_instance_status` routes, `/metrics`, `/healthz`,
//! `/readyz`.
//!
//! Owns: routing, authentication, parameters, language, request ids, the JSON envelope and
//! mapping every failure to api.md's codes (a panic too: never a bare 500). Must not: know how
//! answers are computed (that is `query`) or change state.

mod auth;
mod error;
pub mod i18n;
mod params;
pub mod render;

pub use auth::Auth;

use crate::health::Health;
use crate::index::Index;
use crate::metrics::Metrics;
use crate::query::{self, QueryError};
use crate::store::Store;
use axum::extract::{MatchedPath, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use error::ApiError;
use i18n::Lang;
use std::sync::Arc;
use std::time::Instant;

pub const ROUTE: &str = "/api/v3/get_step_instance_status";
pub const SYSTEM_ROUTE: &str = "/api/v3/system/get_step_instance_status";
const JSON_UTF8: &str = "application/json; charset=utf-8";
/// Capped answers up to this many hosts per group are computed on the event loop.
const INLINE_CAP: i32 = 1000;

/// What the handlers read.
pub struct AppState {
    pub index: Arc<Index>,
    pub store: Arc<Store>,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(ROUTE, get(step_status))
        .route(SYSTEM_ROUTE, get(step_status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|headers: HeaderMap| async move { no_route(&headers, ApiError::NoSuchApi) })
        .method_not_allowed_fallback(|headers: HeaderMap| async move {
            no_route(&headers, ApiError::GetOnly)
        })
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .with_state(state)
}

/// The caller's `X-Request-Id` when it is usable as a header value, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(new_request_id, str::to_owned)
}

fn new_request_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn json(status: StatusCode, body: Vec<u8>, request_id: &str) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    resp
}

async fn step_status(
    State(state): State<Arc<AppState>>,
    route: MatchedPath,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let started = Instant::now();
    let lang = Lang::of(&headers);
    let request_id = request_id(&headers);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let outcome = answer(&state, &headers, raw, &request_id).await;
    let (status, code, body) = match outcome {
        Ok(a) => (
            StatusCode::OK,
            0,
            render::success(&a, lang, &request_id, now_ms),
        ),
        Err(e) => (
            e.http_status(),
            e.code(),
            render::failure(&e, lang, &request_id),
        ),
    };
    tracing::debug!(
        request_id,
        route = route.as_str(),
        status = status.as_u16(),
        code,
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    state
        .metrics
        .http_requests
        .with_label_values(&[route.as_str(), status.as_str(), &code.to_string()])
        .inc();
    state
        .metrics
        .http_duration
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    json(status, body, &request_id)
}

async fn answer(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    raw: Option<String>,
    request_id: &str,
) -> Result<query::StepAnswer, ApiError> {
    let caller = state
        .auth
        .authenticate(headers)
        .ok_or(ApiError::AuthFailed)?;
    let q = params::parse(raw.as_deref())?;
    if !caller.may_read(q.scope_type, &q.scope_id) {
        return Err(ApiError::PermissionDenied);
    }
    // A capped answer without search is a few microseconds: answer inline. Scans and full answers
    // of large steps go to the blocking pool so that they never hold up the event loop.
    let cheap = q
        .max_host_num_per_group
        .is_some_and(|cap| cap <= INLINE_CAP)
        && q.search_ip.is_none()
        && q.keyword.is_none();
    let result = if cheap {
        query::answer(&state.index, &state.store, &q)
    } else {
        let state = Arc::clone(state);
        tokio::task::spawn_blocking(move || query::answer(&state.index, &state.store, &q))
            .await
            .map_err(|e| {
                tracing::error!(request_id, error = %e, "query task failed");
                ApiError::Internal
            })?
    };
    result.map_err(|e| match e {
        QueryError::StepNotFound => ApiError::StepNotFound,
        QueryError::ManualStep => ApiError::Unsupported,
        QueryError::KeywordOnFileStep => ApiError::InvalidParam("keyword"),
        QueryError::Internal(err) => {
            tracing::error!(request_id, error = %format!("{err:#}"), "query failed");
            ApiError::Internal
        }
    })
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let body = state
        .metrics
        .render(&state.index, &state.store, &state.health);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// Unknown routes and methods answer in the API's envelope too.
fn no_route(headers: &HeaderMap, err: ApiError) -> Response {
    let request_id = request_id(headers);
    let body = render::failure(&err, Lang::of(headers), &request_id);
    json(err.http_status(), body, &request_id)
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    let err = ApiError::Internal;
    let request_id = new_request_id();
    json(
        err.http_status(),
        render::failure(&err, Lang::Zh, &request_id),
        &request_id,
    )
}
