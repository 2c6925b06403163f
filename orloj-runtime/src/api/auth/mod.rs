//! Native authentication and authorization (spec §6): the auth mode, bearer tokens (env and
//! store-managed), sessions, the role check on every route, per-IP limits on the auth
//! endpoints, a global request limit, trusted-proxy-aware client IPs and CORS.
//!
//! Everything is installed by [`super::router`] when the state carries an [`AuthConfig`]
//! ([`super::ApiState::with_auth`]), so embedders get the same enforcement as `orlojd`.

mod client_ip;
mod crypto;
mod handlers;
mod limit;
mod middleware;

pub use client_ip::{client_ip, parse_trusted_proxies};
pub use crypto::{MIN_PASSWORD_LEN, PasswordParams, hash_password, token_hash, verify_password};
pub(crate) use handlers::{openapi_paths, routes};
pub use limit::RateLimit;
pub(crate) use middleware::{authorize, cors_layer};

use crate::api::ApiError;
use axum::http::StatusCode;
use ipnet::IpNet;
use limit::{KeyedLimiter, Limiter};
use orloj_core::auth::{AuthStore, Role};
use secrecy::SecretString;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// `--auth-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// No accounts; open unless env API tokens are configured (then bearer is enforced).
    #[default]
    Off,
    /// Accounts with sessions and bearer tokens; every protected route needs one.
    Native,
}

impl AuthMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Off => "off",
            AuthMode::Native => "native",
        }
    }
}

impl FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "off" => Ok(AuthMode::Off),
            "native" => Ok(AuthMode::Native),
            "sso" => Err("auth mode \"sso\" is not available in the open-source server".into()),
            other => Err(format!("unknown auth mode {other:?}: use off or native")),
        }
    }
}

/// A bearer token from the environment (`ORLOJ_API_TOKEN`, `ORLOJ_API_TOKENS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvToken {
    /// Name reported by `/v1/auth/me`.
    pub name: String,
    /// SHA-256 hex of the token.
    pub token_hash: String,
    /// What it may do.
    pub role: Role,
}

impl EnvToken {
    /// `ORLOJ_API_TOKEN`: one admin token.
    pub fn admin(token: &str) -> Self {
        Self {
            name: "api-token".to_string(),
            token_hash: token_hash(token),
            role: Role::Admin,
        }
    }

    /// `ORLOJ_API_TOKENS`: comma-separated `name:token:role` (or `token:role`, or a bare
    /// token with role reader). Malformed entries are skipped with their reason returned;
    /// a non-empty list where every entry is malformed is an error.
    pub fn parse_list(list: &str) -> Result<(Vec<EnvToken>, Vec<String>), String> {
        let mut tokens = Vec::new();
        let mut skipped = Vec::new();
        let entries: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        for (i, entry) in entries.iter().enumerate() {
            let parts: Vec<&str> = entry.split(':').collect();
            let (name, token, role) = match parts.as_slice() {
                [token] => (format!("env-token-{}", i + 1), *token, "reader"),
                [token, role] => (format!("env-token-{}", i + 1), *token, *role),
                [name, token, role] => (name.to_string(), *token, *role),
                _ => {
                    skipped.push(format!("entry {} has too many ':' parts", i + 1));
                    continue;
                }
            };
            match role.parse::<Role>() {
                Ok(role) if !token.is_empty() && !name.is_empty() => tokens.push(EnvToken {
                    name,
                    token_hash: token_hash(token),
                    role,
                }),
                Ok(_) => skipped.push(format!("entry {} has an empty name or token", i + 1)),
                Err(e) => skipped.push(format!("entry {}: {}", i + 1, e.message())),
            }
        }
        if tokens.is_empty() && !entries.is_empty() {
            return Err(format!(
                "ORLOJ_API_TOKENS has no valid entry: {}",
                skipped.join("; ")
            ));
        }
        Ok((tokens, skipped))
    }
}

/// Auth settings of the API.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `off` or `native`.
    pub mode: AuthMode,
    /// Sliding session lifetime (`--auth-session-ttl`, default 24 h).
    pub session_ttl: Duration,
    /// `ORLOJ_SETUP_TOKEN`: required by `POST /v1/auth/setup` when set.
    pub setup_token: Option<SecretString>,
    /// Bearer tokens from the environment (checked before store tokens).
    pub env_tokens: Vec<EnvToken>,
    /// Peers whose forwarding headers are believed (`--trusted-proxies`).
    pub trusted_proxies: Vec<IpNet>,
    /// Origins allowed cross-origin (`--cors-allowed-origins`; empty = same-origin only).
    pub cors_allowed_origins: Vec<String>,
    /// Per-client-IP limit on setup/login/change-password/reset/cli-token (None = off).
    pub auth_rate_limit: Option<RateLimit>,
    /// Per-server request limit (None = off).
    pub global_rate_limit: Option<RateLimit>,
    /// Argon2id cost of new password hashes.
    pub password_params: PasswordParams,
}

impl Default for AuthConfig {
    /// Mode off with the spec's limits.
    fn default() -> Self {
        Self {
            mode: AuthMode::Off,
            session_ttl: Duration::from_secs(24 * 3600),
            setup_token: None,
            env_tokens: Vec::new(),
            trusted_proxies: Vec::new(),
            cors_allowed_origins: Vec::new(),
            auth_rate_limit: Some(RateLimit::auth_default()),
            global_rate_limit: Some(RateLimit::global_default()),
            password_params: PasswordParams::default(),
        }
    }
}

impl AuthConfig {
    /// Native mode with the spec's defaults.
    pub fn native() -> Self {
        Self {
            mode: AuthMode::Native,
            ..Self::default()
        }
    }
}

/// The auth config, store and limiter state shared by the middleware and handlers.
#[derive(Debug)]
pub struct AuthState {
    /// Settings.
    pub config: AuthConfig,
    /// Users, sessions and store-managed tokens.
    pub store: Arc<dyn AuthStore>,
    auth_limiter: Option<KeyedLimiter<Option<IpAddr>>>,
    global_limiter: Option<Limiter>,
    // Once an admin exists it stays (the last admin cannot be deleted), so cache the answer.
    admin_seen: AtomicBool,
}

impl AuthState {
    /// State over `store`.
    pub fn new(config: AuthConfig, store: Arc<dyn AuthStore>) -> Self {
        Self {
            auth_limiter: config.auth_rate_limit.map(KeyedLimiter::new),
            global_limiter: config.global_rate_limit.map(Limiter::new),
            config,
            store,
            admin_seen: AtomicBool::new(false),
        }
    }

    /// Whether an admin account exists.
    pub(crate) async fn has_admin(&self) -> Result<bool, ApiError> {
        use std::sync::atomic::Ordering;
        if self.admin_seen.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let has = self.store.has_admin().await?;
        if has {
            self.admin_seen.store(true, Ordering::Relaxed);
        }
        Ok(has)
    }
}

/// How a request authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A session cookie.
    Session,
    /// An `Authorization: Bearer` token.
    Bearer,
}

/// Who is calling; put into the request extensions by the auth layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Username (sessions) or token name (bearer).
    pub name: String,
    /// The user behind a session.
    pub username: Option<String>,
    /// What it may do.
    pub role: Role,
    /// Session or bearer.
    pub method: AuthMethod,
    /// The session's token hash (for logout).
    pub session_hash: Option<String>,
}

/// Facts about the connection the auth layer computed, in the request extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnInfo {
    /// The client IP (None when the server does not know the peer, e.g. in-process tests).
    pub client_ip: Option<IpAddr>,
    /// Whether the client used HTTPS (directly or via a trusted proxy).
    pub https: bool,
}

pub(crate) fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

pub(crate) fn forbidden() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", "forbidden")
}

pub(crate) fn too_many(message: &str) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
}
