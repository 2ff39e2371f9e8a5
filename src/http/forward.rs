//! Forwarding (cluster.md, "Forwarding"): an admitted request about a partition this instance
//! does not serve goes, as it came, to the member that serves it, marked `X-Stepview-Forwarded:
//! 1`, and its answer comes back unchanged (an event stream is proxied as it flows). A forwarded
//! request is never forwarded again, and no instance answers 1244007 for a step it does not
//! serve: with no live member serving the partition, the answer is 503 with `Retry-After`.
//!
//! The client follows no redirects, uses no proxy from the environment, speaks TLS to
//! `https://` members, and gives every forwarded request a deadline (event streams apart): the
//! query timeout, plus the wait the request asked for, plus 2 s.

use super::error::ApiError;
use super::i18n::Lang;
use super::render;
use super::respond::{json, request_id};
use super::routes::{BACKEND_WATCH_ROUTE, WATCH_ROUTE};
use super::state::AppState;
use super::status::requested_wait;
use crate::telemetry::http::Forwarded;
use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use std::time::{Duration, Instant};

pub const FORWARDED: &str = "x-stepview-forwarded";

/// Beyond the query's own time: the network and the member's queue.
const FORWARD_SLACK: Duration = Duration::from_secs(2);

/// 503: no live member serves the partition now (it is moving); the client tries again.
pub fn moving(headers: &HeaderMap, partition: Option<i32>) -> Response {
    let request_id = request_id(headers);
    let err = ApiError::PartitionMoving(partition);
    json(
        err.http_status(),
        render::failure(&err, Lang::of(headers), &request_id),
        &request_id,
    )
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

/// The deadline of a forwarded request: none for an event stream, which lasts as long as it
/// lasts.
pub fn deadline_of(state: &AppState, path: &str, headers: &HeaderMap) -> Option<Duration> {
    (path != WATCH_ROUTE && path != BACKEND_WATCH_ROUTE)
        .then(|| state.limits.timeout + requested_wait(headers).unwrap_or_default() + FORWARD_SLACK)
}

/// Forwards an admitted request to the member at `url` and answers what it answers.
pub async fn to_member(
    state: &AppState,
    url: &str,
    partition: i32,
    parts: Parts,
    body: Bytes,
) -> Response {
    let headers = parts.headers.clone();
    match forward(state, url, parts, body).await {
        Ok(resp) => resp,
        Err(why) => {
            Forwarded::Error {
                member: url,
                why: &why,
            }
            .emit(&state.telemetry);
            moving(&headers, Some(partition))
        }
    }
}

async fn forward(
    state: &AppState,
    url: &str,
    parts: Parts,
    body: Bytes,
) -> Result<Response, String> {
    let forwarder = state.forwarder.as_ref().ok_or("no forwarder")?;
    let started = Instant::now();
    let target = format!(
        "{}{}",
        url.trim_end_matches('/'),
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut req = forwarder.client.request(parts.method, target).body(body);
    if let Some(deadline) = deadline_of(state, parts.uri.path(), &parts.headers) {
        req = req.timeout(deadline);
    }
    for (name, value) in parts.headers.iter().filter(|(n, _)| !hop_by_hop(n)) {
        req = req.header(name, value);
    }
    let resp = req
        .header(FORWARDED, "1")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Response::builder().status(resp.status());
    for (name, value) in resp.headers().iter().filter(|(n, _)| !hop_by_hop(n)) {
        out = out.header(name, value);
    }
    out = out.header(FORWARDED, HeaderValue::from_static("1"));
    Forwarded::Ok {
        took: started.elapsed(),
    }
    .emit(&state.telemetry);
    // Past the deadline the stream fails, and the client's connection is aborted: a cut-off
    // body is never passed off as whole.
    out.body(Body::from_stream(resp.bytes_stream()))
        .map_err(|e| e.to_string())
}
