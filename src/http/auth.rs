//! Authentication (`X-Bkapi-Authorization`) and scope permission, per api.md "Authentication".

use super::error::ApiError;
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
    /// Hex SHA-256 of the app's secret; the secret itself is never stored.
    pub secret_sha256: String,
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
    secret_sha256: [u8; 32],
    grants: Vec<Grant>,
}

/// The configured apps; `None` when authentication is switched off.
pub struct Auth {
    apps: Option<HashMap<String, App>>,
}

/// The caller, once authenticated.
pub struct Caller<'a> {
    /// Its app code (`None` when authentication is off).
    pub app: Option<&'a str>,
    grants: Option<&'a [Grant]>,
}

#[derive(Deserialize)]
struct Credentials {
    bk_app_code: String,
    bk_app_secret: String,
}

impl Auth {
    pub fn new(enabled: bool, apps: &[AppConfig]) -> Result<Auth> {
        if !enabled {
            return Ok(Auth { apps: None });
        }
        let mut map = HashMap::new();
        for app in apps {
            let digest = parse_sha256(&app.secret_sha256).with_context(|| {
                format!(
                    "app {:?}: secret_sha256 must be 64 hex characters (sha256sum of the secret)",
                    app.code
                )
            })?;
            let grants = app
                .scopes
                .iter()
                .map(|s| parse_grant(s).with_context(|| format!("app {:?}", app.code)))
                .collect::<Result<_>>()?;
            map.insert(
                app.code.clone(),
                App {
                    secret_sha256: digest,
                    grants,
                },
            );
        }
        Ok(Auth { apps: Some(map) })
    }

    pub fn enabled(&self) -> bool {
        self.apps.is_some()
    }

    /// Checks the request's credentials; `None` when they are missing or wrong.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Caller<'_>> {
        let Some(apps) = &self.apps else {
            return Some(Caller {
                app: None,
                grants: None,
            });
        };
        let raw = headers.get("x-bkapi-authorization")?.as_bytes();
        let creds: Credentials = serde_json::from_slice(raw).ok()?;
        // Compare against a dummy for unknown apps too, so timing tells nothing either way.
        let (expected, known) = match apps.get_key_value(&creds.bk_app_code) {
            Some((code, app)) => (app.secret_sha256, Some((code, app))),
            None => ([0u8; 32], None),
        };
        let equal = digest_matches(&creds.bk_app_secret, &expected);
        let (code, app) = known.filter(|_| equal)?;
        Some(Caller {
            app: Some(code),
            grants: Some(&app.grants),
        })
    }

    /// The caller a member-to-member request is made for (its signature checked): the app it
    /// names, with that app's grants here (none when the app is not configured here).
    pub fn member_request_for<'a>(&'a self, app: &'a str) -> Caller<'a> {
        let Some(apps) = &self.apps else {
            return Caller {
                app: None,
                grants: None,
            };
        };
        Caller {
            app: Some(app),
            grants: Some(apps.get(app).map_or(&[], |a| &a.grants[..])),
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
