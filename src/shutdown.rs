//! The stop signal every long-running part watches: the HTTP server, the Kafka source on its
//! thread, retry loops. Triggered once (SIGTERM/SIGINT, or a part that failed for good), seen by
//! all; async code awaits it, blocking threads poll it or sleep on it.
//!
//! Owns: only the signal. Must not: decide what stopping means for a part (each part finishes its
//! own work in hand).

use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Shutdown(Arc<Signal>);

#[derive(Default)]
struct Signal {
    triggered: Mutex<bool>,
    /// Wakes blocking sleepers.
    condvar: Condvar,
    /// Wakes async waiters.
    notify: Notify,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Starts stopping; later calls change nothing.
    pub fn trigger(&self) {
        let mut triggered = self.0.triggered.lock();
        if !*triggered {
            *triggered = true;
            self.0.condvar.notify_all();
            self.0.notify.notify_waiters();
        }
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.triggered.lock()
    }

    /// Completes once stopping has started.
    pub async fn triggered(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }

    /// Sleeps up to `timeout` on a blocking thread, waking early when stopping starts; true when
    /// stopping has started.
    pub fn sleep(&self, timeout: Duration) -> bool {
        let mut triggered = self.0.triggered.lock();
        if !*triggered {
            self.0.condvar.wait_for(&mut triggered, timeout);
        }
        *triggered
    }
}

/// Completes on SIGTERM or SIGINT: what stops a `stepview` process.
pub async fn signalled() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("can install a SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn wakes_async_waiters_and_blocking_sleepers() {
        let shutdown = Shutdown::new();
        let waiter = tokio::spawn({
            let s = shutdown.clone();
            async move { s.triggered().await }
        });
        let sleeper = std::thread::spawn({
            let s = shutdown.clone();
            move || {
                let started = Instant::now();
                (s.sleep(Duration::from_secs(30)), started.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        waiter.await.unwrap();
        let (stopped, slept) = sleeper.join().unwrap();
        assert!(stopped && slept < Duration::from_secs(5), "{slept:?}");
        assert!(
            shutdown.sleep(Duration::from_secs(30)),
            "returns at once once triggered"
        );
    }
}
