//! Listing: pagination, cursors, label selectors, offsets and query validation.

mod common;

use common::{TestApi, manifest};
use orloj_core::Kind;
use serde_json::{Value, json};

fn names(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["metadata"]["namespace"].as_str().unwrap_or(""),
                i["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

async fn seed(api: &TestApi) {
    for (ns, name, team) in [
        ("default", "a", "red"),
        ("default", "b", "blue"),
        ("default", "c", "red"),
        ("prod", "a", "red"),
        ("prod", "d", "blue"),
    ] {
        let mut body = manifest(Kind::Task, name);
        body["metadata"]["namespace"] = json!(ns);
        body["metadata"]["labels"] = json!({"team": team});
        assert_eq!(api.post("/v1/tasks", &body).await.status, 201);
    }
}

#[tokio::test]
async fn pages_with_continue() {
    let api = TestApi::new();
    seed(&api).await;

    let all = api.get("/v1/tasks").await.json();
    assert_eq!(
        names(&all),
        ["default/a", "default/b", "default/c", "prod/a", "prod/d"]
    );
    assert!(
        all.get("continue").is_none(),
        "no continue on a partial page: {all}"
    );

    let mut seen = Vec::new();
    let mut uri = "/v1/tasks?limit=2".to_string();
    loop {
        let page = api.get(&uri).await.json();
        seen.extend(names(&page));
        match page.get("continue").and_then(Value::as_str) {
            Some(token) => uri = format!("/v1/tasks?limit=2&continue={token}"),
            None => break,
        }
    }
    assert_eq!(seen, names(&all));

    // `after` with a bare name is taken in the request namespace.
    let page = api.get("/v1/tasks?namespace=prod&after=a").await.json();
    assert_eq!(names(&page), ["prod/d"]);
    let page = api.get("/v1/tasks?after=default/b&limit=1").await.json();
    assert_eq!(names(&page), ["default/c"]);
    assert_eq!(page["continue"], "default/c");

    // Namespace filter.
    let page = api.get("/v1/tasks?namespace=prod").await.json();
    assert_eq!(names(&page), ["prod/a", "prod/d"]);

    // Deprecated offset (tasks only), applied after the cursor.
    let page = api.get("/v1/tasks?offset=1&limit=2").await.json();
    assert_eq!(names(&page), ["default/b", "default/c"]);
}

#[tokio::test]
async fn label_selectors() {
    let api = TestApi::new();
    seed(&api).await;
    let page = api.get("/v1/tasks?labelSelector=team%3Dred").await.json();
    assert_eq!(names(&page), ["default/a", "default/c", "prod/a"]);
    let page = api.get("/v1/tasks?labels=team!%3Dred").await.json();
    assert_eq!(names(&page), ["default/b", "prod/d"]);
    // Filtering happens before the page is cut.
    let page = api
        .get("/v1/tasks?labelSelector=team%3Dblue&limit=1")
        .await
        .json();
    assert_eq!(names(&page), ["default/b"]);
    assert_eq!(page["continue"], "default/b");

    let msg = api
        .get("/v1/tasks?labelSelector=team")
        .await
        .expect_error(400);
    assert!(msg.contains("labelSelector"), "{msg}");
    let msg = api.get("/v1/tasks?labels=%3Dx").await.expect_error(400);
    assert!(msg.contains("labels"), "{msg}");
}

#[tokio::test]
async fn malformed_params_name_the_parameter() {
    let api = TestApi::new();
    for bad in ["0", "-1", "abc", "1001", "1.5"] {
        let msg = api
            .get(&format!("/v1/agents?limit={bad}"))
            .await
            .expect_error(400);
        assert!(msg.contains("limit"), "limit={bad}: {msg}");
    }
    assert_eq!(api.get("/v1/agents?limit=1000").await.status, 200);
    let msg = api.get("/v1/tasks?offset=-2").await.expect_error(400);
    assert!(msg.contains("offset"), "{msg}");
    let msg = api
        .get("/v1/memories/m/entries?limit=x")
        .await
        .expect_error(400);
    assert!(msg.contains("limit"), "{msg}");
    let msg = api
        .get("/v1/tasks/t/messages?limit=x")
        .await
        .expect_error(400);
    assert!(msg.contains("limit"), "{msg}");
    let msg = api
        .get("/v1/tasks/t/messages?phase=bogus")
        .await
        .expect_error(400);
    assert!(msg.contains("phase"), "{msg}");
    let msg = api.get("/v1/events/watch?since=x").await.expect_error(400);
    assert!(msg.contains("since"), "{msg}");
    let msg = api
        .get("/v1/agents/watch?resourceVersion=x")
        .await
        .expect_error(400);
    assert!(msg.contains("resourceVersion"), "{msg}");
}
