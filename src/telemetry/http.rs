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
    /// Who asked (`None` before authentication, or with it off).
    pub app: Option<&'a str>,
    pub user: Option<&'a str>,
    /// The API gateway's request id, when the request came through it.
    pub gateway_request_id: Option<&'a str>,
}

impl RequestAnswered<'_> {
    pub fn emit(&self, t: &Telemetry) {
        tracing::debug!(
            target: TARGET,
            request_id = self.request_id,
            route = self.route,
            app = self.app,
            user = self.user,
            gateway_request_id = self.gateway_request_id,
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

/// The API gateways' public keys read again (SIGHUP).
pub enum GatewayKeysReloaded<'a> {
    /// Every key file read; verified tokens forgotten.
    Reloaded,
    /// A key file did not parse: every old key stays.
    Kept { error: &'a anyhow::Error },
    /// No gateway is configured (the mode takes no JWT).
    NoGateways,
}

impl GatewayKeysReloaded<'_> {
    pub fn emit(&self, t: &Telemetry) {
        let outcome = match self {
            GatewayKeysReloaded::Reloaded => {
                tracing::info!(target: TARGET, "the API gateways' public keys were read again");
                "reloaded"
            }
            GatewayKeysReloaded::Kept { error } => {
                tracing::error!(
                    target: TARGET,
                    error = format!("{error:#}"),
                    "the API gateways' keys were not reloaded (the old keys stay): fix the file \
                     and send SIGHUP again"
                );
                "kept"
            }
            GatewayKeysReloaded::NoGateways => {
                tracing::info!(target: TARGET, "SIGHUP: no API gateway keys to read again");
                "no_gateways"
            }
        };
        t.gateway_key_reloads.with_label_values(&[outcome]).inc();
    }
}
