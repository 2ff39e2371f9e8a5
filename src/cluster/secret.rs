//! The members' secret (cluster.md, "Who may be a member"): every record of the members topic
//! and every request one member makes of another on its own behalf is signed with it, so that
//! whoever can write to the topic or reach a member's port without it can neither become a
//! member (and draw callers' requests) nor ask a member for anything.
//!
//! Owns: reading the secret (a file or the environment, never a flag, never logged), and the two
//! MACs: of a members-topic record, and of a member-to-member request.

use anyhow::{Context, Result};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The environment variable that may hold the secret (when `cluster.secret_file` is not set).
pub const SECRET_ENV: &str = "STEPVIEW_CLUSTER_SECRET";
/// Shortest secret taken (cluster.md).
const MIN_BYTES: usize = 32;

/// How old a signed request may be when it arrives (clocks of members differ a little).
pub const REQUEST_MAX_AGE_MS: i64 = 5_000;

/// Headers of a signed member-to-member request.
pub const APP_HEADER: &str = "x-stepview-app";
pub const TIME_HEADER: &str = "x-stepview-time";
pub const SIGNATURE_HEADER: &str = "x-stepview-signature";
/// The header of a members-topic record that carries its MAC.
pub const RECORD_MAC_HEADER: &str = "stepview-mac";

type HmacSha256 = Hmac<Sha256>;

/// The shared secret of one shard set. Its bytes never leave this type (no Debug, no Display).
pub struct MembersSecret(Vec<u8>);

impl MembersSecret {
    /// The secret from `file` when given, else from `STEPVIEW_CLUSTER_SECRET`; an error that says
    /// what to do when there is none or it is too short. Trailing line breaks of a file are not
    /// part of it.
    pub fn load(file: Option<&Path>) -> Result<MembersSecret> {
        let bytes = match file {
            Some(path) => {
                let mut bytes = std::fs::read(path).with_context(|| {
                    format!("cannot read cluster.secret_file {}", path.display())
                })?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                bytes
            }
            None => std::env::var_os(SECRET_ENV)
                .map(|v| v.into_encoded_bytes())
                .with_context(|| {
                    format!(
                        "a shard (cluster.name) needs the members' secret: set \
                         cluster.secret_file or {SECRET_ENV} (at least {MIN_BYTES} bytes, the same \
                         on every member; e.g. `openssl rand -hex 32`)"
                    )
                })?,
        };
        anyhow::ensure!(
            bytes.len() >= MIN_BYTES,
            "the members' secret has {} bytes; it needs at least {MIN_BYTES}",
            bytes.len()
        );
        Ok(MembersSecret(bytes))
    }

    #[cfg(test)]
    pub fn of(bytes: &[u8]) -> MembersSecret {
        MembersSecret(bytes.to_vec())
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        for part in parts {
            mac.update(part);
        }
        mac
    }

    /// The MAC of a members-topic record: HMAC-SHA256("v1" ‖ key ‖ value); a tombstone's value
    /// is empty.
    pub fn record_mac(&self, key: &[u8], value: &[u8]) -> [u8; 32] {
        self.mac(&[b"v1", key, value])
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `mac` is the record's, compared in constant time.
    pub fn record_signed(&self, key: &[u8], value: &[u8], mac: &[u8]) -> bool {
        self.mac(&[b"v1", key, value]).verify_slice(mac).is_ok()
    }

    /// The signature of a member-to-member request, hex: HMAC over the method, path, query,
    /// the body's SHA-256, the time (Unix ms) and the caller's app code, each line-separated.
    pub fn request_signature(&self, request: &SignedRequest<'_>) -> String {
        hex::encode(self.request_mac(request).finalize().into_bytes())
    }

    /// Whether `signature` (hex) signs `request`, and `request` is fresh at `now_ms`.
    pub fn request_signed(
        &self,
        request: &SignedRequest<'_>,
        signature: &str,
        now_ms: i64,
    ) -> bool {
        let fresh = (now_ms - request.time_ms).abs() <= REQUEST_MAX_AGE_MS;
        let Ok(given) = hex::decode(signature) else {
            return false;
        };
        fresh && self.request_mac(request).verify_slice(&given).is_ok()
    }

    fn request_mac(&self, r: &SignedRequest<'_>) -> HmacSha256 {
        let body = hex::encode(Sha256::digest(r.body));
        let time = r.time_ms.to_string();
        self.mac(&[
            b"stepview-request-v1\n",
            r.method.as_bytes(),
            b"\n",
            r.path.as_bytes(),
            b"\n",
            r.query.as_bytes(),
            b"\n",
            body.as_bytes(),
            b"\n",
            time.as_bytes(),
            b"\n",
            r.app.as_bytes(),
        ])
    }
}

/// What a member-to-member request's signature covers.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
    pub time_ms: i64,
    /// The app code of the caller the request is made for.
    pub app: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_verify_only_with_the_secret_and_unchanged() {
        let secret = MembersSecret::of(&[7; 32]);
        let mac = secret.record_mac(b"http://a:1", b"{\"x\":1}");
        assert!(secret.record_signed(b"http://a:1", b"{\"x\":1}", &mac));
        assert!(!secret.record_signed(b"http://a:1", b"{\"x\":2}", &mac));
        assert!(!secret.record_signed(b"http://b:1", b"{\"x\":1}", &mac));
        let other = MembersSecret::of(&[8; 32]);
        assert!(!other.record_signed(b"http://a:1", b"{\"x\":1}", &mac));
        // A tombstone is signed too: its MAC is not an entry's.
        let tombstone = secret.record_mac(b"http://a:1", b"");
        assert!(secret.record_signed(b"http://a:1", b"", &tombstone));
        assert!(!secret.record_signed(b"http://a:1", b"", &mac));
    }

    #[test]
    fn requests_verify_when_unchanged_and_fresh() {
        let secret = MembersSecret::of(&[1; 40]);
        let request = SignedRequest {
            method: "GET",
            path: "/internal/v1/job_steps",
            query: "job_instance_id=1&bk_scope_type=biz&bk_scope_id=2",
            body: b"",
            time_ms: 1_000_000,
            app: "bk-job",
        };
        let signature = secret.request_signature(&request);
        assert!(secret.request_signed(&request, &signature, 1_000_000 + REQUEST_MAX_AGE_MS));
        assert!(!secret.request_signed(&request, &signature, 1_000_000 + REQUEST_MAX_AGE_MS + 1));
        let other_scope = SignedRequest {
            query: "job_instance_id=1&bk_scope_type=biz&bk_scope_id=3",
            ..request
        };
        assert!(!secret.request_signed(&other_scope, &signature, 1_000_000));
        let other_app = SignedRequest {
            app: "other",
            query: "job_instance_id=1&bk_scope_type=biz&bk_scope_id=2",
            ..other_scope
        };
        assert!(!secret.request_signed(&other_app, &signature, 1_000_000));
        assert!(!secret.request_signed(&other_app, "zz", 1_000_000));
    }

    #[test]
    fn a_short_or_missing_secret_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").unwrap();
        let e = MembersSecret::load(Some(&short)).err().unwrap().to_string();
        assert!(e.contains("at least 32"), "{e}");
        let good = dir.path().join("good");
        std::fs::write(&good, format!("{}\n", "k".repeat(32))).unwrap();
        assert!(MembersSecret::load(Some(&good)).is_ok());
        let missing = dir.path().join("missing");
        let e = format!("{:#}", MembersSecret::load(Some(&missing)).err().unwrap());
        assert!(e.contains("secret_file"), "{e}");
    }
}
