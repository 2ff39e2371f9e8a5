//! Turns for expensive queries: a few at a time (one per core by default), each holding its
//! turn while its answer is computed, rendered and written. A large body is streamed in chunks
//! by a task that holds the turn; a reader too slow to take it by the deadline loses both, and
//! its connection is aborted (a cut-off body is never passed off as whole).

use axum::body::{Body, Bytes};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The turns, and how long a query may take.
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

/// Bodies at least this large are streamed, holding their turn until written.
const STREAM_FROM: usize = 1 << 20;
/// What one chunk of a streamed body holds.
const CHUNK: usize = 256 << 10;

/// An expensive query's turn (or none, for a cheap one), held by its answer until the answer is
/// written.
pub struct Turn {
    pub(super) permit: Option<OwnedSemaphorePermit>,
    /// How long writing a body may take.
    pub(super) write_within: Duration,
}

impl Turn {
    /// The response body for `bytes`: as it is when small; else streamed in chunks by a task
    /// that holds the turn until the body is written, or drops both (and aborts the connection)
    /// when the reader has not taken it within the deadline.
    pub fn body(self, bytes: Vec<u8>) -> Body {
        if bytes.len() < STREAM_FROM {
            return Body::from(bytes);
        }
        let bytes = Bytes::from(bytes);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
        let aborted = Arc::new(AtomicBool::new(false));
        let writer_aborted = Arc::clone(&aborted);
        tokio::spawn(async move {
            let _turn = self.permit;
            let until = tokio::time::Instant::now() + self.write_within;
            for start in (0..bytes.len()).step_by(CHUNK) {
                let chunk = bytes.slice(start..(start + CHUNK).min(bytes.len()));
                match tokio::time::timeout_at(until, tx.send(chunk)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return, // the client went away
                    Err(_) => {
                        tracing::debug!("a reader did not take its answer in time: aborted");
                        writer_aborted.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        });
        let stream = futures_util::stream::poll_fn(move |cx| match rx.poll_recv(cx) {
            std::task::Poll::Ready(Some(chunk)) => std::task::Poll::Ready(Some(Ok(chunk))),
            std::task::Poll::Ready(None) if aborted.load(Ordering::SeqCst) => {
                std::task::Poll::Ready(Some(Err(std::io::Error::other(
                    "the answer was not read in time",
                ))))
            }
            std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        });
        Body::from_stream(stream)
    }
}
