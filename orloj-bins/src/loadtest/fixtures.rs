//! The resources the load test applies before a run, and the tasks it creates.

use super::report::TaskKind;
use serde_json::{Value, json};

/// The mock model endpoint every fixture agent uses.
pub const ENDPOINT: &str = "openai-default";
/// The three-agent pipeline baseline tasks run on.
pub const PIPELINE_SYSTEM: &str = "loadtest-report-system";
/// The system whose only agent always times out.
pub const TIMEOUT_SYSTEM: &str = "loadtest-timeout-system";
/// A system that never exists.
pub const MISSING_SYSTEM: &str = "missing-system-loadtest";
/// The worker an injected expired lease names.
pub const CRASHED_WORKER: &str = "worker-crashed-simulated";
/// Label carrying the run id on every task of a run.
pub const RUN_LABEL: &str = "orloj.dev/loadtest-run";

fn object(kind: &str, name: &str, namespace: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "orloj.dev/v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"orloj.dev/usecase": "loadtest"}
        },
        "spec": spec,
    })
}

fn agent(name: &str, namespace: &str, prompt: &str, max_steps: i64, timeout: &str) -> Value {
    object(
        "Agent",
        name,
        namespace,
        json!({
            "model_ref": ENDPOINT,
            "prompt": prompt,
            "limits": {"max_steps": max_steps, "timeout": timeout},
        }),
    )
}

/// `(plural, object)` pairs, in apply order: the mock endpoint, a planner → research → writer
/// pipeline, and an agent whose 1ms timeout always expires (the engine waits between steps).
pub fn setup_objects(namespace: &str, model: &str) -> Vec<(&'static str, Value)> {
    let pipeline = ["planner", "research", "writer"].map(|a| format!("loadtest-{a}-agent"));
    vec![
        (
            "model-endpoints",
            object(
                "ModelEndpoint",
                ENDPOINT,
                namespace,
                json!({"provider": "mock", "default_model": model}),
            ),
        ),
        (
            "agents",
            agent(
                &pipeline[0],
                namespace,
                "You are a planning agent. Break the topic into steps.",
                4,
                "20s",
            ),
        ),
        (
            "agents",
            agent(
                &pipeline[1],
                namespace,
                "You are a research agent. Collect facts for the plan.",
                4,
                "20s",
            ),
        ),
        (
            "agents",
            agent(
                &pipeline[2],
                namespace,
                "You are a writing agent. Write the final report.",
                4,
                "20s",
            ),
        ),
        (
            "agent-systems",
            object(
                "AgentSystem",
                PIPELINE_SYSTEM,
                namespace,
                json!({
                    "agents": pipeline,
                    "graph": {
                        pipeline[0].as_str(): {"next": pipeline[1]},
                        pipeline[1].as_str(): {"next": pipeline[2]},
                    }
                }),
            ),
        ),
        (
            "agents",
            agent(
                "loadtest-timeout-agent",
                namespace,
                "Intentionally time out to exercise retry and dead-letter behavior under load.",
                2,
                "1ms",
            ),
        ),
        (
            "agent-systems",
            object(
                "AgentSystem",
                TIMEOUT_SYSTEM,
                namespace,
                json!({"agents": ["loadtest-timeout-agent"]}),
            ),
        ),
    ]
}

/// How every created task is shaped.
#[derive(Debug, Clone)]
pub struct TaskShape {
    /// Namespace.
    pub namespace: String,
    /// Run id (label value and name part).
    pub run_id: String,
    /// System of baseline tasks.
    pub system: String,
    /// `spec.priority`.
    pub priority: String,
    /// `spec.retry`.
    pub retry: Value,
    /// `spec.message_retry`.
    pub message_retry: Value,
    /// `spec.requirements` (omitted when empty).
    pub requirements: Value,
}

/// Name of task `i` of a run.
pub fn task_name(run_id: &str, i: usize) -> String {
    format!("loadtest-{run_id}-{i:04}")
}

/// Task `i` of the run for the given fault class. Expired-lease tasks start as templates so
/// no worker claims them before the lease is injected.
pub fn task(shape: &TaskShape, i: usize, kind: TaskKind) -> Value {
    let system = match kind {
        TaskKind::Baseline | TaskKind::ExpiredLease => shape.system.as_str(),
        TaskKind::InvalidSystem => MISSING_SYSTEM,
        TaskKind::TimeoutSystem => TIMEOUT_SYSTEM,
    };
    let mut spec = json!({
        "system": system,
        "mode": if kind == TaskKind::ExpiredLease { "template" } else { "run" },
        "input": {"topic": format!("loadtest-topic-{i:04}")},
        "priority": shape.priority,
        "retry": shape.retry,
        "message_retry": shape.message_retry,
    });
    if shape
        .requirements
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        spec["requirements"] = shape.requirements.clone();
    }
    let kind_label = serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    json!({
        "apiVersion": "orloj.dev/v1",
        "kind": "Task",
        "metadata": {
            "name": task_name(&shape.run_id, i),
            "namespace": shape.namespace,
            "labels": {RUN_LABEL: shape.run_id, "orloj.dev/loadtest-fault": kind_label.replace('_', "-")}
        },
        "spec": spec,
    })
}

/// The status that makes a task look claimed by a worker that died: Running, lease expired
/// 15s ago, heartbeat 30s ago, one attempt spent, history `failure_injection`.
pub fn expired_lease_status(now: chrono::DateTime<chrono::Utc>) -> Value {
    let at = |secs: i64| {
        (now - chrono::Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    json!({
        "phase": "Running",
        "attempts": 1,
        "assignedWorker": CRASHED_WORKER,
        "claimedBy": CRASHED_WORKER,
        "startedAt": at(30),
        "leaseUntil": at(15),
        "lastHeartbeat": at(30),
        "history": [{
            "timestamp": at(0),
            "type": "failure_injection",
            "worker": CRASHED_WORKER,
            "message": "loadtest injected an expired lease held by a crashed worker"
        }]
    })
}

/// Picks the fault class of each of `n` tasks: `round(n × rate)` of each injected class,
/// spread evenly through the run, the rest baseline.
pub fn plan_kinds(n: usize, invalid: f64, timeout: f64, expired: f64) -> Vec<TaskKind> {
    let count = |rate: f64| ((n as f64) * rate).round() as usize;
    let mut kinds = Vec::with_capacity(n);
    for (kind, c) in [
        (TaskKind::InvalidSystem, count(invalid)),
        (TaskKind::TimeoutSystem, count(timeout)),
        (TaskKind::ExpiredLease, count(expired)),
    ] {
        kinds.extend(std::iter::repeat_n(kind, c));
    }
    kinds.truncate(n);
    kinds.resize(n, TaskKind::Baseline);
    // Interleave: walk the list with a stride coprime to n.
    let stride = (2..n.max(2))
        .find(|s| gcd(*s, n) == 1 && *s * *s >= n)
        .unwrap_or(1);
    let mut out = vec![TaskKind::Baseline; n];
    for (i, k) in kinds.into_iter().enumerate() {
        out[(i * stride) % n.max(1)] = k;
    }
    out
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_counts_each_class_and_spreads_them() {
        let kinds = plan_kinds(50, 0.2, 0.1, 0.04);
        let count = |k| kinds.iter().filter(|x| **x == k).count();
        assert_eq!(count(TaskKind::InvalidSystem), 10);
        assert_eq!(count(TaskKind::TimeoutSystem), 5);
        assert_eq!(count(TaskKind::ExpiredLease), 2);
        assert_eq!(count(TaskKind::Baseline), 33);
        // Not all faults bunched at the start.
        assert!(kinds[..10].contains(&TaskKind::Baseline));
        assert!(plan_kinds(0, 0.5, 0.5, 0.0).is_empty());
        assert_eq!(plan_kinds(1, 1.0, 0.0, 0.0), vec![TaskKind::InvalidSystem]);
    }

    #[test]
    fn expired_lease_tasks_start_as_templates() {
        let shape = TaskShape {
            namespace: "ns".into(),
            run_id: "r1".into(),
            system: "s".into(),
            priority: "high".into(),
            retry: json!({}),
            message_retry: json!({}),
            requirements: json!({}),
        };
        let t = task(&shape, 3, TaskKind::ExpiredLease);
        assert_eq!(t["spec"]["mode"], "template");
        assert_eq!(t["metadata"]["name"], "loadtest-r1-0003");
        assert!(t["spec"].get("requirements").is_none());
        assert_eq!(
            task(&shape, 3, TaskKind::InvalidSystem)["spec"]["system"],
            MISSING_SYSTEM
        );
        let status = expired_lease_status(chrono::Utc::now());
        assert_eq!(status["claimedBy"], CRASHED_WORKER);
    }
}
