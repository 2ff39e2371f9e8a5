//! How queries run: on the blocking pool (they take locks and read RocksDB), expensive ones
//! (`StepQuery::is_expensive`, logs, jobs with every host) in one of a few turns (`turns`),
//! every one with a deadline (its wait for a turn included), and told to stop when their client
//! goes away. An expensive answer keeps its turn while it is rendered and written: the turns
//! bound how many large bodies exist at once, not only how many are computed.

use super::encoding::{self, Coding};
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
    /// Rendered groups (kept, or cheap to render per request), compressed for the coding the
    /// request asked for if they are kept.
    Rendered(Arc<RenderedStep>),
    /// An expensive answer rendered whole for one request (and coded as it asked), in its
    /// turn, which it holds.
    Whole {
        position: Position,
        step: Arc<StepEvent>,
        body: Vec<u8>,
        coding: Coding,
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

    /// The body coded as `coding` asks (as asked of [`run_answer`]), and what holds the turn
    /// while it is written; the coding used.
    pub fn into_body(self, request_id: &str, coding: Coding) -> (Body, Coding) {
        match self {
            Answer::Rendered(a) => {
                let (parts, coding) = a.parts(request_id, crate::now_ms(), coding);
                (parts.into_body(), coding)
            }
            Answer::Whole {
                body, coding, turn, ..
            } => (turn.body(body), coding),
        }
    }

    /// The body as bytes (an event of a stream, asked for as `Coding::Identity`), releasing
    /// any turn.
    pub fn into_bytes(self, request_id: &str) -> Vec<u8> {
        match self {
            Answer::Rendered(a) => a.body(request_id, crate::now_ms()),
            Answer::Whole { body, .. } => body,
        }
    }
}

/// The step status answer to `q` in `lang`, within the limits, for a body coded as `coding`.
/// A kept answer is looked up on the event loop (memory only: a poll that hits costs no hop to
/// the blocking pool, and no turn however expensive its query), its groups compressed once on
/// the blocking pool for the first client that asks for gzip. A cheap fresh answer is rendered
/// on the event loop, like any response body (rendered on the blocking pool by dozens of
/// threads at once, 170-KB answers took the cores from the event loop: benches/http, cap 100
/// uncached: p99 19 -> 74-146 ms); an expensive one in its turn, kept if it may be (a finished
/// step's), else rendered and coded whole for `request_id`.
pub async fn run_answer(
    state: &Arc<AppState>,
    q: StepQuery,
    lang: Lang,
    request_id: &str,
    coding: Coding,
) -> Result<Answer, QueryError> {
    if let Some(kept) = state.answers.get(&state.reader, &q, lang) {
        if !kept.prepared(coding) {
            let (ready, _) = run(state, false, move |_, _| {
                kept.prepare(coding);
                Ok(kept)
            })
            .await?;
            return Ok(Answer::Rendered(ready));
        }
        return Ok(Answer::Rendered(kept));
    }
    if !q.is_expensive() {
        let asked = q.clone();
        let (answer, _) = run(state, false, move |reader, cancel| {
            reader.answer(&asked, cancel)
        })
        .await?;
        return Ok(Answer::Rendered(state.answers.render(q, lang, answer)));
    }
    let answers = Arc::clone(&state.answers);
    let request_id = request_id.to_owned();
    let (rendered, turn) = run(state, true, move |reader, cancel| {
        let answer = reader.answer(&q, cancel)?;
        let rendered = answers.render(q, lang, answer);
        if rendered.is_rendered() {
            // Kept: written from the shared groups, like a hit.
            rendered.prepare(coding);
            return Ok(Ok(rendered));
        }
        let body = rendered.body(&request_id, crate::now_ms());
        let (body, coding) = encoding::encode(body, coding);
        Ok(Err((
            rendered.position,
            Arc::clone(&rendered.step),
            body,
            coding,
        )))
    })
    .await?;
    Ok(match rendered {
        Ok(kept) => Answer::Rendered(kept),
        Err((position, step, body, coding)) => Answer::Whole {
            position,
            step,
            body,
            coding,
            turn,
        },
    })
}
