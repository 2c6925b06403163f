//! The task-scheduler controller (spec runtime §4.2) over the memory store with a manual clock:
//! requirement matching, least-loaded placement, stale workers, templates, no candidate.

use chrono::{DateTime, TimeZone, Utc};
use orloj_core::{Clock, Kind, ManualClock, Object, Store, resources, task_queue};
use orloj_runtime::events::{EventBus, MemoryEventBus};
use orloj_runtime::scheduler::TaskScheduler;
use orloj_store::MemoryStore;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

struct Env {
    clock: Arc<ManualClock>,
    store: Arc<MemoryStore>,
    scheduler: TaskScheduler,
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn env() -> Env {
    let clock = Arc::new(ManualClock::new(start()));
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let scheduler = TaskScheduler::new(store.clone(), clock.clone(), Duration::from_secs(1));
    Env {
        clock,
        store,
        scheduler,
    }
}

impl Env {
    /// A worker with `spec`, Ready, heartbeat `age_secs` ago, `current` tasks running.
    async fn worker(&self, name: &str, spec: Value, age_secs: i64, current: i64) {
        let mut o = Object::new(Kind::Worker, "default", name);
        o.spec = spec;
        let o = resources::normalize(o).expect("valid worker");
        let created = self.store.create(o).await.expect("create worker");
        let beat = self.clock.now() - chrono::Duration::seconds(age_secs);
        self.store
            .update_status(
                Kind::Worker,
                "default",
                name,
                Some(&created.metadata.resource_version),
                json!({"phase": "Ready", "lastHeartbeat": task_queue::format_time(beat), "currentTasks": current}),
            )
            .await
            .expect("worker status");
    }

    /// Sets how many tasks worker `name` reports running.
    async fn load(&self, name: &str, current: i64) {
        let w = self
            .store
            .get(Kind::Worker, "default", name)
            .await
            .expect("get worker");
        let mut status = w.status.clone();
        status["currentTasks"] = json!(current);
        self.store
            .update_status(
                Kind::Worker,
                "default",
                name,
                Some(&w.metadata.resource_version),
                status,
            )
            .await
            .expect("worker status");
    }

    async fn task(&self, name: &str, spec: Value) {
        let mut o = Object::new(Kind::Task, "default", name);
        o.spec = spec;
        let o = resources::normalize(o).expect("valid task");
        self.store.create(o).await.expect("create task");
    }

    async fn assigned(&self, name: &str) -> String {
        let t = self
            .store
            .get(Kind::Task, "default", name)
            .await
            .expect("get");
        t.status["assignedWorker"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    async fn history(&self, name: &str) -> Vec<String> {
        let t = self
            .store
            .get(Kind::Task, "default", name)
            .await
            .expect("get");
        t.status["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .map(|e| e["type"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn run(system: &str, requirements: Value) -> Value {
    json!({"system": system, "requirements": requirements})
}

#[tokio::test]
async fn region_gpu_and_model_requirements_pick_the_fitting_worker() {
    let e = env();
    e.worker(
        "a-plain",
        json!({"region": "us", "max_concurrent_tasks": 10}),
        1,
        0,
    )
    .await;
    e.worker(
        "b-eu-gpu",
        json!({"region": "EU", "capabilities": {"gpu": true}, "max_concurrent_tasks": 10}),
        1,
        5,
    )
    .await;
    e.worker(
        "c-llama",
        json!({"region": "us", "capabilities": {"supported_models": ["llama3"]}, "max_concurrent_tasks": 10}),
        1,
        5,
    )
    .await;
    e.task("t-region", run("s", json!({"region": "eu"}))).await;
    e.task("t-gpu", run("s", json!({"gpu": true}))).await;
    e.task(
        "t-model",
        run("s", json!({"model": "LLAMA3", "region": "us"})),
    )
    .await;
    // a-plain lists no models: it serves any, and it is the least loaded.
    e.task("t-any-model", run("s", json!({"model": "gpt-4o"})))
        .await;
    e.task("t-nobody", run("s", json!({"region": "ap"}))).await;

    let pass = e.scheduler.reconcile_once().await.expect("pass");
    assert_eq!(pass.assigned.len(), 4, "{pass:?}");
    assert_eq!(e.assigned("t-region").await, "b-eu-gpu");
    assert_eq!(e.assigned("t-gpu").await, "b-eu-gpu");
    assert_eq!(e.assigned("t-any-model").await, "a-plain");
    assert_eq!(e.assigned("t-model").await, "a-plain");
    // No candidate: left empty, nothing written.
    assert_eq!(e.assigned("t-nobody").await, "");
    assert!(e.history("t-nobody").await.is_empty());
    assert_eq!(e.history("t-gpu").await, vec!["assigned"]);

    // A model only one worker serves, when the unrestricted worker is full.
    let e = env();
    e.worker("a-full", json!({"max_concurrent_tasks": 1}), 1, 1)
        .await;
    e.worker(
        "b-llama",
        json!({"capabilities": {"supported_models": ["llama3"]}, "max_concurrent_tasks": 3}),
        1,
        2,
    )
    .await;
    e.worker(
        "c-other",
        json!({"capabilities": {"supported_models": ["mistral"]}, "max_concurrent_tasks": 3}),
        1,
        0,
    )
    .await;
    e.task("t", run("s", json!({"model": "llama3"}))).await;
    e.scheduler.reconcile_once().await.expect("pass");
    assert_eq!(e.assigned("t").await, "b-llama");
}

#[tokio::test]
async fn least_loaded_worker_wins_counting_this_pass_and_capacity() {
    let e = env();
    e.worker("w1", json!({"max_concurrent_tasks": 3}), 1, 1)
        .await;
    e.worker("w2", json!({"max_concurrent_tasks": 3}), 1, 0)
        .await;
    for name in ["t1", "t2", "t3", "t4", "t5", "t6"] {
        e.task(name, run("s", json!({}))).await;
    }
    let pass = e.scheduler.reconcile_once().await.expect("pass");
    // t1 → w2 (0 < 1); t2 → w1 (tie 1–1, first by name); t3 → w2; t4 → w1 (tie);
    // t5 → w2 (w1 is full); t6: both full, left empty.
    assert_eq!(e.assigned("t1").await, "w2");
    assert_eq!(e.assigned("t2").await, "w1");
    assert_eq!(e.assigned("t3").await, "w2");
    assert_eq!(e.assigned("t4").await, "w1");
    assert_eq!(e.assigned("t5").await, "w2");
    assert_eq!(e.assigned("t6").await, "");
    assert_eq!(pass.assigned.len(), 5);

    // A second pass keeps valid assignments and writes nothing new (kept ones count as load).
    let again = e.scheduler.reconcile_once().await.expect("pass");
    assert_eq!(again.assigned, vec![]);
    assert_eq!(again.cleared, vec![]);
    assert_eq!(e.history("t1").await, vec!["assigned"]);
}

#[tokio::test]
async fn an_assignment_to_a_worker_that_filled_up_moves_to_one_with_room() {
    let e = env();
    e.worker("w-busy", json!({"max_concurrent_tasks": 1}), 1, 0)
        .await;
    e.worker("w-free", json!({"max_concurrent_tasks": 1}), 1, 1)
        .await;
    e.task("t", run("s", json!({}))).await;
    e.scheduler.reconcile_once().await.expect("pass");
    assert_eq!(e.assigned("t").await, "w-busy");

    // w-busy filled up (claimed other work) and w-free finished its task: the Pending task
    // would wait for w-busy, since only the assigned worker may claim it.
    e.load("w-busy", 1).await;
    e.load("w-free", 0).await;
    let pass = e.scheduler.reconcile_once().await.expect("pass");
    assert_eq!(
        pass.cleared,
        vec![("default/t".to_string(), "w-busy".to_string())]
    );
    assert_eq!(e.assigned("t").await, "w-free");
    assert_eq!(
        e.history("t").await,
        vec!["assigned", "assignment_cleared", "assigned"]
    );

    // Every fitting worker full: the assignment is kept (moving it would not help).
    e.load("w-free", 1).await;
    let pass = e.scheduler.reconcile_once().await.expect("pass");
    assert_eq!(pass.cleared, vec![]);
    assert_eq!(pass.assigned, vec![]);
    assert_eq!(e.assigned("t").await, "w-free");
    assert_eq!(e.history("t").await.len(), 3);
}

#[tokio::test]
async fn stale_worker_is_not_chosen_and_loses_its_assignments() {
    let e = env();
    e.worker("w-old", json!({"max_concurrent_tasks": 5}), 1, 0)
        .await;
    e.task("t", run("s", json!({}))).await;
    e.scheduler.reconcile_once().await.expect("pass");
    assert_eq!(e.assigned("t").await, "w-old");

    // w-old stops heartbeating; w-new is fresh.
    e.clock.advance(Duration::from_secs(25));
    e.worker("w-new", json!({"max_concurrent_tasks": 5}), 0, 3)
        .await;
    let events = Arc::new(MemoryEventBus::new(16));
    let scheduler = e.scheduler.clone().with_events(events.clone());
    let pass = scheduler.reconcile_once().await.expect("pass");
    assert_eq!(
        pass.cleared,
        vec![("default/t".to_string(), "w-old".to_string())]
    );
    assert_eq!(e.assigned("t").await, "w-new");
    assert_eq!(
        e.history("t").await,
        vec!["assigned", "assignment_cleared", "assigned"]
    );
    let t = e.store.get(Kind::Task, "default", "t").await.expect("get");
    assert_eq!(
        t.status["history"][1]["message"],
        json!("cleared assignment from worker=w-old")
    );
    let published: Vec<String> = {
        use futures::StreamExt;
        events
            .subscribe(Some(0))
            .take(2)
            .map(|ev| format!("{} {}", ev.source, ev.event_type))
            .collect()
            .await
    };
    assert_eq!(
        published,
        vec![
            "task-scheduler task.assignment_cleared",
            "task-scheduler task.assigned"
        ]
    );

    // Every worker stale: the assignment is cleared and left empty.
    e.clock.advance(Duration::from_secs(25));
    e.scheduler.reconcile_once().await.expect("pass");
    assert_eq!(e.assigned("t").await, "");
    assert_eq!(
        e.history("t").await.last().map(String::as_str),
        Some("assignment_cleared")
    );
}

#[tokio::test]
async fn templates_running_and_not_yet_due_tasks_are_ignored() {
    let e = env();
    e.worker("w", json!({"max_concurrent_tasks": 5}), 1, 0)
        .await;
    e.task("a-template", json!({"system": "s", "mode": "template"}))
        .await;
    e.task("b-running", run("s", json!({}))).await;
    e.task("c-later", run("s", json!({}))).await;
    for (name, status) in [
        ("b-running", json!({"phase": "Running", "claimedBy": "x"})),
        (
            "c-later",
            json!({"phase": "Pending", "nextAttemptAt": task_queue::format_time(start() + chrono::Duration::seconds(60))}),
        ),
    ] {
        let cur = e.store.get(Kind::Task, "default", name).await.expect("get");
        e.store
            .update_status(
                Kind::Task,
                "default",
                name,
                Some(&cur.metadata.resource_version),
                status,
            )
            .await
            .expect("status");
    }
    let pass = e.scheduler.reconcile_once().await.expect("pass");
    assert_eq!(pass.assigned, vec![]);
    for name in ["a-template", "b-running", "c-later"] {
        assert_eq!(e.assigned(name).await, "", "{name}");
    }
    // Once due, the retry is placed (on the worker that still heartbeats).
    e.clock.advance(Duration::from_secs(61));
    e.worker("w2", json!({"max_concurrent_tasks": 5}), 0, 0)
        .await;
    let pass = e.scheduler.reconcile_once().await.expect("pass");
    assert_eq!(
        pass.assigned,
        vec![("default/c-later".to_string(), "w2".to_string())]
    );
}

#[tokio::test]
async fn no_workers_means_no_assignment() {
    let e = env();
    e.task("t", run("s", json!({}))).await;
    let pass = e.scheduler.reconcile_once().await.expect("pass");
    assert_eq!(pass, Default::default());
    assert_eq!(e.assigned("t").await, "");
}
