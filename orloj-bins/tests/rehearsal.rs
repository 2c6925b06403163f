//! Deployment rehearsal (issue 6, item 5): the operator's checks after a Helm install, played with
//! the real binaries and exactly the args and env the chart renders with its default values
//! (tests/common/chart.rs turns the rendered containers into local command lines: cluster
//! addresses → loopback, a fresh Postgres database, the test NATS).
//!
//! One orlojd and as many orlojworkers as the chart's worker replicas (2), then: `/healthz`, native
//! setup with the chart's setup token, `orlojctl auth login`, Ready workers, the pipeline blueprint
//! to Succeeded (in a namespace of its own, see `Rehearsal::namespace`), and a scale from 2 to 3 workers: the third joins Ready while the first two keep
//! running (same processes, same Worker resources, still Ready) and a new task still succeeds.
//! scripts/rehearse.sh is the same rehearsal for a human.
//!
//! Skips with a message without helm or TEST_DATABASE_URL / TEST_NATS_URL; fails when CI is set.

mod common;

use common::chart::{
    ProcessConfig, RELEASE, Substitutions, chart_test_script, container, describe, process_config,
    render, repo_root,
};
use common::{ctl_env, free_port, fresh_database, http, http_get, nats_url};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a process or the cluster gets to reach a state before the test gives up.
const PATIENCE: Duration = Duration::from_secs(90);

/// A process started from a rendered container, killed on drop.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `bin` with exactly the config's args and env (nothing inherited, like a container).
    fn start(name: &str, bin: &Path, cfg: &ProcessConfig, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin)
            .args(&cfg.args)
            .env_clear()
            .envs(cfg.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `/healthz` on `port` answers 200; panics with the log if it exits first.
    fn wait_healthz(&mut self, port: u16) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before /healthz:\n{}",
                    self.name,
                    self.log()
                );
            }
            if http_get(&format!("http://127.0.0.1:{port}"), "/healthz")
                .is_some_and(|(code, _)| code == 200)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never answered /healthz on port {port}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rendered chart and what the processes share.
struct Rehearsal {
    docs: Vec<Value>,
    nats: String,
    dsn: String,
    dir: tempfile::TempDir,
    server_url: String,
    ctl_config: String,
    /// Namespace of the blueprint: agent-message dedupe ids are `<namespace>/<task>/<attempt>/…`,
    /// so a run sharing the test NATS with another run of this blueprint inside the dedupe window
    /// (2m) would lose its messages if both used `default`.
    namespace: String,
}

impl Rehearsal {
    fn worker_config(&self, pod: &str, port: u16) -> ProcessConfig {
        let c = container(&self.docs, &format!("{RELEASE}-worker"), "worker");
        process_config(
            &self.docs,
            c,
            &Substitutions {
                port,
                nats_url: self.nats.clone(),
                postgres_dsn: self.dsn.clone(),
                pod_name: pod.to_string(),
            },
        )
    }

    /// Starts worker `index` (1-based) as pod `orloj-worker-<hash>-<suffix>` and waits for /healthz.
    fn start_worker(&self, index: usize) -> (String, Proc) {
        let pod = format!("{RELEASE}-worker-5d8f7c9b4-w{index}x{}", std::process::id());
        let port = free_port();
        let cfg = self.worker_config(&pod, port);
        assert!(
            cfg.args.contains(&format!("--worker-id={pod}")),
            "the worker id comes from POD_NAME: {:?}",
            cfg.args
        );
        let mut p = Proc::start(
            &format!("worker-{index}"),
            Path::new(env!("CARGO_BIN_EXE_orlojworker")),
            &cfg,
            self.dir.path(),
        );
        p.wait_healthz(port);
        (pod, p)
    }

    /// orlojctl with the rehearsal's own config file (the token `auth login` stored).
    fn ctl(&self, args: &[&str]) -> Output {
        ctl_env(
            &self.server_url,
            &[("ORLOJCTL_CONFIG", &self.ctl_config)],
            args,
        )
    }

    fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "orlojctl {}: {}",
            args.join(" "),
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The Worker resources, from `orlojctl get workers -o json`.
    fn workers(&self) -> Vec<Value> {
        let text = self.ctl_ok(&["get", "workers", "-o", "json"]);
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("get workers -o json is not JSON ({e}): {text}"));
        match v {
            Value::Array(items) => items,
            other => other["items"].as_array().cloned().unwrap_or_default(),
        }
    }

    /// Waits until every named Worker is Ready; returns the Worker resources then.
    fn wait_ready(&self, names: &[String], procs: &mut [Proc]) -> Vec<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let workers = self.workers();
            let phase = |name: &str| {
                workers
                    .iter()
                    .find(|w| w["metadata"]["name"] == name)
                    .and_then(|w| w["status"]["phase"].as_str())
                    .unwrap_or("absent")
                    .to_string()
            };
            if names.iter().all(|n| phase(n) == "Ready") {
                return workers;
            }
            for p in procs.iter_mut() {
                assert!(p.running(), "{} exited:\n{}", p.name, p.log());
            }
            assert!(
                Instant::now() < deadline,
                "workers not Ready: {:?}\n{}",
                names.iter().map(|n| (n, phase(n))).collect::<Vec<_>>(),
                self.ctl_ok(&["get", "workers"])
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `orlojctl apply -f examples/blueprints/pipeline/ --run`; returns the task it waited for,
    /// checked Succeeded.
    fn run_pipeline(&self, what: &str) -> String {
        let blueprint = repo_root().join("examples/blueprints/pipeline/");
        let blueprint = blueprint.to_str().expect("UTF-8 path");
        let out = self.ctl(&[
            "apply",
            "-f",
            blueprint,
            "--run",
            "--timeout",
            "3m",
            "--poll",
            "1s",
            "-n",
            &self.namespace,
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{what}: apply --run: {}",
            describe(&out)
        );
        // The task applied (or its rerun) is the last `task/pipeline-brief…` named.
        let task = stdout
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter_map(|w| w.strip_prefix("task/"))
            .rfind(|n| n.starts_with("pipeline-brief"))
            .unwrap_or_else(|| panic!("{what}: no task in the apply output:\n{stdout}"))
            .to_string();
        let json = self.ctl_ok(&["get", "task", &task, "-n", &self.namespace, "-o", "json"]);
        let v: Value = serde_json::from_str(&json).expect("task JSON");
        assert_eq!(v["status"]["phase"], "Succeeded", "{what}: {task}: {json}");
        assert!(
            stdout.contains(&format!("task/{task} Succeeded")),
            "{what}: apply --run did not report {task} Succeeded:\n{stdout}"
        );
        task
    }
}

/// When Worker `name` was first stored: a Worker deleted and registered again gets a new one.
fn created_at(workers: &[Value], name: &str) -> String {
    workers
        .iter()
        .find(|w| w["metadata"]["name"] == name)
        .and_then(|w| w["metadata"]["createdAt"].as_str())
        .unwrap_or_else(|| panic!("no Worker {name} with metadata.createdAt in {workers:?}"))
        .to_string()
}

#[test]
fn operator_rehearsal_on_the_rendered_chart() {
    let Some(out) = chart_test_script(&["--tools-only"]) else {
        return;
    };
    assert!(out.status.success(), "installing helm: {}", describe(&out));
    let Some(nats) = nats_url() else { return };
    let Some(dsn) = fresh_database() else { return };
    let docs = render(None);

    let replicas = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "orloj-worker")
        .and_then(|d| d["spec"]["replicas"].as_u64())
        .expect("the default render sets the worker replicas");
    assert_eq!(replicas, 2, "the chart's default worker replicas");
    let replicas = usize::try_from(replicas).expect("small");

    let dir = tempfile::tempdir().expect("tempdir");
    let ctl_config = dir.path().join("orlojctl.json");
    let ctl_config = ctl_config.to_str().expect("UTF-8 path").to_string();
    let port = free_port();
    let r = Rehearsal {
        docs,
        nats,
        dsn,
        dir,
        server_url: format!("http://127.0.0.1:{port}"),
        ctl_config,
        namespace: format!(
            "rehearsal-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ),
    };

    // orlojd, as the server Deployment runs it.
    let server_cfg = process_config(
        &r.docs,
        container(&r.docs, &format!("{RELEASE}-server"), "server"),
        &Substitutions {
            port,
            nats_url: r.nats.clone(),
            postgres_dsn: r.dsn.clone(),
            pod_name: format!("{RELEASE}-server-rehearsal"),
        },
    );
    let env = |name: &str| {
        server_cfg
            .env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(env("ORLOJ_AUTH_MODE").as_deref(), Some("native"));
    let setup_token = env("ORLOJ_SETUP_TOKEN").expect("the chart gives orlojd a setup token");
    assert!(setup_token.len() >= 32, "setup token {setup_token:?}");
    let mut server = Proc::start(
        "orlojd",
        Path::new(env!("CARGO_BIN_EXE_orlojd")),
        &server_cfg,
        r.dir.path(),
    );
    server.wait_healthz(port);
    let (code, body) = http_get(&r.server_url, "/healthz").expect("healthz");
    assert_eq!(code, 200, "{body}");
    eprintln!("rehearsal: /healthz -> {body}");

    let mut names = Vec::new();
    let mut procs = Vec::new();
    for i in 1..=replicas {
        let (name, p) = r.start_worker(i);
        names.push(name);
        procs.push(p);
    }

    // Native setup with the chart's token, then `orlojctl auth login`.
    let password = format!("rehearsal-{}", std::process::id());
    let setup =
        serde_json::json!({"username": "admin", "password": password, "setup_token": setup_token});
    let (code, body) = http(
        &r.server_url,
        "POST",
        "/v1/auth/setup",
        &[("Content-Type", "application/json")],
        Some(&setup.to_string()),
    )
    .expect("orlojd answers /v1/auth/setup");
    assert_eq!(
        code, 201,
        "native setup with the chart's setup token: {body}"
    );
    let anonymous = r.ctl(&["get", "workers"]);
    assert!(
        !anonymous.status.success(),
        "the API answered without a token: {}",
        describe(&anonymous)
    );
    let login = r.ctl_ok(&["auth", "login", "-u", "admin", "-p", &password]);
    assert!(login.contains("logged in as admin"), "{login}");

    // Ready workers, the pipeline to Succeeded.
    let before = r.wait_ready(&names, &mut procs);
    let table = r.ctl_ok(&["get", "workers"]);
    assert!(names.iter().all(|n| table.contains(n.as_str())), "{table}");
    eprintln!("rehearsal: orlojctl get workers\n{table}");
    let first = r.run_pipeline("pipeline blueprint");
    eprintln!("rehearsal: task/{first} Succeeded");

    // Scale 2 → 3: the third joins, the others are untouched.
    let pids: Vec<u32> = procs.iter().map(|p| p.child.id()).collect();
    let (name, p) = r.start_worker(replicas + 1);
    names.push(name);
    procs.push(p);
    let after = r.wait_ready(&names, &mut procs);
    for (i, p) in procs.iter_mut().take(replicas).enumerate() {
        assert!(
            p.running(),
            "{} stopped after the scale-up:\n{}",
            p.name,
            p.log()
        );
        assert_eq!(p.child.id(), pids[i], "{} was restarted", p.name);
        assert_eq!(
            created_at(&before, &names[i]),
            created_at(&after, &names[i]),
            "Worker {} was re-registered",
            names[i]
        );
    }
    let second = r.run_pipeline("after the scale-up");
    assert_ne!(first, second, "the second run is a new task");
    assert!(server.running(), "orlojd exited:\n{}", server.log());
    for p in procs.iter_mut() {
        assert!(p.running(), "{} exited:\n{}", p.name, p.log());
    }
    eprintln!("rehearsal: scaled to 3 workers; task/{second} Succeeded");
}
