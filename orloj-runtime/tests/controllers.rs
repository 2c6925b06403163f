//! The status controller moves accepted resources to Ready and stale workers to NotReady.

use chrono::{TimeZone, Utc};
use orloj_core::{Kind, ManualClock, Object, Store, resources};
use orloj_runtime::controllers::StatusController;
use orloj_store::MemoryStore;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn object(kind: Kind, name: &str, spec: serde_json::Value) -> Object {
    let mut o = Object::new(kind, "default", name);
    o.spec = spec;
    resources::normalize(o).expect("valid object")
}

#[tokio::test]
async fn pending_resources_become_ready_and_track_generation() {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
    ));
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let controller = StatusController::new(store.clone(), clock.clone(), Duration::from_secs(1));

    let created = store
        .create(object(
            Kind::ModelEndpoint,
            "m",
            json!({"provider": "mock", "default_model": "x"}),
        ))
        .await
        .expect("create");
    assert_eq!(created.phase(), "Pending");
    assert_eq!(controller.reconcile_once().await.expect("reconcile"), 1);
    let ready = store
        .get(Kind::ModelEndpoint, "default", "m")
        .await
        .expect("get");
    assert_eq!(ready.phase(), "Ready");
    assert_eq!(ready.status["observedGeneration"], json!(1));
    // Nothing left to do: a second pass writes nothing.
    assert_eq!(controller.reconcile_once().await.expect("reconcile"), 0);

    let mut changed = ready.clone();
    changed.spec["default_model"] = json!("y");
    let updated = store.update(changed).await.expect("update");
    assert_eq!(updated.metadata.generation, 2);
    assert_eq!(controller.reconcile_once().await.expect("reconcile"), 1);
    let observed = store
        .get(Kind::ModelEndpoint, "default", "m")
        .await
        .expect("get");
    assert_eq!(observed.status["observedGeneration"], json!(2));
    assert_eq!(observed.phase(), "Ready");
}

#[tokio::test]
async fn workers_with_stale_heartbeats_become_not_ready() {
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let controller = StatusController::new(store.clone(), clock.clone(), Duration::from_secs(1));
    let w = store
        .create(object(Kind::Worker, "w1", json!({"region": "default"})))
        .await
        .expect("create");
    store
        .update_status(
            Kind::Worker,
            "default",
            "w1",
            Some(&w.metadata.resource_version),
            json!({"phase": "Ready", "lastHeartbeat": "2026-01-01T00:00:00Z"}),
        )
        .await
        .expect("heartbeat");
    clock.advance(Duration::from_secs(10));
    controller.reconcile_once().await.expect("reconcile");
    assert_eq!(
        store
            .get(Kind::Worker, "default", "w1")
            .await
            .expect("get")
            .phase(),
        "Ready"
    );
    clock.advance(Duration::from_secs(15));
    controller.reconcile_once().await.expect("reconcile");
    let stale = store.get(Kind::Worker, "default", "w1").await.expect("get");
    assert_eq!(stale.phase(), "NotReady");
    assert_eq!(stale.status["lastError"], json!("worker heartbeat stale"));
}
