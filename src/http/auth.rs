//! Authentication and scope permission (api.md, "Authentication"; gateway.md): an app's secret
//! in `X-Bkapi-Authorization`, or the API gateway's JWT in `X-Bkapi-JWT` (`jwt`), as
//! `http.auth` says; then the app's scopes.

use super::error::ApiError;
use super::jwt::{GatewayConfig, Gateways};
use crate::events::ScopeType;
use anyhow::{bail, Context, Result};
use axum::http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

/// An app that may call the API (config file only: `[[apps]]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub code: String,
    /// Hex SHA-256 of the app's secret; the secret itself is never stored. Apps that come only
    /// through the API gateway (`http.auth = gateway`) need none.
    #[serde(default)]
    pub secret_sha256: Option<String>,
    /// `biz:2`, `biz_set:*`, `biz:*` or `*`.
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Grant {
    All,
    AnyOf(ScopeType),
    One(ScopeType, String),
}

struct App {
    /// `None`: the app comes only through the API gateway.
    secret_sha256: Option<[u8; 32]>,
    grants: Vec<Grant>,
}

/// How callers prove who they are (`http.auth`, gateway.md "Modes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// `X-Bkapi-Authorization` with the app's secret (`true` means this too).
    #[value(name = "app_secret", alias = "true")]
    AppSecret,
    /// The API gateway's `X-Bkapi-JWT` only.
    #[value(name = "gateway")]
    Gateway,
    /// Either; a request that carries a JWT is judged by the JWT alone.
    #[value(name = "both")]
    Both,
    /// Nobody is asked (`false` means this too): a warning at start.
    #[value(name = "off", alias = "false")]
    Off,
}

/// The configured apps and gateways, and the mode that says which credentials count.
pub struct Auth {
    mode: AuthMode,
    apps: HashMap<String, App>,
    /// The gateways whose JWTs are taken (modes `gateway` and `both`).
    gateways: Option<Gateways>,
}

/// The caller, once authenticated.
pub struct Caller<'a> {
    /// Its app code (`None` when authentication is off).
    pub app: Option<String>,
    /// Its user, as the gateway's token names it.
    pub user: Option<String>,
    /// `None`: every scope (authentication off); an app that is not listed has none.
    grants: Option<&'a [Grant]>,
}

#[derive(Deserialize)]
struct Credentials {
    bk_app_code: String,
    bk_app_secret: String,
}

/// The header the API gateway's statement of the caller comes in.
const JWT_HEADER: &str = "x-bkapi-jwt";

impl Auth {
    /// The apps and gateways for `mode`; an error names what cannot work (a secret that is not a
    /// SHA-256, a scope that does not parse, a key file that does not parse, a mode without what
    /// it needs).
    pub fn new(mode: AuthMode, apps: &[AppConfig], gateways: &[GatewayConfig]) -> Result<Auth> {
        let mut map = HashMap::new();
        for app in apps {
            let secret_sha256 = match &app.secret_sha256 {
                Some(hex) => Some(parse_sha256(hex).with_context(|| {
                    format!(
                        "app {:?}: secret_sha256 must be 64 hex characters (sha256sum of the \
                         secret)",
                        app.code
                    )
                })?),
                None if mode == AuthMode::AppSecret => bail!(
                    "app {:?} has no secret_sha256: http.auth = app_secret needs one (only \
                     gateway mode does without)",
                    app.code
                ),
                None => None,
            };
            let grants = app
                .scopes
                .iter()
                .map(|s| parse_grant(s).with_context(|| format!("app {:?}", app.code)))
                .collect::<Result<_>>()?;
            map.insert(
                app.code.clone(),
                App {
                    secret_sha256,
                    grants,
                },
            );
        }
        let gateways = match mode {
            AuthMode::Gateway | AuthMode::Both => {
                anyhow::ensure!(
                    !gateways.is_empty(),
                    "http.auth = {mode:?} takes the API gateway's JWT: configure its public \
                     key(s) in [[gateways]] (name, public_key_files)"
                );
                Some(Gateways::new(gateways)?)
            }
            AuthMode::AppSecret | AuthMode::Off => None,
        };
        Ok(Auth {
            mode,
            apps: map,
            gateways,
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Reads the gateways' keys again (SIGHUP), all or nothing; `Ok(false)` when there are no
    /// gateways to read.
    pub fn reload_keys(&self) -> Result<bool> {
        match &self.gateways {
            Some(gateways) => gateways.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// Checks the request's credentials, as the mode says; `None` when they are missing or
    /// wrong (401). An app that proves itself but is not listed gets no scope (403).
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Caller<'_>> {
        let jwt = headers
            .get(JWT_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty());
        match (self.mode, jwt) {
            (AuthMode::Off, _) => Some(Caller {
                app: None,
                user: None,
                grants: None,
            }),
            (AuthMode::Gateway | AuthMode::Both, Some(token)) => {
                let verified = self.gateways.as_ref()?.verify(token)?;
                Some(self.caller(verified.app, verified.user))
            }
            (AuthMode::Gateway, None) => None,
            (AuthMode::AppSecret | AuthMode::Both, _) => self.by_secret(headers),
        }
    }

    /// `X-Bkapi-Authorization`: an app and its secret.
    fn by_secret(&self, headers: &HeaderMap) -> Option<Caller<'_>> {
        let raw = headers.get("x-bkapi-authorization")?.as_bytes();
        let creds: Credentials = serde_json::from_slice(raw).ok()?;
        // Compare against a dummy for unknown apps too, so timing tells nothing either way.
        let expected = self
            .apps
            .get(&creds.bk_app_code)
            .and_then(|a| a.secret_sha256);
        let equal = digest_matches(&creds.bk_app_secret, &expected.unwrap_or([0u8; 32]));
        (equal && expected.is_some()).then(|| self.caller(creds.bk_app_code, None))
    }

    fn caller(&self, app: String, user: Option<String>) -> Caller<'_> {
        let grants = self.apps.get(&app).map_or(&[][..], |a| &a.grants[..]);
        Caller {
            app: Some(app),
            user,
            grants: Some(grants),
        }
    }

    /// The caller a member-to-member request is made for (its signature checked): the app it
    /// names, with that app's grants here (none when the app is not configured here).
    pub fn member_request_for(&self, app: &str) -> Caller<'_> {
        match self.mode {
            AuthMode::Off => Caller {
                app: None,
                user: None,
                grants: None,
            },
            _ => self.caller(app.to_owned(), None),
        }
    }
}

impl Caller<'_> {
    /// 403 (9900403) when the caller may not read the scope.
    pub fn check_scope(&self, scope_type: ScopeType, scope_id: &str) -> Result<(), ApiError> {
        if self.may_read(scope_type, scope_id) {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied)
        }
    }

    pub fn may_read(&self, scope_type: ScopeType, scope_id: &str) -> bool {
        let Some(grants) = self.grants else {
            return true;
        };
        grants.iter().any(|g| match g {
            Grant::All => true,
            Grant::AnyOf(t) => *t == scope_type,
            Grant::One(t, id) => *t == scope_type && id == scope_id,
        })
    }
}

/// Whether `secret` hashes to `expected`, compared in constant time.
pub fn digest_matches(secret: &str, expected: &[u8; 32]) -> bool {
    let offered: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    offered.ct_eq(expected).into()
}

/// Whether `headers` carry `Authorization: Bearer <token>` with the token hashing to `want`.
pub fn bearer_matches(headers: &axum::http::HeaderMap, want: &[u8; 32]) -> bool {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    digest_matches(given, want)
}

/// A hex SHA-256 from the configuration.
pub fn parse_sha256(hex_digest: &str) -> Option<[u8; 32]> {
    hex::decode(hex_digest)
        .ok()
        .and_then(|d| <[u8; 32]>::try_from(d).ok())
}

fn parse_grant(s: &str) -> Result<Grant> {
    if s == "*" {
        return Ok(Grant::All);
    }
    let Some((t, id)) = s.split_once(':') else {
        bail!("scope {s:?} must be `*`, `TYPE:*` or `TYPE:ID` with TYPE biz or biz_set");
    };
    let Some(t) = ScopeType::parse(t) else {
        bail!("scope {s:?}: type must be biz or biz_set");
    };
    Ok(if id == "*" {
        Grant::AnyOf(t)
    } else {
        Grant::One(t, id.to_owned())
    })
}
