//! orlojd's auth flags (spec §5.1, §6): mode, session TTL, env tokens, setup token, one-shot
//! admin password reset, trusted proxies, CORS origins and the server-wide rate limit.

use crate::daemon::parse_duration;
use anyhow::{Context, bail};
use chrono::Utc;
use clap::Args;
use orloj_core::auth::{AuthStore, Role, User};
use orloj_runtime::api::auth::{
    AuthConfig, AuthMode, EnvToken, MIN_PASSWORD_LEN, PasswordParams, RateLimit, hash_password,
    parse_trusted_proxies,
};
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;
use std::time::Duration;

fn secret(text: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(text.to_string()))
}

fn auth_mode(text: &str) -> Result<AuthMode, String> {
    text.parse()
}

/// Authentication settings of orlojd.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// `off` (local development: open unless API tokens are set) or `native` (accounts,
    /// sessions and tokens on every protected route).
    #[arg(long, env = "ORLOJ_AUTH_MODE", default_value = "off", value_parser = auth_mode)]
    pub auth_mode: AuthMode,

    /// Sliding lifetime of login sessions.
    #[arg(long, env = "ORLOJ_AUTH_SESSION_TTL", default_value = "24h", value_parser = parse_duration)]
    pub auth_session_ttl: Duration,

    /// One-shot: set this user's password (creating it as admin if absent), then exit.
    #[arg(
        long,
        env = "ORLOJ_AUTH_RESET_ADMIN_USERNAME",
        requires = "auth_reset_admin_password"
    )]
    pub auth_reset_admin_username: Option<String>,

    /// The new password for `--auth-reset-admin-username` (at least 12 characters).
    #[arg(long, env = "ORLOJ_AUTH_RESET_ADMIN_PASSWORD", hide_env_values = true, value_parser = secret, requires = "auth_reset_admin_username")]
    pub auth_reset_admin_password: Option<SecretString>,

    /// A single bearer token with role admin.
    #[arg(long, env = "ORLOJ_API_TOKEN", hide_env_values = true, value_parser = secret)]
    pub api_key: Option<SecretString>,

    /// Bearer tokens `name:token:role,…` (environment `ORLOJ_API_TOKENS`).
    #[arg(long, env = "ORLOJ_API_TOKENS", hide = true, value_parser = secret)]
    pub api_tokens: Option<SecretString>,

    /// Protects `POST /v1/auth/setup` (environment `ORLOJ_SETUP_TOKEN`).
    #[arg(long, env = "ORLOJ_SETUP_TOKEN", hide = true, value_parser = secret)]
    pub setup_token: Option<SecretString>,

    /// Proxies (IPs or CIDRs, comma-separated) whose `X-Forwarded-*` headers are believed.
    #[arg(long, env = "ORLOJ_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    /// Origins allowed to call the API from browsers (comma-separated; empty = same-origin).
    #[arg(long, env = "ORLOJ_CORS_ALLOWED_ORIGINS", default_value = "")]
    pub cors_allowed_origins: String,

    /// Requests per second the whole server accepts before answering 429 (0 = no limit).
    #[arg(long, env = "ORLOJ_API_RATE_LIMIT_RPS", default_value_t = 500.0)]
    pub api_rate_limit_rps: f64,

    /// Requests the server accepts at once above that rate.
    #[arg(long, env = "ORLOJ_API_RATE_LIMIT_BURST", default_value_t = 100)]
    pub api_rate_limit_burst: u32,
}

impl AuthArgs {
    /// The API's auth configuration; fails on malformed token lists, proxies or durations.
    pub fn config(&self, addr: SocketAddr) -> anyhow::Result<AuthConfig> {
        if self.auth_session_ttl.is_zero() {
            bail!("--auth-session-ttl must be greater than zero");
        }
        if !self.api_rate_limit_rps.is_finite() || self.api_rate_limit_rps < 0.0 {
            bail!("--api-rate-limit-rps must be a number >= 0 (0 turns the limit off)");
        }
        if self.api_rate_limit_burst == 0 && self.api_rate_limit_rps > 0.0 {
            bail!("--api-rate-limit-burst must be at least 1");
        }
        let global_rate_limit = (self.api_rate_limit_rps > 0.0).then_some(RateLimit {
            per_second: self.api_rate_limit_rps,
            burst: self.api_rate_limit_burst,
        });
        let mut env_tokens = Vec::new();
        if let Some(list) = &self.api_tokens {
            let (tokens, skipped) =
                EnvToken::parse_list(list.expose_secret()).map_err(|e| anyhow::anyhow!(e))?;
            for reason in skipped {
                tracing::warn!(%reason, "ignoring a malformed ORLOJ_API_TOKENS entry");
            }
            env_tokens = tokens;
        }
        // ORLOJ_API_TOKEN only when the list yields nothing (spec §6.2).
        if env_tokens.is_empty()
            && let Some(token) = self
                .api_key
                .as_ref()
                .filter(|t| !t.expose_secret().is_empty())
        {
            env_tokens.push(EnvToken::admin(token.expose_secret()));
        }
        let trusted_proxies = parse_trusted_proxies(&self.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("--trusted-proxies: {e}"))?;
        let setup_token = self
            .setup_token
            .clone()
            .filter(|t| !t.expose_secret().trim().is_empty());
        match self.auth_mode {
            AuthMode::Off if !addr.ip().is_loopback() && env_tokens.is_empty() => {
                tracing::warn!(%addr, "auth mode is off on a non-loopback address: anyone who can reach it can read and change everything; use --auth-mode native")
            }
            AuthMode::Native if setup_token.is_none() => tracing::warn!(
                "native auth without ORLOJ_SETUP_TOKEN: the first caller of /v1/auth/setup becomes admin"
            ),
            _ => {}
        }
        Ok(AuthConfig {
            mode: self.auth_mode,
            session_ttl: self.auth_session_ttl,
            setup_token,
            env_tokens,
            trusted_proxies,
            cors_allowed_origins: self
                .cors_allowed_origins
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            global_rate_limit,
            ..AuthConfig::default()
        })
    }

    /// Whether this run is the one-shot password reset.
    pub fn is_reset(&self) -> bool {
        self.auth_reset_admin_username.is_some()
    }

    /// The one-shot reset: sets the user's password (creating an admin when the user does not
    /// exist) and revokes its sessions.
    pub async fn reset_admin(&self, store: &dyn AuthStore) -> anyhow::Result<()> {
        let (Some(username), Some(password)) = (
            &self.auth_reset_admin_username,
            &self.auth_reset_admin_password,
        ) else {
            bail!("--auth-reset-admin-username and --auth-reset-admin-password go together");
        };
        let username = username.trim();
        if username.is_empty() {
            bail!("--auth-reset-admin-username must not be empty");
        }
        let password = password.expose_secret().to_string();
        if password.chars().count() < MIN_PASSWORD_LEN {
            bail!("--auth-reset-admin-password must be at least {MIN_PASSWORD_LEN} characters");
        }
        let hash = tokio::task::spawn_blocking(move || {
            hash_password(&password, PasswordParams::default())
        })
        .await
        .context("password hashing task")??;
        let now = Utc::now();
        if store.get_user(username).await?.is_some() {
            store.update_password(username, &hash, now).await?;
            store.delete_user_sessions(username).await?;
            tracing::info!(%username, "password reset; the user's sessions were revoked");
        } else {
            store
                .create_user(User {
                    username: username.to_string(),
                    role: Role::Admin,
                    password_hash: hash,
                    created_at: now,
                    updated_at: now,
                })
                .await?;
            tracing::info!(%username, "admin account created");
        }
        Ok(())
    }
}

/// The auth store of the configured backend. With Postgres it is a second, small pool on the
/// same database (the resource store is opened behind `Arc<dyn Store>` and does not lend its
/// pool).
pub async fn open_auth_store(
    storage: &crate::runtime_args::StorageArgs,
    clock: std::sync::Arc<dyn orloj_core::Clock>,
) -> anyhow::Result<std::sync::Arc<dyn AuthStore>> {
    use crate::runtime_args::StorageBackend;
    use orloj_store::{MemoryAuthStore, PostgresAuthStore, PostgresOptions, PostgresStore};
    Ok(match storage.backend(StorageBackend::Memory) {
        StorageBackend::Memory => std::sync::Arc::new(MemoryAuthStore::new()),
        StorageBackend::Postgres => {
            let dsn = storage.postgres_dsn.as_deref().unwrap_or_default();
            let options = PostgresOptions {
                max_open_conns: 4,
                max_idle_conns: 1,
                ..PostgresOptions::default()
            };
            let pg = PostgresStore::connect(dsn, options, clock)
                .await
                .context("cannot open the Postgres auth store")?;
            std::sync::Arc::new(PostgresAuthStore::from_store(&pg))
        }
    })
}

#[cfg(test)]
mod tests {
    use crate::daemon::OrlojdArgs;
    use orloj_core::auth::Role;
    use orloj_runtime::api::auth::AuthMode;
    use secrecy::ExposeSecret;
    use std::time::Duration;

    fn parse(args: &[&str]) -> anyhow::Result<OrlojdArgs> {
        OrlojdArgs::parse_and_check(std::iter::once("orlojd").chain(args.iter().copied()))
    }

    #[test]
    fn auth_flags() {
        let a = parse(&[]).expect("defaults");
        assert_eq!(a.auth.auth_mode, AuthMode::Off);
        assert_eq!(a.auth.auth_session_ttl, Duration::from_secs(86400));
        let a = parse(&[
            "--auth-mode",
            "native",
            "--auth-session-ttl",
            "2h",
            "--api-tokens",
            "ci:tok:writer",
            "--api-key",
            "ignored-when-the-list-has-tokens",
            "--trusted-proxies",
            "10.0.0.0/8,127.0.0.1",
            "--cors-allowed-origins",
            "https://a.example, https://b.example",
        ])
        .expect("parse");
        let c = a.auth.config(a.addr).expect("config");
        assert_eq!(c.mode, AuthMode::Native);
        assert_eq!(c.session_ttl, Duration::from_secs(7200));
        assert_eq!(c.env_tokens.len(), 1);
        assert_eq!(c.env_tokens[0].role, Role::Writer);
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.cors_allowed_origins.len(), 2);
        let a = parse(&["--api-key", "k"]).expect("parse");
        let c = a.auth.config(a.addr).expect("config");
        assert_eq!(c.env_tokens[0].role, Role::Admin);
        let a = parse(&["--setup-token", "s3"]).expect("parse");
        assert_eq!(
            a.auth
                .setup_token
                .as_ref()
                .map(|s| s.expose_secret().to_string()),
            Some("s3".to_string())
        );

        for (args, needle) in [
            (&["--auth-mode", "sso"][..], "sso"),
            (&["--auth-mode", "ldap"][..], "ldap"),
            (&["--api-tokens", "a:b:root"][..], "ORLOJ_API_TOKENS"),
            (&["--trusted-proxies", "nope"][..], "trusted"),
            (&["--auth-session-ttl", "0s"][..], "session-ttl"),
            (
                &["--auth-reset-admin-username", "x"][..],
                "auth-reset-admin-password",
            ),
        ] {
            let err = parse(args).expect_err("must fail");
            assert!(format!("{err:#}").contains(needle), "{args:?}: {err:#}");
        }
    }
}
