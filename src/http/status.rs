//! `GET /api/v3/get_step_instance_status` (and its system route): the answer with its ETag,
//! `304 Not Modified` for a client that has it, and, with `Prefer: wait=N`, the request held until
//! the step changes (api.md, "Watching a step instead of polling it").

use super::error::ApiError;
use super::i18n::Lang;
use super::limits::run_answer;
use super::render::RenderedStep;
use super::{count, json, query_of, render, request_id, to_api_error, AppState};
use crate::query::{Position, QueryError};
use axum::extract::{MatchedPath, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a request may be held.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// What the client said it has and how long it will wait.
struct Conditions {
    /// `If-None-Match`, when it is an ETag of ours.
    seen: Option<Position>,
    /// `Prefer: wait=N`, 1..60 s (more is taken as 60).
    wait: Option<Duration>,
}

impl Conditions {
    fn of(headers: &HeaderMap) -> Conditions {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let seen = text(header::IF_NONE_MATCH.as_str()).and_then(Position::of_etag);
        let wait = text("prefer").and_then(|prefer| {
            prefer
                .split([',', ';'])
                .find_map(|p| p.trim().strip_prefix("wait="))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .filter(|n| *n >= 1)
                .map(|n| Duration::from_secs(n).min(MAX_WAIT))
        });
        Conditions { seen, wait }
    }
}

enum Outcome {
    Fresh(Arc<RenderedStep>),
    /// The client has the answer: its ETag (never one older than it sent).
    NotModified(Position),
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    route: MatchedPath,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let started = Instant::now();
    let lang = Lang::of(&headers);
    let request_id = request_id(&headers);
    let conditions = Conditions::of(&headers);
    let outcome = respond(&state, &headers, raw, lang, &conditions, &request_id).await;
    let mut resp = match &outcome {
        Ok(Outcome::Fresh(answer)) => {
            let body = answer.body(&request_id, crate::now_ms());
            let mut resp = json(StatusCode::OK, body, &request_id);
            validators(&mut resp, answer.position);
            resp
        }
        Ok(Outcome::NotModified(position)) => {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            validators(&mut resp, *position);
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert("x-request-id", v);
            }
            resp
        }
        Err(e) => json(
            e.http_status(),
            render::failure(e, lang, &request_id),
            &request_id,
        ),
    };
    if let (Some(wait), Ok(_)) = (conditions.wait, &outcome) {
        let applied = format!("wait={}", wait.as_secs());
        resp.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_str(&applied).expect("ASCII"),
        );
    }
    let code = outcome.as_ref().err().map_or(0, ApiError::code);
    count(
        &state,
        route.as_str(),
        resp.status(),
        code,
        started,
        &request_id,
    );
    resp
}

fn validators(resp: &mut Response, position: Position) {
    let h = resp.headers_mut();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&position.etag()).expect("ASCII"),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static("Blueking-Language, Accept-Language"),
    );
}

async fn respond(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    raw: Option<String>,
    lang: Lang,
    conditions: &Conditions,
    request_id: &str,
) -> Result<Outcome, ApiError> {
    // Authentication, parameters and scope first: errors are never held.
    let q = query_of(state, headers, raw)?;
    let deadline = conditions.wait.map(|w| tokio::time::Instant::now() + w);
    // Made before the first answer is read, so that no change in between is missed.
    let mut waiter = deadline.map(|_| state.reader.waiter(q.step_instance_id));
    let _held = waiter.as_ref().map(|_| state.metrics.watching());
    loop {
        let answer = run_answer(state, q.clone(), lang).await;
        let stale = match &answer {
            Ok(a) => conditions
                .seen
                .is_some_and(|seen| !a.position.is_newer_than(seen)),
            // A step that does not exist (yet) is waited for like a change (api.md).
            Err(QueryError::StepNotFound) => true,
            Err(_) => false,
        };
        let changed = match (stale, &mut waiter, deadline) {
            (true, Some(waiter), Some(deadline)) => {
                tokio::time::timeout_at(deadline, waiter.changed())
                    .await
                    .is_ok()
            }
            _ => false,
        };
        if changed {
            continue;
        }
        return match answer {
            Ok(a) => match conditions.seen {
                Some(seen) if !a.position.is_newer_than(seen) => {
                    // A lagging replica never moves a client backwards.
                    let position = if seen.partition == a.position.partition {
                        seen.max(a.position)
                    } else {
                        a.position
                    };
                    Ok(Outcome::NotModified(position))
                }
                _ => Ok(Outcome::Fresh(a)),
            },
            Err(e) => Err(to_api_error(state, e, request_id)),
        };
    }
}
