//! [`PostgresAuthStore`]: the [`AuthStore`] on the same pool as [`PostgresStore`]
//! (tables `auth_local_users`, `auth_sessions`, `auth_api_tokens` of migration 0003).

use super::{PostgresStore, error, finish};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orloj_core::auth::{ApiToken, AuthStore, Role, Session, User};
use orloj_core::{Error, Result};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};

/// Advisory-lock key serialising first-admin creation against user deletion, so "at most one
/// first admin" and "never delete the last admin" hold under concurrent requests.
const ADMIN_LOCK_KEY: i64 = 0x6f72_6c6f_6a41;

/// An [`AuthStore`] on Postgres. Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub struct PostgresAuthStore {
    pool: PgPool,
}

impl PostgresAuthStore {
    /// Uses `pool`, which must be migrated ([`PostgresStore::migrate`]).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Shares the pool of `store` (its `connect` already ran the migrations).
    pub fn from_store(store: &PostgresStore) -> Self {
        Self::new(store.pool().clone())
    }

    async fn locked(&self) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await.map_err(error::map)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ADMIN_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(error::map)?;
        Ok(tx)
    }
}

fn role(row: &PgRow) -> Result<Role> {
    let text: String = row.try_get("role").map_err(error::map)?;
    text.parse()
        .map_err(|e: Error| Error::internal(format!("stored role: {}", e.message())))
}

fn user(row: &PgRow) -> Result<User> {
    Ok(User {
        username: row.try_get("username").map_err(error::map)?,
        role: role(row)?,
        password_hash: row.try_get("password_hash").map_err(error::map)?,
        created_at: row.try_get("created_at").map_err(error::map)?,
        updated_at: row.try_get("updated_at").map_err(error::map)?,
    })
}

fn session(row: &PgRow) -> Result<Session> {
    Ok(Session {
        token_hash: row.try_get("session_id_hash").map_err(error::map)?,
        username: row.try_get("username").map_err(error::map)?,
        created_at: row.try_get("created_at").map_err(error::map)?,
        last_seen_at: row.try_get("last_seen_at").map_err(error::map)?,
        expires_at: row.try_get("expires_at").map_err(error::map)?,
    })
}

fn token(row: &PgRow) -> Result<ApiToken> {
    Ok(ApiToken {
        name: row.try_get("name").map_err(error::map)?,
        token_hash: row.try_get("token_hash").map_err(error::map)?,
        role: role(row)?,
        created_at: row.try_get("created_at").map_err(error::map)?,
    })
}

const USER_COLUMNS: &str = "username, role, password_hash, created_at, updated_at";

async fn insert_user(conn: &mut sqlx::PgConnection, user: &User) -> Result<()> {
    sqlx::query(
        "INSERT INTO auth_local_users (username, role, password_hash, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&user.username)
    .bind(user.role.as_str())
    .bind(&user.password_hash)
    .bind(user.created_at)
    .bind(user.updated_at)
    .execute(conn)
    .await
    .map_err(|e| {
        if error::is_unique_violation(&e) {
            Error::conflict(format!("user {:?} already exists", user.username))
        } else {
            error::map(e)
        }
    })?;
    Ok(())
}

async fn admin_count(conn: &mut sqlx::PgConnection) -> Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM auth_local_users WHERE role = 'admin'")
        .fetch_one(conn)
        .await
        .map_err(error::map)
}

#[async_trait]
impl AuthStore for PostgresAuthStore {
    async fn has_admin(&self) -> Result<bool> {
        let mut conn = self.pool.acquire().await.map_err(error::map)?;
        Ok(admin_count(&mut conn).await? > 0)
    }

    async fn create_first_admin(&self, user: User) -> Result<()> {
        let mut tx = self.locked().await?;
        let result = async {
            if admin_count(&mut tx).await? > 0 {
                return Err(Error::conflict("an admin account already exists"));
            }
            insert_user(&mut tx, &user).await
        }
        .await;
        finish(tx, result).await
    }

    async fn create_user(&self, user: User) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(error::map)?;
        insert_user(&mut conn, &user).await
    }

    async fn get_user(&self, username: &str) -> Result<Option<User>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM auth_local_users WHERE username = $1"
        )))
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(error::map)?;
        row.as_ref().map(user).transpose()
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM auth_local_users ORDER BY username"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(error::map)?;
        rows.iter().map(user).collect()
    }

    async fn delete_user(&self, username: &str) -> Result<()> {
        let mut tx = self.locked().await?;
        let result = async {
            let found: Option<String> =
                sqlx::query_scalar("SELECT role FROM auth_local_users WHERE username = $1")
                    .bind(username)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(error::map)?;
            let Some(found) = found else {
                return Err(Error::not_found(format!("user {username:?} not found")));
            };
            if found == Role::Admin.as_str() && admin_count(&mut tx).await? <= 1 {
                return Err(Error::conflict(format!(
                    "user {username:?} is the last admin and cannot be deleted"
                )));
            }
            // Sessions go with the user (ON DELETE CASCADE).
            sqlx::query("DELETE FROM auth_local_users WHERE username = $1")
                .bind(username)
                .execute(&mut *tx)
                .await
                .map_err(error::map)?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn update_password(
        &self,
        username: &str,
        password_hash: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE auth_local_users SET password_hash = $2, updated_at = $3 WHERE username = $1",
        )
        .bind(username)
        .bind(password_hash)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(error::map)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(format!("user {username:?} not found")));
        }
        Ok(())
    }

    async fn create_session(&self, s: Session) -> Result<()> {
        sqlx::query(
            "INSERT INTO auth_sessions (session_id_hash, username, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&s.token_hash)
        .bind(&s.username)
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if error::is_foreign_key_violation(&e) {
                Error::not_found(format!("user {:?} not found", s.username))
            } else if error::is_unique_violation(&e) {
                Error::conflict("session already exists")
            } else {
                error::map(e)
            }
        })?;
        Ok(())
    }

    async fn get_session(&self, token_hash: &str) -> Result<Option<Session>> {
        let row = sqlx::query(
            "SELECT session_id_hash, username, created_at, last_seen_at, expires_at \
             FROM auth_sessions WHERE session_id_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(error::map)?;
        row.as_ref().map(session).transpose()
    }

    async fn touch_session(
        &self,
        token_hash: &str,
        last_seen_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE auth_sessions SET last_seen_at = $2, expires_at = $3 WHERE session_id_hash = $1",
        )
        .bind(token_hash)
        .bind(last_seen_at)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(error::map)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("session not found"));
        }
        Ok(())
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM auth_sessions WHERE session_id_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .map_err(error::map)?;
        Ok(())
    }

    async fn delete_user_sessions(&self, username: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM auth_sessions WHERE username = $1")
            .bind(username)
            .execute(&self.pool)
            .await
            .map_err(error::map)?;
        Ok(done.rows_affected())
    }

    async fn create_token(&self, t: ApiToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO auth_api_tokens (name, token_hash, role, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(&t.name)
        .bind(&t.token_hash)
        .bind(t.role.as_str())
        .bind(t.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if error::is_unique_violation(&e) {
                Error::conflict(format!("token {:?} already exists", t.name))
            } else {
                error::map(e)
            }
        })?;
        Ok(())
    }

    async fn list_tokens(&self) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(
            "SELECT name, token_hash, role, created_at FROM auth_api_tokens ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(error::map)?;
        rows.iter().map(token).collect()
    }

    async fn get_token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>> {
        let row = sqlx::query(
            "SELECT name, token_hash, role, created_at FROM auth_api_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(error::map)?;
        row.as_ref().map(token).transpose()
    }

    async fn delete_token(&self, name: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM auth_api_tokens WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(error::map)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(format!("token {name:?} not found")));
        }
        Ok(())
    }
}
