//! Fakes shared by the engine and worker tests (included with `#[path]`): a deterministic model
//! following the mock-provider rules of spec runtime §7.4, a router over ModelEndpoints in the
//! store, and a scripted tool executor.
#![allow(dead_code, missing_docs)]

use async_trait::async_trait;
use orloj_core::model::{
    ModelClient, ModelRequest, ModelResponse, ModelRouter, ResolvedModel, Role, ToolCall,
};
use orloj_core::tool::{ToolError, ToolExecutor, ToolInvocation, ToolOutput};
use orloj_core::{Error, ErrorKind, Kind, Object, Store, SystemClock, resources, split_ref};
use orloj_store::MemoryStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The §7.4 mock model, recording every request; optionally slow.
#[derive(Default)]
pub struct MockModel {
    pub requests: Mutex<Vec<ModelRequest>>,
    pub delay: Duration,
    /// Usage to report (None → no usage, so tokens are estimated).
    pub usage: Option<orloj_core::model::Usage>,
    /// Scripted answers, consumed in order before the mock rules apply.
    pub script: Mutex<Vec<ModelResponse>>,
}

#[async_trait]
impl ModelClient for MockModel {
    async fn complete(&self, request: ModelRequest) -> orloj_core::Result<ModelResponse> {
        self.requests.lock().expect("lock").push(request.clone());
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        {
            let mut script = self.script.lock().expect("lock");
            if !script.is_empty() {
                return Ok(script.remove(0));
            }
        }
        let ctx = |k: &str| request.context.get(k).cloned().unwrap_or_default();
        let prompt = request
            .messages
            .iter()
            .find(|m| m.role == Role::System)
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let signal = format!(
            "{prompt}{}{}{}",
            ctx("topic"),
            ctx("inbox.content"),
            ctx("previous_agent_last_event")
        )
        .to_lowercase();
        let mut chosen = None;
        for pattern in ["vector", "search", "web", "db", "echo"] {
            if signal.contains(pattern)
                && let Some(t) = request.tools.iter().find(|t| t.name.contains(pattern))
            {
                chosen = Some(t.name.clone());
                break;
            }
        }
        if chosen.is_none() && request.step == 1 {
            chosen = request.tools.first().map(|t| t.name.clone());
        }
        let input = [ctx("inbox.content"), ctx("topic")]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_else(|| format!("agent={} step={}", request.agent, request.step));
        Ok(ModelResponse {
            content: format!("model={} step={}", request.model, request.step),
            tool_calls: chosen
                .map(|name| {
                    vec![ToolCall {
                        id: format!("call-{}", request.step),
                        name,
                        input,
                    }]
                })
                .unwrap_or_default(),
            usage: self.usage,
        })
    }
}

/// Resolves `model_ref` to ModelEndpoints in the store, all served by one [`MockModel`].
pub struct StoreRouter {
    pub store: Arc<dyn Store>,
    pub model: Arc<MockModel>,
}

#[async_trait]
impl ModelRouter for StoreRouter {
    async fn resolve(&self, namespace: &str, model_ref: &str) -> orloj_core::Result<ResolvedModel> {
        let (ns, name) = split_ref(model_ref, namespace);
        let ep = self
            .store
            .get(Kind::ModelEndpoint, ns, name)
            .await
            .map_err(|e| {
                if e.kind() == ErrorKind::NotFound {
                    Error::not_found(format!(
                        "model endpoint \"{model_ref}\" not found in namespace \"{namespace}\""
                    ))
                } else {
                    e
                }
            })?;
        Ok(ResolvedModel {
            client: self.model.clone(),
            model: ep.spec["default_model"].as_str().unwrap_or("").to_string(),
            endpoint: format!("{ns}/{name}"),
            provider: "mock".into(),
        })
    }
}

/// Tool behaviour by tool name; unknown tools succeed with `ok:<input>`.
#[derive(Default)]
pub struct FakeTools {
    pub calls: Mutex<Vec<ToolInvocation>>,
    pub errors: Mutex<HashMap<String, ToolError>>,
}

impl FakeTools {
    pub fn names(&self) -> Vec<String> {
        self.calls
            .lock()
            .expect("lock")
            .iter()
            .map(|c| c.tool.name().to_string())
            .collect()
    }
}

#[async_trait]
impl ToolExecutor for FakeTools {
    async fn execute(&self, invocation: ToolInvocation) -> Result<ToolOutput, ToolError> {
        let name = invocation.tool.name().to_string();
        let input = invocation.input.clone();
        self.calls.lock().expect("lock").push(invocation);
        if let Some(err) = self.errors.lock().expect("lock").get(&name) {
            return Err(err.clone());
        }
        Ok(ToolOutput {
            result: format!("ok:{input}"),
            duration: Duration::from_millis(1),
        })
    }
}

/// A memory store with the system clock.
pub fn store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new(Arc::new(SystemClock)))
}

/// Normalizes and stores every document of `yaml`.
pub async fn apply(store: &Arc<dyn Store>, yaml: &str) {
    for obj in orloj_core::parse_manifests("test", yaml).expect("manifests parse") {
        let obj = resources::normalize(obj).expect("manifest is valid");
        store.upsert(obj).await.expect("upsert");
    }
}

pub async fn task(store: &Arc<dyn Store>, name: &str) -> Object {
    store.get(Kind::Task, "default", name).await.expect("task")
}

pub fn status(task: &Object) -> orloj_core::resources::TaskStatus {
    resources::status_of::<orloj_core::resources::TaskSpec>(task).expect("status")
}

pub const ENDPOINT: &str = r#"
apiVersion: orloj.dev/v1
kind: ModelEndpoint
metadata: {name: openai-default}
spec: {provider: mock, default_model: gpt-4o}
"#;

/// An agent manifest.
pub fn agent(name: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: orloj.dev/v1\nkind: Agent\nmetadata: {{name: {name}}}\nspec:\n  model_ref: openai-default\n{extra}\n"
    )
}

/// A tool manifest.
pub fn tool(name: &str) -> String {
    format!(
        "---\napiVersion: orloj.dev/v1\nkind: Tool\nmetadata: {{name: {name}}}\nspec: {{type: http, endpoint: \"https://example.invalid/{name}\"}}\n"
    )
}

/// A task manifest.
pub fn task_manifest(name: &str, system: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: orloj.dev/v1\nkind: Task\nmetadata: {{name: {name}}}\nspec:\n  system: {system}\n{extra}\n"
    )
}

/// A store, a recording model and recording tools, shared by a test and its workers.
pub struct Env {
    pub store: Arc<dyn Store>,
    pub model: Arc<MockModel>,
    pub tools: Arc<FakeTools>,
}

/// An environment with a fresh store around `model`.
pub fn env_with(model: MockModel) -> Env {
    Env {
        store: store(),
        model: Arc::new(model),
        tools: Arc::new(FakeTools::default()),
    }
}

/// A worker over `env` whose agent turns wait `step_interval` before each step.
pub fn worker_with_interval(env: &Env, step_interval: Duration) -> orloj_runtime::worker::Worker {
    let router = Arc::new(StoreRouter {
        store: env.store.clone(),
        model: env.model.clone(),
    });
    let clock = Arc::new(SystemClock);
    let runner =
        orloj_runtime::engine::agent_turn::AgentRunner::new(env.tools.clone(), clock.clone())
            .with_step_interval(step_interval);
    orloj_runtime::worker::Worker::new(
        orloj_runtime::worker::WorkerConfig::default(),
        env.store.clone(),
        clock,
        router,
        env.tools.clone(),
    )
    .with_runner(runner)
}
