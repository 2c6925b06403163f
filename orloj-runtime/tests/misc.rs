//! Secrets, subresources, approvals, middleware behaviour, failing stores, OpenAPI coverage.

mod common;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use common::{SECRET_PLAIN, TestApi, manifest, secret_b64};
use futures::stream::BoxStream;
use orloj_core::{
    ClaimRequest, Error, Kind, ListOptions, ManualClock, Object, ObjectList, Result, Store,
    WatchEvent,
};
use orloj_runtime::events::EventBus;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

fn assert_no_secret(text: &str) {
    assert!(!text.contains(SECRET_PLAIN), "plaintext leaked: {text}");
    assert!(!text.contains(&secret_b64()), "base64 value leaked: {text}");
}

async fn drain_events(api: &TestApi) -> Vec<orloj_runtime::events::Event> {
    let mut stream = api.events.subscribe(Some(0));
    let mut out = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(
        Duration::from_millis(100),
        futures::StreamExt::next(&mut stream),
    )
    .await
    {
        out.push(e);
    }
    out
}

#[tokio::test]
async fn secrets_are_never_shown() {
    let api = TestApi::new();
    let created = api.post("/v1/secrets", &manifest(Kind::Secret, "s")).await;
    assert_eq!(created.status, 201);
    assert_no_secret(&created.text);
    assert_eq!(created.json()["spec"]["data"]["token"], "***");

    let got = api.get("/v1/secrets/s").await;
    assert_no_secret(&got.text);
    assert_eq!(got.json()["spec"]["data"]["token"], "***");
    let list = api.get("/v1/secrets").await;
    assert_no_secret(&list.text);

    // Writing back the redacted object keeps the stored value; a new key is stored as given.
    let mut body = got.json();
    body["spec"]["data"]["extra"] = json!("ZXh0cmE=");
    let put = api.put("/v1/secrets/s", &body, &[]).await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_no_secret(&put.text);
    let stored = api
        .store
        .get(Kind::Secret, "default", "s")
        .await
        .expect("stored");
    assert_eq!(stored.spec["data"]["token"], secret_b64());
    assert_eq!(stored.spec["data"]["extra"], "ZXh0cmE=");

    // POST with placeholders (apply of a fetched object) also keeps stored values.
    let post = api.post("/v1/secrets", &body).await;
    assert_eq!(post.status, 201, "{}", post.text);
    let stored = api
        .store
        .get(Kind::Secret, "default", "s")
        .await
        .expect("stored");
    assert_eq!(stored.spec["data"]["token"], secret_b64());

    // stringData is write-only: stored base64-encoded, never echoed.
    let mut plain = manifest(Kind::Secret, "plain");
    plain["spec"] = json!({"stringData": {"password": SECRET_PLAIN}});
    let r = api.post("/v1/secrets", &plain).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_no_secret(&r.text);
    let stored = api
        .store
        .get(Kind::Secret, "default", "plain")
        .await
        .expect("stored");
    assert_eq!(stored.spec["data"]["password"], secret_b64());

    // A placeholder for a key that was never stored is rejected.
    let mut orphan = manifest(Kind::Secret, "fresh");
    orphan["spec"]["data"] = json!({"k": "***"});
    api.post("/v1/secrets", &orphan).await.expect_error(400);

    let deleted = api.delete("/v1/secrets/s").await;
    assert_eq!(deleted.status, 204);

    let events = drain_events(&api).await;
    assert!(events.len() >= 4, "{events:?}");
    for e in &events {
        assert_no_secret(&serde_json::to_string(e).expect("json"));
        assert_eq!(e.source, "apiserver");
    }
    let last = events.last().expect("delete event");
    assert_eq!(last.event_type, "resource.deleted");
    assert_eq!(
        last.data,
        json!({"metadata": {"name": "s", "namespace": "default"}})
    );
}

#[tokio::test]
async fn write_events_have_types() {
    let api = TestApi::new();
    api.create(Kind::Agent, "a").await;
    let mut body = manifest(Kind::Agent, "a");
    body["metadata"]["resourceVersion"] = json!("1");
    body["spec"]["prompt"] = json!("changed");
    assert_eq!(api.put("/v1/agents/a", &body, &[]).await.status, 200);
    let status = json!({"metadata": {"resourceVersion": "2"}, "status": {"phase": "Ready"}});
    assert_eq!(
        api.put("/v1/agents/a/status", &status, &[]).await.status,
        200
    );
    assert_eq!(api.delete("/v1/agents/a").await.status, 204);
    let types: Vec<String> = drain_events(&api)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        [
            "resource.created",
            "resource.updated",
            "resource.status",
            "resource.deleted"
        ]
    );
}

#[tokio::test]
async fn status_subresource_only_where_allowed() {
    let api = TestApi::new();
    for &kind in Kind::ALL {
        api.create(kind, "x").await;
        let uri = format!("/v1/{}/x/status", kind.plural());
        let r = api.get(&uri).await;
        if kind.has_status_subresource() {
            assert_eq!(r.status, 200, "{kind}: {}", r.text);
            let v = r.json();
            assert_eq!(v["metadata"]["name"], "x");
            assert!(v["status"].is_object(), "{kind}: {v}");
        } else {
            assert!(
                matches!(r.status.as_u16(), 404 | 405),
                "{kind}: {}",
                r.status
            );
            r.expect_error(r.status.as_u16());
            let put = api
                .put(&uri, &json!({"status": {}}), &[("if-match", "*")])
                .await;
            assert!(matches!(put.status.as_u16(), 404 | 405), "{kind}");
        }
    }
}

#[tokio::test]
async fn status_put_rules() {
    let api = TestApi::new();
    api.create(Kind::Task, "t").await;
    // No precondition → 409.
    let msg = api
        .put(
            "/v1/tasks/t/status",
            &json!({"status": {"phase": "Running"}}),
            &[],
        )
        .await
        .expect_error(409);
    assert!(msg.contains("precondition"), "{msg}");
    // Stale → 409, nothing changed.
    api.put(
        "/v1/tasks/t/status",
        &json!({"metadata": {"resourceVersion": "5"}, "status": {"phase": "Running"}}),
        &[],
    )
    .await
    .expect_error(409);
    let stored = api
        .store
        .get(Kind::Task, "default", "t")
        .await
        .expect("task");
    assert_eq!(stored.metadata.resource_version, "1");
    // Good write: observedGeneration filled from metadata.generation, spec untouched.
    let r = api
        .put(
            "/v1/tasks/t/status",
            &json!({"status": {"phase": "Running", "observedGeneration": 0}}),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"]["phase"], "Running");
    assert_eq!(v["status"]["observedGeneration"], 1);
    assert_eq!(v["metadata"]["generation"], 1);
    let got = api.get("/v1/tasks/t/status").await.json();
    assert_eq!(got["status"]["phase"], "Running");
    assert_eq!(got["metadata"]["resourceVersion"], "2");
}

#[tokio::test]
async fn approve_and_deny() {
    let api = TestApi::new();
    for name in ["a1", "a2", "a3"] {
        api.create(Kind::ToolApproval, name).await;
        api.store
            .update_status(
                Kind::ToolApproval,
                "default",
                name,
                None,
                json!({"phase": "Pending"}),
            )
            .await
            .expect("pending");
    }
    let r = api
        .post(
            "/v1/tool-approvals/a1/approve",
            &json!({"decided_by": "alice", "comment": "ok"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"]["phase"], "Approved");
    assert_eq!(v["status"]["decision"], "approved");
    assert_eq!(v["status"]["decided_by"], "alice");
    assert_eq!(v["status"]["decided_at"], "2026-01-02T03:04:05Z");
    // Deciding twice → 409.
    let msg = api
        .post("/v1/tool-approvals/a1/deny", &json!({"decided_by": "bob"}))
        .await
        .expect_error(409);
    assert!(msg.contains("Approved"), "{msg}");

    let r = api
        .post(
            "/v1/tool-approvals/a2/deny",
            &json!({"decided_by": "bob", "reason": "risky"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"]["phase"], "Denied");
    assert_eq!(v["status"]["decision"], "denied");
    assert_eq!(v["status"]["comment"], "risky");

    // Empty body is fine; unknown approval → 404; wrong field type → 400.
    let r = api
        .call("POST", "/v1/tool-approvals/a3/approve", None, &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    api.post("/v1/tool-approvals/nope/approve", &json!({}))
        .await
        .expect_error(404);
    api.post("/v1/tool-approvals/a1/approve", &json!({"decided_by": 5}))
        .await
        .expect_error(400);

    let types: Vec<String> = drain_events(&api)
        .await
        .into_iter()
        .filter(|e| e.action == "approved" || e.action == "denied")
        .map(|e| format!("{}:{}", e.event_type, e.name))
        .collect();
    assert_eq!(
        types,
        [
            "resource.approved:a1",
            "resource.denied:a2",
            "resource.approved:a3"
        ]
    );
}

#[tokio::test]
async fn task_logs_messages_and_metrics() {
    let api = TestApi::new();
    api.create(Kind::Task, "t").await;
    for i in 0..3 {
        api.store
            .append_task_log("default", "t", &format!("line {i}"))
            .await
            .expect("log");
    }
    let logs = api.get("/v1/tasks/t/logs").await.json();
    assert_eq!(
        logs,
        json!({"name": "t", "logs": ["line 0", "line 1", "line 2"]})
    );
    api.get("/v1/tasks/missing/logs").await.expect_error(404);

    let msg = |id: &str, from: &str, to: &str, phase: &str, attempts: i64, ms: i64| {
        let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("time");
        json!({
            "message_id": id, "from_agent": from, "to_agent": to, "phase": phase,
            "attempts": attempts, "branch_id": "b001", "trace_id": "tr",
            "timestamp": start.to_rfc3339(),
            "processed_at": (start + chrono::Duration::milliseconds(ms)).to_rfc3339(),
        })
    };
    let messages = json!([
        msg("m1", "planner", "research", "succeeded", 1, 100),
        msg("m2", "research", "writer", "succeeded", 3, 300),
        msg("m3", "writer", "editor", "deadletter", 2, 200),
        {"message_id": "m4", "from_agent": "planner", "to_agent": "research", "phase": "queued", "attempts": 0},
    ]);
    api.store
        .update_status(
            Kind::Task,
            "default",
            "t",
            None,
            json!({"phase": "Running", "messages": messages}),
        )
        .await
        .expect("status");

    let all = api.get("/v1/tasks/t/messages").await.json();
    assert_eq!(all["total"], 4);
    assert_eq!(all["filtered_from"], 4);
    assert_eq!(all["lifecycle_counts"]["succeeded"], 2);
    assert_eq!(all["lifecycle_counts"]["queued"], 1);
    assert_eq!(all["lifecycle_counts"]["deadletter"], 1);

    let some = api
        .get("/v1/tasks/t/messages?phase=succeeded,queued&from_agent=planner")
        .await
        .json();
    let ids: Vec<&str> = some["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["message_id"].as_str())
        .collect();
    assert_eq!(ids, ["m1", "m4"]);
    assert_eq!(some["total"], 2);
    let latest = api.get("/v1/tasks/t/messages?limit=1").await.json();
    assert_eq!(latest["messages"][0]["message_id"], "m4");

    let m = api.get("/v1/tasks/t/metrics").await.json();
    let t = &m["totals"];
    assert_eq!(t["messages"], 4);
    assert_eq!(t["in_flight"], 1);
    assert_eq!(t["retry_count"], 3);
    assert_eq!(t["deadletters"], 1);
    assert_eq!(t["latency_sample_size"], 3);
    assert_eq!(t["latency_ms_avg"], 200);
    assert_eq!(t["latency_ms_p95"], 300);
    let research = m["per_agent"]
        .as_array()
        .expect("per_agent")
        .iter()
        .find(|a| a["agent"] == "research")
        .expect("research row")
        .clone();
    assert_eq!(research["inbound"], 2);
    assert_eq!(research["outbound"], 1);
    let edge = m["per_edge"]
        .as_array()
        .expect("per_edge")
        .iter()
        .find(|e| e["from_agent"] == "planner" && e["to_agent"] == "research")
        .expect("edge")
        .clone();
    assert_eq!(edge["messages"], 2);
    assert_eq!(edge["queued"], 1);
    assert_eq!(m["namespace"], "default");
    let filtered = api.get("/v1/tasks/t/metrics?to_agent=editor").await.json();
    assert_eq!(filtered["totals"]["messages"], 1);
    assert_eq!(filtered["filters"], json!({"to_agent": "editor"}));
}

#[tokio::test]
async fn agent_logs_memory_entries_capabilities() {
    let api = TestApi::new();
    api.create(Kind::Agent, "a").await;
    api.create(Kind::Memory, "m").await;
    assert_eq!(
        api.get("/v1/agents/a/logs").await.json(),
        json!({"name": "a", "logs": []})
    );
    api.get("/v1/agents/zz/logs").await.expect_error(404);
    assert_eq!(
        api.get("/v1/memories/m/entries?q=x&prefix=p&limit=5")
            .await
            .json(),
        json!({"entries": [], "count": 0})
    );
    api.get("/v1/memories/m/entries?limit=0")
        .await
        .expect_error(400);
    let caps = api.get("/v1/capabilities").await.json();
    assert!(
        caps["generated_at"]
            .as_str()
            .is_some_and(|s| s.starts_with("2026-01-02T03:04:05"))
    );
    let ids: Vec<&str> = caps["capabilities"]
        .as_array()
        .expect("capabilities")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    for id in [
        "core.api.crud",
        "core.runtime.sequential",
        "core.runtime.message_driven",
        "core.governance.agent_roles",
        "core.ui.baseline",
        "core.self_host",
    ] {
        assert!(ids.contains(&id), "{id} missing");
    }
}

#[tokio::test]
async fn middleware_behaviour() {
    let api = TestApi::new();
    // X-Request-ID echoed, or generated as a uuid.
    let r = api
        .call("GET", "/healthz", None, &[("x-request-id", "abc-123")])
        .await;
    assert_eq!(r.headers["x-request-id"], "abc-123");
    assert_eq!(r.json(), json!({"status": "ok"}));
    let r = api.get("/v1/nothing-here").await;
    let generated = r.headers["x-request-id"].to_str().expect("ascii");
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    let msg = r.expect_error(404);
    assert!(msg.contains("no route"), "{msg}");

    // Wrong method → 405 JSON.
    let r = api.call("PATCH", "/v1/agents", Some(&json!({})), &[]).await;
    r.expect_error(405);

    // 5 MiB body → 413 JSON, with a request id.
    let big = "x".repeat(5 * 1024 * 1024);
    let r = api
        .request(
            Request::post("/v1/agents")
                .header("content-type", "application/json")
                .body(Body::from(big))
                .expect("request"),
        )
        .await;
    r.expect_error(413);
    assert!(r.headers.contains_key("x-request-id"));

    // Unsupported Content-Type → 415; none at all is accepted.
    let r = api
        .request(
            Request::post("/v1/agents")
                .header("content-type", "text/plain")
                .body(Body::from(manifest(Kind::Agent, "a").to_string()))
                .expect("request"),
        )
        .await;
    r.expect_error(415);
    let r = api
        .request(
            Request::post("/v1/agents")
                .body(Body::from(manifest(Kind::Agent, "a").to_string()))
                .expect("request"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = api
        .request(
            Request::post("/v1/agents")
                .header("content-type", "application/json; charset=utf-8")
                .body(Body::from(manifest(Kind::Agent, "b").to_string()))
                .expect("request"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// A store whose backend is always down.
struct DownStore;

fn down<T>() -> Result<T> {
    Err(Error::unavailable("connection refused"))
}

#[async_trait]
impl Store for DownStore {
    async fn ping(&self) -> Result<()> {
        down()
    }
    async fn get(&self, _: Kind, _: &str, _: &str) -> Result<Object> {
        down()
    }
    async fn list(&self, _: Kind, _: &ListOptions) -> Result<ObjectList> {
        down()
    }
    async fn create(&self, _: Object) -> Result<Object> {
        down()
    }
    async fn update(&self, _: Object) -> Result<Object> {
        down()
    }
    async fn upsert(&self, _: Object) -> Result<(Object, bool)> {
        down()
    }
    async fn update_status(
        &self,
        _: Kind,
        _: &str,
        _: &str,
        _: Option<&str>,
        _: Value,
    ) -> Result<Object> {
        down()
    }
    async fn delete(&self, _: Kind, _: &str, _: &str, _: Option<&str>) -> Result<Object> {
        down()
    }
    async fn current_revision(&self) -> Result<u64> {
        down()
    }
    async fn watch(
        &self,
        _: Option<Kind>,
        _: Option<u64>,
    ) -> Result<BoxStream<'static, Result<WatchEvent>>> {
        down()
    }
    async fn claim_task(&self, _: &ClaimRequest) -> Result<Option<Object>> {
        down()
    }
    async fn renew_task_lease(&self, _: &str, _: &str, _: &str, _: Duration) -> Result<Object> {
        down()
    }
    async fn release_task(&self, _: &str, _: &str, _: &str) -> Result<Object> {
        down()
    }
    async fn append_task_log(&self, _: &str, _: &str, _: &str) -> Result<()> {
        down()
    }
    async fn task_logs(&self, _: &str, _: &str, _: usize) -> Result<Vec<String>> {
        down()
    }
}

#[tokio::test]
async fn failing_store_is_503() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let store = Arc::new(orloj_store::MemoryStore::new(clock.clone()));
    let api = TestApi::with_store(store, Arc::new(DownStore), clock);
    for (method, uri) in [
        ("GET", "/v1/agents"),
        ("GET", "/v1/agents/a"),
        ("POST", "/v1/agents"),
        ("DELETE", "/v1/agents/a"),
        ("GET", "/v1/namespaces"),
        ("GET", "/v1/tasks/watch"),
    ] {
        let body = manifest(Kind::Agent, "a");
        let r = api
            .call(method, uri, (method == "POST").then_some(&body), &[])
            .await;
        let msg = r.expect_error(503);
        assert!(
            msg.starts_with("store unavailable"),
            "{method} {uri}: {msg}"
        );
    }
    let r = api.get("/healthz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "unavailable");
}

/// Paths the spec's catalogue (§3.3–3.5) requires, with methods.
fn required_routes() -> Vec<(String, &'static str)> {
    let mut out = vec![
        ("/healthz".to_string(), "get"),
        ("/openapi.json".to_string(), "get"),
        ("/v1/capabilities".to_string(), "get"),
        ("/v1/namespaces".to_string(), "get"),
        ("/v1/events/watch".to_string(), "get"),
    ];
    let with_status = [
        "agents",
        "agent-systems",
        "model-endpoints",
        "tools",
        "memories",
        "agent-policies",
        "tasks",
        "task-schedules",
        "task-webhooks",
        "workers",
    ];
    for &kind in Kind::ALL {
        let p = kind.plural();
        out.push((format!("/v1/{p}"), "get"));
        out.push((format!("/v1/{p}"), "post"));
        out.push((format!("/v1/{p}/{{name}}"), "get"));
        out.push((format!("/v1/{p}/{{name}}"), "delete"));
        if kind != Kind::ToolApproval {
            out.push((format!("/v1/{p}/{{name}}"), "put"));
        }
        if with_status.contains(&p) {
            out.push((format!("/v1/{p}/{{name}}/status"), "get"));
            out.push((format!("/v1/{p}/{{name}}/status"), "put"));
        }
    }
    for p in ["agents", "tasks", "task-schedules", "task-webhooks"] {
        out.push((format!("/v1/{p}/watch"), "get"));
    }
    for (p, m) in [
        ("/v1/tool-approvals/{name}/approve", "post"),
        ("/v1/tool-approvals/{name}/deny", "post"),
        ("/v1/tasks/{name}/logs", "get"),
        ("/v1/tasks/{name}/messages", "get"),
        ("/v1/tasks/{name}/metrics", "get"),
        ("/v1/agents/{name}/logs", "get"),
        ("/v1/memories/{name}/entries", "get"),
        // native auth (spec §6.2, §6.3)
        ("/v1/auth/config", "get"),
        ("/v1/auth/setup", "post"),
        ("/v1/auth/login", "post"),
        ("/v1/auth/logout", "post"),
        ("/v1/auth/me", "get"),
        ("/v1/auth/change-password", "post"),
        ("/v1/auth/admin/reset-password", "post"),
        ("/v1/auth/cli-token", "post"),
        ("/v1/auth/users", "get"),
        ("/v1/auth/users", "post"),
        ("/v1/auth/users/{username}", "delete"),
        ("/v1/tokens", "get"),
        ("/v1/tokens", "post"),
        ("/v1/tokens/{name}", "delete"),
    ] {
        out.push((p.to_string(), m));
    }
    out
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let api = TestApi::new();
    let doc = api.get("/openapi.json").await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");

    // Everything the spec requires is documented...
    for (path, method) in required_routes() {
        assert!(
            paths.get(&path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from /openapi.json"
        );
    }
    // ...and everything documented is served (not the 404 fallback, not 405).
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            operations += 1;
            let uri = path.replace("{name}", "probe");
            let mut req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri);
            let body = if method == "post" || method == "put" {
                req = req.header("content-type", "application/json");
                Body::from("{}")
            } else {
                Body::empty()
            };
            let response = api
                .app
                .clone()
                .oneshot(req.body(body).expect("request"))
                .await
                .expect("infallible");
            assert_ne!(
                response.status(),
                405,
                "{method} {path} documented but not routed"
            );
            if response.status() == 404 {
                let bytes = tokio::time::timeout(
                    Duration::from_secs(5),
                    http_body_util::BodyExt::collect(response.into_body()),
                )
                .await
                .expect("body")
                .expect("body")
                .to_bytes();
                let text = String::from_utf8_lossy(&bytes);
                assert!(
                    !text.contains("no route"),
                    "{method} {path} documented but not routed"
                );
            }
        }
    }
    assert_eq!(
        operations,
        required_routes().len(),
        "documented routes beyond the spec's catalogue"
    );
    // Resource schemas exist for every kind, and components are referenced correctly.
    for &kind in Kind::ALL {
        assert!(
            doc["components"]["schemas"][kind.as_str()].is_object(),
            "{kind} schema"
        );
    }
    assert!(doc["components"]["schemas"]["ObjectMeta"].is_object());
}

#[tokio::test]
async fn new_tool_approvals_expire_after_their_ttl() {
    let api = TestApi::new();
    let r = api
        .post(
            "/v1/tool-approvals",
            &json!({"kind": "ToolApproval", "metadata": {"name": "ttl1"},
                    "spec": {"task_ref": "t", "tool": "x", "ttl": "90s"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"]["phase"], "Pending");
    let expires = v["status"]["expires_at"].as_str().expect("expires_at set");
    let expires = chrono::DateTime::parse_from_rfc3339(expires).expect("RFC 3339");
    let created = orloj_core::Clock::now(api.clock.as_ref());
    assert_eq!(
        (expires.with_timezone(&chrono::Utc) - created).num_seconds(),
        90
    );
}
