//! Upstream scenario `testing/scenarios/04-governance-deny` (spec runtime §13.2) in sequential
//! mode: the search tool call is denied (`tool_permission_denied` trace), no tool call succeeds
//! and the task ends Failed. Reads the manifests from `../shared/upstream`; skipped when absent.

#[path = "engine_support.rs"]
mod support;

use orloj_core::{Kind, SystemClock};
use orloj_runtime::engine::agent_turn::AgentRunner;
use orloj_runtime::worker::{Worker, WorkerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/upstream/testing/scenarios/04-governance-deny")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

#[tokio::test]
async fn governance_deny_scenario_fails_with_a_traced_denial() {
    let dir = scenario_dir();
    if !dir.is_dir() {
        eprintln!("skipping: {} not found", dir.display());
        return;
    }
    let store = store();
    apply(
        &store,
        "apiVersion: orloj.dev/v1\nkind: ModelEndpoint\nmetadata: {name: openai-default, namespace: rt-gov}\nspec: {provider: mock, default_model: gpt-4o}\n",
    )
    .await;
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    assert!(!files.is_empty(), "scenario has manifests");
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable manifest");
        apply(&store, &text).await;
    }
    let model = Arc::new(MockModel::default());
    let tools = Arc::new(FakeTools::default());
    let clock = Arc::new(SystemClock);
    let router = Arc::new(StoreRouter {
        store: store.clone(),
        model: model.clone(),
    });
    let runner = AgentRunner::new(tools.clone(), clock.clone()).with_step_interval(Duration::ZERO);
    let worker = Worker::new(
        WorkerConfig::default(),
        store.clone(),
        clock,
        router,
        tools.clone(),
    )
    .with_runner(runner);
    assert_eq!(worker.run_until_idle().await.expect("worker runs"), 1);

    let t = store
        .get(Kind::Task, "rt-gov", "rt-gov-deny-task")
        .await
        .expect("task");
    let s = status(&t);
    assert_eq!(s.phase, "Failed", "{}", s.last_error);
    assert!(
        s.last_error.contains("tool permission denied"),
        "{}",
        s.last_error
    );
    let denied = s
        .trace
        .iter()
        .find(|e| e.event_type == "tool_permission_denied")
        .expect("tool_permission_denied trace");
    assert_eq!(denied.tool, "rt-gov-search-tool");
    assert_eq!(denied.agent, "rt-gov-analyst-agent");
    assert!(
        denied.message.contains("required=tool:search:invoke"),
        "{}",
        denied.message
    );
    assert!(
        !s.trace.iter().any(|e| e.event_type == "tool_call"),
        "no successful tool call"
    );
    assert!(
        tools.calls.lock().expect("lock").is_empty(),
        "the tool never executed"
    );
}
