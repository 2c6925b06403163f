//! Distributed execution end to end (issue: distributed execution, "Done when"): real Postgres,
//! real nats-server, `orlojd` and two `orlojworker` processes in message-driven mode.
//!
//! 1. The reference's blueprints and scenarios reach their terminal states (spec §13.2, with
//!    a permission denial ending `Failed` as in sequential mode).
//! 2. One worker is SIGKILLed in the middle of several three-agent pipelines: every task still
//!    succeeds, and the model call of every agent step that had completed before the kill
//!    happened exactly once (only a step in flight at the kill may be called again).
//! 3. The workers' task transitions reach watches on orlojd over the NATS event bus.

mod common;

use common::{
    Orlojd, Orlojworker, OwnNats, PgProxy, apply_yaml, fresh_database, get_task,
    mock_endpoint_yaml, nats_url, ok, upstream_dir,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the fake model server received.
#[derive(Debug, Clone)]
struct Call {
    /// The whole conversation: the same agent step sends the same conversation.
    key: String,
    started: Instant,
    finished: Option<Instant>,
}

/// An OpenAI-compatible chat server that answers after a delay and records every call.
struct FakeModel {
    url: String,
    calls: Arc<Mutex<Vec<Call>>>,
    /// Opens the gate of [`FakeModel::start_gated`].
    gate: tokio::sync::watch::Sender<bool>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeModel {
    fn start(delay: Duration) -> FakeModel {
        Self::start_gated(delay, |_| false)
    }

    /// Like [`FakeModel::start`], but a call whose conversation `held` picks waits (recorded
    /// as started) until [`FakeModel::open_gate`].
    fn start_gated(delay: Duration, held: fn(&str) -> bool) -> FakeModel {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let recorded = calls.clone();
        let (gate, opened) = tokio::sync::watch::channel(false);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let calls = recorded.clone();
                let mut gate = opened.clone();
                async move {
                    let key: String = body["messages"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|m| m["content"].as_str().unwrap_or("").to_string())
                        .collect::<Vec<_>>()
                        .join("\n");
                    let index = {
                        let mut calls = calls.lock().expect("lock");
                        calls.push(Call {
                            key: key.clone(),
                            started: Instant::now(),
                            finished: None,
                        });
                        calls.len() - 1
                    };
                    // Dropped here when the caller dies mid-call: `finished` stays None.
                    if held(&key) {
                        let _ = gate.wait_for(|open| *open).await;
                    }
                    tokio::time::sleep(delay).await;
                    calls.lock().expect("lock")[index].finished = Some(Instant::now());
                    let digest = key.bytes().fold(0u64, |h, b| {
                        h.wrapping_mul(31).wrapping_add(u64::from(b))
                    });
                    axum::Json(json!({
                        "id": format!("chatcmpl-{index}"),
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [{
                            "index": 0,
                            "message": {"role": "assistant", "content": format!("findings {digest:x}")},
                            "finish_reason": "stop"
                        }],
                        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
                    }))
                }
            }),
        );
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeModel {
            url: format!("http://{addr}/v1"),
            calls,
            gate,
            _runtime: runtime,
        }
    }

    fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }
}

struct Cluster {
    server: Orlojd,
    workers: Vec<Orlojworker>,
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}{}x{nanos}", std::process::id())
}

/// orlojd (no embedded worker) and two consuming workers on one database, one JetStream
/// stream and one event subject, all private to this test.
fn cluster() -> Option<Cluster> {
    let dsn = fresh_database()?;
    let nats = nats_url()?;
    Some(cluster_on(&dsn, &nats, 2))
}

fn cluster_on(dsn: &str, nats: &str, workers: usize) -> Cluster {
    let stream = unique("ORLOJ_E2E_");
    let agent_prefix = format!("{}.agentmsg", unique("e2e"));
    let event_prefix = format!("{}.controlplane", unique("e2e"));
    let shared: Vec<String> = vec![
        "--storage-backend=postgres".into(),
        format!("--postgres-dsn={dsn}"),
        "--task-execution-mode=message-driven".into(),
        "--agent-message-bus-backend=nats-jetstream".into(),
        format!("--agent-message-nats-url={nats}"),
        format!("--agent-message-stream-name={stream}"),
        format!("--agent-message-subject-prefix={agent_prefix}"),
        "--event-bus-backend=nats".into(),
        format!("--nats-url={nats}"),
        format!("--nats-subject-prefix={event_prefix}"),
    ];
    let args = |extra: &[&str]| -> Vec<String> {
        shared
            .iter()
            .cloned()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let server_args = args(&["--reconcile-interval=1s"]);
    let server = Orlojd::start(&server_args.iter().map(String::as_str).collect::<Vec<_>>());
    let worker_args = args(&[
        "--agent-message-consume",
        "--max-concurrent-tasks=4",
        "--lease-duration=5s",
        "--heartbeat-interval=1s",
        "--reconcile-interval=100ms",
    ]);
    let worker_args: Vec<&str> = worker_args.iter().map(String::as_str).collect();
    let workers = ["worker-a", "worker-b", "worker-c"]
        .iter()
        .take(workers)
        .map(|id| Orlojworker::start(id, &worker_args))
        .collect();
    Cluster { server, workers }
}

fn all_tasks(server: &Orlojd) -> Vec<Value> {
    let out = ok(server.ctl(&["get", "tasks", "-o", "json"]), "get tasks");
    let v: Value = serde_json::from_str(&out).expect("json");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn wait_terminal(cluster: &Cluster, namespace: &str, name: &str) -> Value {
    wait_terminal_within(cluster, namespace, name, Duration::from_secs(120))
}

fn wait_terminal_within(cluster: &Cluster, namespace: &str, name: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let t = get_task(&cluster.server, namespace, name);
        let phase = t["status"]["phase"].as_str().unwrap_or("").to_string();
        if matches!(phase.as_str(), "Succeeded" | "Failed" | "DeadLetter") {
            return t;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = cluster
                .workers
                .iter()
                .map(|w| {
                    let log = w.log();
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    format!("--- {} ---\n{}", w.id, tail.join("\n"))
                })
                .collect();
            panic!(
                "task {namespace}/{name} stuck in {phase:?}: {:#}\n{}",
                t["status"],
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run_dir(server: &Orlojd, dir: &Path) {
    ok(
        server.ctl(&[
            "apply",
            "-f",
            &dir.display().to_string(),
            "--run",
            "--no-wait",
        ]),
        "apply --run",
    );
}

fn trace_types(t: &Value) -> Vec<String> {
    t["status"]["trace"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["type"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Whether a model call of a [`chain_manifests`] chain is for a step after the first.
fn after_the_first_step(conversation: &str) -> bool {
    !conversation.contains("you are plan")
}

/// A fake-model endpoint, three agents in a chain and `tasks` tasks `chain-<i>` on it.
fn chain_manifests(model: &FakeModel, tasks: usize) -> String {
    let mut yaml = format!(
        "---\napiVersion: orloj.dev/v1\nkind: Secret\nmetadata: {{name: fake-key}}\nspec: {{stringData: {{value: sk-test}}}}\n---\napiVersion: orloj.dev/v1\nkind: ModelEndpoint\nmetadata: {{name: fake}}\nspec: {{provider: openai, base_url: \"{}\", default_model: gpt-4o, allowPrivate: true, auth: {{secretRef: fake-key}}}}\n",
        model.url
    );
    for agent in ["plan", "research", "write"] {
        yaml.push_str(&format!(
            "---\napiVersion: orloj.dev/v1\nkind: Agent\nmetadata: {{name: {agent}}}\nspec: {{model_ref: fake, prompt: \"you are {agent}\"}}\n"
        ));
    }
    yaml.push_str("---\napiVersion: orloj.dev/v1\nkind: AgentSystem\nmetadata: {name: chain}\nspec:\n  agents: [plan, research, write]\n  graph:\n    plan: {next: research}\n    research: {next: write}\n");
    for i in 0..tasks {
        yaml.push_str(&format!(
            "---\napiVersion: orloj.dev/v1\nkind: Task\nmetadata: {{name: chain-{i}}}\nspec: {{system: chain, input: {{topic: \"topic number {i}\"}}}}\n"
        ));
    }
    yaml
}

#[test]
fn message_driven_across_processes_survives_a_killed_worker() {
    let Some(mut cluster) = cluster() else {
        return;
    };

    // 1. The reference's scenarios and blueprints, message-driven, on two workers.
    if let Some(upstream) = upstream_dir() {
        let scenarios = upstream.join("testing/scenarios");
        let namespaces = ["rt-pipeline", "rt-hier", "rt-loop", "rt-gov", "rt-retry"];
        let endpoints: String = namespaces.iter().map(|ns| mock_endpoint_yaml(ns)).collect();
        apply_yaml(
            &cluster.server,
            &format!("{endpoints}{}", mock_endpoint_yaml("default")),
        );
        for dir in [
            "01-pipeline",
            "02-hierarchical",
            "03-loop-max-turns",
            "04-governance-deny",
            "05-retry-deadletter",
        ] {
            run_dir(&cluster.server, &scenarios.join(dir));
        }
        for bp in ["pipeline", "hierarchical", "swarm-loop"] {
            run_dir(
                &cluster.server,
                &upstream.join("examples/blueprints").join(bp),
            );
        }
        for (ns, name) in [
            ("rt-pipeline", "rt-pipeline-task"),
            ("rt-hier", "rt-hier-task"),
            ("rt-loop", "rt-loop-task"),
            ("default", "bp-pipeline-task"),
            ("default", "bp-hierarchical-task"),
            ("default", "bp-swarm-loop-task"),
        ] {
            let t = wait_terminal(&cluster, ns, name);
            assert_eq!(
                t["status"]["phase"], "Succeeded",
                "{ns}/{name}: {:#}",
                t["status"]
            );
        }
        let loop_task = get_task(&cluster.server, "rt-loop", "rt-loop-task");
        let on_b001 = loop_task["status"]["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["branch_id"] == "b001")
            .count();
        assert_eq!(on_b001, 6, "03: six messages on branch b001");
        let t = wait_terminal(&cluster, "rt-gov", "rt-gov-deny-task");
        assert_eq!(t["status"]["phase"], "Failed", "{:#}", t["status"]);
        let types = trace_types(&t);
        assert!(
            types.iter().any(|e| e == "tool_permission_denied"),
            "{types:?} {:#}",
            t["status"]
        );
        assert!(!types.iter().any(|e| e == "tool_call"), "{types:?}");
        let t = wait_terminal(&cluster, "rt-retry", "rt-retry-deadletter-task");
        assert_eq!(t["status"]["phase"], "DeadLetter", "{:#}", t["status"]);
        assert!(
            trace_types(&t)
                .iter()
                .any(|e| e == "agent_message_retry_scheduled"),
            "05: message retries were scheduled"
        );
    }

    // 2. Kill a worker in the middle of three-agent pipelines. Every task's first step runs;
    // the later steps' model calls wait at the fake model's gate, which opens after the kill.
    // So the victim is certain to hold tasks with a recorded step and a step in flight, and it
    // cannot finish one between the read below and the kill, however slow the machine is.
    let model = FakeModel::start_gated(Duration::from_millis(400), after_the_first_step);
    let tasks = 8;
    apply_yaml(&cluster.server, &chain_manifests(&model, tasks));

    // Wait until every task has its first step recorded (each worker holds four); the holder
    // of chain-0 is the victim.
    let deadline = Instant::now() + Duration::from_secs(60);
    let holders: BTreeMap<String, String> = loop {
        let mid_graph: BTreeMap<String, String> = all_tasks(&cluster.server)
            .into_iter()
            .filter(|t| t["status"]["phase"] == "Running")
            .filter(|t| trace_types(t).iter().any(|e| e == "agent_end"))
            .filter_map(|t| {
                let name = t["metadata"]["name"].as_str()?;
                name.starts_with("chain-").then(|| {
                    let holder = t["status"]["claimedBy"].as_str().unwrap_or("");
                    (name.to_string(), holder.to_string())
                })
            })
            .collect();
        if mid_graph.len() == tasks {
            break mid_graph;
        }
        if Instant::now() >= deadline {
            let states: Vec<String> = all_tasks(&cluster.server)
                .iter()
                .map(|t| {
                    let s = &t["status"];
                    let history: Vec<&str> = s["history"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|h| h["type"].as_str())
                        .collect();
                    format!(
                        "{} {} claimedBy={} assignedWorker={} history={history:?} trace={:?}",
                        t["metadata"]["name"],
                        s["phase"],
                        s["claimedBy"],
                        s["assignedWorker"],
                        trace_types(t)
                    )
                })
                .collect();
            panic!(
                "the tasks never all had their first step recorded: {mid_graph:?}\n{}",
                states.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let victim = holders["chain-0"].clone();
    let held_by_victim: Vec<String> = holders
        .iter()
        .filter(|(_, holder)| **holder == victim)
        .map(|(name, _)| name.clone())
        .collect();
    let victim_index = cluster
        .workers
        .iter()
        .position(|w| w.id == victim)
        .expect("the victim is one of the workers");
    let survivor = cluster.workers[1 - victim_index].id.clone();
    cluster.workers[victim_index].kill_hard();
    let killed_at = Instant::now();
    model.open_gate();

    let mut finished = BTreeMap::new();
    for i in 0..tasks {
        let name = format!("chain-{i}");
        let t = wait_terminal(&cluster, "default", &name);
        assert_eq!(
            t["status"]["phase"], "Succeeded",
            "{name}: {:#}",
            t["status"]
        );
        assert_eq!(
            t["status"]["output"]["execution_order"], "plan -> research -> write",
            "{name}"
        );
        let history = t["status"]["history"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // Nothing got past the gate before the kill: the survivor finished every task.
        assert!(
            history
                .iter()
                .any(|h| h["type"] == "succeeded" && h["worker"] == survivor.as_str()),
            "{name} was finished by the survivor {survivor}: {history:#?}"
        );
        if held_by_victim.contains(&name) {
            assert!(
                history.iter().any(|h| h["type"] == "takeover"),
                "{name} was held by the killed worker and must have been taken over: {history:#?}"
            );
        }
        finished.insert(name, t);
    }

    // Every step's model call happened once, except a step in flight at the kill.
    let calls = model.calls();
    let mut by_step: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for c in &calls {
        by_step.entry(c.key.as_str()).or_default().push(c);
    }
    assert_eq!(
        by_step.len(),
        tasks * 3,
        "one distinct conversation per agent step"
    );
    let mut repeated_per_task: BTreeMap<usize, usize> = BTreeMap::new();
    for (key, cs) in &by_step {
        if cs.len() == 1 {
            assert!(cs[0].finished.is_some(), "step never completed: {key}");
            continue;
        }
        assert_eq!(cs.len(), 2, "a step ran more than twice: {key}");
        // In flight: its first call was waiting at the gate when the victim died (every
        // first step was recorded before the kill).
        let in_flight = cs[0].started < killed_at && cs[0].finished.is_none_or(|f| f > killed_at);
        assert!(
            in_flight && cs[1].started > killed_at,
            "a step ran twice though it was not in flight at the kill: {key}"
        );
        let task = (0..tasks)
            .find(|i| key.contains(&format!("topic number {i}")))
            .expect("every conversation names its task's topic");
        *repeated_per_task.entry(task).or_default() += 1;
    }
    assert!(
        repeated_per_task.values().all(|n| *n == 1),
        "a task repeated more than its one step in flight: {repeated_per_task:?}"
    );

    // 3. The workers' transitions reached orlojd's watch over NATS. A worker publishes an event
    // after its write, so the last ones may still be on their way when the tasks read as done.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = ok(
            cluster.server.ctl(&[
                "events",
                "--since",
                "0",
                "--type",
                "task.succeeded",
                "--timeout",
                "3s",
                "--raw",
            ]),
            "events",
        );
        let missing: Vec<&String> = finished
            .keys()
            .filter(|name| {
                !events
                    .lines()
                    .any(|l| l.contains(&format!("\"name\":\"{name}\"")))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no task.succeeded event for {missing:?} (finished by the survivor {survivor}); \
             events: {events}"
        );
    }

    // The survivor drains and exits cleanly on SIGTERM.
    let survivor_worker = cluster.workers.swap_remove(1 - victim_index);
    assert!(survivor_worker.terminate().success());
}

#[test]
fn load_tool_runs_a_thousand_tasks_through_two_workers_with_faults() {
    let Some(cluster) = cluster() else {
        return;
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orloj-loadtest"))
        .args([
            "--server",
            &cluster.server.url,
            "--namespace",
            "load",
            "--tasks",
            "1000",
            "--concurrency",
            "32",
            "--min-ready-workers",
            "2",
            "--poll-interval",
            "500ms",
            "--timeout",
            "10m",
            "--inject-invalid-system-rate",
            "0.05",
            "--inject-timeout-system-rate",
            "0.03",
            "--inject-expired-lease-rate",
            "0.02",
            "--min-takeovers",
            "20",
            "--run-id",
            "thousand",
        ])
        .env_remove("ORLOJ_API_TOKEN")
        .output()
        .expect("orloj-loadtest runs");
    let s: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "summary is not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        out.status.code(),
        Some(0),
        "gates failed: {s:#}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s["created"], 1000);
    assert_eq!(s["create_errors"], 0);
    assert_eq!(s["timed_out"], 0, "nothing lost: {s:#}");
    assert_eq!(s["duplicates"], json!([]), "nothing completed twice: {s:#}");
    assert_eq!(
        s["unexpected"],
        json!([]),
        "every fault ended as predicted: {s:#}"
    );
    let baseline = &s["baseline"];
    assert_eq!(
        baseline["succeeded"], baseline["total"],
        "every valid task succeeded: {s:#}"
    );
    assert_eq!(
        s["by_kind"]["expired_lease"]["succeeded"], s["injected"]["expired_lease"],
        "every expired lease was taken over and finished: {s:#}"
    );
    assert_eq!(
        s["by_kind"]["invalid_system"]["failed"],
        s["injected"]["invalid_system"]
    );
    assert_eq!(
        s["by_kind"]["timeout_system"]["deadletter"],
        s["injected"]["timeout_system"]
    );
    // Both workers did work.
    let tasks = all_tasks(&cluster.server);
    for w in &cluster.workers {
        let ran = tasks
            .iter()
            .filter(|t| {
                t["status"]["history"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|h| h["worker"] == w.id.as_str())
            })
            .count();
        assert!(ran > 0, "{} ran no task", w.id);
    }
}

#[test]
fn workers_ride_out_a_nats_outage_without_repeating_a_step() {
    let Some(dsn) = fresh_database() else {
        return;
    };
    let Some(mut nats) = OwnNats::start() else {
        return;
    };
    let cluster = cluster_on(&dsn, &nats.url(), 1);
    let model = FakeModel::start(Duration::from_millis(300));
    let tasks = 4;
    apply_yaml(&cluster.server, &chain_manifests(&model, tasks));

    // Take NATS away once steps are completing, bring it back on the same port and storage.
    wait_for_finished_steps(&model, 2);
    nats.kill();
    // Longer than a publish waits for its acknowledgement (5 s), so publishes fail meanwhile.
    std::thread::sleep(Duration::from_secs(8));
    nats.restart();

    // Not a speed check: the workers must resume by themselves once NATS is back, not by
    // waiting out JetStream's 2-minute redelivery of the deliveries they could not settle.
    chains_succeed_with_each_step_once(&cluster, &model, tasks, Duration::from_secs(60));
}

#[test]
fn workers_ride_out_a_postgres_outage_without_repeating_a_step() {
    let tasks = 4;
    let Some((postgres, cluster, model)) =
        behind_a_postgres_proxy(1, tasks, Duration::from_secs(1))
    else {
        return;
    };
    // Cut while the second steps' model calls wait at the gate (every first step is recorded
    // by then), and let them finish during the outage: their results must be kept.
    wait_for_calls(&model, 2 * tasks);
    postgres.cut();
    let cut_at = Instant::now();
    model.open_gate();
    // Longer than the workers' 5 s lease: it runs out while nobody can renew or write it.
    std::thread::sleep(Duration::from_secs(8));
    let restored_at = Instant::now();
    postgres.restore();

    chains_succeed_with_each_step_once(&cluster, &model, tasks, Duration::from_secs(90));
    assert!(
        model
            .calls()
            .iter()
            .any(|c| c.finished.is_some_and(|f| f > cut_at && f < restored_at)),
        "no step finished during the outage"
    );
}

#[test]
fn a_postgres_outage_longer_than_the_lease_repeats_only_steps_in_flight() {
    // Two workers: once the leases have run out during the outage, either may take a task
    // over when Postgres is back, and run again a step whose result its holder could not
    // record. A step recorded before the cut must not run again.
    let tasks = 4;
    let Some((postgres, cluster, model)) =
        behind_a_postgres_proxy(2, tasks, Duration::from_secs(1))
    else {
        return;
    };
    // The second steps' model calls wait at the gate until the cut, so every first step is
    // recorded before it and the second ones are in flight at it (1 s model calls).
    wait_for_calls(&model, 2 * tasks);
    postgres.cut();
    model.open_gate();
    std::thread::sleep(Duration::from_secs(8));
    postgres.restore();

    chains_succeed(&cluster, tasks, Duration::from_secs(90));
    let mut by_step: BTreeMap<&str, usize> = BTreeMap::new();
    let calls = model.calls();
    for c in &calls {
        *by_step.entry(c.key.as_str()).or_default() += 1;
    }
    assert_eq!(by_step.len(), tasks * 3);
    for (step, runs) in &by_step {
        let recorded_before_cut = !after_the_first_step(step);
        let allowed = if recorded_before_cut { 1 } else { 2 };
        assert!(
            *runs <= allowed,
            "a step ran {runs} times (recorded before the cut: {recorded_before_cut}):\n{step}"
        );
    }
}

/// `workers` workers and orlojd reaching Postgres through a [`PgProxy`] (so cutting it takes
/// Postgres away from all of them while the server, shared with other tests, runs on), running
/// `tasks` chains of [`chain_manifests`] with model calls of `model_delay`; the calls after the
/// first step wait for [`FakeModel::open_gate`]. None (skip) without the test services.
fn behind_a_postgres_proxy(
    workers: usize,
    tasks: usize,
    model_delay: Duration,
) -> Option<(PgProxy, Cluster, FakeModel)> {
    let dsn = fresh_database()?;
    let nats = nats_url()?;
    let (postgres, proxied) = PgProxy::start(&dsn);
    let cluster = cluster_on(&proxied, &nats, workers);
    let model = FakeModel::start_gated(model_delay, after_the_first_step);
    apply_yaml(&cluster.server, &chain_manifests(&model, tasks));
    Some((postgres, cluster, model))
}

/// Waits until `n` model calls have started.
fn wait_for_calls(model: &FakeModel, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while model.calls().len() < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} model calls started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `n` model calls have finished.
fn wait_for_finished_steps(model: &FakeModel, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while model
        .calls()
        .iter()
        .filter(|c| c.finished.is_some())
        .count()
        < n
    {
        assert!(Instant::now() < deadline, "fewer than {n} steps completed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every one of the `tasks` chains of [`chain_manifests`] succeeds within `limit`, in order,
/// and (nobody died) every step's model call happened exactly once.
fn chains_succeed_with_each_step_once(
    cluster: &Cluster,
    model: &FakeModel,
    tasks: usize,
    limit: Duration,
) {
    chains_succeed(cluster, tasks, limit);
    let mut by_step: BTreeMap<String, usize> = BTreeMap::new();
    for c in model.calls() {
        *by_step.entry(c.key).or_default() += 1;
    }
    assert_eq!(by_step.len(), tasks * 3);
    let logs: Vec<String> = cluster.workers.iter().map(|w| w.log()).collect();
    assert!(
        by_step.values().all(|n| *n == 1),
        "a step ran twice across the outage: {:?}\n{}",
        by_step.values().collect::<Vec<_>>(),
        logs.join("\n")
    );
}

/// Every one of the `tasks` chains of [`chain_manifests`] succeeds within `limit`, in order.
fn chains_succeed(cluster: &Cluster, tasks: usize, limit: Duration) {
    let by = Instant::now() + limit;
    for i in 0..tasks {
        let left = by.saturating_duration_since(Instant::now());
        let t = wait_terminal_within(cluster, "default", &format!("chain-{i}"), left);
        assert_eq!(
            t["status"]["phase"], "Succeeded",
            "chain-{i}: {:#}",
            t["status"]
        );
        assert_eq!(
            t["status"]["output"]["execution_order"], "plan -> research -> write",
            "chain-{i}"
        );
    }
}
