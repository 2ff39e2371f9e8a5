//! The operator's routes: `POST /admin/checkpoint` makes a checkpoint of the store
//! (`store::checkpoint`) and answers its name, offsets and size.
//!
//! Only for `Authorization: Bearer <token>` whose SHA-256 is `http.admin_token_sha256`; an app's
//! grants are not admin rights, and without a configured token the route refuses everyone. The
//! request names nothing: where checkpoints go is configuration (`store.checkpoint_dir`). It is
//! never forwarded: each instance checkpoints its own store.

use super::auth;
use super::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

pub(super) async fn checkpoint(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(want) = &state.admin_token else {
        return refusal(
            StatusCode::FORBIDDEN,
            "no admin token is configured: set http.admin_token_sha256 (stepview hash-secret \
             TOKEN) to make checkpoints on request",
        );
    };
    if !auth::bearer_matches(&headers, want) {
        let mut refused = refusal(
            StatusCode::UNAUTHORIZED,
            "this route wants Authorization: Bearer <the admin token>",
        );
        refused
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
        return refused;
    }
    let reader = state.reader.clone();
    match tokio::task::spawn_blocking(move || reader.checkpoint()).await {
        Ok(Ok(made)) => Json(json!({
            "name": made.name,
            "path": made.path,
            "took_ms": made.took.as_millis() as u64,
            "files": made.files,
            "bytes": made.bytes,
            "offsets": made.offsets.iter().map(|(topic, partition, next)| json!({
                "topic": topic, "partition": partition, "next_offset": next,
            })).collect::<Vec<_>>(),
            "removed": made.removed,
        }))
        .into_response(),
        Ok(Err(error)) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the checkpoint was not made: {error:#}"),
        ),
        Err(_) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the checkpoint was not made (see the log)",
        ),
    }
}

fn refusal(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}
