//! Secrets sealed at rest, end to end: `orlojd --secret-encryption-key` over a real Postgres.

mod common;

use common::{Orlojd, http, http_get};
use std::process::Command;

const KEY_A: &str = "0000000000000000000000000000000000000000000000000000000000000001";
/// Base64 of 32 bytes of 0x22.
const KEY_B: &str = "IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=";
const PLAINTEXT: &str = "sealed-e2e-plaintext-value";
/// base64(PLAINTEXT)
const ENCODED: &str = "c2VhbGVkLWUyZS1wbGFpbnRleHQtdmFsdWU=";

#[test]
fn bad_keys_fail_at_startup_with_one_clear_line() {
    for (flag, env) in [
        (Some("not-a-key"), None),
        (Some(&"ab".repeat(31)[..]), None),
        (None, Some("c2hvcnQ=")),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orlojd"));
        cmd.env_remove("ORLOJ_SECRET_ENCRYPTION_KEY");
        if let Some(value) = flag {
            cmd.args(["--secret-encryption-key", value]);
        }
        if let Some(value) = env {
            cmd.env("ORLOJ_SECRET_ENCRYPTION_KEY", value);
        }
        let out = cmd.output().expect("orlojd runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{flag:?}/{env:?} should fail: {stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with("orlojd: --secret-encryption-key") && stderr.contains("32 bytes"),
            "{stderr}"
        );
        let given = flag.or(env).expect("a value");
        assert!(!stderr.contains(given), "the key is not echoed: {stderr}");
    }
}

fn psql(dsn: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([dsn, "-At", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn capability_enabled(server: &Orlojd) -> bool {
    let (code, body) = http_get(&server.url, "/v1/capabilities").expect("capabilities");
    assert_eq!(code, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("json");
    doc["capabilities"]
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["id"] == "core.secrets.encryption_at_rest")
        .and_then(|c| c["enabled"].as_bool())
        .expect("the encryption capability is reported")
}

#[test]
fn secrets_are_sealed_in_postgres_and_another_key_fails_loudly() {
    let Some(dsn) = common::fresh_database() else {
        return;
    };
    let pg = ["--storage-backend", "postgres", "--postgres-dsn", &dsn];

    let server = Orlojd::start(&[&pg[..], &["--secret-encryption-key", KEY_A]].concat());
    assert!(capability_enabled(&server));
    let body = format!(
        r#"{{"apiVersion":"orloj.dev/v1","kind":"Secret","metadata":{{"name":"x"}},"spec":{{"data":{{"KEY":"{ENCODED}"}}}}}}"#
    );
    let (code, resp) = http(
        &server.url,
        "POST",
        "/v1/secrets",
        &[("Content-Type", "application/json")],
        Some(&body),
    )
    .expect("create");
    assert!(code == 201 || code == 200, "{code}: {resp}");
    assert!(!resp.contains(ENCODED), "{resp}");
    let (code, resp) = http_get(&server.url, "/v1/secrets/x").expect("get");
    assert_eq!(code, 200, "{resp}");
    assert!(resp.contains("***") && !resp.contains(ENCODED), "{resp}");

    let row = psql(
        &dsn,
        "SELECT payload::text FROM secrets WHERE name = 'default/x'",
    );
    assert!(row.contains("orlojenc:v1:"), "sealed in the row: {row}");
    let everything = psql(
        &dsn,
        "SELECT string_agg(p, E'\\n') FROM (SELECT payload::text AS p FROM secrets \
         UNION ALL SELECT row_to_json(e)::text FROM store_events e) t",
    );
    assert!(!everything.is_empty());
    for needle in [PLAINTEXT, ENCODED] {
        assert!(
            !everything.contains(needle),
            "{needle} stored: {everything}"
        );
    }
    assert!(!server.log().contains(ENCODED), "the value is not logged");
    assert!(server.terminate().success());

    // Another key: reading the secret fails with a clear error, never garbage.
    let server = Orlojd::start(&[&pg[..], &["--secret-encryption-key", KEY_B]].concat());
    let (code, resp) = http_get(&server.url, "/v1/secrets/x").expect("get");
    assert_eq!(code, 500, "{resp}");
    assert!(
        resp.contains(
            "secret default/x key KEY: cannot be decrypted (wrong secret encryption key?)"
        ),
        "{resp}"
    );
    let (code, resp) = http_get(&server.url, "/v1/secrets").expect("list");
    assert_eq!(code, 500, "{resp}");
    assert!(server.terminate().success());

    // No key: a warning at startup, the capability reported off.
    let server = Orlojd::start(&pg);
    assert!(!capability_enabled(&server));
    let log = server.log();
    assert!(log.contains("no --secret-encryption-key"), "{log}");
}
