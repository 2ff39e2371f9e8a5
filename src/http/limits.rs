//! How queries run: on the blocking pool (they take locks and read RocksDB), expensive ones
//! (`StepQuery::is_expensive`) in one of a few turns, every one with a deadline (its wait for a
//! turn included), and told to stop when their client goes away.

use super::AppState;
use crate::query::{Cancel, QueryError, Reader};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

pub struct QueryLimits {
    pub expensive: Arc<Semaphore>,
    pub timeout: Duration,
}

impl QueryLimits {
    pub fn new(expensive_at_once: usize, timeout: Duration) -> QueryLimits {
        QueryLimits {
            expensive: Arc::new(Semaphore::new(expensive_at_once.max(1))),
            timeout,
        }
    }
}

/// Runs `query` within the limits (`expensive`: it may cost time proportional to a step); a
/// query whose caller goes away (the future is dropped) or whose deadline passes is told to stop.
pub async fn run<T: Send + 'static>(
    state: &Arc<AppState>,
    expensive: bool,
    query: impl FnOnce(&Reader, &Cancel) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, QueryError> {
    let limits = &state.limits;
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let turn = if expensive {
        let waiting = Arc::clone(&limits.expensive).acquire_owned();
        match tokio::time::timeout_at(deadline, waiting).await {
            Ok(Ok(turn)) => Some(turn),
            _ => {
                state.abandoned("busy");
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
    let task = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        query(&reader, &cancel)
    });
    let result = tokio::time::timeout_at(deadline, task).await;
    let cancel = on_drop.cancel.take().expect("taken once");
    match result {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => Err(QueryError::Internal(anyhow::anyhow!(
            "query task failed: {e}"
        ))),
        Err(_) => {
            cancel.cancel();
            state.abandoned("timeout");
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
            self.state.abandoned("client_gone");
        }
    }
}

impl AppState {
    fn abandoned(&self, reason: &str) {
        self.metrics
            .queries_abandoned
            .with_label_values(&[reason])
            .inc();
    }
}

/// The step status answer to `q` in `lang`, rendered, within the limits: from the answer cache
/// while the step has not changed. A fresh answer is rendered here, on the event loop, like any
/// response body: rendered on the blocking pool by dozens of threads at once, 170-KB answers
/// took the cores from the event loop (benches/http, cap 100 uncached: p99 19 -> 74-146 ms).
pub async fn run_answer(
    state: &Arc<AppState>,
    q: crate::query::StepQuery,
    lang: super::i18n::Lang,
) -> Result<Arc<super::render::RenderedStep>, QueryError> {
    enum Found {
        Kept(Arc<super::render::RenderedStep>),
        Fresh(crate::query::StepAnswer),
        /// Not kept, and expensive: computed in a turn of its own.
        Expensive,
    }
    let answers = Arc::clone(&state.answers);
    let (asked, expensive) = (q.clone(), q.is_expensive());
    // A kept answer costs no turn, however expensive its query was.
    let found = run(state, false, move |reader, cancel| {
        match answers.get(reader, &asked, lang) {
            Some(kept) => Ok(Found::Kept(kept)),
            None if expensive => Ok(Found::Expensive),
            None => reader.answer(&asked, cancel).map(Found::Fresh),
        }
    })
    .await?;
    let answer = match found {
        Found::Kept(kept) => return Ok(kept),
        Found::Fresh(answer) => answer,
        Found::Expensive => {
            let asked = q.clone();
            run(state, true, move |reader, cancel| {
                reader.answer(&asked, cancel)
            })
            .await?
        }
    };
    Ok(state.answers.render(q, lang, answer))
}
