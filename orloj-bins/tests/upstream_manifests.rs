//! Every reference manifest validates offline and applies to a running orlojd, on the memory
//! store and on Postgres; with Postgres they survive a restart; Secret values never leave the
//! server.

mod common;

use common::{Orlojd, fresh_database, ok, upstream_dir};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// (kind, namespace/name) pairs declared by every manifest under `dir`.
fn declared(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("readable dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !matches!(ext, "yaml" | "yml" | "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable file");
            let objects = orloj_core::parse_manifests(&path.display().to_string(), &text)
                .unwrap_or_else(|e| panic!("{e}"));
            for o in objects {
                out.entry(o.kind.plural().to_string())
                    .or_default()
                    .push(o.key());
            }
        }
    }
    out
}

fn listed(server: &Orlojd, plural: &str) -> Vec<String> {
    let out = ok(server.ctl(&["get", plural, "-o", "json"]), "get -o json");
    let v: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("get {plural} -o json: {e}\n{out}"));
    let items = v
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .or_else(|| v.as_array().cloned())
        .unwrap_or_else(|| panic!("no items in {out}"));
    items
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["metadata"]["namespace"].as_str().unwrap_or("default"),
                i["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn apply_all_and_check(server: &Orlojd, upstream: &Path) -> BTreeMap<String, Vec<String>> {
    let mut all: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for sub in ["examples", "testing/scenarios"] {
        let dir = upstream.join(sub);
        let dir_s = dir.display().to_string();
        ok(server.ctl(&["validate", "-f", &dir_s]), "validate");
        ok(
            server.ctl(&["apply", "-f", &dir_s, "--run", "--no-wait"]),
            "apply",
        );
        for (kind, keys) in declared(&dir) {
            all.entry(kind).or_default().extend(keys);
        }
    }
    assert!(
        all.len() >= 10,
        "expected most kinds in the examples: {all:?}"
    );
    for (plural, keys) in &all {
        let live = listed(server, plural);
        for key in keys {
            assert!(
                live.contains(key),
                "{plural} {key} missing from `get`: {live:?}"
            );
        }
        // The table form lists them too.
        let table = ok(server.ctl(&["get", plural, "-A"]), "get table");
        for key in keys {
            let name = key.rsplit('/').next().unwrap_or(key);
            assert!(table.contains(name), "{name} missing from table:\n{table}");
        }
    }
    all
}

const SECRET_VALUE: &str = "s3cr3t-e2e-value-9f8e7d";

fn check_secret_never_leaves(server: &Orlojd) {
    ok(
        server.ctl(&[
            "create",
            "secret",
            "e2e-secret",
            "--from-literal",
            &format!("token={SECRET_VALUE}"),
        ]),
        "create secret",
    );
    let b64 = "czNjcjN0LWUyZS12YWx1ZS05ZjhlN2Q"; // base64 prefix of SECRET_VALUE
    for args in [
        vec!["get", "secrets", "-o", "json"],
        vec!["get", "secret", "e2e-secret", "-o", "yaml"],
        vec!["describe", "secret", "e2e-secret"],
        vec!["events", "--once", "--timeout", "2s", "--raw"],
    ] {
        let out = server.ctl(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains(SECRET_VALUE) && !text.contains(b64),
            "{args:?} leaked the secret:\n{text}"
        );
    }
    let (code, body) = common::http_get(&server.url, "/v1/secrets/e2e-secret").expect("GET secret");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("***") && !body.contains(b64), "{body}");
    let log = server.log();
    assert!(
        !log.contains(SECRET_VALUE) && !log.contains(b64),
        "orlojd logged the secret"
    );
}

#[test]
fn upstream_manifests_on_memory_store() {
    let Some(upstream) = upstream_dir() else {
        return;
    };
    let server = Orlojd::start(&["--storage-backend", "memory"]);
    apply_all_and_check(&server, &upstream);
    check_secret_never_leaves(&server);
}

#[test]
fn upstream_manifests_on_postgres_survive_restart() {
    let Some(upstream) = upstream_dir() else {
        return;
    };
    let Some(dsn) = fresh_database() else { return };
    let args = [
        "--storage-backend",
        "postgres",
        "--postgres-dsn",
        dsn.as_str(),
    ];
    let server = Orlojd::start(&args);
    let all = apply_all_and_check(&server, &upstream);
    check_secret_never_leaves(&server);
    let status = server.terminate();
    assert!(status.success(), "orlojd exited with {status} on SIGTERM");

    let restarted = Orlojd::start(&args);
    for (plural, keys) in &all {
        let live = listed(&restarted, plural);
        for key in keys {
            assert!(live.contains(key), "{plural} {key} lost across restart");
        }
    }
    let secret = ok(
        restarted.ctl(&["get", "secret", "e2e-secret", "-o", "json"]),
        "get secret",
    );
    assert!(secret.contains("***"), "{secret}");
}
