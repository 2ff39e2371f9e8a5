//! What the HTTP side reports: requests answered, queries abandoned, where answers came from,
//! and requests forwarded to other members.

use super::Telemetry;
use std::time::Duration;

/// Log lines go under the part they are about (`STEPVIEW_LOG=stepview::http=debug`).
const TARGET: &str = "stepview::http";

/// An API request answered.
pub struct RequestAnswered<'a> {
    pub route: &'a str,
    pub status: u16,
    pub code: i64,
    pub took: Duration,
    pub request_id: &'a str,
}

impl RequestAnswered<'_> {
    pub fn emit(&self, t: &Telemetry) {
        tracing::debug!(
            target: TARGET,
            request_id = self.request_id,
            route = self.route,
            status = self.status,
            code = self.code,
            micros = self.took.as_micros() as u64,
            "request"
        );
        t.http_requests
            .with_label_values(&[self.route, &self.status.to_string(), &self.code.to_string()])
            .inc();
        t.http_duration
            .with_label_values(&[self.route])
            .observe(self.took.as_secs_f64());
    }
}

/// A query not answered.
#[derive(Debug, Clone, Copy)]
pub enum QueryAbandoned {
    /// No turn for an expensive query before its deadline.
    Busy,
    /// Its deadline passed while it ran.
    Timeout,
    /// Its client went away.
    ClientGone,
}

impl QueryAbandoned {
    pub fn emit(self, t: &Telemetry) {
        let reason = match self {
            QueryAbandoned::Busy => "busy",
            QueryAbandoned::Timeout => "timeout",
            QueryAbandoned::ClientGone => "client_gone",
        };
        t.queries_abandoned.with_label_values(&[reason]).inc();
    }
}

/// Where a status answer came from.
#[derive(Debug, Clone, Copy)]
pub enum AnswerLookup {
    /// Rendered before, its step unchanged since.
    Hit,
    /// Queried and rendered.
    Miss,
}

impl AnswerLookup {
    pub fn emit(self, t: &Telemetry) {
        let outcome = match self {
            AnswerLookup::Hit => "hit",
            AnswerLookup::Miss => "miss",
        };
        t.answer_cache.with_label_values(&[outcome]).inc();
    }
}

/// A request about a partition another member serves.
pub enum Forwarded<'a> {
    /// Forwarded, and its answer's headers came back after `took`.
    Ok { took: Duration },
    /// The member serving it did not answer.
    Error { member: &'a str, why: &'a str },
    /// No live member serves the partition (it is moving), or this member is fenced.
    Unavailable,
}

impl Forwarded<'_> {
    pub fn emit(&self, t: &Telemetry) {
        let outcome = match self {
            Forwarded::Ok { took } => {
                t.forward_duration.observe(took.as_secs_f64());
                "ok"
            }
            Forwarded::Error { member, why } => {
                tracing::debug!(target: TARGET, member, why, "forwarding failed");
                "error"
            }
            Forwarded::Unavailable => "unavailable",
        };
        t.forwarded.with_label_values(&[outcome]).inc();
    }
}
