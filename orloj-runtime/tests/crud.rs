//! CRUD over every kind, preconditions, namespaces, renames.

mod common;

use common::{TestApi, changed_spec, manifest};
use orloj_core::{Kind, Store};
use serde_json::json;

#[tokio::test]
async fn crud_for_every_kind() {
    let api = TestApi::new();
    for &kind in Kind::ALL {
        let base = format!("/v1/{}", kind.plural());
        let item = format!("{base}/thing");

        // Create: 201 with the stored object.
        let r = api.post(&base, &manifest(kind, "thing")).await;
        assert_eq!(r.status, 201, "{kind} create: {}", r.text);
        let created = r.json();
        assert_eq!(created["kind"], kind.as_str());
        assert_eq!(created["metadata"]["resourceVersion"], "1", "{kind}");
        assert_eq!(created["metadata"]["namespace"], "default", "{kind}");

        // Get and list.
        let r = api.get(&item).await;
        assert_eq!(r.status, 200, "{kind} get: {}", r.text);
        assert_eq!(r.json()["metadata"]["name"], "thing");
        let r = api.get(&base).await;
        assert_eq!(r.status, 200, "{kind} list");
        assert_eq!(
            r.json()["items"].as_array().map(Vec::len),
            Some(1),
            "{kind}"
        );

        // Replace (except ToolApproval, which has no PUT).
        if kind == Kind::ToolApproval {
            let r = api
                .put(&item, &manifest(kind, "thing"), &[("if-match", "1")])
                .await;
            assert_eq!(r.status, 405, "{kind} PUT must not exist");
            r.expect_error(405);
        } else {
            let mut body = manifest(kind, "thing");
            body["spec"] = changed_spec(kind);
            body["metadata"]["resourceVersion"] = json!("1");
            let r = api.put(&item, &body, &[]).await;
            assert_eq!(r.status, 200, "{kind} put: {}", r.text);
            let updated = r.json();
            assert_eq!(updated["metadata"]["resourceVersion"], "2", "{kind}");
            assert_eq!(updated["metadata"]["generation"], 2, "{kind}");
        }

        // POST again is an upsert: 201, version bumps.
        let r = api.post(&base, &manifest(kind, "thing")).await;
        assert_eq!(r.status, 201, "{kind} upsert: {}", r.text);

        // Delete: 204 (McpServer: 200 {"deleted": name}, as the reference), then 404.
        let r = api.delete(&item).await;
        if kind == Kind::McpServer {
            assert_eq!(r.status, 200);
            assert_eq!(r.json(), json!({"deleted": "thing"}));
        } else {
            assert_eq!(r.status, 204, "{kind} delete: {}", r.text);
            assert!(r.text.is_empty());
        }
        let msg = api.get(&item).await.expect_error(404);
        assert!(msg.contains("thing"), "{msg}");
        api.delete(&item).await.expect_error(404);
    }
}

#[tokio::test]
async fn put_preconditions() {
    let api = TestApi::new();
    api.create(Kind::Agent, "a").await;
    let before = api
        .store
        .get(Kind::Agent, "default", "a")
        .await
        .expect("stored");
    let mut body = manifest(Kind::Agent, "a");
    body["spec"] = changed_spec(Kind::Agent);

    // Neither If-Match nor resourceVersion.
    let msg = api.put("/v1/agents/a", &body, &[]).await.expect_error(409);
    assert!(
        msg.contains("resourceVersion precondition required"),
        "{msg}"
    );

    // Stale body version.
    body["metadata"]["resourceVersion"] = json!("7");
    let msg = api.put("/v1/agents/a", &body, &[]).await.expect_error(409);
    assert!(msg.contains("conflict"), "{msg}");

    // Header and body disagree.
    body["metadata"]["resourceVersion"] = json!("1");
    api.put("/v1/agents/a", &body, &[("if-match", "\"2\"")])
        .await
        .expect_error(409);

    // Nothing changed by the rejected writes.
    let stored = api
        .store
        .get(Kind::Agent, "default", "a")
        .await
        .expect("stored");
    assert_eq!(stored, before);

    // If-Match forms: strong, weak, bare, and `*` (current).
    body["metadata"]["resourceVersion"] = json!("");
    for (n, header) in ["\"1\"", "W/\"2\"", "3", "*"].iter().enumerate() {
        let r = api
            .put("/v1/agents/a", &body, &[("if-match", header)])
            .await;
        assert_eq!(r.status, 200, "If-Match {header}: {}", r.text);
        assert_eq!(r.json()["metadata"]["resourceVersion"], (n + 2).to_string());
    }
    // Stale If-Match.
    api.put("/v1/agents/a", &body, &[("if-match", "\"1\"")])
        .await
        .expect_error(409);
    // PUT of a missing object.
    body["metadata"]["name"] = json!("ghost");
    api.put("/v1/agents/ghost", &body, &[("if-match", "*")])
        .await
        .expect_error(404);
}

#[tokio::test]
async fn client_status_is_ignored() {
    let api = TestApi::new();
    let mut body = manifest(Kind::Task, "t");
    body["status"] = json!({"phase": "Succeeded"});
    let created = api.post("/v1/tasks", &body).await.json();
    assert_ne!(created["status"]["phase"], "Succeeded");

    api.store
        .update_status(
            Kind::Task,
            "default",
            "t",
            None,
            json!({"phase": "Running"}),
        )
        .await
        .expect("status write");
    // POST keeps the stored status.
    let r = api.post("/v1/tasks", &body).await.json();
    assert_eq!(r["status"]["phase"], "Running");
    // PUT keeps the stored status too.
    body["status"] = json!({"phase": "Failed"});
    let r = api.put("/v1/tasks/t", &body, &[("if-match", "*")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"]["phase"], "Running");
}

#[tokio::test]
async fn namespaces_and_kinds() {
    let api = TestApi::new();
    // Body namespace empty → request namespace.
    let r = api
        .post("/v1/agents?namespace=team", &manifest(Kind::Agent, "a"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["metadata"]["namespace"], "team");
    assert_eq!(api.get("/v1/agents/a?namespace=team").await.status, 200);
    api.get("/v1/agents/a").await.expect_error(404);

    // Body vs query mismatch → 400, nothing written.
    let mut body = manifest(Kind::Agent, "b");
    body["metadata"]["namespace"] = json!("other");
    let msg = api
        .post("/v1/agents?namespace=team", &body)
        .await
        .expect_error(400);
    assert!(msg.contains("namespace"), "{msg}");
    api.get("/v1/agents/b?namespace=other")
        .await
        .expect_error(404);

    // Kind mismatch → 400; missing kind → filled from the path.
    let msg = api
        .post("/v1/tools", &manifest(Kind::Agent, "c"))
        .await
        .expect_error(400);
    assert!(msg.contains("kind"), "{msg}");
    let mut body = manifest(Kind::Agent, "d");
    body.as_object_mut().expect("object").remove("kind");
    assert_eq!(api.post("/v1/agents", &body).await.status, 201);

    // Missing name and malformed bodies → 400.
    let mut body = manifest(Kind::Agent, "");
    body["metadata"] = json!({});
    api.post("/v1/agents", &body).await.expect_error(400);
    let r = api
        .request(
            axum::http::Request::post("/v1/agents")
                .header("content-type", "application/json")
                .body(axum::body::Body::from("{not json"))
                .expect("request"),
        )
        .await;
    r.expect_error(400);

    // GET /v1/namespaces: sorted and unique.
    let r = api.get("/v1/namespaces").await.json();
    assert_eq!(r, json!({"namespaces": ["default", "team"]}));
}

#[tokio::test]
async fn namespaces_default_when_empty() {
    let api = TestApi::new();
    assert_eq!(
        api.get("/v1/namespaces").await.json(),
        json!({"namespaces": ["default"]})
    );
}

#[tokio::test]
async fn yaml_bodies_are_accepted() {
    let api = TestApi::new();
    let yaml = "apiVersion: orloj.dev/v1\nkind: Agent\nmetadata:\n  name: yaml-agent\nspec:\n  model_ref: gpt\n  prompt: |\n    Hello.\n";
    let r = api
        .request(
            axum::http::Request::post("/v1/agents")
                .header("content-type", "application/yaml")
                .body(axum::body::Body::from(yaml))
                .expect("request"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["spec"]["prompt"], "Hello.\n");

    // One object per body: several documents are rejected.
    let two = format!("{yaml}---\n{}", yaml.replace("name: yaml-agent", "name: z"));
    let r = api
        .request(
            axum::http::Request::post("/v1/agents")
                .header("content-type", "application/yaml")
                .body(axum::body::Body::from(two))
                .expect("request"),
        )
        .await;
    let msg = r.expect_error(400);
    assert!(msg.contains("document"), "{msg}");
    api.get("/v1/agents/z").await.expect_error(404);
}

#[tokio::test]
async fn put_with_new_name_renames() {
    let api = TestApi::new();
    api.create(Kind::Tool, "old").await;
    api.create(Kind::Tool, "taken").await;

    let mut body = manifest(Kind::Tool, "taken");
    body["metadata"]["resourceVersion"] = json!("1");
    let msg = api.put("/v1/tools/old", &body, &[]).await.expect_error(409);
    assert!(msg.contains("already exists"), "{msg}");
    assert_eq!(api.get("/v1/tools/old").await.status, 200);

    body["metadata"]["name"] = json!("new");
    let r = api.put("/v1/tools/old", &body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["metadata"]["name"], "new");
    api.get("/v1/tools/old").await.expect_error(404);
    assert_eq!(api.get("/v1/tools/new").await.status, 200);

    // A stale rename changes nothing.
    body["metadata"]["name"] = json!("newer");
    body["metadata"]["resourceVersion"] = json!("9");
    api.put("/v1/tools/new", &body, &[]).await.expect_error(409);
    api.get("/v1/tools/newer").await.expect_error(404);
    assert_eq!(api.get("/v1/tools/new").await.status, 200);
}
