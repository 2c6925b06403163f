//! The worker: registration/heartbeat, lease renewal, exclusive claims and shutdown.

#[path = "engine_support.rs"]
mod support;

use orloj_core::resources::{self, WorkerSpec};
use orloj_core::{Kind, Store, SystemClock};
use orloj_runtime::engine::agent_turn::AgentRunner;
use orloj_runtime::worker::{Worker, WorkerConfig};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio_util::sync::CancellationToken;

fn worker(store: &Arc<dyn Store>, model: Arc<MockModel>, config: WorkerConfig) -> Worker {
    let router = Arc::new(StoreRouter {
        store: store.clone(),
        model,
    });
    let tools = Arc::new(FakeTools::default());
    let clock = Arc::new(SystemClock);
    let runner = AgentRunner::new(tools.clone(), clock.clone()).with_step_interval(Duration::ZERO);
    Worker::new(config, store.clone(), clock, router, tools).with_runner(runner)
}

fn fast(id: &str) -> WorkerConfig {
    WorkerConfig {
        worker_id: id.into(),
        heartbeat_interval: Duration::from_millis(30),
        poll_interval: Duration::from_millis(10),
        lease_duration: Duration::from_millis(300),
        drain_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

const SYSTEM: &str = "---\napiVersion: orloj.dev/v1\nkind: AgentSystem\nmetadata: {name: s}\nspec: {agents: [solo]}\n";

async fn setup(store: &Arc<dyn Store>, tasks: &[&str]) {
    let mut yaml = format!("{ENDPOINT}{}{SYSTEM}", agent("solo", "  prompt: plan"));
    for t in tasks {
        yaml.push_str(&task_manifest(t, "s", ""));
    }
    apply(store, &yaml).await;
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Waits until object `name` of `kind` (namespace default) has phase `phase`.
async fn wait_phase(store: &Arc<dyn Store>, kind: Kind, name: &str, phase: &str) {
    wait_for(&format!("{kind} {name} {phase}"), || {
        let s = store.clone();
        async move {
            s.get(kind, "default", name)
                .await
                .is_ok_and(|o| o.phase() == phase)
        }
    })
    .await;
}

#[tokio::test]
async fn worker_registers_ready_then_not_ready_on_shutdown() {
    let store = store();
    let w = worker(&store, Arc::new(MockModel::default()), fast("w-reg"));
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    wait_phase(&store, Kind::Worker, "w-reg", "Ready").await;
    let obj = store
        .get(Kind::Worker, "default", "w-reg")
        .await
        .expect("worker");
    let status = resources::status_of::<WorkerSpec>(&obj).expect("status");
    assert!(!status.last_heartbeat.is_empty());
    let spec: WorkerSpec = resources::spec_of(&obj).expect("spec");
    assert_eq!(spec.region, "default");
    assert_eq!(spec.max_concurrent_tasks, 1);
    cancel.cancel();
    handle.await.expect("join").expect("run ok");
    let obj = store
        .get(Kind::Worker, "default", "w-reg")
        .await
        .expect("worker");
    let status = resources::status_of::<WorkerSpec>(&obj).expect("status");
    assert_eq!(status.phase, "NotReady");
    assert_eq!(status.last_error, "worker stopped");
}

#[tokio::test]
async fn lease_is_renewed_during_a_long_run() {
    let store = store();
    setup(&store, &["t1"]).await;
    let model = Arc::new(MockModel {
        delay: Duration::from_millis(400),
        ..Default::default()
    });
    let w = worker(&store, model, fast("w-lease"));
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    let s = store.clone();
    wait_for("task Running", || {
        let s = s.clone();
        async move { task(&s, "t1").await.phase() == "Running" }
    })
    .await;
    let first = status(&task(&store, "t1").await).lease_until;
    assert!(!first.is_empty());
    let s = store.clone();
    let first2 = first.clone();
    wait_for("lease renewal", || {
        let s = s.clone();
        let first = first2.clone();
        async move {
            let st = status(&task(&s, "t1").await);
            st.phase == "Running" && !st.lease_until.is_empty() && st.lease_until != first
        }
    })
    .await;
    let s = store.clone();
    wait_for("task Succeeded", || {
        let s = s.clone();
        async move { task(&s, "t1").await.phase() == "Succeeded" }
    })
    .await;
    // The run outlived the original 300ms lease and nobody else could take it over.
    let st = status(&task(&store, "t1").await);
    assert_eq!(st.attempts, 1);
    assert!(!st.history.iter().any(|h| h.event_type == "takeover"));
    cancel.cancel();
    handle.await.expect("join").expect("run ok");
}

#[tokio::test]
async fn two_workers_never_run_the_same_task() {
    let store = store();
    let names: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    setup(&store, &refs).await;
    let model = Arc::new(MockModel {
        delay: Duration::from_millis(5),
        ..Default::default()
    });
    let a = worker(&store, model.clone(), fast("w-a"));
    let b = worker(&store, model.clone(), fast("w-b"));
    let (ra, rb) = tokio::join!(a.run_until_idle(), b.run_until_idle());
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    assert_eq!(ra + rb, names.len());
    // One model call per task (a single no-tool step), so no task ran twice.
    assert_eq!(model.requests.lock().expect("lock").len(), names.len());
    for name in &names {
        let st = status(&task(&store, name).await);
        assert_eq!(st.phase, "Succeeded", "{name}: {}", st.last_error);
        assert_eq!(st.attempts, 1);
        assert_eq!(
            st.history
                .iter()
                .filter(|h| h.event_type == "claim")
                .count(),
            1
        );
        assert!(st.claimed_by.is_empty());
    }
}

#[tokio::test]
async fn shutdown_releases_tasks_it_cannot_finish_within_the_drain_deadline() {
    let store = store();
    setup(&store, &["t1"]).await;
    let model = Arc::new(MockModel {
        delay: Duration::from_secs(30),
        ..Default::default()
    });
    let mut config = fast("w-drain");
    config.drain_timeout = Duration::from_millis(50);
    let w = worker(&store, model, config);
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    let s = store.clone();
    wait_for("task Running", || {
        let s = s.clone();
        async move { task(&s, "t1").await.phase() == "Running" }
    })
    .await;
    cancel.cancel();
    handle.await.expect("join").expect("run ok");
    let st = status(&task(&store, "t1").await);
    assert_eq!(st.phase, "Running");
    assert!(st.claimed_by.is_empty(), "released: {}", st.claimed_by);
    // Another worker can take it over at once.
    let other = worker(&store, Arc::new(MockModel::default()), fast("w-next"));
    assert_eq!(other.run_until_idle().await.expect("runs"), 1);
    let st = status(&task(&store, "t1").await);
    assert_eq!(st.phase, "Succeeded", "{}", st.last_error);
    assert_eq!(st.attempts, 1);
}

#[tokio::test]
async fn capacity_bounds_claims() {
    let store = store();
    setup(&store, &["t1", "t2"]).await;
    let w = worker(&store, Arc::new(MockModel::default()), fast("w-cap"));
    let first = w.claim_next().await.expect("claim").expect("a task");
    assert_eq!(w.current_tasks(), 1);
    assert!(
        w.claim_next().await.expect("claim").is_none(),
        "at capacity"
    );
    w.execute(first).await.expect("execute");
    assert_eq!(w.current_tasks(), 0);
    assert!(w.claim_next().await.expect("claim").is_some());
}

#[tokio::test]
async fn a_not_ready_worker_record_claims_nothing() {
    let store = store();
    setup(&store, &["t1"]).await;
    let w = worker(&store, Arc::new(MockModel::default()), fast("w-stale"));
    w.heartbeat("NotReady").await.expect("heartbeat");
    assert!(w.claim_next().await.expect("claim").is_none());
    assert_eq!(task(&store, "t1").await.phase(), "Pending");
    w.heartbeat("Ready").await.expect("heartbeat");
    assert!(w.claim_next().await.expect("claim").is_some());
}

/// The worker claims without reading its record while its own Ready heartbeat is fresh: only
/// a heartbeat older than the stale limit gets a worker marked NotReady. Once its heartbeat is
/// that old, a NotReady mark stops its claims until it heartbeats again.
#[tokio::test]
async fn a_not_ready_mark_stops_claims_once_the_own_heartbeat_is_old() {
    let store = store();
    setup(&store, &["t1", "t2"]).await;
    let clock = Arc::new(orloj_core::ManualClock::new(chrono::Utc::now()));
    let router = Arc::new(StoreRouter {
        store: store.clone(),
        model: Arc::new(MockModel::default()),
    });
    let tools = Arc::new(FakeTools::default());
    let runner = AgentRunner::new(tools.clone(), clock.clone()).with_step_interval(Duration::ZERO);
    let config = WorkerConfig {
        max_concurrent_tasks: 4,
        ..fast("w-marked")
    };
    let w = Worker::new(config, store.clone(), clock.clone(), router, tools).with_runner(runner);
    w.heartbeat("Ready").await.expect("heartbeat");
    let mark_not_ready = || async {
        let record = store
            .get(Kind::Worker, "default", "w-marked")
            .await
            .expect("worker record");
        let mut status = record.status.clone();
        status["phase"] = serde_json::json!("NotReady");
        store
            .update_status(Kind::Worker, "default", "w-marked", None, status)
            .await
            .expect("mark NotReady");
    };
    mark_not_ready().await;
    assert!(
        w.claim_next().await.expect("claim").is_some(),
        "a fresh Ready heartbeat of its own: the mark cannot be the stale check's"
    );
    clock.advance(orloj_runtime::controllers::WORKER_STALE_AFTER);
    mark_not_ready().await;
    assert!(w.claim_next().await.expect("claim").is_none());
    assert_eq!(task(&store, "t2").await.phase(), "Pending");
    w.heartbeat("Ready").await.expect("heartbeat");
    assert!(w.claim_next().await.expect("claim").is_some());
}

#[tokio::test]
async fn a_created_task_is_claimed_on_the_store_signal_not_the_poll() {
    let store = store();
    setup(&store, &[]).await;
    let config = WorkerConfig {
        // The first poll runs at start; the next one is an hour away.
        poll_interval: Duration::from_secs(3600),
        ..fast("w-signal")
    };
    let w = worker(&store, Arc::new(MockModel::default()), config);
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    wait_phase(&store, Kind::Worker, "w-signal", "Ready").await;
    apply(&store, &task_manifest("late", "s", "")).await;
    // Created after the first poll: only the store's signal gets it claimed in time.
    wait_phase(&store, Kind::Task, "late", "Succeeded").await;
    cancel.cancel();
    handle.await.expect("join").expect("run ok");
}

#[tokio::test]
async fn a_freed_slot_claims_the_waiting_task_without_a_poll() {
    let store = store();
    setup(&store, &[]).await;
    let config = WorkerConfig {
        poll_interval: Duration::from_secs(3600),
        max_concurrent_tasks: 1,
        ..fast("w-slot")
    };
    let w = worker(&store, Arc::new(MockModel::default()), config);
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    wait_phase(&store, Kind::Worker, "w-slot", "Ready").await;
    // Both signal while the single slot is taken by the first.
    apply(
        &store,
        &format!(
            "{}{}",
            task_manifest("first", "s", ""),
            task_manifest("second", "s", "")
        ),
    )
    .await;
    wait_phase(&store, Kind::Task, "first", "Succeeded").await;
    wait_phase(&store, Kind::Task, "second", "Succeeded").await;
    cancel.cancel();
    handle.await.expect("join").expect("run ok");
}

#[tokio::test]
async fn a_worker_never_runs_more_tasks_than_its_slots() {
    never_more_tasks_than_slots(store()).await;
}

/// On Postgres a claim awaits the database, so the claims a worker runs at once are really in
/// flight together: the slots must be reserved before they start, not checked after.
#[tokio::test]
async fn a_worker_never_runs_more_tasks_than_its_slots_on_postgres() {
    let Some(db) = orloj_store::testing::TestDb::create().await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(
        orloj_store::PostgresStore::connect(&db.url, Default::default(), Arc::new(SystemClock))
            .await
            .expect("connect the Postgres store"),
    );
    never_more_tasks_than_slots(store).await;
}

async fn never_more_tasks_than_slots(store: Arc<dyn Store>) {
    let names: Vec<String> = (0..12).map(|i| format!("slot-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    setup(&store, &refs).await;
    // Slow enough that every slot is busy while the claims of the others would run.
    let model = Arc::new(MockModel {
        delay: Duration::from_millis(40),
        ..Default::default()
    });
    let config = WorkerConfig {
        max_concurrent_tasks: 2,
        ..fast("w-two")
    };
    let w = worker(&store, model, config);
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    let mut most = 0;
    let mut done = 0;
    for _ in 0..1000 {
        let tasks = store
            .list(Kind::Task, &Default::default())
            .await
            .expect("list tasks");
        let phases: Vec<String> = tasks.items.iter().map(|t| t.phase().to_string()).collect();
        most = most.max(phases.iter().filter(|p| *p == "Running").count());
        done = phases.iter().filter(|p| *p == "Succeeded").count();
        if done == names.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cancel.cancel();
    handle.await.expect("join").expect("run ok");
    assert_eq!(done, names.len(), "every task ran");
    assert_eq!(most, 2, "two slots: two tasks at once, never more");
}

/// A worker with free slots asks the store for as many tasks as it has slots in one claim (a
/// store that claims several in one write, as Postgres does, makes one round trip for them),
/// and never for more than are free.
#[tokio::test]
async fn a_worker_claims_as_many_tasks_as_it_has_free_slots_at_once() {
    let inner = store();
    let names = ["b1", "b2", "b3", "b4", "b5"];
    setup(&inner, &names).await;
    let counted = Outage::over(&inner, false, false);
    let store: Arc<dyn Store> = counted.clone();
    let config = WorkerConfig {
        max_concurrent_tasks: 8,
        ..fast("w-batch")
    };
    let w = worker(&store, Arc::new(MockModel::default()), config);
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    for name in names {
        wait_phase(&inner, Kind::Task, name, "Succeeded").await;
    }
    cancel.cancel();
    handle.await.expect("join").expect("run ok");
    let calls = counted.claim_calls.lock().expect("lock").clone();
    assert_eq!(
        calls.first(),
        Some(&(8, 5)),
        "the first claim asks for the 8 free slots and gets the 5 tasks: {calls:?}"
    );
    assert!(
        calls.iter().all(|(max, got)| *max <= 8 && got <= max),
        "{calls:?}"
    );
}

/// A store that is away (every call fails `Unavailable`, as when the database is down) while
/// `down` is set, and otherwise the memory store behind it. Counts the calls it failed. With
/// `claims_pass`, claims still reach the memory store during the outage. `lose_reply_to`: the
/// next status write that sets this phase is written, but its caller gets `Unavailable` (the
/// connection broke after the commit).
struct Outage {
    inner: Arc<dyn Store>,
    down: std::sync::atomic::AtomicBool,
    claims_pass: bool,
    failed: std::sync::atomic::AtomicUsize,
    lose_reply_to: std::sync::Mutex<Option<&'static str>>,
    /// Each `claim_tasks` call: how many tasks it asked for and how many it got.
    claim_calls: std::sync::Mutex<Vec<(usize, usize)>>,
    /// The store goes away once this many more tasks were claimed through `claim_task`.
    down_after_claims: std::sync::atomic::AtomicUsize,
}

impl Outage {
    fn over(inner: &Arc<dyn Store>, down: bool, claims_pass: bool) -> Arc<Outage> {
        Arc::new(Outage {
            inner: inner.clone(),
            down: down.into(),
            claims_pass,
            failed: 0.into(),
            lose_reply_to: Default::default(),
            claim_calls: Default::default(),
            down_after_claims: usize::MAX.into(),
        })
    }

    fn reachable(&self) -> orloj_core::Result<()> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Err(orloj_core::Error::unavailable("connection refused"));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for Outage {
    async fn ping(&self) -> orloj_core::Result<()> {
        self.reachable()?;
        self.inner.ping().await
    }
    async fn get(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
    ) -> orloj_core::Result<orloj_core::Object> {
        self.reachable()?;
        self.inner.get(kind, ns, name).await
    }
    async fn list(
        &self,
        kind: Kind,
        options: &orloj_core::ListOptions,
    ) -> orloj_core::Result<orloj_core::ObjectList> {
        self.reachable()?;
        self.inner.list(kind, options).await
    }
    async fn create(&self, object: orloj_core::Object) -> orloj_core::Result<orloj_core::Object> {
        self.reachable()?;
        self.inner.create(object).await
    }
    async fn update(&self, object: orloj_core::Object) -> orloj_core::Result<orloj_core::Object> {
        self.reachable()?;
        self.inner.update(object).await
    }
    async fn upsert(
        &self,
        object: orloj_core::Object,
    ) -> orloj_core::Result<(orloj_core::Object, bool)> {
        self.reachable()?;
        self.inner.upsert(object).await
    }
    async fn update_status(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        expected: Option<&str>,
        status: serde_json::Value,
    ) -> orloj_core::Result<orloj_core::Object> {
        self.reachable()?;
        let lose_reply = {
            let mut armed = self.lose_reply_to.lock().expect("lock");
            let hit = armed.is_some_and(|phase| status["phase"] == phase);
            if hit {
                *armed = None;
            }
            hit
        };
        let written = self
            .inner
            .update_status(kind, ns, name, expected, status)
            .await?;
        if lose_reply {
            return Err(orloj_core::Error::unavailable(
                "connection reset after commit",
            ));
        }
        Ok(written)
    }
    async fn delete(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        expected: Option<&str>,
    ) -> orloj_core::Result<orloj_core::Object> {
        self.reachable()?;
        self.inner.delete(kind, ns, name, expected).await
    }
    async fn current_revision(&self) -> orloj_core::Result<u64> {
        self.reachable()?;
        self.inner.current_revision().await
    }
    async fn watch(
        &self,
        kind: Option<Kind>,
        after: Option<u64>,
    ) -> orloj_core::Result<
        futures::stream::BoxStream<'static, orloj_core::Result<orloj_core::WatchEvent>>,
    > {
        self.reachable()?;
        self.inner.watch(kind, after).await
    }
    async fn claim_task(
        &self,
        request: &orloj_core::ClaimRequest,
    ) -> orloj_core::Result<Option<orloj_core::Object>> {
        if !self.claims_pass {
            self.reachable()?;
        }
        let claimed = self.inner.claim_task(request).await?;
        if claimed.is_some()
            && self
                .down_after_claims
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
                == 1
        {
            self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(claimed)
    }
    async fn claim_tasks(
        &self,
        request: &orloj_core::ClaimRequest,
        max: usize,
        marker_kinds: Option<&[Kind]>,
    ) -> orloj_core::Result<Vec<(orloj_core::Object, Option<orloj_core::ChangeMarker>)>> {
        if !self.claims_pass {
            self.reachable()?;
        }
        let claimed = self.inner.claim_tasks(request, max, marker_kinds).await?;
        self.claim_calls
            .lock()
            .expect("lock")
            .push((max, claimed.len()));
        Ok(claimed)
    }
    async fn renew_task_lease(
        &self,
        ns: &str,
        name: &str,
        worker: &str,
        lease: Duration,
    ) -> orloj_core::Result<orloj_core::Object> {
        self.reachable()?;
        self.inner.renew_task_lease(ns, name, worker, lease).await
    }
    async fn release_task(
        &self,
        ns: &str,
        name: &str,
        worker: &str,
    ) -> orloj_core::Result<orloj_core::Object> {
        self.reachable()?;
        self.inner.release_task(ns, name, worker).await
    }
    async fn append_task_log(&self, ns: &str, name: &str, entry: &str) -> orloj_core::Result<()> {
        self.reachable()?;
        self.inner.append_task_log(ns, name, entry).await
    }
    async fn task_logs(
        &self,
        ns: &str,
        name: &str,
        limit: usize,
    ) -> orloj_core::Result<Vec<String>> {
        self.reachable()?;
        self.inner.task_logs(ns, name, limit).await
    }
}

/// While the store is away the worker waits longer and longer between claim rounds instead of
/// asking on every poll, and it claims again once the store answers. Here the store is away
/// from the start: the rounds fail reading the worker's own record.
#[tokio::test]
async fn failed_claims_back_off_and_resume_when_the_store_answers() {
    claims_back_off_through_an_outage(false).await;
}

/// [`failed_claims_back_off_and_resume_when_the_store_answers`] for a worker that registered
/// before the outage: its rounds skip the own-record read and fail in the claim itself.
#[tokio::test]
async fn failed_claims_back_off_after_the_worker_registered() {
    claims_back_off_through_an_outage(true).await;
}

async fn claims_back_off_through_an_outage(registered_first: bool) {
    let inner = store();
    setup(&inner, &[]).await;
    let outage = Outage::over(&inner, !registered_first, false);
    let store: Arc<dyn Store> = outage.clone();
    // Heartbeats and approval sweeps far apart: the calls counted are the claim rounds'.
    let config = WorkerConfig {
        heartbeat_interval: Duration::from_secs(3600),
        ..fast("w-backoff")
    };
    let w = worker(&store, Arc::new(MockModel::default()), config);
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    if registered_first {
        wait_phase(&inner, Kind::Worker, "w-backoff", "Ready").await;
        outage.down.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    apply(&inner, &task_manifest("after-outage", "s", "")).await;
    // 150 polls of 10 ms: without a wait between failed rounds, about one claim per poll.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let while_down = outage.failed.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=20).contains(&while_down),
        "{while_down} store calls in 1.5 s of an outage"
    );
    assert_eq!(
        inner
            .get(Kind::Task, "default", "after-outage")
            .await
            .expect("the task")
            .phase(),
        "Pending"
    );
    outage
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    wait_phase(&inner, Kind::Task, "after-outage", "Succeeded").await;
    cancel.cancel();
    handle.await.expect("join").expect("run ok");
}

/// Claims one at a time (what `Store::claim_tasks` does for a store that cannot claim several
/// in one write): when a claim fails after others succeeded, the call returns the tasks it
/// claimed (held now, to be run) instead of the error, which the next call meets.
#[tokio::test]
async fn claims_one_at_a_time_keep_the_tasks_claimed_before_a_failure() {
    let inner = store();
    setup(&inner, &["k1", "k2", "k3"]).await;
    let outage = Outage::over(&inner, false, false);
    outage
        .down_after_claims
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let request = orloj_core::ClaimRequest {
        worker_id: "w-one".into(),
        lease: Duration::from_secs(30),
        region: String::new(),
        gpu: false,
        supported_models: vec![],
        namespace: None,
    };
    let claimed = orloj_core::store::claim_tasks_one_at_a_time(&*outage, &request, 5, None)
        .await
        .expect("the tasks claimed before the store went away");
    let keys: Vec<String> = claimed.iter().map(|(t, _)| t.key()).collect();
    assert_eq!(keys, ["default/k1", "default/k2"]);
    for key in ["k1", "k2"] {
        let held = inner.get(Kind::Task, "default", key).await.expect("task");
        assert_eq!(held.status["claimedBy"], serde_json::json!("w-one"));
    }
    let next = orloj_core::store::claim_tasks_one_at_a_time(&*outage, &request, 5, None).await;
    assert!(next.is_err(), "the next call meets the failure: {next:?}");
}

/// After failed claim rounds the worker claims again when the wait after the last one is over,
/// not at its next poll: here the poll is an hour off (its first tick comes at the start, while
/// the store is away), and the task waiting in the store still runs once the store answers.
#[tokio::test]
async fn claims_resume_when_their_wait_is_over_not_at_the_next_poll() {
    let inner = store();
    setup(&inner, &["waiting"]).await;
    let outage = Outage::over(&inner, true, false);
    let store: Arc<dyn Store> = outage.clone();
    let config = WorkerConfig {
        heartbeat_interval: Duration::from_secs(3600),
        poll_interval: Duration::from_secs(3600),
        ..fast("w-retry")
    };
    let w = worker(&store, Arc::new(MockModel::default()), config);
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    let failed = || outage.failed.load(std::sync::atomic::Ordering::SeqCst);
    wait_for("failed claim rounds", || {
        let n = failed();
        async move { n >= 3 }
    })
    .await;
    outage
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    wait_phase(&inner, Kind::Task, "waiting", "Succeeded").await;
    cancel.cancel();
    handle.await.expect("join").expect("run ok");
}

/// A sequential run whose store goes away while its model call is in flight: the lease cannot
/// be renewed and the result cannot be written until the store is back. The worker keeps the
/// result and writes it then; it does not give the run up and do the model call again.
#[tokio::test]
async fn a_sequential_run_keeps_its_result_through_a_store_outage() {
    run_through_an_outage(false).await;
}

/// [`a_sequential_run_keeps_its_result_through_a_store_outage`] with a free slot and claims that
/// still work: the worker claims its own task again once the lease has run out, and must not
/// start a second run of it beside the one waiting to write its result.
#[tokio::test]
async fn a_worker_does_not_run_its_own_task_twice_when_its_lease_ran_out() {
    run_through_an_outage(true).await;
}

async fn run_through_an_outage(claims_pass: bool) {
    let inner = store();
    setup(&inner, &["through-outage"]).await;
    let outage = Outage::over(&inner, false, claims_pass);
    let store: Arc<dyn Store> = outage.clone();
    let model = Arc::new(MockModel {
        delay: Duration::from_millis(200),
        ..Default::default()
    });
    let config = WorkerConfig {
        max_concurrent_tasks: 2,
        ..fast("w-outage")
    };
    let w = worker(&store, model.clone(), config);
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    wait_for("the model call", || {
        let model = model.clone();
        async move { !model.requests.lock().expect("lock").is_empty() }
    })
    .await;
    outage.down.store(true, std::sync::atomic::Ordering::SeqCst);
    // Longer than the 300 ms lease and the rest of the model call.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    outage
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    wait_phase(&inner, Kind::Task, "through-outage", "Succeeded").await;
    cancel.cancel();
    handle.await.expect("join").expect("run ok");
    assert_eq!(
        model.requests.lock().expect("lock").len(),
        1,
        "the model call ran again"
    );
}

/// The write of a run's result commits, but the connection breaks before the reply: the worker
/// tries again, finds its transition stored, and finishes as if the first try had answered
/// (its log line is written, the transition is not applied twice).
#[tokio::test]
async fn a_result_whose_reply_was_lost_is_not_written_twice() {
    let inner = store();
    setup(&inner, &["lost-reply"]).await;
    let outage = Outage::over(&inner, false, false);
    *outage.lose_reply_to.lock().expect("lock") = Some("Succeeded");
    let store: Arc<dyn Store> = outage.clone();
    let w = worker(&store, Arc::new(MockModel::default()), fast("w-lost-reply"));
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    wait_phase(&inner, Kind::Task, "lost-reply", "Succeeded").await;
    wait_for("the transition's log line", || {
        let inner = inner.clone();
        async move {
            inner
                .task_logs("default", "lost-reply", 100)
                .await
                .is_ok_and(|lines| lines.iter().any(|l| l.contains("Running->Succeeded")))
        }
    })
    .await;
    cancel.cancel();
    handle.await.expect("join").expect("run ok");
    assert!(
        outage.lose_reply_to.lock().expect("lock").is_none(),
        "the result write ran"
    );
    let task = inner
        .get(Kind::Task, "default", "lost-reply")
        .await
        .expect("the task");
    let history: Vec<String> = task.status["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| h["type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        history.iter().filter(|t| *t == "succeeded").count(),
        1,
        "{history:?}"
    );
}
