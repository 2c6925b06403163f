//! The Helm chart as runnable local command lines, shared by the chart test and the deployment
//! rehearsal: render `charts/orloj` with the real helm, pick a Deployment's container, and turn its
//! args and env into a process this machine can start (cluster service names → loopback, a real
//! Postgres DSN and NATS URL, Secrets resolved from the render).

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Release name the renders use: objects are `orloj-server`, `orloj-worker`, ...
pub const RELEASE: &str = "orloj";
/// Exit code of chart-test.sh when helm or kubernetes-validate cannot be installed.
pub const TOOLS_MISSING: i32 = 3;
/// Encryption key used when a render references a Secret the chart does not create.
pub const TEST_ENCRYPTION_KEY: &str =
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// The helm binary scripts/chart-test.sh installs.
pub fn helm() -> PathBuf {
    repo_root().join(".tools/helm/helm")
}

/// Skips (returns false) with a message, or panics under CI.
pub fn skip(why: &str) -> bool {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {why}: chart tests must not be skipped in CI"
    );
    eprintln!("skipping: {why}");
    false
}

/// Exit status and both streams of a finished command.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs scripts/chart-test.sh; None when the tools cannot be provided here (after `skip`).
pub fn chart_test_script(args: &[&str]) -> Option<Output> {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/chart-test.sh"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("bash runs scripts/chart-test.sh");
    if out.status.code() == Some(TOOLS_MISSING) {
        skip(&format!(
            "helm or kubernetes-validate cannot be installed here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        return None;
    }
    Some(out)
}

/// Renders the chart (defaults, or with one of charts/orloj/ci/*-values.yaml) into YAML documents.
pub fn render(values_file: Option<&str>) -> Vec<Value> {
    let root = repo_root();
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE, "charts/orloj", "--namespace", "orloj"])
        .current_dir(&root);
    if let Some(file) = values_file {
        cmd.args(["-f", &format!("charts/orloj/ci/{file}")]);
    }
    let out = cmd.output().expect("helm runs");
    assert!(out.status.success(), "helm template: {}", describe(&out));
    let text = String::from_utf8(out.stdout).expect("helm output is UTF-8");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("helm output parses as YAML");
    docs.into_iter().filter(|d| d.is_object()).collect()
}

/// The container `container` of Deployment `deployment` in a render.
pub fn container<'a>(docs: &'a [Value], deployment: &str, container: &str) -> &'a Value {
    let dep = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == deployment)
        .unwrap_or_else(|| panic!("render has no Deployment {deployment}"));
    dep["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == container))
        .unwrap_or_else(|| panic!("Deployment {deployment} has no container {container}"))
}

/// Standard base64 (the `data` of rendered Secrets).
fn b64decode(text: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A key of a Secret the render creates (`data` or `stringData`).
fn rendered_secret(docs: &[Value], name: &str, key: &str) -> Option<String> {
    let secret = docs
        .iter()
        .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == name)?;
    match secret["stringData"][key].as_str() {
        Some(v) => Some(v.to_string()),
        None => secret["data"][key].as_str().and_then(b64decode),
    }
}

/// Expands Kubernetes `$(NAME)` references from earlier env vars; unknown ones stay as written.
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (name, value) in env {
        out = out.replace(&format!("$({name})"), value);
    }
    out
}

/// What a container's command line becomes on this machine.
pub struct Substitutions {
    /// Replaces the port of `--addr` / `--healthz-addr` (listening on 127.0.0.1).
    pub port: u16,
    /// Replaces every `nats://…` argument value.
    pub nats_url: String,
    /// Replaces `ORLOJ_POSTGRES_DSN`.
    pub postgres_dsn: String,
    /// Value of `fieldRef: metadata.name` (the pod name).
    pub pod_name: String,
}

/// A container's args and env made runnable here, and the env names the binary itself must read
/// (those not only used for `$(NAME)` expansion inside the pod spec).
pub struct ProcessConfig {
    /// Command-line arguments.
    pub args: Vec<String>,
    /// Environment, in pod-spec order.
    pub env: Vec<(String, String)>,
    /// Env names the binary reads.
    pub binary_env: BTreeSet<String>,
}

/// Resolves a rendered container's args and env (Secrets from the render, fieldRefs, `$(NAME)`),
/// then applies `subst`.
pub fn process_config(docs: &[Value], c: &Value, subst: &Substitutions) -> ProcessConfig {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut binary_env = BTreeSet::new();
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let name = from["configMapRef"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("unsupported envFrom {from}"));
        let cm = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("envFrom names ConfigMap {name}, which is not rendered"));
        for (k, v) in cm["data"].as_object().into_iter().flatten() {
            binary_env.insert(k.clone());
            env.push((
                k.clone(),
                v.as_str().expect("ConfigMap values are strings").into(),
            ));
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_string();
        let value = if let Some(v) = e["value"].as_str() {
            Some(expand(v, &env))
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            Some(subst.pod_name.clone())
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            let (secret, key) = (
                r["name"].as_str().expect("name"),
                r["key"].as_str().expect("key"),
            );
            match rendered_secret(docs, secret, key) {
                Some(v) => Some(v),
                // A Secret the operator manages (existingSecret): optional keys may be absent.
                None if r.get("optional") == Some(&Value::Bool(true)) => None,
                None if name == "ORLOJ_SECRET_ENCRYPTION_KEY" => Some(TEST_ENCRYPTION_KEY.into()),
                None => Some(format!("chart-test-{key}")),
            }
        } else {
            panic!("env {name}: unsupported source {e}");
        };
        let Some(mut value) = value else { continue };
        if name == "ORLOJ_POSTGRES_DSN" {
            value = subst.postgres_dsn.clone();
        }
        // The raw-manifest fallback ships placeholders the operator must replace.
        if value.starts_with("CHANGE-ME") && name == "ORLOJ_SECRET_ENCRYPTION_KEY" {
            value = TEST_ENCRYPTION_KEY.into();
        }
        env.retain(|(n, _)| *n != name);
        binary_env.insert(name.clone());
        env.push((name, value));
    }
    let mut args = Vec::new();
    for a in c["args"].as_array().into_iter().flatten() {
        let a = a.as_str().expect("args are strings");
        let a = match a.split_once('=') {
            Some((flag @ ("--addr" | "--healthz-addr"), _)) => {
                format!("{flag}=127.0.0.1:{}", subst.port)
            }
            Some((flag, v)) if v.starts_with("nats://") => format!("{flag}={}", subst.nats_url),
            _ => a.to_string(),
        };
        args.push(expand(&a, &env));
    }
    // Vars only referenced as $(NAME) (POD_NAME, POSTGRES_PASSWORD) exist for the pod spec.
    let raw = serde_json::to_string(c).expect("container serializes");
    binary_env.retain(|n| !raw.contains(&format!("$({n})")));
    ProcessConfig {
        args,
        env,
        binary_env,
    }
}
