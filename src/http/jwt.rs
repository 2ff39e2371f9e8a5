//! The API gateway's statement of the caller (gateway.md, "The JWT"): `X-Bkapi-JWT`, signed by a
//! configured gateway (`kid`) with one of its public keys, in the algorithm configured for it
//! (never the one the token names alone: `none`, `HS*` and any other are refused). Verified
//! tokens are kept, by their exact bytes, until they expire (bounded), so that the RSA work is
//! done once per token, not once per request; a reload of the keys empties that cache.
//!
//! Owns: the gateways' keys, verifying a token, the verified-token cache. Must not: decide what
//! the app may read (`auth` does, from the app's grants).

use anyhow::{Context, Result};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::RwLock;
use quick_cache::sync::Cache;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Most seconds of clock skew taken on `exp` and `nbf` (gateway.md).
const LEEWAY_S: u64 = 60;
/// Most verified tokens kept at once.
const CACHED_TOKENS: usize = 20_000;

/// A gateway whose tokens are taken (config file only: `[[gateways]]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Its name, as its tokens' `kid` says (bk-job's gateway is `bk-job`).
    pub name: String,
    /// Its public keys (PEM), one file each: two during a key rotation.
    pub public_key_files: Vec<PathBuf>,
    /// `RS512` (bk-apigateway's) or `RS256`.
    #[serde(default = "rs512")]
    pub algorithm: GatewayAlgorithm,
    /// When set, a token's `iss` must be this.
    #[serde(default)]
    pub issuer: Option<String>,
}

fn rs512() -> GatewayAlgorithm {
    GatewayAlgorithm::RS512
}

/// The algorithms a gateway may be configured with.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum GatewayAlgorithm {
    RS512,
    RS256,
}

impl GatewayAlgorithm {
    fn jwt(self) -> Algorithm {
        match self {
            GatewayAlgorithm::RS512 => Algorithm::RS512,
            GatewayAlgorithm::RS256 => Algorithm::RS256,
        }
    }
}

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub app: String,
    pub user: Option<String>,
    /// Its `exp` (Unix seconds).
    exp: i64,
}

/// One gateway's keys, as read from its files.
struct Keys {
    keys: Vec<DecodingKey>,
    validation: Validation,
}

/// The configured gateways and what their keys have verified.
pub struct Gateways {
    config: Vec<GatewayConfig>,
    keys: RwLock<Arc<HashMap<String, Keys>>>,
    verified: Cache<String, Verified>,
}

#[derive(Deserialize)]
struct Claims {
    app: AppClaim,
    #[serde(default)]
    user: Option<UserClaim>,
    exp: i64,
}

#[derive(Deserialize)]
struct AppClaim {
    #[serde(default)]
    bk_app_code: Option<String>,
    #[serde(default)]
    app_code: Option<String>,
    #[serde(default)]
    verified: bool,
}

#[derive(Deserialize)]
struct UserClaim {
    #[serde(default)]
    bk_username: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

impl Gateways {
    /// Reads every gateway's key files; an error names the file that does not parse.
    pub fn new(config: &[GatewayConfig]) -> Result<Gateways> {
        Ok(Gateways {
            keys: RwLock::new(Arc::new(read_keys(config)?)),
            config: config.to_vec(),
            verified: Cache::new(CACHED_TOKENS),
        })
    }

    /// Reads the key files again, all or nothing: on any error the old keys stay. Verified
    /// tokens are forgotten either way (a key may have been withdrawn).
    pub fn reload(&self) -> Result<()> {
        let fresh = read_keys(&self.config);
        self.verified.clear();
        *self.keys.write() = Arc::new(fresh?);
        Ok(())
    }

    /// Who `token` says the caller is, if a configured gateway signed it and it holds
    /// (gateway.md's checks, in order).
    pub fn verify(&self, token: &str) -> Option<Verified> {
        let now = crate::now_ms() / 1000;
        if let Some(known) = self.verified.get(token) {
            return (known.exp + LEEWAY_S as i64 >= now).then_some(known);
        }
        if token.is_empty() || token.split('.').count() != 3 {
            return None;
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        let keys = Arc::clone(&self.keys.read());
        let gateway = keys.get(header.kid.as_deref()?)?;
        let claims = gateway
            .keys
            .iter()
            .find_map(|key| jsonwebtoken::decode::<Claims>(token, key, &gateway.validation).ok())?
            .claims;
        let app = claims.app.bk_app_code.or(claims.app.app_code)?;
        if !claims.app.verified || app.is_empty() {
            return None;
        }
        let user = claims.user.and_then(|u| u.bk_username.or(u.username));
        let verified = Verified {
            app,
            user,
            exp: claims.exp,
        };
        self.verified.insert(token.to_owned(), verified.clone());
        Some(verified)
    }
}

fn read_keys(config: &[GatewayConfig]) -> Result<HashMap<String, Keys>> {
    let mut gateways = HashMap::new();
    for gateway in config {
        anyhow::ensure!(
            !gateway.public_key_files.is_empty(),
            "gateway {:?} has no public_key_files",
            gateway.name
        );
        let mut keys = Vec::new();
        for path in &gateway.public_key_files {
            let pem = std::fs::read(path).with_context(|| {
                format!(
                    "cannot read gateway {:?}'s key {}",
                    gateway.name,
                    path.display()
                )
            })?;
            let key = DecodingKey::from_rsa_pem(&pem).with_context(|| {
                format!(
                    "gateway {:?}'s key {} is not an RSA public key in PEM",
                    gateway.name,
                    path.display()
                )
            })?;
            keys.push(key);
        }
        let mut validation = Validation::new(gateway.algorithm.jwt());
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(issuer) = &gateway.issuer {
            validation.set_issuer(&[issuer]);
            validation.set_required_spec_claims(&["exp", "iss"]);
        }
        gateways.insert(gateway.name.clone(), Keys { keys, validation });
    }
    Ok(gateways)
}
