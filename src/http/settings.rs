//! The `[http]` settings: where the API listens, who may call it, and what a query may cost.

use super::auth::AuthMode;
use crate::settings::{Mebibytes, Millis};
use std::net::SocketAddr;

/// The HTTP API (`[http]`).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpSettings {
    /// HTTP listen address.
    #[arg(long, env = "STEPVIEW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// How callers authenticate: app_secret (X-Bkapi-Authorization; true means this too),
    /// gateway (the API gateway's X-Bkapi-JWT only, with [[gateways]]), both (a request with a
    /// JWT is judged by it alone), or off (false means this too; a warning at start).
    #[arg(long, env = "STEPVIEW_AUTH", value_enum, default_value = "app_secret")]
    pub auth: AuthMode,
    /// Most expensive queries (uncapped answers, caps over 1000, search_ip, keyword, logs)
    /// computed and written at once; more wait their turn. 0: one per CPU core.
    #[arg(long, env = "STEPVIEW_MAX_EXPENSIVE_QUERIES", default_value = "0")]
    pub max_expensive_queries: usize,
    /// Longest a query may take, its wait for a turn included, before it is answered 503
    /// (code 1240002) and stopped, ms.
    #[arg(long, env = "STEPVIEW_QUERY_TIMEOUT_MS", default_value = "10000", value_parser = at_least_a_ms)]
    pub query_timeout_ms: Millis,
    /// Memory for rendered answers kept until their step changes, MiB; 0: none. Half for the
    /// answers polls ask for (each at most a sixteenth of the whole), half for large answers of
    /// finished steps (each at most nearly half: 100 000 hosts uncapped take 31 MB).
    #[arg(long, env = "STEPVIEW_ANSWER_CACHE_MB", default_value = "128")]
    pub answer_cache_mb: Mebibytes,
    /// Hex SHA-256 of the bearer token /metrics requires (`stepview hash-secret TOKEN`); unset:
    /// /metrics is open.
    #[arg(long, env = "STEPVIEW_METRICS_TOKEN_SHA256", value_parser = sha256_hex)]
    pub metrics_token_sha256: Option<String>,
    /// Hex SHA-256 of the bearer token the admin routes (POST /admin/checkpoint) require
    /// (`stepview hash-secret TOKEN`); unset: they refuse everyone. App grants are not admin
    /// rights.
    #[arg(long, env = "STEPVIEW_ADMIN_TOKEN_SHA256", value_parser = sha256_hex)]
    pub admin_token_sha256: Option<String>,
}

fn at_least_a_ms(s: &str) -> Result<Millis, String> {
    match s.parse::<Millis>()? {
        Millis(0) => Err("must be at least 1".into()),
        ms => Ok(ms),
    }
}

fn sha256_hex(s: &str) -> Result<String, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_owned())
    } else {
        Err("must be 64 hex digits (stepview hash-secret TOKEN)".into())
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

impl HttpSettings {
    /// `max_expensive_queries`, with 0 resolved to the CPU cores.
    pub fn expensive_query_slots(&self) -> usize {
        match self.max_expensive_queries {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}
