//! SSE watches: resource watches (snapshot + live) and the control-plane event stream.

mod common;

use axum::body::Body;
use axum::http::Request;
use common::{SseReader, TestApi, manifest};
use orloj_core::Kind;
use serde_json::json;
use tower::ServiceExt;

async fn open(api: &TestApi, uri: &str) -> SseReader {
    let response = api
        .app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    SseReader::new(response.into_body())
}

#[tokio::test]
async fn resource_watch_snapshot_then_changes_in_order() {
    let api = TestApi::new();
    api.create(Kind::Task, "before").await;
    let mut other_ns = manifest(Kind::Task, "elsewhere");
    other_ns["metadata"]["namespace"] = json!("prod");
    api.post("/v1/tasks", &other_ns).await;

    let mut watch = open(&api, "/v1/tasks/watch?namespace=default").await;
    let (event, data) = watch.next().await;
    assert_eq!(event, "resource");
    assert_eq!(data["type"], "added");
    assert_eq!(data["resource"]["metadata"]["name"], "before");

    // Other kinds and namespaces do not show up.
    api.create(Kind::Agent, "agent").await;
    api.post("/v1/tasks", &other_ns).await;

    api.create(Kind::Task, "live").await;
    let mut body = manifest(Kind::Task, "live");
    body["metadata"]["resourceVersion"] = json!("1");
    body["spec"]["input"] = json!({"topic": "changed"});
    assert_eq!(api.put("/v1/tasks/live", &body, &[]).await.status, 200);
    assert_eq!(api.delete("/v1/tasks/live").await.status, 204);

    let mut seen = Vec::new();
    for _ in 0..3 {
        let (event, data) = watch.next().await;
        assert_eq!(event, "resource");
        seen.push((
            data["type"].as_str().unwrap_or("").to_string(),
            data["resource"]["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            data["resource"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ));
    }
    let expected: Vec<(String, String, String)> = [
        ("added", "live", "1"),
        ("updated", "live", "2"),
        ("deleted", "live", "2"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn resource_watch_filters_by_name_and_version() {
    let api = TestApi::new();
    api.create(Kind::Agent, "a").await;
    api.create(Kind::Agent, "b").await;
    // resourceVersion=1 hides snapshot items at version 1.
    let mut body = manifest(Kind::Agent, "b");
    body["metadata"]["resourceVersion"] = json!("1");
    body["spec"]["prompt"] = json!("v2");
    api.put("/v1/agents/b", &body, &[]).await;

    let mut watch = open(&api, "/v1/agents/watch?resourceVersion=1").await;
    let (_, data) = watch.next().await;
    assert_eq!(data["resource"]["metadata"]["name"], "b");

    let mut named = open(&api, "/v1/agents/watch?name=a").await;
    let (_, data) = named.next().await;
    assert_eq!(data["resource"]["metadata"]["name"], "a");
    api.create(Kind::Agent, "c").await;
    api.delete("/v1/agents/a").await;
    let (_, data) = named.next().await;
    assert_eq!(data["type"], "deleted");
    assert_eq!(data["resource"]["metadata"]["name"], "a");
}

#[tokio::test]
async fn events_watch_replays_since_and_filters() {
    let api = TestApi::new();
    api.create(Kind::Agent, "one").await; // id 1
    api.create(Kind::Tool, "two").await; // id 2
    api.create(Kind::Agent, "three").await; // id 3

    let mut all = open(&api, "/v1/events/watch?since=1").await;
    let (event, data) = all.next().await;
    assert_eq!(event, "event");
    assert_eq!(data["id"], 2);
    assert_eq!(data["name"], "two");
    assert_eq!(data["source"], "apiserver");
    assert_eq!(data["type"], "resource.created");
    let (_, data) = all.next().await;
    assert_eq!(data["id"], 3);

    let mut agents = open(
        &api,
        "/v1/events/watch?since=0&kind=agent&type=resource.deleted",
    )
    .await;
    api.delete("/v1/tools/two").await;
    api.delete("/v1/agents/one").await;
    let (_, data) = all.next().await;
    assert_eq!(
        (data["id"].clone(), data["name"].clone()),
        (json!(4), json!("two"))
    );
    let (_, data) = agents.next().await;
    assert_eq!(data["name"], "one");
    assert_eq!(data["action"], "deleted");
    assert_eq!(
        data["data"],
        json!({"metadata": {"name": "one", "namespace": "default"}})
    );
}

#[tokio::test]
async fn watches_end_when_the_client_goes_away() {
    let api = TestApi::new();
    assert_eq!(api.events.subscriber_count(), 0);
    let mut watch = open(&api, "/v1/events/watch?since=0").await;
    api.create(Kind::Agent, "x").await;
    let (_, data) = watch.next().await;
    assert_eq!(data["name"], "x");
    assert_eq!(api.events.subscriber_count(), 1);
    drop(watch);
    assert_eq!(api.events.subscriber_count(), 0);
}
