//! The [`AuthStore`] contract on [`MemoryAuthStore`] and [`PostgresAuthStore`].
//!
//! The Postgres half needs `TEST_DATABASE_URL` (each test creates and drops its own
//! `orloj_t_<random>` database); without it it prints a skip message and passes, unless `CI`
//! is set, where it fails.

use chrono::{DateTime, TimeZone, Utc};
use orloj_core::ErrorKind;
use orloj_core::auth::{ApiToken, AuthStore, Role, Session, User};
use orloj_core::{ManualClock, SystemClock};
use orloj_store::{MemoryAuthStore, PostgresAuthStore, PostgresOptions, PostgresStore};
use sqlx::Connection;
use std::sync::Arc;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_000_000 + secs, 0)
        .single()
        .expect("valid time")
}

fn user(name: &str, role: Role) -> User {
    User {
        username: name.to_string(),
        role,
        password_hash: format!("hash-of-{name}"),
        created_at: t(0),
        updated_at: t(0),
    }
}

fn session(hash: &str, username: &str) -> Session {
    Session {
        token_hash: hash.to_string(),
        username: username.to_string(),
        created_at: t(0),
        last_seen_at: t(0),
        expires_at: t(100),
    }
}

fn kind<T: std::fmt::Debug>(r: orloj_core::Result<T>) -> ErrorKind {
    r.expect_err("expected an error").kind()
}

async fn conformance(store: Arc<dyn AuthStore>) {
    // Users and the first admin.
    assert!(!store.has_admin().await.expect("has_admin"));
    store
        .create_user(user("bob", Role::Reader))
        .await
        .expect("create bob");
    assert!(!store.has_admin().await.expect("has_admin"));
    store
        .create_first_admin(user("alice", Role::Admin))
        .await
        .expect("first admin");
    assert!(store.has_admin().await.expect("has_admin"));
    assert_eq!(
        kind(store.create_first_admin(user("mallory", Role::Admin)).await),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind(store.create_user(user("bob", Role::Writer)).await),
        ErrorKind::Conflict
    );
    let alice = store.get_user("alice").await.expect("get").expect("alice");
    assert_eq!(alice, user("alice", Role::Admin));
    assert!(store.get_user("nobody").await.expect("get").is_none());
    let names: Vec<_> = store
        .list_users()
        .await
        .expect("list")
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    store
        .update_password("bob", "new-hash", t(5))
        .await
        .expect("update password");
    let bob = store.get_user("bob").await.expect("get").expect("bob");
    assert_eq!(bob.password_hash, "new-hash");
    assert_eq!(bob.updated_at, t(5));
    assert_eq!(
        kind(store.update_password("nobody", "x", t(5)).await),
        ErrorKind::NotFound
    );

    // Sessions: create, touch, per-user revoke, cascade on user delete.
    store
        .create_session(session("s1", "bob"))
        .await
        .expect("s1");
    store
        .create_session(session("s2", "bob"))
        .await
        .expect("s2");
    store
        .create_session(session("s3", "alice"))
        .await
        .expect("s3");
    assert_eq!(
        kind(store.create_session(session("s1", "alice")).await),
        ErrorKind::Conflict
    );
    store
        .touch_session("s1", t(10), t(200))
        .await
        .expect("touch");
    let s1 = store.get_session("s1").await.expect("get").expect("s1");
    assert_eq!((s1.last_seen_at, s1.expires_at), (t(10), t(200)));
    assert_eq!(
        kind(store.touch_session("nope", t(1), t(2)).await),
        ErrorKind::NotFound
    );
    store.delete_session("s2").await.expect("delete s2");
    store
        .delete_session("s2")
        .await
        .expect("delete is idempotent");
    assert!(store.get_session("s2").await.expect("get").is_none());
    assert_eq!(
        store
            .delete_user_sessions("alice")
            .await
            .expect("revoke alice"),
        1
    );
    assert!(store.get_session("s3").await.expect("get").is_none());

    // The last admin stays; deleting a user drops its sessions.
    assert_eq!(kind(store.delete_user("alice").await), ErrorKind::Conflict);
    assert_eq!(kind(store.delete_user("nobody").await), ErrorKind::NotFound);
    store.delete_user("bob").await.expect("delete bob");
    assert!(store.get_session("s1").await.expect("get").is_none());
    store
        .create_user(user("carol", Role::Admin))
        .await
        .expect("carol");
    store
        .delete_user("alice")
        .await
        .expect("not the last admin any more");
    assert_eq!(kind(store.delete_user("carol").await), ErrorKind::Conflict);

    // API tokens.
    let token = |name: &str, hash: &str, role| ApiToken {
        name: name.to_string(),
        token_hash: hash.to_string(),
        role,
        created_at: t(1),
    };
    store
        .create_token(token("ci", "h1", Role::Writer))
        .await
        .expect("ci");
    store
        .create_token(token("a-bot", "h2", Role::Reader))
        .await
        .expect("a-bot");
    assert_eq!(
        kind(store.create_token(token("ci", "h3", Role::Reader)).await),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind(store.create_token(token("other", "h1", Role::Reader)).await),
        ErrorKind::Conflict
    );
    let names: Vec<_> = store
        .list_tokens()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["a-bot", "ci"]);
    assert_eq!(
        store.get_token_by_hash("h1").await.expect("get"),
        Some(token("ci", "h1", Role::Writer))
    );
    assert!(store.get_token_by_hash("zz").await.expect("get").is_none());
    store.delete_token("ci").await.expect("delete");
    assert_eq!(kind(store.delete_token("ci").await), ErrorKind::NotFound);
    assert!(store.get_token_by_hash("h1").await.expect("get").is_none());
}

#[tokio::test]
async fn memory_auth_store_conformance() {
    conformance(Arc::new(MemoryAuthStore::new())).await;
}

/// A fresh database, dropped (with FORCE) afterwards.
async fn with_database<F, Fut>(f: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let admin = match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "TEST_DATABASE_URL is not set but CI is: the Postgres auth store tests must not be skipped in CI"
            );
            eprintln!("skipping Postgres auth store test: TEST_DATABASE_URL is not set");
            return;
        }
    };
    let name = format!("orloj_t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to TEST_DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    let url = if query.is_empty() {
        format!("{root}/{name}")
    } else {
        format!("{root}/{name}?{query}")
    };
    f(url).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .expect("drop test database");
}

#[tokio::test]
async fn postgres_auth_store_conformance() {
    with_database(|url| async move {
        let store = PostgresStore::connect(&url, PostgresOptions::default(), Arc::new(SystemClock))
            .await
            .expect("connect");
        conformance(Arc::new(PostgresAuthStore::from_store(&store))).await;
        store.close().await;
    })
    .await;
}

#[tokio::test]
async fn postgres_first_admin_is_created_once_under_concurrency() {
    with_database(|url| async move {
        let clock = Arc::new(ManualClock::new(t(0)));
        let store = PostgresStore::connect(&url, PostgresOptions::default(), clock)
            .await
            .expect("connect");
        let auth = Arc::new(PostgresAuthStore::from_store(&store));
        let attempts = (0..8).map(|i| {
            let auth = auth.clone();
            tokio::spawn(async move {
                auth.create_first_admin(user(&format!("admin{i}"), Role::Admin))
                    .await
            })
        });
        let mut created = 0;
        for a in attempts {
            match a.await.expect("join") {
                Ok(()) => created += 1,
                Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
            }
        }
        assert_eq!(created, 1);
        assert_eq!(auth.list_users().await.expect("list").len(), 1);
        store.close().await;
    })
    .await;
}
