//! Watching steps: who waits for which step to change, and waking them once apply has made a
//! change visible. A waiter costs a small channel receiver, no thread: held long-polls and
//! server-sent event streams are async tasks parked on it.
//!
//! Owns: the waiters' registry, keyed by step id (a step that does not exist yet may be waited
//! for). Must not: read or change the views (a woken waiter reads its answer through `query`).

use crate::store::clock::Position;
use dashmap::DashMap;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Default)]
pub struct Watches {
    steps: DashMap<i64, watch::Sender<Position>>,
}

/// One waiter's view of a step: [`Waiter::changed`] completes when the step changes after the
/// waiter was made. Leaving the registry when the last waiter of a step goes.
pub struct Waiter {
    watches: Arc<Watches>,
    step: i64,
    rx: watch::Receiver<Position>,
}

impl Watches {
    /// Apply calls this once a change of `step`, at `at`, is visible to queries.
    pub fn changed(&self, step: i64, at: Position) {
        if let Some(tx) = self.steps.get(&step) {
            tx.send_replace(at);
        }
    }

    /// Starts waiting for changes of `step` from now on. Make the waiter before reading the
    /// answer it compares against, so that no change in between is missed.
    pub fn waiter(self: &Arc<Self>, step: i64) -> Waiter {
        let rx = self
            .steps
            .entry(step)
            .or_insert_with(|| watch::channel(Position::default()).0)
            .subscribe();
        Waiter {
            watches: Arc::clone(self),
            step,
            rx,
        }
    }

    /// Steps with at least one waiter.
    pub fn watched_steps(&self) -> usize {
        self.steps.len()
    }
}

impl Waiter {
    /// Completes at the step's next change (at once if one came since the last call).
    pub async fn changed(&mut self) {
        // The sender lives as long as any receiver: an error cannot happen while we hold one.
        let _ = self.rx.changed().await;
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // Counted under the map's lock, so that a waiter being made at this moment either keeps
        // the channel alive or makes a new one.
        self.watches
            .steps
            .remove_if(&self.step, |_, tx| tx.receiver_count() <= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_the_waiters_of_a_step_and_forgets_steps_nobody_watches() {
        let watches = Arc::new(Watches::default());
        let mut a = watches.waiter(7);
        let mut b = watches.waiter(7);
        let mut other = watches.waiter(8);
        assert_eq!(watches.watched_steps(), 2);
        let at = Position {
            partition: 0,
            offset: 5,
        };
        watches.changed(7, at);
        tokio::time::timeout(Duration::from_secs(1), a.changed())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), b.changed())
            .await
            .unwrap();
        let not_woken = tokio::time::timeout(Duration::from_millis(50), other.changed()).await;
        assert!(
            not_woken.is_err(),
            "a change of step 7 woke a waiter of step 8"
        );
        drop(a);
        assert_eq!(watches.watched_steps(), 2);
        drop(b);
        drop(other);
        assert_eq!(watches.watched_steps(), 0);
        watches.changed(7, at); // nobody waits: nothing to do
    }
}
