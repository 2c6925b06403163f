//! End to end (spec runtime §10): an agent granted `memory.write`/`memory.read` writes and
//! reads its Memory through the worker, and `GET /v1/memories/{name}/entries` serves the same
//! backend with `q`, `prefix` and `limit`.

#[path = "engine_support.rs"]
mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use orloj_core::SystemClock;
use orloj_core::model::{ModelResponse, ToolCall};
use orloj_runtime::api::{ApiState, router};
use orloj_runtime::memory::{MemoryRegistry, MemoryToolExecutor};
use orloj_runtime::tools::governed::GovernedToolRuntime;
use orloj_runtime::worker::{Worker, WorkerConfig};
use serde_json::{Value, json};
use std::sync::Arc;
use support::*;
use tower::ServiceExt;

const MEMORY: &str = r#"
---
apiVersion: orloj.dev/v1
kind: Memory
metadata: {name: notes}
spec: {type: vector, provider: in-memory}
---
apiVersion: orloj.dev/v1
kind: AgentSystem
metadata: {name: sys}
spec:
  agents: [scribe]
"#;

fn call(id: &str, name: &str, input: Value) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        input: input.to_string(),
    }
}

fn answer(content: &str, calls: Vec<ToolCall>) -> ModelResponse {
    ModelResponse {
        content: content.into(),
        tool_calls: calls,
        usage: None,
    }
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, Value) {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&bytes).expect("json body"))
}

fn keys(body: &Value) -> Vec<String> {
    body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["key"].as_str().expect("key").to_string())
        .collect()
}

#[tokio::test]
async fn agent_writes_and_reads_memory_and_the_api_serves_the_entries() {
    let store = store();
    let model = Arc::new(MockModel::default());
    *model.script.lock().expect("lock") = vec![
        answer(
            "saving",
            vec![
                call(
                    "c1",
                    "memory.write",
                    json!({"key": "fact/sky", "value": "The sky is blue"}),
                ),
                call(
                    "c2",
                    "memory.write",
                    json!({"key": "fact/grass", "value": "Grass is green"}),
                ),
            ],
        ),
        answer(
            "recalling",
            vec![call("c3", "memory.read", json!({"key": "fact/sky"}))],
        ),
        answer("The sky is blue", vec![]),
    ];
    let registry = Arc::new(MemoryRegistry::with_store(store.clone()));
    // Something already in the Memory: the tools and the API share the registry's backend.
    registry
        .get_or_create("default", "notes", "in-memory")
        .expect("backend")
        .put("draft/1", "the blue print")
        .await
        .expect("put");
    let fake = Arc::new(FakeTools::default());
    let tools = Arc::new(GovernedToolRuntime::new(fake.clone()).with_type_executor(
        "memory",
        Arc::new(MemoryToolExecutor::new(registry.clone())),
    ));
    let router_models = Arc::new(StoreRouter {
        store: store.clone(),
        model: model.clone(),
    });
    let agent_yaml = agent(
        "scribe",
        "  prompt: remember things\n  memory: {ref: notes, allow: [read, write]}",
    );
    apply(
        &store,
        &format!(
            "{ENDPOINT}{MEMORY}{agent_yaml}{}",
            task_manifest("t1", "sys", "")
        ),
    )
    .await;
    let clock = Arc::new(SystemClock);
    let worker = Worker::new(
        WorkerConfig::default(),
        store.clone(),
        clock.clone(),
        router_models,
        tools,
    );
    assert_eq!(worker.run_until_idle().await.expect("worker runs"), 1);

    let t = task(&store, "t1").await;
    assert_eq!(t.phase(), "Succeeded", "status: {}", t.status);
    assert!(
        fake.names().is_empty(),
        "memory calls must not reach other executors"
    );

    // The model was offered exactly the granted memory tools with their fixed schemas.
    let requests = model.requests.lock().expect("lock").clone();
    let offered: Vec<&str> = requests[0].tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(offered, ["memory.read", "memory.write"]);
    let write = &requests[0].tools[1];
    assert_eq!(write.parameters["required"], json!(["key", "value"]));
    // The read result came back to the model.
    let last = requests.last().expect("requests");
    assert!(
        last.messages.iter().any(|m| m
            .content
            .contains(r#"{"found":true,"key":"fact/sky","value":"The sky is blue"}"#)),
        "read result missing from history: {:?}",
        last.messages
    );

    let backend = registry.get("default", "notes").expect("backend");
    assert_eq!(
        backend.get("fact/grass").await.expect("get").as_deref(),
        Some("Grass is green")
    );

    let app = router(ApiState::new(store.clone(), clock.clone()).with_memory(registry.clone()));
    let (status, all) = get(&app, "/v1/memories/notes/entries").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&all), ["draft/1", "fact/grass", "fact/sky"]);
    assert_eq!(all["count"], 3);
    assert_eq!(all["entries"][2]["value"], "The sky is blue");

    let (_, prefixed) = get(&app, "/v1/memories/notes/entries?prefix=fact/").await;
    assert_eq!(keys(&prefixed), ["fact/grass", "fact/sky"]);

    let (_, searched) = get(&app, "/v1/memories/notes/entries?q=BLUE").await;
    assert_eq!(keys(&searched), ["draft/1", "fact/sky"]);
    assert_eq!(searched["entries"][0]["score"], 1.0);
    let (_, both) = get(&app, "/v1/memories/notes/entries?q=blue&prefix=fact/").await;
    assert_eq!(keys(&both), ["fact/sky"]);

    let (_, limited) = get(&app, "/v1/memories/notes/entries?limit=2").await;
    assert_eq!(keys(&limited), ["draft/1", "fact/grass"]);
    assert_eq!(limited["count"], 2);

    for bad in ["0", "abc", "-1", "5000"] {
        let (status, body) = get(&app, &format!("/v1/memories/notes/entries?limit={bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "limit={bad}");
        assert!(body.to_string().contains("limit"), "{body}");
    }

    let (status, _) = get(&app, "/v1/memories/ghost/entries").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Without a registry the endpoint stays empty.
    let bare = router(ApiState::new(store.clone(), clock));
    let (status, empty) = get(&bare, "/v1/memories/notes/entries").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty, json!({"entries": [], "count": 0}));
}

#[tokio::test]
async fn agent_without_memory_grant_is_offered_no_memory_tools() {
    let store = store();
    let model = Arc::new(MockModel::default());
    let fake = Arc::new(FakeTools::default());
    let tools = Arc::new(GovernedToolRuntime::new(fake.clone()).with_type_executor(
        "memory",
        Arc::new(MemoryToolExecutor::new(Arc::new(MemoryRegistry::new()))),
    ));
    let agent_yaml = agent(
        "scribe",
        "  prompt: remember things\n  tools: [echo]\n  memory: {ref: notes}",
    );
    apply(
        &store,
        &format!(
            "{ENDPOINT}{MEMORY}{agent_yaml}{}{}",
            tool("echo"),
            task_manifest("t1", "sys", "")
        ),
    )
    .await;
    let worker = Worker::new(
        WorkerConfig::default(),
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(StoreRouter {
            store: store.clone(),
            model: model.clone(),
        }),
        tools,
    );
    assert_eq!(worker.run_until_idle().await.expect("worker runs"), 1);
    let requests = model.requests.lock().expect("lock").clone();
    assert!(!requests.is_empty());
    for r in &requests {
        assert!(
            r.tools.iter().all(|t| !t.name.starts_with("memory.")),
            "{:?}",
            r.tools
        );
    }
}

#[tokio::test]
async fn memory_tools_bypass_role_permissions() {
    // An agent with roles is governed for its ordinary tools, but its memory grant alone decides
    // the memory tools (spec §10): a ToolPermission it cannot satisfy does not block them.
    let store = store();
    let model = Arc::new(MockModel::default());
    *model.script.lock().expect("lock") = vec![
        answer(
            "saving",
            vec![call(
                "c1",
                "memory.write",
                json!({"key": "k", "value": "v"}),
            )],
        ),
        answer("done", vec![]),
    ];
    let registry = Arc::new(MemoryRegistry::with_store(store.clone()));
    let tools = Arc::new(
        GovernedToolRuntime::new(Arc::new(FakeTools::default())).with_type_executor(
            "memory",
            Arc::new(MemoryToolExecutor::new(registry.clone())),
        ),
    );
    let governance = r#"
---
apiVersion: orloj.dev/v1
kind: AgentRole
metadata: {name: clerk}
spec:
  permissions: [capability:docs.read]
---
apiVersion: orloj.dev/v1
kind: ToolPermission
metadata: {name: memory-write-guard}
spec:
  tool_ref: memory.write
  required_permissions: [tool:memory.write:invoke]
"#;
    let agent_yaml = agent(
        "scribe",
        "  prompt: remember\n  roles: [clerk]\n  memory: {ref: notes, allow: [write]}",
    );
    apply(
        &store,
        &format!(
            "{ENDPOINT}{MEMORY}{governance}{agent_yaml}{}",
            task_manifest("t2", "sys", "")
        ),
    )
    .await;
    let router_models = Arc::new(StoreRouter {
        store: store.clone(),
        model: model.clone(),
    });
    let worker = Worker::new(
        WorkerConfig::default(),
        store.clone(),
        Arc::new(SystemClock),
        router_models,
        tools,
    );
    assert_eq!(worker.run_until_idle().await.expect("worker runs"), 1);
    let t = task(&store, "t2").await;
    assert_eq!(t.phase(), "Succeeded", "status: {}", t.status);
    let backend = registry.get("default", "notes").expect("backend");
    assert_eq!(backend.get("k").await.expect("get").as_deref(), Some("v"));
}
