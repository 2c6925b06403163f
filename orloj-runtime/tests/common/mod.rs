//! Shared helpers for the API tests: a router over a MemoryStore and a ManualClock, request
//! helpers, minimal valid manifests per kind, and an SSE frame reader.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine;
use chrono::TimeZone;
use http_body_util::BodyExt;
use orloj_core::{Kind, ManualClock, Store};
use orloj_runtime::api::{ApiState, router};
use orloj_runtime::events::MemoryEventBus;
use orloj_store::MemoryStore;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// The plaintext of the test Secret; must never appear in any response or event.
pub const SECRET_PLAIN: &str = "hunter2-top-secret";

pub fn secret_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(SECRET_PLAIN)
}

pub struct TestApi {
    pub app: Router,
    pub store: Arc<MemoryStore>,
    pub clock: Arc<ManualClock>,
    pub events: Arc<MemoryEventBus>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text))
    }

    /// Asserts the status and the JSON error shape; returns the message.
    pub fn expect_error(&self, status: u16) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        let v = self.json();
        assert!(v["error"].is_string(), "error code missing: {v}");
        v["message"].as_str().expect("message").to_string()
    }
}

impl TestApi {
    pub fn new() -> Self {
        let clock = Arc::new(ManualClock::new(
            chrono::Utc
                .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
                .single()
                .expect("valid time"),
        ));
        let store = Arc::new(MemoryStore::new(clock.clone()));
        Self::with_store(store.clone(), store, clock)
    }

    pub fn with_store(
        store: Arc<MemoryStore>,
        dyn_store: Arc<dyn Store>,
        clock: Arc<ManualClock>,
    ) -> Self {
        let events = Arc::new(MemoryEventBus::new(1024));
        let state = ApiState::new(dyn_store, clock.clone()).with_events(events.clone());
        Self {
            app: router(state),
            store,
            clock,
            events,
        }
    }

    pub async fn request(&self, request: Request<Body>) -> Resp {
        let response =
            tokio::time::timeout(Duration::from_secs(10), self.app.clone().oneshot(request))
                .await
                .expect("response within timeout")
                .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
            .await
            .expect("body within timeout")
            .expect("body")
            .to_bytes();
        Resp {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut builder = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let body = match body {
            Some(v) => {
                builder = builder.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.request(builder.body(body).expect("request")).await
    }

    pub async fn get(&self, uri: &str) -> Resp {
        self.call("GET", uri, None, &[]).await
    }

    pub async fn post(&self, uri: &str, body: &Value) -> Resp {
        self.call("POST", uri, Some(body), &[]).await
    }

    pub async fn put(&self, uri: &str, body: &Value, headers: &[(&str, &str)]) -> Resp {
        self.call("PUT", uri, Some(body), headers).await
    }

    pub async fn delete(&self, uri: &str) -> Resp {
        self.call("DELETE", uri, None, &[]).await
    }

    /// Creates an object through the API and returns the stored JSON.
    pub async fn create(&self, kind: Kind, name: &str) -> Value {
        let r = self
            .post(&format!("/v1/{}", kind.plural()), &manifest(kind, name))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json()
    }
}

/// A minimal spec that satisfies each kind's validation.
pub fn minimal_spec(kind: Kind) -> Value {
    match kind {
        Kind::Agent => json!({"model_ref": "gpt", "prompt": "You are helpful."}),
        Kind::AgentSystem => json!({"agents": ["writer"]}),
        Kind::ModelEndpoint => json!({"provider": "mock", "default_model": "gpt-4o-mini"}),
        Kind::Tool => json!({"type": "http", "endpoint": "https://tools.example.com/search"}),
        Kind::Secret => json!({"data": {"token": secret_b64()}}),
        Kind::Memory => json!({"type": "kv", "provider": "in-memory"}),
        Kind::McpServer => json!({"transport": "http", "endpoint": "https://mcp.example.com/mcp"}),
        Kind::AgentPolicy => json!({"max_tokens_per_run": 1000}),
        Kind::AgentRole => json!({"permissions": ["tool:search:invoke"]}),
        Kind::ToolPermission => json!({"tool_ref": "search", "action": "invoke"}),
        Kind::ToolApproval => json!({"task_ref": "t1", "tool": "search"}),
        Kind::Task => json!({"system": "sys", "input": {"topic": "rust"}}),
        Kind::TaskSchedule => json!({"task_ref": "template-task", "schedule": "*/5 * * * *"}),
        Kind::TaskWebhook => json!({"task_ref": "template-task", "auth": {"secret_ref": "hook"}}),
        Kind::Worker => json!({"region": "default", "max_concurrent_tasks": 1}),
    }
}

/// A second valid spec, different from [`minimal_spec`], for updates.
pub fn changed_spec(kind: Kind) -> Value {
    let mut spec = minimal_spec(kind);
    let (field, value) = match kind {
        Kind::Agent => ("prompt", json!("You are terse.")),
        Kind::AgentSystem => ("agents", json!(["writer", "editor"])),
        Kind::ModelEndpoint => ("default_model", json!("gpt-4o")),
        Kind::Tool => ("endpoint", json!("https://tools.example.com/v2")),
        Kind::Secret => ("data", json!({"token": secret_b64(), "other": "b3RoZXI="})),
        Kind::Memory => ("type", json!("vector")),
        Kind::McpServer => ("endpoint", json!("https://mcp.example.com/v2")),
        Kind::AgentPolicy => ("max_tokens_per_run", json!(2000)),
        Kind::AgentRole => (
            "permissions",
            json!(["tool:search:invoke", "tool:web:invoke"]),
        ),
        Kind::ToolPermission => ("tool_ref", json!("web")),
        Kind::ToolApproval => ("tool", json!("web")),
        Kind::Task => ("input", json!({"topic": "go"})),
        Kind::TaskSchedule => ("schedule", json!("0 * * * *")),
        Kind::TaskWebhook => ("task_ref", json!("other-template")),
        Kind::Worker => ("region", json!("eu")),
    };
    spec[field] = value;
    spec
}

pub fn manifest(kind: Kind, name: &str) -> Value {
    json!({
        "apiVersion": "orloj.dev/v1",
        "kind": kind.as_str(),
        "metadata": {"name": name},
        "spec": minimal_spec(kind),
    })
}

/// Reads SSE frames from a streaming response body.
pub struct SseReader {
    body: Body,
    buf: String,
}

impl SseReader {
    pub fn new(body: Body) -> Self {
        Self {
            body,
            buf: String::new(),
        }
    }

    /// The next non-comment frame as (event name, data JSON); panics after 5 s.
    pub async fn next(&mut self) -> (String, Value) {
        tokio::time::timeout(Duration::from_secs(5), self.next_inner())
            .await
            .expect("SSE frame within timeout")
    }

    async fn next_inner(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                let value = serde_json::from_str(&data).expect("SSE data is JSON");
                return (event, value);
            }
            let frame = self
                .body
                .frame()
                .await
                .expect("stream still open")
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }
}
