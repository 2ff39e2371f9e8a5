//! What every handler reads: the views, authentication, telemetry, limits, the answer cache,
//! and on a shard the cluster and the client that forwards.

use super::answer_cache::AnswerCache;
use super::auth::Auth;
use super::client::Forwarder;
use super::turns::QueryLimits;
use crate::cluster::Cluster;
use crate::health::Health;
use crate::query::Reader;
use crate::shutdown::Shutdown;
use crate::telemetry::Telemetry;
use std::sync::Arc;

/// What the handlers read.
pub struct AppState {
    pub reader: Reader,
    pub auth: Auth,
    pub telemetry: Arc<Telemetry>,
    pub health: Arc<Health>,
    pub limits: QueryLimits,
    /// Rendered status answers, kept until their step changes.
    pub answers: Arc<AnswerCache>,
    /// SHA-256 of the bearer token `/metrics` wants, if any.
    pub metrics_token: Option<[u8; 32]>,
    /// SHA-256 of the bearer token the admin routes want; none: they refuse everyone.
    pub admin_token: Option<[u8; 32]>,
    /// On a shard: where queries go, and the client that forwards them.
    pub cluster: Option<Arc<Cluster>>,
    pub forwarder: Option<Forwarder>,
    /// The service is stopping: held requests are answered and streams end.
    pub shutdown: Shutdown,
}
