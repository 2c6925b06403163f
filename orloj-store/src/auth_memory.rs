//! [`MemoryAuthStore`]: an in-process [`AuthStore`] (nothing survives a restart).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orloj_core::auth::{ApiToken, AuthStore, Role, Session, User};
use orloj_core::{Error, Result};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
struct Inner {
    users: BTreeMap<String, User>,
    sessions: BTreeMap<String, Session>,
    tokens: BTreeMap<String, ApiToken>,
}

/// An [`AuthStore`] in memory. One mutex makes every operation atomic.
#[derive(Debug, Default)]
pub struct MemoryAuthStore {
    inner: Mutex<Inner>,
}

impl MemoryAuthStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated (each operation
        // is a single insert/remove), so a poisoned lock is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn admins(inner: &Inner) -> usize {
    inner
        .users
        .values()
        .filter(|u| u.role == Role::Admin)
        .count()
}

#[async_trait]
impl AuthStore for MemoryAuthStore {
    async fn has_admin(&self) -> Result<bool> {
        Ok(admins(&self.lock()) > 0)
    }

    async fn create_first_admin(&self, user: User) -> Result<()> {
        let mut inner = self.lock();
        if admins(&inner) > 0 {
            return Err(Error::conflict("an admin account already exists"));
        }
        if inner.users.contains_key(&user.username) {
            return Err(Error::conflict(format!(
                "user {:?} already exists",
                user.username
            )));
        }
        inner.users.insert(user.username.clone(), user);
        Ok(())
    }

    async fn create_user(&self, user: User) -> Result<()> {
        let mut inner = self.lock();
        if inner.users.contains_key(&user.username) {
            return Err(Error::conflict(format!(
                "user {:?} already exists",
                user.username
            )));
        }
        inner.users.insert(user.username.clone(), user);
        Ok(())
    }

    async fn get_user(&self, username: &str) -> Result<Option<User>> {
        Ok(self.lock().users.get(username).cloned())
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        Ok(self.lock().users.values().cloned().collect())
    }

    async fn delete_user(&self, username: &str) -> Result<()> {
        let mut inner = self.lock();
        let Some(user) = inner.users.get(username) else {
            return Err(Error::not_found(format!("user {username:?} not found")));
        };
        if user.role == Role::Admin && admins(&inner) <= 1 {
            return Err(Error::conflict(format!(
                "user {username:?} is the last admin and cannot be deleted"
            )));
        }
        inner.users.remove(username);
        inner.sessions.retain(|_, s| s.username != username);
        Ok(())
    }

    async fn update_password(
        &self,
        username: &str,
        password_hash: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut inner = self.lock();
        let user = inner
            .users
            .get_mut(username)
            .ok_or_else(|| Error::not_found(format!("user {username:?} not found")))?;
        user.password_hash = password_hash.to_string();
        user.updated_at = at;
        Ok(())
    }

    async fn create_session(&self, session: Session) -> Result<()> {
        let mut inner = self.lock();
        if inner.sessions.contains_key(&session.token_hash) {
            return Err(Error::conflict("session already exists"));
        }
        inner.sessions.insert(session.token_hash.clone(), session);
        Ok(())
    }

    async fn get_session(&self, token_hash: &str) -> Result<Option<Session>> {
        Ok(self.lock().sessions.get(token_hash).cloned())
    }

    async fn touch_session(
        &self,
        token_hash: &str,
        last_seen_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let mut inner = self.lock();
        let session = inner
            .sessions
            .get_mut(token_hash)
            .ok_or_else(|| Error::not_found("session not found"))?;
        session.last_seen_at = last_seen_at;
        session.expires_at = expires_at;
        Ok(())
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        self.lock().sessions.remove(token_hash);
        Ok(())
    }

    async fn delete_user_sessions(&self, username: &str) -> Result<u64> {
        let mut inner = self.lock();
        let before = inner.sessions.len();
        inner.sessions.retain(|_, s| s.username != username);
        Ok((before - inner.sessions.len()) as u64)
    }

    async fn create_token(&self, token: ApiToken) -> Result<()> {
        let mut inner = self.lock();
        if inner.tokens.contains_key(&token.name) {
            return Err(Error::conflict(format!(
                "token {:?} already exists",
                token.name
            )));
        }
        if inner
            .tokens
            .values()
            .any(|t| t.token_hash == token.token_hash)
        {
            return Err(Error::conflict("token hash already exists"));
        }
        inner.tokens.insert(token.name.clone(), token);
        Ok(())
    }

    async fn list_tokens(&self) -> Result<Vec<ApiToken>> {
        Ok(self.lock().tokens.values().cloned().collect())
    }

    async fn get_token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>> {
        Ok(self
            .lock()
            .tokens
            .values()
            .find(|t| t.token_hash == token_hash)
            .cloned())
    }

    async fn delete_token(&self, name: &str) -> Result<()> {
        self.lock()
            .tokens
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| Error::not_found(format!("token {name:?} not found")))
    }
}
