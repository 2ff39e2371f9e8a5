//! The HTTP surface (axum): both `get_step_instance_status` routes, `/metrics`, `/healthz`,
//! `/readyz`.
//!
//! Owns: routing, authentication, parameters, language, request ids, the JSON envelope, mapping
//! every failure to api.md's codes (a panic too: never a bare 500), and how requests run: every
//! read of the views on the blocking pool (the event loop only parses and writes), expensive
//! queries a few at a time, each with a deadline, abandoned when the client goes away. Must not:
//! know how answers are computed or touch the views except through `query::Reader`, or change
//! state.

pub mod auth;
mod error;
pub mod i18n;
mod params;
pub mod render;

pub use auth::Auth;

use crate::health::Health;
use crate::metrics::Metrics;
use crate::query::{Cancel, QueryError, Reader, StepAnswer, StepQuery};
use axum::extract::{MatchedPath, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use error::ApiError;
use i18n::Lang;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub const ROUTE: &str = "/api/v3/get_step_instance_status";
pub const SYSTEM_ROUTE: &str = "/api/v3/system/get_step_instance_status";
const JSON_UTF8: &str = "application/json; charset=utf-8";

/// What the handlers read.
pub struct AppState {
    pub reader: Reader,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub limits: QueryLimits,
    /// SHA-256 of the bearer token `/metrics` wants, if any.
    pub metrics_token: Option<[u8; 32]>,
}

/// How queries run: expensive ones (`StepQuery::is_expensive`) take one of a few turns, and every
/// one has a deadline, its wait for a turn included.
pub struct QueryLimits {
    pub expensive: Arc<Semaphore>,
    pub timeout: Duration,
}

impl QueryLimits {
    pub fn new(expensive_at_once: usize, timeout: Duration) -> QueryLimits {
        QueryLimits {
            expensive: Arc::new(Semaphore::new(expensive_at_once.max(1))),
            timeout,
        }
    }
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
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
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
    let now_ms = crate::now_ms();
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
) -> Result<StepAnswer, ApiError> {
    let caller = state
        .auth
        .authenticate(headers)
        .ok_or(ApiError::AuthFailed)?;
    let q = params::parse(raw.as_deref())?;
    if !caller.may_read(q.scope_type, &q.scope_id) {
        return Err(ApiError::PermissionDenied);
    }
    run_query(state, q).await.map_err(|e| match e {
        QueryError::StepNotFound => ApiError::StepNotFound,
        QueryError::ManualStep => ApiError::Unsupported,
        QueryError::KeywordOnFileStep => ApiError::InvalidParam("keyword"),
        QueryError::Cancelled => ApiError::Timeout(state.limits.timeout),
        QueryError::Internal(err) => {
            tracing::error!(request_id, error = %format!("{err:#}"), "query failed");
            ApiError::Internal
        }
    })
}

/// Answers `q` on the blocking pool, within the limits; a query whose caller goes away (the
/// handler is dropped) or whose deadline passes is told to stop.
async fn run_query(state: &Arc<AppState>, q: StepQuery) -> Result<StepAnswer, QueryError> {
    let limits = &state.limits;
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let turn = if q.is_expensive() {
        let waiting = Arc::clone(&limits.expensive).acquire_owned();
        match tokio::time::timeout_at(deadline, waiting).await {
            Ok(Ok(turn)) => Some(turn),
            _ => {
                state.abandoned("busy");
                return Err(QueryError::Cancelled);
            }
        }
    } else {
        None
    };
    let cancel = Arc::new(Cancel::default());
    let mut on_drop = CancelOnDrop {
        cancel: Some(Arc::clone(&cancel)),
        state: Arc::clone(state),
    };
    let reader = state.reader.clone();
    let task = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        reader.answer(&q, &cancel)
    });
    let result = tokio::time::timeout_at(deadline, task).await;
    let cancel = on_drop.cancel.take().expect("taken once");
    match result {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => Err(QueryError::Internal(anyhow::anyhow!(
            "query task failed: {e}"
        ))),
        Err(_) => {
            cancel.cancel();
            state.abandoned("timeout");
            Err(QueryError::Cancelled)
        }
    }
}

/// Stops a running query when its handler is dropped: the client went away.
struct CancelOnDrop {
    cancel: Option<Arc<Cancel>>,
    state: Arc<AppState>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            cancel.cancel();
            self.state.abandoned("client_gone");
        }
    }
}

impl AppState {
    fn abandoned(&self, reason: &str) {
        self.metrics
            .queries_abandoned
            .with_label_values(&[reason])
            .inc();
    }
}

/// The exposition, computed on the blocking pool; with `metrics_token_sha256` set, only for
/// `Authorization: Bearer <token>`.
async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(want) = &state.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !auth::digest_matches(given, want) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "/metrics wants Authorization: Bearer <token>\n",
            )
                .into_response();
        }
    }
    let rendered = tokio::task::spawn_blocking(move || {
        state.metrics.render(&state.reader.figures(), &state.health)
    })
    .await;
    match rendered {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
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
