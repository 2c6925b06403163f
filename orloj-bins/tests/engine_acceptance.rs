//! The engine, end to end through the real binaries: orlojd with an embedded worker runs the
//! project's quickstart, the reference's blueprints, and the reference's test scenarios to the
//! terminal states the spec lists (runtime §13.2), in sequential mode; 04-governance-deny ends
//! Failed (the sequential mode's terminal phase for a denial).

mod common;

use common::{Orlojd, apply_yaml, get_task, mock_endpoint_yaml, ok, upstream_dir};
use serde_json::Value;
use std::path::Path;

fn start() -> Orlojd {
    Orlojd::start(&[
        "--embedded-worker",
        "--embedded-worker-max-concurrent-tasks",
        "4",
        "--reconcile-interval",
        "200ms",
    ])
}

/// Creates the mock endpoint `openai-default` the reference's manifests refer to.
fn mock_endpoint(server: &Orlojd, namespace: &str) {
    apply_yaml(server, &mock_endpoint_yaml(namespace));
}

fn wait_for(server: &Orlojd, namespace: &str, name: &str, phase: &str) -> Value {
    let target = format!("task/{name}");
    let cond = format!("condition={phase}");
    let out = server.ctl(&[
        "wait",
        &target,
        "--for",
        &cond,
        "--timeout",
        "90s",
        "-n",
        namespace,
    ]);
    let t = get_task(server, namespace, name);
    assert!(
        out.status.success(),
        "task {namespace}/{name} did not reach {phase}: {}\nstatus: {:#}\norlojd log tail:\n{}",
        String::from_utf8_lossy(&out.stderr),
        t["status"],
        server
            .log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    t
}

fn apply_dir(server: &Orlojd, dir: &Path) {
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

#[test]
fn quickstart_pipeline_succeeds() {
    let server = start();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/blueprints/pipeline");
    let out = server.ctl(&[
        "apply",
        "-f",
        &dir.display().to_string(),
        "--run",
        "--timeout",
        "90s",
    ]);
    assert!(
        out.status.success(),
        "quickstart failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tasks = ok(server.ctl(&["get", "tasks", "-o", "json"]), "get tasks");
    let v: Value = serde_json::from_str(&tasks).expect("json");
    let items = v["items"].as_array().expect("items");
    assert!(!items.is_empty());
    for t in items {
        assert_eq!(t["status"]["phase"], "Succeeded", "{:#}", t["status"]);
    }
    // The worker's transitions are on the control-plane event stream.
    let events = ok(
        server.ctl(&[
            "events",
            "--since",
            "0",
            "--type",
            "task.succeeded",
            "--once",
            "--timeout",
            "10s",
            "--raw",
        ]),
        "events",
    );
    assert!(events.contains("task.succeeded"), "{events}");
    assert!(events.contains("task-controller"), "{events}");
}

#[test]
fn reference_blueprints_succeed_with_a_mock_endpoint() {
    let Some(upstream) = upstream_dir() else {
        return;
    };
    let server = start();
    mock_endpoint(&server, "default");
    for (bp, task_name) in [
        ("pipeline", "bp-pipeline-task"),
        ("hierarchical", "bp-hierarchical-task"),
        ("swarm-loop", "bp-swarm-loop-task"),
    ] {
        apply_dir(&server, &upstream.join("examples/blueprints").join(bp));
        let t = wait_for(&server, "default", task_name, "Succeeded");
        let trace = t["status"]["trace"].as_array().map(Vec::len).unwrap_or(0);
        assert!(trace > 0, "{bp}: no trace recorded");
    }
}

#[test]
fn reference_scenarios_reach_their_terminal_states() {
    let Some(upstream) = upstream_dir() else {
        return;
    };
    let server = start();
    let scenarios = upstream.join("testing/scenarios");
    for ns in ["rt-pipeline", "rt-hier", "rt-loop", "rt-gov", "rt-retry"] {
        mock_endpoint(&server, ns);
    }
    apply_dir(&server, &scenarios.join("01-pipeline"));
    let t = wait_for(&server, "rt-pipeline", "rt-pipeline-task", "Succeeded");
    let agents: Vec<String> = t["status"]["trace"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "agent_start")
        .map(|e| e["agent"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(agents.len(), 3, "three agents ran: {agents:?}");

    apply_dir(&server, &scenarios.join("02-hierarchical"));
    wait_for(&server, "rt-hier", "rt-hier-task", "Succeeded");

    apply_dir(&server, &scenarios.join("03-loop-max-turns"));
    wait_for(&server, "rt-loop", "rt-loop-task", "Succeeded");

    apply_dir(&server, &scenarios.join("04-governance-deny"));
    let t = wait_for(&server, "rt-gov", "rt-gov-deny-task", "Failed");
    assert_eq!(t["status"]["phase"], "Failed", "{:#}", t["status"]);
    let trace = t["status"]["trace"].as_array().cloned().unwrap_or_default();
    assert!(
        trace.iter().any(|e| e["type"] == "tool_permission_denied"),
        "denial is traced: {trace:#?}"
    );
    assert!(
        !trace.iter().any(|e| e["type"] == "tool_call"),
        "the denied tool never ran: {trace:#?}"
    );

    apply_dir(&server, &scenarios.join("05-retry-deadletter"));
    let t = wait_for(
        &server,
        "rt-retry",
        "rt-retry-deadletter-task",
        "DeadLetter",
    );
    let history = t["status"]["history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        history.iter().any(|h| h["type"] == "retry_scheduled"),
        "retries were scheduled before dead-lettering: {history:#?}"
    );
    assert_eq!(t["status"]["attempts"], 4, "{:#}", t["status"]);
}
