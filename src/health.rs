//! Liveness and readiness: what `/healthz` and `/readyz` report.
//!
//! Ready means: ingest is running and its last apply succeeded (else the cause is told, RocksDB's
//! words included); and, when a topic is read, this instance sees its partitions' ends (fetch responses
//! keep coming) and has caught up to within the configured lag since it last started seeing them.
//! A broker that stops answering makes the instance unready after [`ENDS_STALE`]; it is ready
//! again once it has caught up. Queries are answered from the views all the while.
//!
//! Owns: the readiness decision. Must not: measure anything itself (parts report to it).

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long partition ends may go unseen before the instance says it is not ready.
pub const ENDS_STALE: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Health {
    /// Why the last apply failed; `None` once one succeeds.
    apply_failure: Mutex<Option<String>>,
    ingest_stopped: AtomicBool,
    source: Mutex<Source>,
}

#[derive(Debug, Default)]
enum Source {
    /// A topic is read; nothing reported yet.
    #[default]
    Starting,
    Reading {
        /// When the partitions' ends were last all seen (the oldest of their last sightings).
        ends_seen: Instant,
        /// Caught up since the ends were last seen without a gap.
        caught_up: bool,
    },
    /// No topic is read: the instance serves what is stored.
    StoredOnly,
}

impl Health {
    /// The last apply failed, and why (`None`: it succeeded).
    pub fn set_apply_failure(&self, cause: Option<String>) {
        *self.apply_failure.lock() = cause;
    }

    /// Ingest stopped for good (the process is about to exit with an error).
    pub fn set_ingest_stopped(&self) {
        self.ingest_stopped.store(true, Ordering::SeqCst);
    }

    /// No topic is read: ready at once (nothing is loaded at start).
    pub fn set_stored_only(&self) {
        *self.source.lock() = Source::StoredOnly;
    }

    /// What the source sees, about once a second: when it last saw every partition's end
    /// (`None`: some end never seen), and whether every partition lags within the bound.
    /// Once caught up, a lag spike does not make the instance unready; losing sight of the ends
    /// for longer than [`ENDS_STALE`] does, until it has caught up again.
    pub fn report_source(&self, ends_seen: Option<Instant>, lag_within_bound: bool) {
        let mut source = self.source.lock();
        let Some(ends_seen) = ends_seen else {
            return;
        };
        let was_caught_up = match *source {
            Source::Reading {
                ends_seen: before,
                caught_up,
            } => caught_up && before.elapsed() <= ENDS_STALE,
            Source::Starting | Source::StoredOnly => false,
        };
        let fresh = ends_seen.elapsed() <= ENDS_STALE;
        *source = Source::Reading {
            ends_seen,
            caught_up: fresh && (was_caught_up || lag_within_bound),
        };
    }

    /// `Ok` when ready, else what is missing.
    pub fn readiness(&self) -> Result<(), String> {
        if self.ingest_stopped.load(Ordering::SeqCst) {
            return Err("ingest stopped (see the log); the process is exiting".into());
        }
        if let Some(cause) = &*self.apply_failure.lock() {
            return Err(format!(
                "applying events fails, and is retried until it succeeds: {cause}"
            ));
        }
        match *self.source.lock() {
            Source::StoredOnly => Ok(()),
            Source::Starting => Err("catching up with the topic".into()),
            Source::Reading { ends_seen, .. } if ends_seen.elapsed() > ENDS_STALE => Err(format!(
                "no fetch response from the broker for {} s: cannot see the topic's ends \
                 (is the broker reachable?)",
                ends_seen.elapsed().as_secs()
            )),
            Source::Reading {
                caught_up: false, ..
            } => Err("catching up with the topic".into()),
            Source::Reading { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Health {
        Health::default()
    }

    #[test]
    fn ready_once_caught_up_and_unready_while_the_ends_are_unseen() {
        let h = ready();
        assert_eq!(h.readiness().unwrap_err(), "catching up with the topic");
        h.report_source(None, true);
        assert!(h.readiness().is_err(), "an end never seen is not caught up");
        h.report_source(Some(Instant::now()), false);
        assert_eq!(h.readiness().unwrap_err(), "catching up with the topic");
        h.report_source(Some(Instant::now()), true);
        assert_eq!(h.readiness(), Ok(()));
        h.report_source(Some(Instant::now()), false);
        assert_eq!(h.readiness(), Ok(()), "a lag spike alone keeps it ready");

        let long_ago = Instant::now() - ENDS_STALE - Duration::from_secs(1);
        h.report_source(Some(long_ago), true);
        assert!(h.readiness().unwrap_err().contains("broker reachable"));
        // Seen again but behind: catching up, not ready; caught up: ready.
        h.report_source(Some(Instant::now()), false);
        assert_eq!(h.readiness().unwrap_err(), "catching up with the topic");
        h.report_source(Some(Instant::now()), true);
        assert_eq!(h.readiness(), Ok(()));

        h.set_ingest_stopped();
        assert!(h.readiness().unwrap_err().contains("ingest stopped"));
    }

    #[test]
    fn reports_that_stop_coming_make_it_unready() {
        let h = ready();
        let seen = Instant::now() - ENDS_STALE + Duration::from_millis(200);
        h.report_source(Some(seen), true);
        assert_eq!(h.readiness(), Ok(()));
        std::thread::sleep(Duration::from_millis(400));
        assert!(h.readiness().is_err(), "no report for too long");
    }

    #[test]
    fn stored_only_is_ready_at_once() {
        let h = Health::default();
        assert!(h.readiness().is_err());
        h.set_stored_only();
        assert_eq!(h.readiness(), Ok(()));
    }
}
