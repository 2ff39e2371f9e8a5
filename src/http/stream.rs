//! `GET /api/v3/watch_step_instance_status`: server-sent events for UIs (api.md, "Watching a
//! step"): the answer at once, then one after each change (at most one every 200 ms), each with
//! the ETag as its id; `event: end` and close once the step has finished; keep-alive comments.
//! A stream ends when this instance stops serving the step's partition (the client reconnects
//! and lands on the new owner) and when the service stops.

use super::encoding::Coding;
use super::error::ApiError;
use super::i18n::Lang;
use super::limits::{run_answer, Answer};
use super::render;
use super::respond::{json, request_id, to_api_error, with_code};
use super::state::AppState;
use super::status::moved_away;
use crate::query::{is_finished, Position, StepQuery, Waiter};
use crate::telemetry::Watching;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// At most one event per this long: changes in between are sent together.
const COALESCE: Duration = Duration::from_millis(200);
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn watch(
    State(state): State<Arc<AppState>>,
    Extension(q): Extension<StepQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let request_id = request_id(&headers);
    let last_event = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(Position::of_etag);
    let failed = |e: ApiError| {
        let body = render::failure(&e, lang, &request_id);
        with_code(json(e.http_status(), body, &request_id), e.code())
    };
    let waiter = state.reader.waiter(q.step_instance_id);
    let dropped = state.cluster.as_ref().map(|c| c.dropped());
    let first = match run_answer(&state, q.clone(), lang, &request_id, Coding::Identity).await {
        Ok(a) => a,
        Err(e) => return failed(to_api_error(&state, e, &request_id)),
    };
    if is_finished(first.step().status) && last_event == Some(first.position()) {
        // Nothing new and nothing to come: tells an EventSource to stop.
        return StatusCode::NO_CONTENT.into_response();
    }
    let events = Events {
        _watching: state.telemetry.watching(),
        state,
        q,
        waiter,
        dropped,
        lang,
        request_id: request_id.clone(),
        sent: last_event,
        sent_at: None,
        first: Some(first),
        end_next: false,
        ended: false,
    };
    let stream = futures_util::stream::unfold(events, |mut e| async move {
        let next = e.next().await?;
        Some((Ok::<_, Infallible>(next), e))
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// One stream's state.
struct Events {
    state: Arc<AppState>,
    q: StepQuery,
    waiter: Waiter,
    /// On a shard: changes when this instance stops serving a partition.
    dropped: Option<tokio::sync::watch::Receiver<u64>>,
    lang: Lang,
    request_id: String,
    /// The position last sent (or the client's `Last-Event-ID`).
    sent: Option<Position>,
    sent_at: Option<tokio::time::Instant>,
    /// The answer read before the stream started.
    first: Option<Answer>,
    /// The last status sent showed the step finished: `end` comes next.
    end_next: bool,
    /// `end` (or an error) was sent: the stream closes.
    ended: bool,
    _watching: Watching,
}

fn end() -> Event {
    Event::default().event("end").data("{\"finished\":true}")
}

impl Events {
    async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        if self.end_next {
            self.ended = true;
            return Some(end());
        }
        loop {
            let answer = match self.first.take() {
                Some(first) => first,
                None => {
                    if !self.next_change().await {
                        self.ended = true;
                        return None;
                    }
                    if let Some(at) = self.sent_at {
                        tokio::time::sleep_until(at + COALESCE).await;
                    }
                    match run_answer(
                        &self.state,
                        self.q.clone(),
                        self.lang,
                        &self.request_id,
                        Coding::Identity,
                    )
                    .await
                    {
                        Ok(a) => a,
                        Err(e) => {
                            let e = to_api_error(&self.state, e, &self.request_id);
                            self.ended = true;
                            let body = render::failure(&e, self.lang, &self.request_id);
                            let data = String::from_utf8(body).expect("JSON is UTF-8");
                            return Some(Event::default().event("error").data(data));
                        }
                    }
                }
            };
            let finished = is_finished(answer.step().status);
            let position = answer.position();
            if self.sent == Some(position) {
                // Nothing the client has not seen (a reconnect at the current position).
                if finished {
                    self.ended = true;
                    return Some(end());
                }
                continue;
            }
            self.sent = Some(position);
            self.sent_at = Some(tokio::time::Instant::now());
            self.end_next = finished;
            let body = answer.into_bytes(&self.request_id);
            let data = String::from_utf8(body).expect("JSON is UTF-8");
            return Some(
                Event::default()
                    .id(position.etag())
                    .event("status")
                    .data(data),
            );
        }
    }

    /// Waits for the step's next change: true when it came; false when the stream must end
    /// instead (this instance stopped serving the step's partition, or is stopping).
    async fn next_change(&mut self) -> bool {
        let step = self.q.step_instance_id;
        tokio::select! {
            _ = self.waiter.changed() => true,
            _ = self.state.shutdown.triggered() => false,
            _ = moved_away(&self.state, &mut self.dropped, step) => false,
        }
    }
}
