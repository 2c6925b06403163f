//! Native auth end to end: a real orlojd in native mode with `ORLOJ_SETUP_TOKEN`, driven over
//! HTTP and with the real orlojctl binary.

mod common;

use common::{Orlojd, ctl_env, http};
use serde_json::Value;

const SETUP_TOKEN: &str = "e2e-setup-token-4f9a";
const PASSWORD: &str = "e2e-admin-password";

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn post(url: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    http(url, "POST", path, &h, Some(body)).expect("orlojd answers")
}

fn setup_body(token: &str) -> String {
    serde_json::json!({"username": "admin", "password": PASSWORD, "setup_token": token}).to_string()
}

fn run(out: std::process::Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const AGENT: &str = "apiVersion: orloj.dev/v1\nkind: Agent\nmetadata:\n  name: e2e-agent\nspec:\n  model_ref: m\n  prompt: hi\n";

#[test]
fn native_auth_setup_login_tokens_and_throttling() {
    let d = Orlojd::start_with_env(
        &["--auth-mode", "native"],
        &[("ORLOJ_SETUP_TOKEN", SETUP_TOKEN)],
    );
    let (code, body) = http(&d.url, "GET", "/v1/auth/config", &[], None).expect("config");
    assert_eq!(code, 200);
    let config = json(&body);
    assert_eq!(config["mode"], "native");
    assert_eq!(config["setup_required"], true, "{body}");
    assert_eq!(config["setup_token_required"], true);

    let (code, body) = post(&d.url, "/v1/auth/setup", &[], &setup_body("wrong-token"));
    assert_eq!(code, 403, "{body}");
    let (code, body) = post(&d.url, "/v1/auth/setup", &[], &setup_body(SETUP_TOKEN));
    assert_eq!(code, 201, "{body}");
    let (code, body) = post(&d.url, "/v1/auth/setup", &[], &setup_body(SETUP_TOKEN));
    assert_eq!(code, 409, "setup is single use: {body}");

    // No token: 401.
    let (code, body) = http(&d.url, "GET", "/v1/agents", &[], None).expect("agents");
    assert_eq!(code, 401, "{body}");
    assert_eq!(json(&body)["message"], "missing bearer token");

    // orlojctl auth login stores a token in the profile; later commands use it.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.json");
    let cfg = cfg.to_str().expect("utf-8 path");
    let env = [("ORLOJCTL_CONFIG", cfg)];
    let (ok, out, err) = run(ctl_env(
        &d.url,
        &env,
        &["auth", "login", "-u", "admin", "-p", PASSWORD],
    ));
    assert!(ok, "auth login failed:\n{out}\n{err}");
    assert!(out.contains("logged in as admin (admin)"), "{out}");
    let stored = json(&std::fs::read_to_string(cfg).expect("config written"));
    let profile = &stored["profiles"][stored["current_profile"].as_str().expect("profile")];
    assert!(
        profile["token"].as_str().is_some_and(|t| t.len() >= 32),
        "{stored}"
    );

    let (ok, out, err) = run(ctl_env(&d.url, &env, &["auth", "whoami"]));
    assert!(
        ok && out.contains("(role admin, via bearer)"),
        "{out}\n{err}"
    );
    let (ok, out, err) = run(ctl_env(&d.url, &env, &["get", "agents"]));
    assert!(ok, "get agents with the stored token:\n{out}\n{err}");

    // A wrong password is refused.
    let (ok, _, err) = run(ctl_env(
        &d.url,
        &env,
        &["auth", "login", "-u", "admin", "-p", "not-the-password"],
    ));
    assert!(!ok && err.contains("invalid credentials"), "{err}");

    // A reader token reads but cannot write (403); an unknown token is 401.
    let (ok, reader, err) = run(ctl_env(
        &d.url,
        &env,
        &["create", "token", "e2e-reader", "--role", "reader"],
    ));
    assert!(ok, "create token:\n{err}");
    let reader = reader.trim().to_string();
    let bearer = format!("Bearer {reader}");
    let (code, _) = http(
        &d.url,
        "GET",
        "/v1/agents",
        &[("Authorization", &bearer)],
        None,
    )
    .expect("agents");
    assert_eq!(code, 200);
    let manifest = dir.path().join("agent.yaml");
    std::fs::write(&manifest, AGENT).expect("manifest");
    let manifest = manifest.to_str().expect("utf-8 path");
    let (ok, out, err) = run(ctl_env(
        &d.url,
        &[("ORLOJ_API_TOKEN", reader.as_str())],
        &["apply", "-f", manifest],
    ));
    assert!(!ok, "a reader token must not write:\n{out}\n{err}");
    assert!(err.contains("403") || err.contains("forbidden"), "{err}");
    let (code, body) = post(
        &d.url,
        "/v1/agents",
        &[("Authorization", &bearer)],
        &serde_json::json!({"apiVersion": "orloj.dev/v1", "kind": "Agent", "metadata": {"name": "x"}, "spec": {"model_ref": "m"}}).to_string(),
    );
    assert_eq!(code, 403, "{body}");
    let (ok, out, err) = run(ctl_env(&d.url, &env, &["apply", "-f", manifest]));
    assert!(ok, "admin apply:\n{out}\n{err}");
    let (ok, _, err) = run(ctl_env(&d.url, &[], &["get", "agents"]));
    assert!(!ok && err.contains("missing bearer token"), "{err}");

    let (ok, out, _) = run(ctl_env(&d.url, &env, &["get", "tokens"]));
    assert!(
        ok && out.contains("e2e-reader") && !out.contains(&reader),
        "{out}"
    );
    let (ok, _, err) = run(ctl_env(&d.url, &env, &["delete", "token", "e2e-reader"]));
    assert!(ok, "{err}");
    let (code, _) = http(
        &d.url,
        "GET",
        "/v1/agents",
        &[("Authorization", &bearer)],
        None,
    )
    .expect("agents");
    assert_eq!(code, 401, "a deleted token stops working");

    // Users.
    let (ok, password, err) = run(ctl_env(
        &d.url,
        &env,
        &["admin", "create-user", "wendy", "--role", "writer"],
    ));
    assert!(ok, "{err}");
    let (ok, out, _) = run(ctl_env(&d.url, &env, &["admin", "list-users"]));
    assert!(
        ok && out.contains("wendy") && out.contains("writer"),
        "{out}"
    );
    let (code, body) = post(
        &d.url,
        "/v1/auth/login",
        &[],
        &serde_json::json!({"username": "wendy", "password": password.trim()}).to_string(),
    );
    assert_eq!(code, 200, "{body}");
    let (ok, _, err) = run(ctl_env(&d.url, &env, &["admin", "delete-user", "admin"]));
    assert!(!ok && err.contains("last admin"), "{err}");

    // Brute force against login is throttled (per IP: burst 20, then 429).
    let wrong =
        serde_json::json!({"username": "admin", "password": "guess-guess-guess"}).to_string();
    let codes: Vec<u16> = (0..30)
        .map(|_| post(&d.url, "/v1/auth/login", &[], &wrong).0)
        .collect();
    assert!(codes.contains(&429), "{codes:?}");
    assert!(codes.iter().all(|c| *c == 401 || *c == 429), "{codes:?}");
    let (code, body) = post(&d.url, "/v1/auth/login", &[], &wrong);
    assert_eq!(code, 429);
    assert_eq!(json(&body)["message"], "too many authentication attempts");
}

#[test]
fn auth_mode_is_validated_at_startup() {
    for mode in ["sso", "bogus"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_orlojd"))
            .args(["--addr", "127.0.0.1:0", "--auth-mode", mode])
            .output()
            .expect("orlojd runs");
        assert!(!out.status.success(), "--auth-mode {mode} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("auth mode") || err.contains("auth-mode"),
            "{err}"
        );
    }
}

#[test]
fn postgres_accounts_survive_restarts_and_the_one_shot_reset_works() {
    let Some(dsn) = common::fresh_database() else {
        return;
    };
    let store = [
        "--storage-backend",
        "postgres",
        "--postgres-dsn",
        dsn.as_str(),
    ];
    let mut args = store.to_vec();
    args.extend(["--auth-mode", "native"]);
    let d = Orlojd::start_with_env(&args, &[("ORLOJ_SETUP_TOKEN", SETUP_TOKEN)]);
    let (code, body) = post(&d.url, "/v1/auth/setup", &[], &setup_body(SETUP_TOKEN));
    assert_eq!(code, 201, "{body}");
    d.terminate();

    // The one-shot reset changes the password and exits.
    let new_password = "reset-by-operator-1";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orlojd"))
        .args(store)
        .args([
            "--addr",
            "127.0.0.1:0",
            "--auth-reset-admin-username",
            "admin",
            "--auth-reset-admin-password",
            new_password,
        ])
        .output()
        .expect("orlojd runs");
    assert!(
        out.status.success(),
        "reset failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let short = std::process::Command::new(env!("CARGO_BIN_EXE_orlojd"))
        .args(store)
        .args([
            "--addr",
            "127.0.0.1:0",
            "--auth-reset-admin-username",
            "admin",
        ])
        .args(["--auth-reset-admin-password", "short"])
        .output()
        .expect("orlojd runs");
    assert!(!short.status.success(), "a short reset password must fail");

    let d = Orlojd::start_with_env(&args, &[("ORLOJ_SETUP_TOKEN", SETUP_TOKEN)]);
    let (_, body) = http(&d.url, "GET", "/v1/auth/config", &[], None).expect("config");
    assert_eq!(
        json(&body)["setup_required"],
        false,
        "the admin survived the restart"
    );
    let login = |password: &str| {
        post(
            &d.url,
            "/v1/auth/login",
            &[],
            &serde_json::json!({"username": "admin", "password": password}).to_string(),
        )
        .0
    };
    assert_eq!(login(PASSWORD), 401);
    assert_eq!(login(new_password), 200);
}
