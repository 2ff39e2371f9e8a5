//! The service's own routes, beside the API: `/metrics`, `/openapi.json`, the live step page,
//! `/readyz`, and the envelope for unknown routes and panics.

use super::auth::{self, AuthMode};
use super::error::ApiError;
use super::i18n::Lang;
use super::render;
use super::respond::{json, new_request_id, request_id, JSON_UTF8};
use super::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The exposition, computed on the blocking pool; with `metrics_token_sha256` set, only for
/// `Authorization: Bearer <token>`.
pub(super) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(want) = &state.metrics_token {
        if !auth::bearer_matches(&headers, want) {
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
/// stream route with the credentials typed in it. In gateway-only mode nothing it could send
/// would be taken: it says so instead of asking for a secret.
pub(super) async fn page(State(state): State<Arc<AppState>>) -> Response {
    let page = match state.auth.mode() {
        AuthMode::Gateway => GATEWAY_ONLY_PAGE,
        _ => include_str!("page.html"),
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        page,
    )
        .into_response()
}

const GATEWAY_ONLY_PAGE: &str = "<!doctype html><meta charset=utf-8><title>stepview</title>\
<p>This page reads a step with an app's secret, and this instance takes callers only through \
BlueKing's API gateway (<code>http.auth = gateway</code>). Run it with <code>http.auth = \
app_secret</code> or <code>both</code> to use the page.</p>";

/// The OpenAPI 3.1 document of every route (`schemas/openapi.json`).
pub(super) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, JSON_UTF8)],
        include_str!("../../schemas/openapi.json"),
    )
        .into_response()
}

pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
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
pub(super) fn no_route(headers: &HeaderMap, err: ApiError) -> Response {
    let request_id = request_id(headers);
    let body = render::failure(&err, Lang::of(headers), &request_id);
    json(err.http_status(), body, &request_id)
}

pub(super) fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    let err = ApiError::Internal;
    let request_id = new_request_id();
    json(
        err.http_status(),
        render::failure(&err, Lang::Zh, &request_id),
        &request_id,
    )
}
