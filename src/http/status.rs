//! `GET /api/v3/get_step_instance_status` (and its system route): the answer with its ETag,
//! `304 Not Modified` for a client that has it, and, with `Prefer: wait=N`, the request held until
//! the step changes (api.md, "Watching a step instead of polling it"). A held request keeps only
//! the position it compares against, never an answer; it is answered 304 at once when this
//! instance stops serving the step's partition or shuts down.

use super::encoding::Coding;
use super::error::ApiError;
use super::i18n::Lang;
use super::limits::{run_answer, Answer};
use super::render;
use super::respond::{json, request_id, to_api_error, with_code};
use super::state::AppState;
use crate::query::{Position, QueryError, StepQuery};
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;

/// Longest a request may be held.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// `Prefer: wait=N`, 1..60 s (more is taken as 60).
pub fn requested_wait(headers: &HeaderMap) -> Option<Duration> {
    let prefer = headers.get("prefer")?.to_str().ok()?;
    prefer
        .split([',', ';'])
        .find_map(|p| p.trim().strip_prefix("wait="))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .filter(|n| *n >= 1)
        .map(|n| Duration::from_secs(n).min(MAX_WAIT))
}

/// What the client said it has and how long it will wait.
struct Conditions {
    /// `If-None-Match`, when it is an ETag of ours.
    seen: Option<Position>,
    wait: Option<Duration>,
}

impl Conditions {
    fn of(headers: &HeaderMap) -> Conditions {
        let seen = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .and_then(Position::of_etag);
        Conditions {
            seen,
            wait: requested_wait(headers),
        }
    }
}

enum Outcome {
    Fresh(Answer),
    /// The client has the answer: its ETag (never one older than it sent).
    NotModified(Position),
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(q): Extension<StepQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let request_id = request_id(&headers);
    let conditions = Conditions::of(&headers);
    let asked = Coding::negotiate(&headers);
    let outcome = respond(&state, q, lang, &conditions, &request_id, asked).await;
    let code = outcome.as_ref().err().map_or(0, ApiError::code);
    let mut resp = match outcome {
        Ok(Outcome::Fresh(answer)) => {
            let position = answer.position();
            let mut resp = json(StatusCode::OK, Vec::new(), &request_id);
            let (body, coding) = answer.into_body(&request_id, asked);
            *resp.body_mut() = body;
            if let Some(coding) = coding.content_encoding() {
                resp.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
            }
            validators(&mut resp, position);
            resp
        }
        Ok(Outcome::NotModified(position)) => {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            validators(&mut resp, position);
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert("x-request-id", v);
            }
            resp
        }
        Err(e) => json(
            e.http_status(),
            render::failure(&e, lang, &request_id),
            &request_id,
        ),
    };
    if let (Some(wait), 0) = (conditions.wait, code) {
        let applied = format!("wait={}", wait.as_secs());
        resp.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_str(&applied).expect("ASCII"),
        );
    }
    with_code(resp, code)
}

fn validators(resp: &mut Response, position: Position) {
    let h = resp.headers_mut();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&position.etag()).expect("ASCII"),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static("Blueking-Language, Accept-Language, Accept-Encoding"),
    );
}

/// Why a held request stopped waiting.
enum Woken {
    Changed,
    /// The deadline passed, this instance no longer serves the step, or it is stopping.
    GiveUp,
}

/// What a read for a conditional request found.
enum Read {
    /// The step in memory is `at`, where the client has it (`seen`) or older: no answer
    /// computed.
    Unchanged {
        at: Position,
        seen: Position,
    },
    Answer(Answer),
}

/// The answer to `q`, unless the client already has what is in memory.
async fn read(
    state: &Arc<AppState>,
    q: &StepQuery,
    lang: Lang,
    seen: Option<Position>,
    request_id: &str,
    coding: Coding,
) -> Result<Read, QueryError> {
    let unchanged = seen.and_then(|seen| {
        let at = state.reader.position_for(q)?;
        (!at.is_newer_than(seen)).then_some(Read::Unchanged { at, seen })
    });
    match unchanged {
        Some(unchanged) => Ok(unchanged),
        None => run_answer(state, q.clone(), lang, request_id, coding)
            .await
            .map(Read::Answer),
    }
}

async fn respond(
    state: &Arc<AppState>,
    q: StepQuery,
    lang: Lang,
    conditions: &Conditions,
    request_id: &str,
    coding: Coding,
) -> Result<Outcome, ApiError> {
    let deadline = conditions.wait.map(|w| tokio::time::Instant::now() + w);
    // Made before the first answer is read, so that no change in between is missed.
    let mut waiter = deadline.map(|_| state.reader.waiter(q.step_instance_id));
    let mut dropped = state.cluster.as_ref().map(|c| c.dropped());
    let _held = waiter.as_ref().map(|_| state.telemetry.watching());
    loop {
        let found = read(state, &q, lang, conditions.seen, request_id, coding).await;
        let position = match &found {
            Ok(Read::Unchanged { at, .. }) => Some(*at),
            Ok(Read::Answer(a)) => Some(a.position()),
            Err(_) => None,
        };
        let stale = match &found {
            Ok(_) => conditions
                .seen
                .zip(position)
                .is_some_and(|(seen, at)| !at.is_newer_than(seen)),
            // A step that does not exist (yet) is waited for like a change (api.md).
            Err(QueryError::StepNotFound) => true,
            Err(_) => false,
        };
        let (Some(waiter), Some(deadline), true) = (&mut waiter, deadline, stale) else {
            return finish(state, found, conditions, request_id);
        };
        // Hold the position, not the answer.
        drop(found);
        let woken = tokio::select! {
            _ = waiter.changed() => Woken::Changed,
            _ = tokio::time::sleep_until(deadline) => Woken::GiveUp,
            _ = state.shutdown.triggered() => Woken::GiveUp,
            _ = moved_away(state, &mut dropped, q.step_instance_id) => Woken::GiveUp,
        };
        if let Woken::GiveUp = woken {
            return match (position, conditions.seen) {
                (Some(at), Some(seen)) => Ok(Outcome::NotModified(not_older(at, seen))),
                // A step still missing: answered as usual.
                _ => {
                    let last = read(state, &q, lang, conditions.seen, request_id, coding).await;
                    finish(state, last, conditions, request_id)
                }
            };
        }
    }
}

/// Completes when this instance no longer serves `step`'s partition (never for a single
/// instance).
pub(super) async fn moved_away(
    state: &AppState,
    dropped: &mut Option<tokio::sync::watch::Receiver<u64>>,
    step: i64,
) {
    let (Some(cluster), Some(dropped)) = (&state.cluster, dropped) else {
        return std::future::pending().await;
    };
    loop {
        if dropped.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !cluster
            .partition_of(step)
            .is_some_and(|p| cluster.serves(p))
        {
            return;
        }
    }
}

/// The outcome of a last read: 304 when the client has it (or something newer), else it.
fn finish(
    state: &AppState,
    read: Result<Read, QueryError>,
    conditions: &Conditions,
    request_id: &str,
) -> Result<Outcome, ApiError> {
    match (read, conditions.seen) {
        (Ok(Read::Unchanged { at, seen }), _) => Ok(Outcome::NotModified(not_older(at, seen))),
        (Ok(Read::Answer(a)), Some(seen)) if !a.position().is_newer_than(seen) => {
            Ok(Outcome::NotModified(not_older(a.position(), seen)))
        }
        (Ok(Read::Answer(a)), _) => Ok(Outcome::Fresh(a)),
        (Err(e), _) => Err(to_api_error(state, e, request_id)),
    }
}

/// The ETag of a 304: a lagging replica never moves a client backwards.
fn not_older(at: Position, seen: Position) -> Position {
    if seen.partition == at.partition {
        seen.max(at)
    } else {
        at
    }
}
