//! The container executor: a fake docker CLI (a shell script) pins arguments, environment,
//! failure and timeout handling; a real podman run proves a request goes through a container.

mod tools_support;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use orloj_core::tool::{ToolErrorCode, ToolExecutor};
use orloj_runtime::tools::conformance::{Case, run_case};
use orloj_runtime::tools::{ContainerConfig, ContainerToolExecutor, GovernedToolRuntime};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tools_support::{injector, invocation, secrets, serve, tool};

const FAKE_RUNTIME: &str = r#"#!/bin/sh
if [ "$1" = "rm" ]; then printf '%s\n' "$@" > "$FAKE_DIR/rm"; exit 0; fi
printf '%s\n' "$@" > "$FAKE_DIR/argv"
env | grep '^TOOL_AUTH_' > "$FAKE_DIR/env" || true
case "$FAKE_MODE" in
  echo) exec cat ;;
  fail) echo "boom Authorization: Bearer sekrit-value" >&2; exit 7 ;;
  sleep) exec sleep 30 ;;
esac
"#;

struct Fake {
    dir: PathBuf,
}

impl Fake {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("orloj-fake-runtime-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let bin = dir.join("fake-docker");
        std::fs::write(&bin, FAKE_RUNTIME).expect("write fake runtime");
        let status = Command::new("chmod")
            .arg("755")
            .arg(&bin)
            .status()
            .expect("chmod");
        assert!(status.success());
        Self { dir }
    }

    fn config(&self, mode: &str) -> ContainerConfig {
        ContainerConfig {
            runtime: self.dir.join("fake-docker").display().to_string(),
            image: "example/tool:1".into(),
            cli_env: vec![
                ("FAKE_DIR".into(), self.dir.display().to_string()),
                ("FAKE_MODE".into(), mode.into()),
            ],
            ..Default::default()
        }
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn executor(config: ContainerConfig) -> ContainerToolExecutor {
    let secrets = secrets(
        &[("tok", &[("value", "s3cret-bearer")])],
        &[
            ("ORLOJ_SECRET_KEY", "s3cret-key"),
            ("ORLOJ_SECRET_UP", "u:p"),
        ],
    )
    .await;
    ContainerToolExecutor::new(config, injector(secrets))
}

#[test]
fn run_args_follow_the_spec() {
    let config = ContainerConfig::default();
    let args = config.run_args("c1", "https://t.example/x", &["TOOL_AUTH_BEARER"]);
    let expected: Vec<String> = [
        "run",
        "--rm",
        "-i",
        "--name",
        "c1",
        "--network",
        "none",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        "65532:65532",
        "--memory",
        "128m",
        "--cpus",
        "0.50",
        "--pids-limit",
        "64",
        "--env",
        "TOOL_AUTH_BEARER",
        "-e",
        "TOOL_ENDPOINT=https://t.example/x",
        "--entrypoint",
        "/bin/sh",
        "curlimages/curl:8.8.0",
        "-lc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(args[..args.len() - 1], expected[..]);
    assert!(args.last().expect("script").contains("--fail-with-body"));
    assert_eq!(config.runtime, "docker");
}

#[tokio::test]
async fn echoes_stdin_and_passes_auth_only_through_the_environment() {
    let fake = Fake::new();
    let exec = executor(fake.config("echo")).await;
    for (auth, env_line, secret) in [
        (
            json!({"secretRef": "tok"}),
            "TOOL_AUTH_BEARER=s3cret-bearer",
            "s3cret-bearer",
        ),
        (
            json!({"profile": "api_key_header", "headerName": "X-Key", "secretRef": "key"}),
            "TOOL_AUTH_HEADER_VALUE=s3cret-key",
            "s3cret-key",
        ),
        (
            json!({"profile": "basic", "secretRef": "up"}),
            "TOOL_AUTH_BASIC=dTpw",
            "dTpw",
        ),
    ] {
        let t = tool(
            "c",
            json!({"endpoint": "https://t.example/x", "auth": auth}),
        );
        let out = exec
            .execute(invocation(t, "  {\"q\":1}\n"))
            .await
            .expect("ok");
        assert_eq!(out.result, "{\"q\":1}");
        let argv = fake.read("argv");
        let env = fake.read("env");
        assert!(argv.contains("--env\nTOOL_AUTH_"), "{argv}");
        assert!(argv.contains("TOOL_ENDPOINT=https://t.example/x"), "{argv}");
        assert!(!argv.contains(secret), "secret in argv: {argv}");
        assert!(env.contains(env_line), "{env}");
    }
    // No auth: no TOOL_AUTH_* flags or variables.
    let t = tool("c", json!({"endpoint": "https://t.example/x"}));
    exec.execute(invocation(t, "x")).await.expect("ok");
    assert!(!fake.read("argv").contains("--env\nTOOL_AUTH_"));
    assert_eq!(fake.read("env"), "");
}

#[tokio::test]
async fn non_zero_exit_is_retryable_with_redacted_stderr() {
    let fake = Fake::new();
    let exec = executor(fake.config("fail")).await;
    let t = tool("c", json!({"endpoint": "https://t.example/x"}));
    let err = exec.execute(invocation(t, "x")).await.expect_err("fails");
    assert_eq!(err.code, ToolErrorCode::ExecutionFailed);
    assert!(err.retryable);
    assert_eq!(err.details["exit_code"], "7");
    assert!(err.message.contains("boom"), "{}", err.message);
    assert!(!err.message.contains("sekrit-value"), "{}", err.message);
}

#[tokio::test]
async fn timeout_kills_the_cli_and_removes_the_container() {
    let fake = Fake::new();
    let exec = executor(fake.config("sleep")).await;
    let t = tool("c", json!({"endpoint": "https://t.example/x"}));
    let mut inv = invocation(t, "x");
    inv.timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = exec.execute(inv).await.expect_err("timeout");
    assert_eq!(err.code, ToolErrorCode::Timeout);
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut removed = String::new();
    for _ in 0..100 {
        removed = fake.read("rm");
        if !removed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(removed.starts_with("rm\n-f\norloj-tool-"), "{removed:?}");
}

#[tokio::test]
async fn missing_runtime_binary_is_isolation_unavailable() {
    let config = ContainerConfig {
        runtime: "/nonexistent/docker".into(),
        ..Default::default()
    };
    let exec = executor(config).await;
    let t = tool("c", json!({"endpoint": "https://t.example/x"}));
    let err = exec.execute(invocation(t, "x")).await.expect_err("fails");
    assert_eq!(err.code, ToolErrorCode::IsolationUnavailable);
    assert!(!err.retryable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_conformance_with_fake_runner() {
    let fake = Fake::new();
    let exec = executor(fake.config("echo")).await;
    let t = tool("c", json!({"endpoint": "https://t.example/x"}));
    for case in [
        Case::success(t.clone()),
        Case::missing_endpoint(t.clone()),
        Case::unsupported_type(t.clone(), "rpc"),
        Case::unresolvable_secret(t.clone()),
        Case::unknown_version(t.clone()),
        Case::canceled(t.clone()),
    ] {
        run_case(&exec, case).await.expect("conforms");
    }
    let sleepy = Arc::new(executor(fake.config("sleep")).await);
    let governed = GovernedToolRuntime::new(sleepy.clone()).with_isolation_backend(sleepy);
    let boxed = tool(
        "boxed",
        json!({"endpoint": "https://t.example/x", "runtime": {"isolation_mode": "container"}}),
    );
    run_case(
        &governed,
        Case::bounded_timeout(boxed, Duration::from_millis(10), Duration::from_millis(120)),
    )
    .await
    .expect("bounded timeout");
}

/// The podman setup of `.ci/containers.sh`, or `None` (skip) when podman or the probe image is
/// absent outside CI.
fn podman_config() -> Option<ContainerConfig> {
    let in_ci = std::env::var_os("CI").is_some();
    let skip = |why: &str| {
        assert!(
            !in_ci,
            "CI is set but {why}; source .ci/containers.sh first"
        );
        eprintln!("skipping real container test: {why} (source .ci/containers.sh)");
        None
    };
    let mut cli_env = Vec::new();
    for (var, file) in [
        ("CONTAINERS_CONF", "containers.conf"),
        ("CONTAINERS_STORAGE_CONF", "storage.conf"),
    ] {
        let value = std::env::var(var).ok().or_else(|| {
            let fallback = Path::new("/tmp/orloj-containers").join(file);
            fallback.exists().then(|| fallback.display().to_string())
        });
        if let Some(v) = value {
            cli_env.push((var.to_string(), v));
        }
    }
    let image = std::env::var("ORLOJ_TOOL_PROBE_IMAGE")
        .unwrap_or_else(|_| "localhost/orloj-tool-probe:1".into());
    let podman_ok = Command::new("podman")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !podman_ok {
        return skip("podman is not installed");
    }
    let image_ok = Command::new("podman")
        .args(["image", "exists", &image])
        .envs(cli_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !image_ok {
        return skip(&format!("image {image} is absent"));
    }
    Some(ContainerConfig {
        runtime: "podman".into(),
        image,
        network: "host".into(),
        cli_env,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_podman_container_carries_the_contract_envelope() {
    let Some(config) = podman_config() else {
        return;
    };
    let app = Router::new()
        .route(
            "/tool",
            post(|headers: HeaderMap, body: String| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if auth != "Bearer s3cret-bearer" {
                    return (StatusCode::UNAUTHORIZED, format!("bad auth {auth:?}"));
                }
                let envelope = json!({"tool_contract_version": "v1", "status": "ok",
                                      "output": {"result": format!("echo:{body}")}});
                (StatusCode::OK, envelope.to_string())
            }),
        )
        .route(
            "/broken",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "kaputt") }),
        );
    let addr = serve(app).await;
    let backend = Arc::new(executor(config).await);
    let runtime = GovernedToolRuntime::new(backend.clone()).with_isolation_backend(backend);

    let t = tool(
        "probe",
        json!({"endpoint": format!("http://127.0.0.1:{}/tool", addr.port()),
               "auth": {"secretRef": "tok"},
               "runtime": {"isolation_mode": "container", "timeout": "90s"}}),
    );
    let out = runtime
        .execute(invocation(t, r#"{"q":"rust"}"#))
        .await
        .expect("container call succeeds");
    // The container backend returns stdout as-is: the contract envelope the tool answered.
    let envelope: Value = serde_json::from_str(&out.result).expect("stdout is the envelope");
    assert_eq!(envelope["status"], "ok");
    assert_eq!(envelope["output"]["result"], r#"echo:{"q":"rust"}"#);

    let broken = tool(
        "broken",
        json!({"endpoint": format!("http://127.0.0.1:{}/broken", addr.port()),
               "runtime": {"isolation_mode": "container", "timeout": "90s"}}),
    );
    let err = runtime
        .execute(invocation(broken, "{}"))
        .await
        .expect_err("HTTP 500 fails the container");
    assert_eq!(err.code, ToolErrorCode::ExecutionFailed);
    assert!(err.retryable);
}
