//! The translator's operating surface: `/metrics`, `/healthz` and `/readyz` (caught up within
//! `cdc.ready_max_behind`, and not stopped), on `cdc.metrics_listen`.
//!
//! Owns: readiness and the routes. Must not: read the state or Kafka (the loop reports).

use crate::shutdown::Shutdown;
use crate::telemetry::cdc::CdcTelemetry;
use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;

/// Why the translator is not ready, as the loop last reported; `None`: ready.
pub struct Readiness(Mutex<Option<String>>);

impl Default for Readiness {
    fn default() -> Self {
        Readiness(Mutex::new(Some("starting".into())))
    }
}

impl Readiness {
    pub fn set(&self, why_not: Option<String>) {
        *self.0.lock() = why_not;
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().clone()
    }
}

struct Ops {
    telemetry: Arc<CdcTelemetry>,
    readiness: Arc<Readiness>,
}

/// Serves the routes on `listen` until `shutdown`.
pub async fn serve(
    listen: SocketAddr,
    telemetry: Arc<CdcTelemetry>,
    readiness: Arc<Readiness>,
    shutdown: Shutdown,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (cdc.metrics_listen)"))?;
    tracing::info!(%listen, "translator's /metrics, /healthz and /readyz listening");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(Ops {
            telemetry,
            readiness,
        }));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.triggered().await })
        .await
        .context("the translator's HTTP server failed")
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        ops.telemetry.render(),
    )
        .into_response()
}

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    match ops.readiness.get() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}
