//! Secrets sealed at rest in a real Postgres: [`SealedStore`] over [`PostgresStore`].
//!
//! Needs `TEST_DATABASE_URL` (each test creates and drops its own database). Without it the
//! tests print a skip message and pass, unless `CI` is set, where they fail.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use orloj_core::{ErrorKind, Kind, ListOptions, Object, Store, SystemClock};
use orloj_store::sealed::SEALED_PREFIX_V1;
use orloj_store::{PostgresOptions, PostgresStore, SealedStore, SecretKey};
use serde_json::json;
use std::sync::Arc;

use orloj_store::testing::TestDb;

/// Every row of every table in the public schema, as JSON text.
async fn dump_all_rows(store: &PostgresStore) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(store.pool())
    .await
    .expect("tables");
    assert!(tables.iter().any(|t| t == "secrets"), "{tables:?}");
    let mut out = String::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT row_to_json(t)::text FROM \"{table}\" t"
        )))
        .fetch_all(store.pool())
        .await
        .expect("rows");
        for row in rows {
            out.push_str(&row);
            out.push('\n');
        }
    }
    out
}

#[tokio::test]
async fn secret_values_are_sealed_in_postgres_and_need_the_same_key() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let pg = Arc::new(
        PostgresStore::connect(&db.url, PostgresOptions::default(), Arc::new(SystemClock))
            .await
            .expect("connect"),
    );
    let key = SecretKey::parse(&"ab".repeat(32)).expect("key");
    let store = SealedStore::new(pg.clone(), key);

    let plaintext = "correct-horse-battery-staple";
    let encoded = STANDARD.encode(plaintext);
    let mut secret = Object::new(Kind::Secret, "default", "x");
    secret.spec = json!({"data": {"KEY": encoded}});
    store.create(secret).await.expect("create");

    let dump = dump_all_rows(&pg).await;
    assert!(
        !dump.contains(plaintext),
        "plaintext in the database:\n{dump}"
    );
    assert!(
        !dump.contains(&encoded),
        "base64 plaintext in the database:\n{dump}"
    );
    let (payload,): (serde_json::Value,) =
        sqlx::query_as("SELECT payload FROM secrets WHERE name = 'default/x'")
            .fetch_one(pg.pool())
            .await
            .expect("raw row");
    let raw = payload.to_string();
    assert!(raw.contains(SEALED_PREFIX_V1), "sealed value stored: {raw}");

    let got = store.get(Kind::Secret, "default", "x").await.expect("get");
    assert_eq!(got.spec["data"]["KEY"], encoded);

    // A new store over the same database with ANOTHER key cannot read it, and says so.
    let other_pg = Arc::new(
        PostgresStore::connect(&db.url, PostgresOptions::default(), Arc::new(SystemClock))
            .await
            .expect("connect"),
    );
    let other = SealedStore::new(other_pg, SecretKey::from_bytes([0xcd; 32]));
    let err = other
        .get(Kind::Secret, "default", "x")
        .await
        .expect_err("wrong key must not read the secret");
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert_eq!(
        err.message(),
        "secret default/x key KEY: cannot be decrypted (wrong secret encryption key?)"
    );
    let err = other
        .list(Kind::Secret, &ListOptions::default())
        .await
        .expect_err("list with the wrong key");
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
}
