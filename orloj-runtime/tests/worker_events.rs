//! The worker publishes a `task.*` control-plane event for every transition it writes.

#[path = "engine_support.rs"]
mod support;

use futures::StreamExt;
use orloj_core::{Store, SystemClock};
use orloj_runtime::engine::agent_turn::AgentRunner;
use orloj_runtime::events::{Event, EventBus, MemoryEventBus};
use orloj_runtime::worker::{Worker, WorkerConfig};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn worker(store: &Arc<dyn Store>, bus: Arc<MemoryEventBus>) -> Worker {
    let router = Arc::new(StoreRouter {
        store: store.clone(),
        model: Arc::new(MockModel::default()),
    });
    let tools = Arc::new(FakeTools::default());
    let clock = Arc::new(SystemClock);
    let runner = AgentRunner::new(tools.clone(), clock.clone()).with_step_interval(Duration::ZERO);
    Worker::new(
        WorkerConfig {
            worker_id: "w-events".into(),
            ..WorkerConfig::default()
        },
        store.clone(),
        clock,
        router,
        tools,
    )
    .with_runner(runner)
    .with_events(bus)
}

/// Every event retained by `bus` (ids start at 1).
async fn published(bus: &MemoryEventBus) -> Vec<Event> {
    let mut stream = bus.subscribe(Some(0));
    let mut out = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), stream.next()).await {
        out.push(e);
    }
    out
}

const PIPELINE: &str = r#"
---
apiVersion: orloj.dev/v1
kind: AgentSystem
metadata: {name: pipe}
spec:
  agents: [planner, writer]
  graph:
    planner: {edges: [{to: writer}]}
"#;

fn common_checks(e: &Event, event_type: &str, task: &str) {
    assert_eq!(e.event_type, event_type, "{e:?}");
    assert_eq!(e.source, "task-controller");
    assert_eq!(e.kind, "Task");
    assert_eq!(e.name, task);
    assert_eq!(e.namespace, "default");
    assert!(!e.message.is_empty(), "{e:?}");
    let keys: Vec<&String> = e
        .data
        .as_object()
        .expect("data is an object")
        .keys()
        .collect();
    assert_eq!(
        keys.len(),
        5,
        "only phase/attempts/assignedWorker/claimedBy/lastError: {keys:?}"
    );
}

#[tokio::test]
async fn pipeline_run_publishes_claimed_then_succeeded() {
    let store = store();
    let yaml = format!(
        "{ENDPOINT}{}{}{PIPELINE}{}",
        agent("planner", "  prompt: plan"),
        agent("writer", "  prompt: write"),
        task_manifest("t-ok", "pipe", "  input: {topic: secret-input-value}")
    );
    apply(&store, &yaml).await;
    let bus = Arc::new(MemoryEventBus::default());
    let ran = worker(&store, bus.clone())
        .run_until_idle()
        .await
        .expect("worker runs");
    assert_eq!(ran, 1);
    assert_eq!(status(&task(&store, "t-ok").await).phase, "Succeeded");

    let events = published(&bus).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    let (claimed, succeeded) = (&events[0], &events[1]);
    assert!(claimed.id < succeeded.id);

    common_checks(claimed, "task.claimed", "t-ok");
    assert_eq!(claimed.action, "running");
    assert!(claimed.message.contains("task claimed by worker=w-events"));
    assert_eq!(
        claimed.data,
        json!({"phase": "Running", "attempts": 1, "assignedWorker": "w-events",
               "claimedBy": "w-events", "lastError": ""})
    );

    common_checks(succeeded, "task.succeeded", "t-ok");
    assert_eq!(succeeded.action, "succeeded");
    assert_eq!(
        succeeded.data,
        json!({"phase": "Succeeded", "attempts": 1, "assignedWorker": "",
               "claimedBy": "", "lastError": ""})
    );
    for e in &events {
        let wire = serde_json::to_string(e).expect("serializes");
        assert!(
            !wire.contains("secret-input-value"),
            "task input leaked: {wire}"
        );
    }
}

#[tokio::test]
async fn failing_task_publishes_claimed_then_failed() {
    let store = store();
    apply(
        &store,
        &format!("{ENDPOINT}{}", task_manifest("t-bad", "nope", "")),
    )
    .await;
    let bus = Arc::new(MemoryEventBus::default());
    worker(&store, bus.clone())
        .run_until_idle()
        .await
        .expect("worker runs");
    let stored = status(&task(&store, "t-bad").await);
    assert_eq!(stored.phase, "Failed");

    let events = published(&bus).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, vec!["task.claimed", "task.failed"]);
    let failed = &events[1];
    common_checks(failed, "task.failed", "t-bad");
    assert_eq!(failed.action, "failed");
    assert_eq!(failed.data["phase"], "Failed");
    assert_eq!(failed.data["attempts"], 1);
    assert_eq!(failed.data["claimedBy"], "");
    assert_eq!(failed.data["lastError"], stored.last_error.as_str());
    assert!(
        failed.data["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("agentsystem \"nope\" not found")),
        "{failed:?}"
    );
    assert!(failed.message.contains("agentsystem \"nope\" not found"));
}

#[tokio::test]
async fn worker_without_bus_still_runs() {
    // `Worker::new` alone (no bus) must keep working: transitions are only stored.
    let store = store();
    apply(
        &store,
        &format!(
            "{ENDPOINT}{}---\napiVersion: orloj.dev/v1\nkind: AgentSystem\nmetadata: {{name: s}}\nspec: {{agents: [solo]}}\n{}",
            agent("solo", "  prompt: plan"),
            task_manifest("t-plain", "s", "")
        ),
    )
    .await;
    let router = Arc::new(StoreRouter {
        store: store.clone(),
        model: Arc::new(MockModel::default()),
    });
    let tools = Arc::new(FakeTools::default());
    let clock = Arc::new(SystemClock);
    let runner = AgentRunner::new(tools.clone(), clock.clone()).with_step_interval(Duration::ZERO);
    Worker::new(WorkerConfig::default(), store.clone(), clock, router, tools)
        .with_runner(runner)
        .run_until_idle()
        .await
        .expect("worker runs");
    assert_eq!(status(&task(&store, "t-plain").await).phase, "Succeeded");
}
