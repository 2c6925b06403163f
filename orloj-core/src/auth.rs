//! Native authentication model (spec §6): roles, the route → required-role rules, and the
//! [`AuthStore`] trait that keeps users, sessions and API tokens. No I/O happens here.
//!
//! ```
//! use orloj_core::auth::{Access, Role, required_access};
//!
//! assert_eq!(required_access("GET", "/v1/agents"), Access::Role(Role::Reader));
//! assert_eq!(required_access("PUT", "/v1/tasks/t1/status"), Access::Role(Role::Controller));
//! assert_eq!(required_access("POST", "/v1/auth/login"), Access::Public);
//! assert!(Role::Admin.satisfies(Role::Controller));
//! assert!(!Role::Reader.satisfies(Role::Writer));
//! ```

use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A principal's role (spec §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including users, tokens and MCP servers.
    Admin,
    /// Resource writes (not status, not MCP servers) and reads.
    Writer,
    /// Reads only.
    Reader,
    /// Status writes (controllers and workers) and reads.
    Controller,
}

impl Role {
    /// Every role, strongest first.
    pub const ALL: &'static [Role] = &[Role::Admin, Role::Writer, Role::Controller, Role::Reader];

    /// The wire name (`admin`, `writer`, `reader`, `controller`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Writer => "writer",
            Role::Reader => "reader",
            Role::Controller => "controller",
        }
    }

    /// Whether a principal with this role may do what `required` guards: admin satisfies
    /// everything, reader is satisfied by reader/writer/controller, writer and controller only
    /// by themselves.
    pub fn satisfies(self, required: Role) -> bool {
        match (self, required) {
            (Role::Admin, _) => true,
            (_, Role::Reader) => true,
            (have, want) => have == want,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "admin" => Ok(Role::Admin),
            "writer" => Ok(Role::Writer),
            "reader" => Ok(Role::Reader),
            "controller" => Ok(Role::Controller),
            other => Err(crate::Error::invalid(format!(
                "unknown role {other:?}: use admin, writer, reader or controller"
            ))),
        }
    }
}

/// What a request needs to be let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed (health, the auth endpoints, webhook deliveries).
    Public,
    /// A principal whose role satisfies this one.
    Role(Role),
}

/// The role a request needs (spec §6.1 `requiredRoleForRequest`), from its method and path.
///
/// The auth endpoints are public here; those that need a principal (users, admin reset,
/// change-password) check it themselves.
pub fn required_access(method: &str, path: &str) -> Access {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if path == "/healthz" || under("/v1/auth") || under("/v1/webhook-deliveries") {
        return Access::Public;
    }
    if under("/v1/tokens") {
        return Access::Role(Role::Admin);
    }
    let read = matches!(
        method.to_ascii_uppercase().as_str(),
        "GET" | "HEAD" | "OPTIONS"
    );
    if read {
        return Access::Role(Role::Reader);
    }
    if under("/v1/mcp-servers") {
        return Access::Role(Role::Admin);
    }
    if path.ends_with("/status") {
        return Access::Role(Role::Controller);
    }
    Access::Role(Role::Writer)
}

/// A native-auth user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Unique login name.
    pub username: String,
    /// What the user may do.
    pub role: Role,
    /// PHC-encoded Argon2id hash (never the password).
    pub password_hash: String,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// When the account (its password) last changed.
    pub updated_at: DateTime<Utc>,
}

/// A login session. The token itself is never stored, only its SHA-256 hex hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 hex of the session token (the key).
    pub token_hash: String,
    /// Whose session it is.
    pub username: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last used.
    pub last_seen_at: DateTime<Utc>,
    /// When it expires unless touched again.
    pub expires_at: DateTime<Utc>,
}

/// A store-managed API token. The token itself is shown once and never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Unique name.
    pub name: String,
    /// SHA-256 hex of the token.
    pub token_hash: String,
    /// What the token may do.
    pub role: Role,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Persistence for native auth: users, sessions and API tokens.
///
/// Contracts shared by every implementation (checked by the conformance tests in orloj-store):
/// - creates fail with [`crate::ErrorKind::Conflict`] when the key (username, session hash,
///   token name or token hash) exists; gets return `Ok(None)` when absent; deletes and updates
///   of absent keys fail with [`crate::ErrorKind::NotFound`];
/// - [`AuthStore::create_first_admin`] and [`AuthStore::delete_user`] are atomic with respect
///   to each other: at most one first admin is ever created, and the last admin is never
///   deleted, even under concurrent calls;
/// - deleting a user deletes its sessions;
/// - lists are sorted by their key (username, token name);
/// - the store does not judge expiry: callers compare `expires_at` with their clock.
///
/// Each operation is a single atomic step, so dropping its future (cancellation) leaves either
/// the old or the new state.
#[async_trait]
pub trait AuthStore: Send + Sync + fmt::Debug {
    /// Whether at least one admin account exists (setup has happened).
    async fn has_admin(&self) -> Result<bool>;
    /// Creates `user` (role admin) only if no admin exists yet; Conflict otherwise.
    async fn create_first_admin(&self, user: User) -> Result<()>;
    /// Creates a user; Conflict when the username is taken.
    async fn create_user(&self, user: User) -> Result<()>;
    /// The user named `username`.
    async fn get_user(&self, username: &str) -> Result<Option<User>>;
    /// Every user, sorted by username.
    async fn list_users(&self) -> Result<Vec<User>>;
    /// Deletes a user and its sessions; NotFound when absent, Conflict when it is the last
    /// admin.
    async fn delete_user(&self, username: &str) -> Result<()>;
    /// Replaces a user's password hash and `updated_at`; NotFound when absent.
    async fn update_password(
        &self,
        username: &str,
        password_hash: &str,
        at: DateTime<Utc>,
    ) -> Result<()>;

    /// Stores a session; Conflict when the hash exists.
    async fn create_session(&self, session: Session) -> Result<()>;
    /// The session whose token hashes to `token_hash`.
    async fn get_session(&self, token_hash: &str) -> Result<Option<Session>>;
    /// Slides a session's expiry; NotFound when absent.
    async fn touch_session(
        &self,
        token_hash: &str,
        last_seen_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()>;
    /// Deletes one session; absent is not an error (logout is idempotent).
    async fn delete_session(&self, token_hash: &str) -> Result<()>;
    /// Deletes every session of `username`; returns how many.
    async fn delete_user_sessions(&self, username: &str) -> Result<u64>;

    /// Stores an API token; Conflict when the name or hash exists.
    async fn create_token(&self, token: ApiToken) -> Result<()>;
    /// Every API token, sorted by name.
    async fn list_tokens(&self) -> Result<Vec<ApiToken>>;
    /// The token whose secret hashes to `token_hash`.
    async fn get_token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>>;
    /// Deletes a token by name; NotFound when absent.
    async fn delete_token(&self, name: &str) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_follow_the_spec_table() {
        use Access::*;
        let cases = [
            ("GET", "/healthz", Public),
            ("POST", "/v1/auth/setup", Public),
            ("GET", "/v1/auth/users", Public),
            ("POST", "/v1/webhook-deliveries/abc", Public),
            ("GET", "/v1/tokens", Role(self::Role::Admin)),
            ("DELETE", "/v1/tokens/t", Role(self::Role::Admin)),
            ("GET", "/v1/mcp-servers", Role(self::Role::Reader)),
            ("POST", "/v1/mcp-servers", Role(self::Role::Admin)),
            ("DELETE", "/v1/mcp-servers/m", Role(self::Role::Admin)),
            ("GET", "/v1/agents/a/status", Role(self::Role::Reader)),
            ("PUT", "/v1/agents/a/status", Role(self::Role::Controller)),
            ("POST", "/v1/agents", Role(self::Role::Writer)),
            ("DELETE", "/v1/agents/a", Role(self::Role::Writer)),
            ("HEAD", "/v1/agents", Role(self::Role::Reader)),
            ("GET", "/metrics", Role(self::Role::Reader)),
            ("GET", "/v1/authx", Role(self::Role::Reader)),
            ("POST", "/v1/tokensx", Role(self::Role::Writer)),
        ];
        for (method, path, want) in cases {
            assert_eq!(required_access(method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn role_satisfaction() {
        use self::Role::*;
        for &r in Role::ALL {
            assert!(Admin.satisfies(r));
            assert!(r.satisfies(Reader));
            assert!(r.satisfies(r));
        }
        assert!(!Writer.satisfies(Controller));
        assert!(!Controller.satisfies(Writer));
        assert!(!Reader.satisfies(Writer));
        assert!(!Writer.satisfies(Admin));
        assert_eq!("Writer".parse::<self::Role>().ok(), Some(Writer));
        assert!("root".parse::<self::Role>().is_err());
    }
}
