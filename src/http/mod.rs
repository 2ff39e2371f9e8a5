//! The HTTP surface (axum): both `get_step_instance_status` routes (with ETags and held
//! long-polls), the server-sent events route, the sibling APIs, the live step page (`/`),
//! `/openapi.json`, `/metrics`, `/healthz`, `/readyz`.
//!
//! Owns: routing, authentication, parameters, language, request ids, the JSON envelope, rendered
//! answers kept until their step changes (`answer_cache`), mapping every failure to api.md's
//! codes (a panic too: never a bare 500), and how requests run: every read of the views on the
//! blocking pool (the event loop only parses and writes), expensive queries a few at a time, each
//! with a deadline, abandoned when the client goes away (`limits`).
//! Every API request passes `admit` first: authenticated, parsed and allowed its scope before
//! anything else happens to it (on a shard: before it is forwarded). Routes between members
//! (`internal`) exist on shards only and take only requests signed with the members' secret.
//! Must not: know how answers are computed or touch the views except through `query::Reader`,
//! or change state.

mod admit;
mod answer_cache;
pub mod auth;
mod error;
pub mod forward;
pub mod i18n;
mod internal;
mod limits;
mod params;
pub mod render;
pub mod settings;
mod siblings;
mod status;
mod stream;

pub use answer_cache::AnswerCache;
pub use auth::Auth;
use auth::Caller;
pub use limits::QueryLimits;
pub use settings::HttpSettings;

use crate::cluster::Cluster;
use crate::health::Health;
use crate::query::{QueryError, Reader};
use crate::shutdown::Shutdown;
use crate::telemetry::http::RequestAnswered;
use crate::telemetry::Telemetry;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use i18n::Lang;
use std::sync::Arc;
use std::time::Instant;

pub const ROUTE: &str = "/api/v3/get_step_instance_status";
pub const SYSTEM_ROUTE: &str = "/api/v3/system/get_step_instance_status";
pub const WATCH_ROUTE: &str = "/api/v3/watch_step_instance_status";
const JSON_UTF8: &str = "application/json; charset=utf-8";

/// What the handlers read.
pub struct AppState {
    pub reader: Reader,
    pub auth: Auth,
    pub telemetry: Arc<Telemetry>,
    pub health: Arc<Health>,
    pub limits: QueryLimits,
    /// Rendered status answers, kept until their step changes.
    pub answers: Arc<AnswerCache>,
    /// SHA-256 of the bearer token `/metrics` wants, if any.
    pub metrics_token: Option<[u8; 32]>,
    /// On a shard: where queries go, and the client that forwards them.
    pub cluster: Option<Arc<Cluster>>,
    pub forwarder: Option<forward::Forwarder>,
    /// The service is stopping: held requests are answered and streams end.
    pub shutdown: Shutdown,
}

pub fn router(state: Arc<AppState>) -> Router {
    // The API routes: each request is admitted first, and on a shard answered by the member
    // serving its step.
    let api = Router::new()
        .route(ROUTE, get(status::get))
        .route(SYSTEM_ROUTE, get(status::get))
        .route(WATCH_ROUTE, get(stream::watch))
        .route(siblings::JOB_STATUS_ROUTE, get(siblings::job_status))
        .route(siblings::IP_LOG_ROUTE, get(siblings::ip_log))
        .route(siblings::BATCH_IP_LOG_ROUTE, post(siblings::batch_ip_log))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            admit::admit,
        ));
    let members = match state.cluster {
        Some(_) => Router::new().route(internal::JOB_PART_ROUTE, get(internal::job_part)),
        None => Router::new(),
    };
    Router::new()
        .merge(api)
        .merge(members)
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|headers: HeaderMap| async move { no_route(&headers, ApiError::NoSuchApi) })
        .method_not_allowed_fallback(|uri: axum::http::Uri, headers: HeaderMap| async move {
            let takes = if uri.path() == siblings::BATCH_IP_LOG_ROUTE {
                "POST"
            } else {
                "GET"
            };
            no_route(&headers, ApiError::MethodNotAllowed(takes))
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

/// The caller, from its credentials (api.md, "Authentication"): checked before anything else.
fn authenticated<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<Caller<'a>, ApiError> {
    state.auth.authenticate(headers).ok_or(ApiError::AuthFailed)
}

fn to_api_error(state: &AppState, e: QueryError, request_id: &str) -> ApiError {
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

/// Logs and counts one answered API request.
fn count(
    state: &AppState,
    route: &str,
    status: StatusCode,
    code: i64,
    started: Instant,
    request_id: &str,
) {
    RequestAnswered {
        route,
        status: status.as_u16(),
        code,
        took: started.elapsed(),
        request_id,
    }
    .emit(&state.telemetry);
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
        let mut figures = state.reader.figures();
        figures.members = state.cluster.as_ref().map(|c| c.live_members().len());
        state
            .telemetry
            .render(&figures, state.health.readiness().is_ok())
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

/// The live step page: plain HTML, CSS and JavaScript shipped in the binary, reading the event
/// stream route with the credentials typed in it.
async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        include_str!("page.html"),
    )
        .into_response()
}

/// The OpenAPI 3.1 document of every route (`schemas/openapi.json`).
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, JSON_UTF8)],
        include_str!("../../schemas/openapi.json"),
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
