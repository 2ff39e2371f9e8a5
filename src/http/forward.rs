//! Forwarding (cluster.md): on a shard, a request about a partition this instance does not serve
//! goes, as it came, to the member that serves it, marked `X-Stepview-Forwarded: 1`, and its
//! answer comes back unchanged (an event stream is proxied as it flows). A forwarded request is
//! never forwarded again, and no instance answers 1244007 for a step it does not serve: with no
//! live member serving the partition, the answer is 503 with `Retry-After`.
//!
//! Decided before any view is read: every API route passes here first.

use super::error::ApiError;
use super::i18n::Lang;
use super::{json, render, request_id, siblings, AppState, ROUTE, SYSTEM_ROUTE, WATCH_ROUTE};
use crate::cluster::Route;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const FORWARDED: &str = "x-stepview-forwarded";

/// Largest request body read to find its step (the batch log API's is far smaller).
const MAX_BODY: usize = 1 << 20;

/// The HTTP client forwarded requests go through.
pub struct Forwarder {
    client: reqwest::Client,
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder {
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(1))
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client with these settings"),
        }
    }
}

impl Forwarder {
    /// GETs a JSON answer of another member with the caller's headers, marked forwarded.
    pub async fn get_json(
        &self,
        url: &str,
        headers: &HeaderMap,
    ) -> Result<serde_json::Value, String> {
        let req = self.client.get(url).timeout(Duration::from_secs(10));
        let resp = as_forwarded(req, headers)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        resp.json().await.map_err(|e| e.to_string())
    }
}

/// The id that routes a request: the step's (the job's for `get_job_instance_status`), or
/// `None` when it has none (its handler answers the parameter error).
fn routing_id(path: &str, query: Option<&str>, body: &[u8]) -> Option<i64> {
    let param = |name: &str| {
        form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.trim().parse().ok())
    };
    match path {
        ROUTE | SYSTEM_ROUTE | WATCH_ROUTE | siblings::IP_LOG_ROUTE => param("step_instance_id"),
        siblings::JOB_STATUS_ROUTE => param("job_instance_id"),
        siblings::BATCH_IP_LOG_ROUTE => serde_json::from_slice::<serde_json::Value>(body)
            .ok()?
            .get("step_instance_id")?
            .as_i64(),
        _ => None,
    }
}

/// Middleware on the API routes: here, the owner, or 503.
pub async fn to_owner(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(cluster) = &state.cluster else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => Bytes::new(), // too large: the handler sees an empty body and says so
    };
    let id = routing_id(parts.uri.path(), parts.uri.query(), &body);
    let forwarded = parts.headers.contains_key(FORWARDED);
    let route = id.map(|id| match cluster.partition_of(id) {
        None => (None, Route::Moving),
        Some(p) => (Some(p), cluster.route(p)),
    });
    match route {
        None | Some((_, Route::Local)) => {
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Some((partition, Route::Forward(url))) if !forwarded => {
            let headers = parts.headers.clone();
            forward(&state, &url, parts, body)
                .await
                .unwrap_or_else(|why| {
                    tracing::debug!(url, why, "forwarding failed");
                    moving(&state, &headers, partition, "error")
                })
        }
        Some((partition, _)) => moving(&state, &parts.headers, partition, "unavailable"),
    }
}

/// 503: no live member serves the partition now (it is moving); the client tries again.
fn moving(
    state: &AppState,
    headers: &HeaderMap,
    partition: Option<i32>,
    outcome: &str,
) -> Response {
    state.metrics.forwarded.with_label_values(&[outcome]).inc();
    let request_id = request_id(headers);
    let err = ApiError::PartitionMoving(partition);
    json(
        err.http_status(),
        render::failure(&err, Lang::of(headers), &request_id),
        &request_id,
    )
}

/// A request to another member with the caller's headers (those of the request, not of its
/// connection), marked forwarded.
fn as_forwarded(mut req: reqwest::RequestBuilder, headers: &HeaderMap) -> reqwest::RequestBuilder {
    for (name, value) in headers.iter().filter(|(n, _)| !hop_by_hop(n)) {
        req = req.header(name, value);
    }
    req.header(FORWARDED, "1")
}

/// Headers that belong to one connection, not to the request (RFC 9110, 7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

async fn forward(
    state: &AppState,
    url: &str,
    parts: axum::http::request::Parts,
    body: Bytes,
) -> Result<Response, String> {
    let forwarder = state.forwarder.as_ref().ok_or("no forwarder")?;
    let started = Instant::now();
    let target = format!(
        "{}{}",
        url.trim_end_matches('/'),
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let req = forwarder.client.request(parts.method, target).body(body);
    let resp = as_forwarded(req, &parts.headers)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Response::builder().status(resp.status());
    for (name, value) in resp.headers().iter().filter(|(n, _)| !hop_by_hop(n)) {
        out = out.header(name, value);
    }
    out = out.header(FORWARDED, HeaderValue::from_static("1"));
    state.metrics.forwarded.with_label_values(&["ok"]).inc();
    state
        .metrics
        .forward_duration
        .observe(started.elapsed().as_secs_f64());
    out.body(Body::from_stream(resp.bytes_stream()))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_their_step_or_job() {
        let q = Some("bk_scope_type=biz&step_instance_id=101&job_instance_id=1");
        assert_eq!(routing_id(ROUTE, q, b""), Some(101));
        assert_eq!(routing_id(WATCH_ROUTE, q, b""), Some(101));
        assert_eq!(routing_id(siblings::JOB_STATUS_ROUTE, q, b""), Some(1));
        let body = br#"{"step_instance_id": 7, "host_id_list": [1]}"#;
        assert_eq!(
            routing_id(siblings::BATCH_IP_LOG_ROUTE, None, body),
            Some(7)
        );
        assert_eq!(routing_id(ROUTE, Some("step_instance_id=x"), b""), None);
        assert_eq!(routing_id("/metrics", q, b""), None);
    }
}
