//! The HTTP client one member calls another with: no redirects followed, no proxy taken from
//! the environment, TLS (rustls, the system's roots) for `https://` members; deadlines are set
//! per request.

use std::time::Duration;

/// The HTTP client requests to other members go through.
pub struct Forwarder {
    pub(super) client: reqwest::Client,
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder {
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(1))
                .pool_idle_timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .expect("an HTTP client with these settings"),
        }
    }
}
