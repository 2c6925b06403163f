//! Helm chart tests (charts/orloj):
//! - `scripts/chart-test.sh` with a real helm: lint, renders of every value set, strict Kubernetes
//!   schema validation of the renders and of the raw-manifest fallback, bad values rejected;
//! - every argument and environment variable the chart gives the orlojd and orlojworker containers
//!   is accepted by the real binaries: each rendered command line is started (cluster addresses
//!   swapped for loopback, a real Postgres and NATS) and must come up and answer `/healthz`.
//!
//! Without helm (no npm) or without TEST_DATABASE_URL / TEST_NATS_URL these skip with a message,
//! and fail when CI is set. The render and substitution helpers live in tests/common/chart.rs,
//! shared with the deployment rehearsal (tests/rehearsal.rs).

mod common;

use common::chart::{
    ProcessConfig, RELEASE, Substitutions, chart_test_script, container, describe, process_config,
    render, repo_root, skip,
};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The raw-manifest fallback, checked like a render.
const FALLBACK: &str = "charts/orloj/manifests/orloj-stack.yaml";

#[test]
fn chart_lints_renders_and_validates() {
    let Some(out) = chart_test_script(&[]) else {
        return;
    };
    assert!(
        out.status.success(),
        "scripts/chart-test.sh failed: {}",
        describe(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("chart-test: all checks passed"), "{stdout}");
}

/// A value set's name, its documents, and the (deployment, container) of server and worker.
type Render = (String, Vec<Value>, [(String, String); 2]);

/// Kills the child on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn healthz_ok(port: u16) -> bool {
    common::http_get(&format!("http://127.0.0.1:{port}"), "/healthz").is_some_and(|(code, body)| {
        let body = body.trim();
        code == 200
            && (body == "ok"
                || serde_json::from_str::<Value>(body).is_ok_and(|v| v["status"] == "ok"))
    })
}

/// Starts `bin` with the config and waits for `/healthz`; returns the problems found.
fn check_binary(bin: &Path, what: &str, cfg: &ProcessConfig, port: u16) -> Vec<String> {
    let mut problems = Vec::new();
    let image = std::fs::read(bin).expect("read binary");
    for name in &cfg.binary_env {
        if !image.windows(name.len()).any(|w| w == name.as_bytes()) {
            problems.push(format!(
                "{what}: the chart sets env {name}, which {} never reads",
                bin.display()
            ));
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Running(
        Command::new(bin)
            .args(&cfg.args)
            .env_clear()
            .envs(cfg.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("binary starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
            let hint = if status.code() == Some(2) {
                " (exit 2: an argument or env value was rejected)"
            } else {
                ""
            };
            problems.push(format!(
                "{what}: exited with {status}{hint}\nargs: {:?}\nenv: {:?}\nstderr:\n{stderr}",
                cfg.args,
                cfg.env.iter().map(|(k, _)| k).collect::<Vec<_>>()
            ));
            break;
        }
        if healthz_ok(port) {
            break;
        }
        if Instant::now() > deadline {
            let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
            problems.push(format!(
                "{what}: still running but /healthz on port {port} never answered ok\nargs: {:?}\nstderr:\n{stderr}",
                cfg.args
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    problems
}

#[test]
fn binaries_accept_every_arg_and_env_the_chart_passes() {
    let Some(out) = chart_test_script(&["--tools-only"]) else {
        return;
    };
    assert!(out.status.success(), "installing tools: {}", describe(&out));
    let Ok(nats_url) = std::env::var("TEST_NATS_URL") else {
        skip("TEST_NATS_URL is unset (source .ci/services.sh to run this)");
        return;
    };
    let orlojd = PathBuf::from(env!("CARGO_BIN_EXE_orlojd"));
    let worker = option_env!("CARGO_BIN_EXE_orlojworker")
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    if worker.is_none() {
        eprintln!("skipping the orlojworker half: orlojworker binary not built yet");
    }

    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    let value_sets = [
        None,
        Some("external-values.yaml"),
        Some("hpa-values.yaml"),
        Some("ingress-values.yaml"),
        Some("existing-secret-values.yaml"),
    ];
    let mut checked = HashMap::new();
    let mut renders: Vec<Render> = value_sets
        .iter()
        .map(|values| {
            (
                values.unwrap_or("defaults").to_string(),
                render(*values),
                [
                    (format!("{RELEASE}-server"), "server".to_string()),
                    (format!("{RELEASE}-worker"), "worker".to_string()),
                ],
            )
        })
        .collect();
    let fallback = std::fs::read_to_string(repo_root().join(FALLBACK)).expect("read fallback");
    let fallback: Vec<Value> = serde_saphyr::from_multiple(&fallback).expect("fallback parses");
    renders.push((
        FALLBACK.to_string(),
        fallback.into_iter().filter(|d| d.is_object()).collect(),
        [
            ("orlojd".to_string(), "orlojd".to_string()),
            ("orlojworker".to_string(), "orlojworker".to_string()),
        ],
    ));
    for (set, docs, [server, worker_dep]) in &renders {
        let targets = [
            ("server", "orlojd", Some(orlojd.as_path()), server),
            ("worker", "orlojworker", worker.as_deref(), worker_dep),
        ];
        for (component, bin_name, bin, (deployment, container_name)) in targets {
            let c = container(docs, deployment, container_name);
            let Some(bin) = bin else { continue };
            // One run per distinct command-line shape (flag names and env names).
            let probe = Substitutions {
                port: 1,
                nats_url: String::new(),
                postgres_dsn: String::new(),
                pod_name: String::new(),
            };
            let shape = process_config(docs, c, &probe);
            let key = format!(
                "{bin_name}:{:?}:{:?}",
                shape
                    .args
                    .iter()
                    .map(|a| a.split('=').next().unwrap_or(a))
                    .collect::<Vec<_>>(),
                shape.env.iter().map(|(k, _)| k).collect::<Vec<_>>()
            );
            if !seen.insert(key) {
                continue;
            }
            let Some(dsn) = common::fresh_database() else {
                return;
            };
            let port = common::free_port();
            let subst = Substitutions {
                port,
                nats_url: nats_url.clone(),
                postgres_dsn: dsn,
                pod_name: format!("{RELEASE}-{component}-chart-test"),
            };
            let cfg = process_config(docs, c, &subst);
            problems.extend(check_binary(
                bin,
                &format!("{bin_name} ({set})"),
                &cfg,
                port,
            ));
            *checked.entry(bin_name).or_insert(0) += 1;
        }
    }
    assert!(
        problems.is_empty(),
        "the binaries do not accept what the chart passes them:\n\n{}",
        problems.join("\n\n")
    );
    assert!(
        checked.get("orlojd").copied().unwrap_or(0) >= 2,
        "expected several distinct orlojd command lines, checked {checked:?}"
    );
    eprintln!("checked command lines: {checked:?}");
}

#[test]
fn substitution_resolves_secrets_fieldrefs_and_loopback() {
    // Pure: a hand-written container in the chart's shape.
    let docs: Vec<Value> = serde_saphyr::from_multiple(
        r#"
kind: Secret
metadata: {name: s}
data: {k: "aGVsbG8="}
"#,
    )
    .expect("yaml");
    let c: Value = serde_saphyr::from_str(
        r#"
args: ["--addr=:8080", "--nats-url=nats://orloj-nats:4222", "--worker-id=$(POD_NAME)"]
env:
  - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
  - {name: TOKEN, valueFrom: {secretKeyRef: {name: s, key: k}}}
  - {name: OPT, valueFrom: {secretKeyRef: {name: absent, key: k, optional: true}}}
  - {name: ORLOJ_POSTGRES_DSN, value: "postgres://u:$(TOKEN)@orloj-postgresql/db"}
"#,
    )
    .expect("yaml");
    let cfg = process_config(
        &docs,
        &c,
        &Substitutions {
            port: 4321,
            nats_url: "nats://127.0.0.1:1".into(),
            postgres_dsn: "postgres://real".into(),
            pod_name: "pod-0".into(),
        },
    );
    assert_eq!(
        cfg.args,
        [
            "--addr=127.0.0.1:4321",
            "--nats-url=nats://127.0.0.1:1",
            "--worker-id=pod-0"
        ]
    );
    assert_eq!(
        cfg.env,
        [
            ("POD_NAME".to_string(), "pod-0".to_string()),
            ("TOKEN".into(), "hello".into()),
            ("ORLOJ_POSTGRES_DSN".into(), "postgres://real".into()),
        ]
    );
    assert_eq!(
        cfg.binary_env.into_iter().collect::<Vec<_>>(),
        ["ORLOJ_POSTGRES_DSN"]
    );
}

#[test]
fn a_flag_or_env_the_binary_does_not_know_is_reported() {
    // Guards the check itself: what drift looks like must not pass.
    let orlojd = Path::new(env!("CARGO_BIN_EXE_orlojd"));
    let port = common::free_port();
    let cfg = ProcessConfig {
        args: vec![
            format!("--addr=127.0.0.1:{port}"),
            "--no-such-flag-from-the-chart".into(),
        ],
        env: vec![("ORLOJ_NO_SUCH_ENV_FROM_THE_CHART".into(), "x".into())],
        binary_env: ["ORLOJ_NO_SUCH_ENV_FROM_THE_CHART".to_string()].into(),
    };
    let problems = check_binary(orlojd, "orlojd (mutated)", &cfg, port);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].contains("ORLOJ_NO_SUCH_ENV_FROM_THE_CHART"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].contains("exit 2") && problems[1].contains("--no-such-flag-from-the-chart"),
        "{}",
        problems[1]
    );
}
