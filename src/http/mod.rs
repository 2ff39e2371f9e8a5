//! The HTTP surface (axum): both `get_step_instance_status` routes (with ETags and held
//! long-polls), the server-sent events route, the sibling APIs, the live step page (`/`),
//! `/openapi.json`, `/metrics`, `/healthz`, `/readyz`, and the operator's `/admin/checkpoint`.
//!
//! Owns: routing, authentication, parameters, language, request ids, the JSON envelope, rendered
//! answers kept until their step changes (`answer_cache`), bodies written from shared parts and
//! compressed as the client asks (`encoding`), mapping every failure to api.md's
//! codes (a panic too: never a bare 500), and how requests run: every read of the views on the
//! blocking pool (the event loop only parses and writes), expensive queries a few at a time, each
//! with a deadline, abandoned when the client goes away (`limits`).
//! Every API request passes `admit` first: authenticated, parsed and allowed its scope before
//! anything else happens to it (on a shard: before it is forwarded). Routes between members
//! (`internal`) exist on shards only and take only requests signed with the members' secret.
//! Must not: know how answers are computed or touch the views except through `query::Reader`,
//! or change state.
//!
//! This file only routes; the route files (`status`, `stream`, `siblings`, `internal`, `ops`,
//! `admin`)
//! take what they share from the files below them (`state`, `respond`, `routes`, `limits` …).

mod admin;
mod admit;
mod answer_cache;
pub mod auth;
mod client;
mod encoding;
mod error;
mod forward;
pub mod i18n;
mod internal;
mod jwt;
mod limits;
mod ops;
mod params;
pub mod render;
mod respond;
pub mod routes;
pub mod settings;
mod siblings;
mod state;
mod status;
mod stream;
mod turns;

pub use answer_cache::AnswerCache;
pub use auth::{AppConfig, Auth, AuthMode};
pub use client::Forwarder;
pub use jwt::{GatewayAlgorithm, GatewayConfig};
pub use settings::HttpSettings;
pub use state::AppState;
pub use turns::QueryLimits;

use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use routes::{
    ADMIN_CHECKPOINT_ROUTE, BACKEND_BATCH_IP_LOG_ROUTE, BACKEND_IP_LOG_ROUTE,
    BACKEND_JOB_STATUS_ROUTE, BACKEND_ROUTE, BACKEND_WATCH_ROUTE, BATCH_IP_LOG_ROUTE, IP_LOG_ROUTE,
    JOB_PART_ROUTE, JOB_STATUS_ROUTE, ROUTE, SYSTEM_ROUTE, WATCH_ROUTE,
};
use std::sync::Arc;

pub fn router(state: Arc<AppState>) -> Router {
    // The API routes: each request is admitted first, and on a shard answered by the member
    // serving its step.
    let api = Router::new()
        .route(ROUTE, get(status::get))
        .route(SYSTEM_ROUTE, get(status::get))
        .route(BACKEND_ROUTE, get(status::get))
        .route(WATCH_ROUTE, get(stream::watch))
        .route(BACKEND_WATCH_ROUTE, get(stream::watch))
        .route(JOB_STATUS_ROUTE, get(siblings::job_status))
        .route(BACKEND_JOB_STATUS_ROUTE, get(siblings::job_status))
        .route(IP_LOG_ROUTE, get(siblings::ip_log))
        .route(BACKEND_IP_LOG_ROUTE, get(siblings::ip_log))
        .route(BATCH_IP_LOG_ROUTE, post(siblings::batch_ip_log))
        .route(BACKEND_BATCH_IP_LOG_ROUTE, post(siblings::batch_ip_log))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            admit::admit,
        ));
    let members = match state.cluster {
        Some(_) => Router::new().route(JOB_PART_ROUTE, get(internal::job_part)),
        None => Router::new(),
    };
    Router::new()
        .merge(api)
        .merge(members)
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/", get(ops::page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ops::readyz))
        .route(ADMIN_CHECKPOINT_ROUTE, post(admin::checkpoint))
        .fallback(|headers: HeaderMap| async move { ops::no_route(&headers, ApiError::NoSuchApi) })
        .method_not_allowed_fallback(|uri: axum::http::Uri, headers: HeaderMap| async move {
            let posted = [
                BATCH_IP_LOG_ROUTE,
                BACKEND_BATCH_IP_LOG_ROUTE,
                ADMIN_CHECKPOINT_ROUTE,
            ];
            let takes = if posted.contains(&uri.path()) {
                "POST"
            } else {
                "GET"
            };
            ops::no_route(&headers, ApiError::MethodNotAllowed(takes))
        })
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            ops::on_panic,
        ))
        .with_state(state)
}
