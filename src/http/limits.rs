//! How queries run: on the blocking pool (they take locks and read RocksDB), expensive ones
//! (`StepQuery::is_expensive`, logs, jobs with every host) in one of a few turns (`turns`),
//! every one with a deadline (its wait for a turn included), and told to stop when their client
//! goes away. An expensive answer keeps its turn while it is rendered and written: the turns
//! bound how many large bodies exist at once, not only how many are computed.

use super::i18n::Lang;
use super::render::RenderedStep;
use super::state::AppState;
use super::turns::Turn;
use crate::events::StepEvent;
use crate::query::{Cancel, Position, QueryError, Reader, StepQuery};
use crate::telemetry::http::QueryAbandoned;
use axum::body::Body;
use std::sync::Arc;

/// Runs `query` within the limits (`expensive`: it may cost time proportional to a step); a
/// query whose caller goes away (the future is dropped) or whose deadline passes is told to stop.
/// An expensive query's turn comes back with its result, to be held while it is written.
pub async fn run<T: Send + 'static>(
    state: &Arc<AppState>,
    expensive: bool,
    query: impl FnOnce(&Reader, &Cancel) -> Result<T, QueryError> + Send + 'static,
) -> Result<(T, Turn), QueryError> {
    let limits = &state.limits;
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let permit = if expensive {
        let waiting = Arc::clone(&limits.expensive).acquire_owned();
        match tokio::time::timeout_at(deadline, waiting).await {
            Ok(Ok(turn)) => Some(turn),
            _ => {
                QueryAbandoned::Busy.emit(&state.telemetry);
                return Err(QueryError::Cancelled);
            }
        }
    } else {
        None
    };
    let cancel = Arc::new(Cancel::default());
    let mut on_drop = CancelOnDrop {
        cancel: Some(Arc::clone(&cancel)),
        state: Arc::clone(state),
    };
    let reader = state.reader.clone();
    // The turn stays with the task until it ends, however its caller fares.
    let task = tokio::task::spawn_blocking(move || (query(&reader, &cancel), permit));
    let result = tokio::time::timeout_at(deadline, task).await;
    let cancel = on_drop.cancel.take().expect("taken once");
    match result {
        Ok(Ok((answer, permit))) => answer.map(|a| {
            let turn = Turn {
                permit,
                write_within: limits.timeout,
            };
            (a, turn)
        }),
        Ok(Err(e)) => Err(QueryError::Internal(anyhow::anyhow!(
            "query task failed: {e}"
        ))),
        Err(_) => {
            cancel.cancel();
            QueryAbandoned::Timeout.emit(&state.telemetry);
            Err(QueryError::Cancelled)
        }
    }
}

/// Stops a running query when its future is dropped: the client went away.
struct CancelOnDrop {
    cancel: Option<Arc<Cancel>>,
    state: Arc<AppState>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            cancel.cancel();
            QueryAbandoned::ClientGone.emit(&self.state.telemetry);
        }
    }
}

/// A `get_step_instance_status` answer, ready to write.
pub enum Answer {
    /// Rendered groups (kept, or cheap to render per request).
    Rendered(Arc<RenderedStep>),
    /// An expensive answer rendered whole for one request, in its turn, which it holds.
    Whole {
        position: Position,
        step: Arc<StepEvent>,
        body: Vec<u8>,
        turn: Turn,
    },
}

impl Answer {
    pub fn position(&self) -> Position {
        match self {
            Answer::Rendered(a) => a.position,
            Answer::Whole { position, .. } => *position,
        }
    }

    pub fn step(&self) -> &StepEvent {
        match self {
            Answer::Rendered(a) => &a.step,
            Answer::Whole { step, .. } => step,
        }
    }

    /// The body, and what holds the turn while it is written.
    pub fn into_body(self, request_id: &str) -> Body {
        match self {
            Answer::Rendered(a) => Body::from(a.body(request_id, crate::now_ms())),
            Answer::Whole { body, turn, .. } => turn.body(body),
        }
    }

    /// The body as bytes (an event of a stream), releasing any turn.
    pub fn into_bytes(self, request_id: &str) -> Vec<u8> {
        match self {
            Answer::Rendered(a) => a.body(request_id, crate::now_ms()),
            Answer::Whole { body, .. } => body,
        }
    }
}

/// The step status answer to `q` in `lang`, within the limits: from the answer cache while the
/// step has not changed. A cheap fresh answer is rendered on the event loop, like any response
/// body (rendered on the blocking pool by dozens of threads at once, 170-KB answers took the
/// cores from the event loop: benches/http, cap 100 uncached: p99 19 -> 74-146 ms); an
/// expensive one is rendered whole in its turn, for `request_id`.
pub async fn run_answer(
    state: &Arc<AppState>,
    q: StepQuery,
    lang: Lang,
    request_id: &str,
) -> Result<Answer, QueryError> {
    enum Found {
        Kept(Arc<RenderedStep>),
        Fresh(crate::query::StepAnswer),
        /// Not kept, and expensive: computed in a turn of its own.
        Expensive,
    }
    let answers = Arc::clone(&state.answers);
    let (asked, expensive) = (q.clone(), q.is_expensive());
    // A kept answer costs no turn, however expensive its query was.
    let (found, _) = run(state, false, move |reader, cancel| {
        match answers.get(reader, &asked, lang) {
            Some(kept) => Ok(Found::Kept(kept)),
            None if expensive => Ok(Found::Expensive),
            None => reader.answer(&asked, cancel).map(Found::Fresh),
        }
    })
    .await?;
    match found {
        Found::Kept(kept) => Ok(Answer::Rendered(kept)),
        Found::Fresh(answer) => Ok(Answer::Rendered(state.answers.render(q, lang, answer))),
        Found::Expensive => {
            let answers = Arc::clone(&state.answers);
            let request_id = request_id.to_owned();
            let ((position, step, body), turn) = run(state, true, move |reader, cancel| {
                let answer = reader.answer(&q, cancel)?;
                let rendered = answers.render(q, lang, answer);
                let body = rendered.body(&request_id, crate::now_ms());
                Ok((rendered.position, Arc::clone(&rendered.step), body))
            })
            .await?;
            Ok(Answer::Whole {
                position,
                step,
                body,
                turn,
            })
        }
    }
}
