//! The configuration read cache: reads are kept between refreshes, a refresh sees every change
//! committed before it, and a worker resolving through it sees configuration changes at once.

#[path = "engine_support.rs"]
mod support;

use orloj_core::{ErrorKind, Kind, ListOptions, Object, Store, SystemClock};
use orloj_runtime::engine::agent_turn::AgentRunner;
use orloj_runtime::read_cache::ReadCache;
use orloj_runtime::worker::{TaskResult, Worker, WorkerConfig};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn prompt_of(object: &Object) -> String {
    object.spec["prompt"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn set_prompt(store: &Arc<dyn Store>, name: &str, prompt: &str) {
    let mut agent = store
        .get(Kind::Agent, "default", name)
        .await
        .expect("agent");
    agent.spec["prompt"] = json!(prompt);
    store.update(agent).await.expect("update agent");
}

async fn listed(cache: &ReadCache) -> usize {
    cache
        .list(Kind::Agent, &ListOptions::default())
        .await
        .expect("list")
        .items
        .len()
}

#[tokio::test]
async fn reads_are_kept_until_a_refresh_sees_a_change() {
    let store = store();
    apply(&store, &agent("a", "  prompt: first")).await;
    let cache = ReadCache::for_resolution(store.clone());

    // Not refreshed yet: reads go to the store.
    set_prompt(&store, "a", "second").await;
    let read = cache.get(Kind::Agent, "default", "a").await.expect("get");
    assert_eq!(prompt_of(&read), "second");

    cache.refresh().await.expect("refresh");
    let kept = cache.get(Kind::Agent, "default", "a").await.expect("get");
    let missing = cache.get(Kind::Agent, "default", "b").await;
    assert_eq!(
        missing.map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::NotFound)
    );
    assert_eq!(listed(&cache).await, 1);

    // Changed behind the cache's back: what was read is served until the next refresh.
    set_prompt(&store, "a", "third").await;
    apply(&store, &agent("b", "  prompt: new")).await;
    let stale = cache.get(Kind::Agent, "default", "a").await.expect("get");
    assert_eq!(prompt_of(&stale), prompt_of(&kept));
    assert!(cache.get(Kind::Agent, "default", "b").await.is_err());
    assert_eq!(listed(&cache).await, 1);

    cache.refresh().await.expect("refresh");
    let fresh = cache.get(Kind::Agent, "default", "a").await.expect("get");
    assert_eq!(prompt_of(&fresh), "third");
    assert_eq!(
        prompt_of(
            &cache
                .get(Kind::Agent, "default", "b")
                .await
                .expect("b exists now")
        ),
        "new"
    );
    assert_eq!(listed(&cache).await, 2);
}

#[tokio::test]
async fn writes_to_other_kinds_keep_the_entries_and_writes_through_it_drop_them() {
    let store = store();
    apply(
        &store,
        &format!("{ENDPOINT}{}", agent("a", "  prompt: first")),
    )
    .await;
    let cache = ReadCache::for_resolution(store.clone());
    cache.refresh().await.expect("refresh");
    cache.get(Kind::Agent, "default", "a").await.expect("get");

    // Tasks are not cached: a refresh after task writes keeps the agent read.
    apply(&store, &task_manifest("t", "s", "")).await;
    store
        .update_status(
            Kind::Task,
            "default",
            "t",
            None,
            json!({"phase": "Pending"}),
        )
        .await
        .expect("task status");
    cache.refresh().await.expect("refresh");
    set_prompt(&store, "a", "behind").await;
    let kept = cache.get(Kind::Agent, "default", "a").await.expect("get");
    assert_eq!(prompt_of(&kept), "first", "kept across unrelated writes");

    // A write through the cache is seen at once, without a refresh.
    let mut through = kept.clone();
    through.spec["prompt"] = json!("through");
    through.metadata.resource_version = String::new();
    cache
        .update(through)
        .await
        .expect("update through the cache");
    let seen = cache.get(Kind::Agent, "default", "a").await.expect("get");
    assert_eq!(prompt_of(&seen), "through");
}

fn cached_worker(store: &Arc<dyn Store>, model: Arc<MockModel>) -> Worker {
    let cache = Arc::new(ReadCache::for_resolution(store.clone()));
    let router = Arc::new(StoreRouter {
        store: cache.clone(),
        model,
    });
    let tools = Arc::new(FakeTools::default());
    let clock = Arc::new(SystemClock);
    let runner = AgentRunner::new(tools.clone(), clock.clone()).with_step_interval(Duration::ZERO);
    Worker::new(WorkerConfig::default(), store.clone(), clock, router, tools)
        .with_runner(runner)
        .with_read_cache(cache)
}

#[tokio::test]
async fn a_worker_resolving_through_the_cache_sees_each_change_before_the_next_task() {
    let store = store();
    let model = Arc::new(MockModel::default());
    let system = "---\napiVersion: orloj.dev/v1\nkind: AgentSystem\nmetadata: {name: s}\nspec: {agents: [solo]}\n";
    apply(
        &store,
        &format!(
            "{ENDPOINT}{}{system}{}",
            agent("solo", "  prompt: plan"),
            task_manifest("t1", "s", "")
        ),
    )
    .await;
    let worker = cached_worker(&store, model.clone());
    assert_eq!(worker.run_until_idle().await.expect("run"), 1);
    assert_eq!(status(&task(&store, "t1").await).phase, "Succeeded");

    // A changed prompt reaches the model of the next task.
    set_prompt(&store, "solo", "changed prompt").await;
    apply(&store, &task_manifest("t2", "s", "")).await;
    assert_eq!(worker.run_until_idle().await.expect("run"), 1);
    let last = model.requests.lock().expect("lock").last().cloned();
    let system_prompt = last
        .expect("a model call")
        .messages
        .first()
        .map(|m| m.content.clone())
        .unwrap_or_default();
    assert!(
        system_prompt.contains("changed prompt"),
        "system prompt: {system_prompt}"
    );

    // A deleted agent fails the next task's resolution instead of being served from memory.
    store
        .delete(Kind::Agent, "default", "solo", None)
        .await
        .expect("delete agent");
    apply(&store, &task_manifest("t3", "s", "")).await;
    let claimed = worker.claim_next().await.expect("claim").expect("t3");
    assert!(matches!(
        worker.execute(claimed).await.expect("execute"),
        TaskResult::Written(_)
    ));
    let t3 = status(&task(&store, "t3").await);
    assert_eq!(t3.phase, "Failed", "{t3:?}");
    assert!(
        t3.last_error.contains("agent \"solo\" not found"),
        "{}",
        t3.last_error
    );
}

/// The marker a task's claim read stands in for one refresh, that task's as the claim wrote
/// it: what was kept is dropped when the marker shows a change before the claim; any other
/// version of the task, and the next refresh, read a marker.
#[tokio::test]
async fn a_claim_marker_stands_in_for_one_refresh_of_its_task() {
    let store = store();
    apply(&store, &agent("a", "  prompt: first")).await;
    apply(&store, &task_manifest("t", "s", "")).await;
    let claimed = task(&store, "t").await;
    let cache = ReadCache::for_resolution(store.clone());
    cache.refresh().await.expect("refresh");
    let read = cache.get(Kind::Agent, "default", "a").await.expect("get");
    assert_eq!(prompt_of(&read), "first");
    let marker = || async {
        store
            .change_marker(cache.kinds())
            .await
            .expect("marker")
            .expect("the memory store has markers")
    };

    set_prompt(&store, "a", "second").await;
    cache.note_claim(&claimed, marker().await);
    cache.refresh_for(&claimed).await.expect("refresh");
    let read = cache.get(Kind::Agent, "default", "a").await.expect("get");
    assert_eq!(prompt_of(&read), "second", "changed before the claim");

    // Used up: the task's next refresh reads a marker of its own.
    set_prompt(&store, "a", "third").await;
    cache.refresh_for(&claimed).await.expect("refresh");
    let read = cache.get(Kind::Agent, "default", "a").await.expect("get");
    assert_eq!(prompt_of(&read), "third");

    // A later version of the task (a retry, a resumed approval) does not use an old claim's
    // marker, even one noted and never used.
    set_prompt(&store, "a", "fourth").await;
    cache.refresh().await.expect("refresh");
    assert_eq!(
        prompt_of(&cache.get(Kind::Agent, "default", "a").await.expect("get")),
        "fourth"
    );
    cache.note_claim(&claimed, marker().await);
    set_prompt(&store, "a", "fifth").await;
    let mut later = claimed.clone();
    later.metadata.resource_version = "9".into();
    cache.refresh_for(&later).await.expect("refresh");
    let read = cache.get(Kind::Agent, "default", "a").await.expect("get");
    assert_eq!(prompt_of(&read), "fifth");
}
