//! What a shard reports about the members topic.

use super::Telemetry;
use std::time::{Duration, Instant};

/// Log lines go under the part they are about (`STEPVIEW_LOG=stepview::cluster=debug`).
const TARGET: &str = "stepview::cluster";

/// At most one log line per this long about ignored records (a forger may write many).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A members-topic record ignored.
#[derive(Debug, Clone, Copy)]
pub enum RecordIgnored {
    /// No MAC header: written without the members' secret.
    Unsigned,
    /// A MAC that does not verify: written without the members' secret, or changed.
    BadSignature,
    Malformed,
    /// Older than the newest heard from that member, or written too long ago.
    Stale,
    /// An entry of another shard set on the same topic (signed with its own secret).
    OtherSet,
}

impl RecordIgnored {
    fn label(self) -> &'static str {
        match self {
            RecordIgnored::Unsigned => "unsigned",
            RecordIgnored::BadSignature => "bad_signature",
            RecordIgnored::Malformed => "malformed",
            RecordIgnored::Stale => "stale",
            RecordIgnored::OtherSet => "other_set",
        }
    }

    pub fn emit(self, t: &Telemetry) {
        t.members_ignored.with_label_values(&[self.label()]).inc();
        if let RecordIgnored::OtherSet = self {
            return;
        }
        let mut logged = t.members_ignored_logged.lock();
        let (last, since) = &mut *logged;
        *since += 1;
        if last.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            tracing::warn!(
                target: TARGET,
                reason = self.label(),
                count = *since,
                "ignored members-topic records (unsigned or forged records mean someone without \
                 the members' secret writes to the topic: restrict it with Kafka ACLs)"
            );
            *last = Some(Instant::now());
            *since = 0;
        }
    }
}
