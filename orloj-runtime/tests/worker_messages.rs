//! Message-driven mode over the in-memory bus: the same graphs give the same trace, history
//! and output as sequential mode; message retry and dead-letter; a takeover after a worker
//! dies never repeats a completed step.

#[path = "engine_support.rs"]
mod support;

use orloj_core::bus::Bus;
use orloj_core::resources::TaskStatus;
use orloj_core::{Store, SystemClock};
use orloj_runtime::bus::MemoryBus;
use orloj_runtime::engine::agent_turn::AgentRunner;
use orloj_runtime::worker::{ExecutionMode, MessageConfig, Worker, WorkerConfig};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio_util::sync::CancellationToken;

fn config(id: &str, mode: ExecutionMode) -> WorkerConfig {
    WorkerConfig {
        worker_id: id.into(),
        heartbeat_interval: Duration::from_millis(50),
        poll_interval: Duration::from_millis(10),
        lease_duration: Duration::from_millis(400),
        drain_timeout: Duration::from_secs(5),
        max_concurrent_tasks: 4,
        execution_mode: mode,
        ..Default::default()
    }
}

fn worker(env: &Env, config: WorkerConfig, bus: Option<Arc<dyn Bus>>) -> Worker {
    // A short redelivery period so the lost-publish safety net acts within the tests.
    worker_with_ack_wait(env, config, bus, Duration::from_millis(600))
}

fn worker_with_ack_wait(
    env: &Env,
    config: WorkerConfig,
    bus: Option<Arc<dyn Bus>>,
    ack_wait: Duration,
) -> Worker {
    let router = Arc::new(StoreRouter {
        store: env.store.clone(),
        model: env.model.clone(),
    });
    let clock = Arc::new(SystemClock);
    let runner =
        AgentRunner::new(env.tools.clone(), clock.clone()).with_step_interval(Duration::ZERO);
    let w = Worker::new(config, env.store.clone(), clock, router, env.tools.clone())
        .with_runner(runner);
    match bus {
        Some(bus) => w.with_message_bus(
            bus,
            MessageConfig {
                ack_wait,
                ..MessageConfig::default()
            },
        ),
        None => w,
    }
}

async fn wait_terminal(store: &Arc<dyn Store>, name: &str) -> TaskStatus {
    for _ in 0..1000 {
        let s = status(&task(store, name).await);
        if matches!(s.phase.as_str(), "Succeeded" | "Failed" | "DeadLetter") {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("task {name} did not finish");
}

/// Runs `yaml` (which holds task `t`) in `mode` on a fresh store and returns the final status.
async fn run_in(mode: ExecutionMode, yaml: &str) -> (TaskStatus, Env) {
    let env = env_with(MockModel::default());
    apply(&env.store, yaml).await;
    match mode {
        ExecutionMode::Sequential => {
            let w = worker(&env, config("w", mode), None);
            w.run_until_idle().await.expect("run");
        }
        ExecutionMode::MessageDriven => {
            let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
            let w = worker(&env, config("w", mode), Some(bus));
            let cancel = CancellationToken::new();
            let handle = tokio::spawn(w.run(cancel.clone()));
            wait_terminal(&env.store, "t").await;
            cancel.cancel();
            handle.await.expect("join").expect("worker");
        }
    }
    (status(&task(&env.store, "t").await), env)
}

/// Task `t`'s log lines without their times.
async fn log_lines(env: &Env) -> Vec<String> {
    let lines = env
        .store
        .task_logs("default", "t", 100)
        .await
        .expect("logs");
    lines
        .iter()
        .map(|l| {
            l.split_once(' ')
                .map_or(l.as_str(), |(_, line)| line)
                .to_string()
        })
        .collect()
}

/// The parts of a status that must match between modes (no times, latencies or durations).
fn comparable(s: &TaskStatus) -> Value {
    let trace: Vec<Value> = s
        .trace
        .iter()
        .map(|t| {
            json!([
                t.event_type,
                t.agent,
                t.branch_id,
                t.step_id,
                t.attempt,
                t.message,
                t.tokens,
                t.tool_calls
            ])
        })
        .collect();
    let messages: Vec<Value> = s
        .messages
        .iter()
        .map(|m| {
            json!([
                m.message_id,
                m.from_agent,
                m.to_agent,
                m.branch_id,
                m.parent_branch_id,
                m.message_type,
                m.content,
                m.phase,
                m.attempts
            ])
        })
        .collect();
    let output: serde_json::Map<String, Value> = s
        .output
        .iter()
        .filter(|(k, _)| !k.ends_with("duration_ms"))
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let history: Vec<&str> = s.history.iter().map(|h| h.event_type.as_str()).collect();
    json!({
        "phase": s.phase,
        "attempts": s.attempts,
        "trace": trace,
        "messages": messages,
        "joins": s.join_states.iter().map(|j| json!([j.node, j.expected, j.activated, j.sources.len()])).collect::<Vec<_>>(),
        "output": output,
        "history": history,
    })
}

fn system(agents: &[&str], graph: &str) -> String {
    format!(
        "---\napiVersion: orloj.dev/v1\nkind: AgentSystem\nmetadata: {{name: s}}\nspec:\n  agents: [{}]\n{graph}\n",
        agents.join(", ")
    )
}

fn graphs() -> Vec<(&'static str, String)> {
    let agents = |names: &[&str]| -> String {
        names
            .iter()
            .map(|n| agent(n, &format!("  prompt: you are {n}")))
            .collect()
    };
    vec![
        (
            "pipeline",
            format!(
                "{ENDPOINT}{}{}{}",
                agents(&["planner", "research", "writer"]),
                system(
                    &["planner", "research", "writer"],
                    "  graph:\n    planner: {next: research}\n    research: {next: writer}"
                ),
                task_manifest("t", "s", "  input: {topic: rust}")
            ),
        ),
        (
            "fan-out and join",
            format!(
                "{ENDPOINT}{}{}{}",
                agents(&["manager", "x", "y", "editor"]),
                system(
                    &["manager", "x", "y", "editor"],
                    "  graph:\n    manager: {edges: [{to: x}, {to: y}]}\n    x: {next: editor}\n    y: {next: editor}\n    editor: {join: {mode: wait_for_all}}"
                ),
                task_manifest("t", "s", "  input: {topic: news}")
            ),
        ),
        (
            "loop bounded by max_turns",
            format!(
                "{ENDPOINT}{}{}{}",
                agents(&["lead", "helper"]),
                system(
                    &["lead", "helper"],
                    "  graph:\n    lead: {next: helper}\n    helper: {next: lead}"
                ),
                task_manifest("t", "s", "  max_turns: 5\n  input: {topic: loop}")
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_modes_give_the_same_trace_history_and_output() {
    for (name, yaml) in graphs() {
        let (sequential, sequential_env) = run_in(ExecutionMode::Sequential, &yaml).await;
        let (driven, driven_env) = run_in(ExecutionMode::MessageDriven, &yaml).await;
        let logs = log_lines(&sequential_env).await;
        assert!(
            logs.first()
                .is_some_and(|l| l.starts_with("task claimed by worker=w")),
            "{name}: the claim is logged first: {logs:?}"
        );
        assert_eq!(logs, log_lines(&driven_env).await, "{name}: logs differ");
        assert_eq!(sequential.phase, "Succeeded", "{name}: {sequential:#?}");
        assert!(
            sequential.messages.len() >= 3,
            "{name}: the graph handed work on"
        );
        assert_eq!(
            comparable(&sequential),
            comparable(&driven),
            "{name}: modes differ"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_retry_then_dead_letter_keeps_the_task_attempt() {
    let model = MockModel {
        delay: Duration::from_millis(50),
        ..Default::default()
    };
    let env = env_with(model);
    let yaml = format!(
        "{ENDPOINT}{}{}{}",
        agent("slow", "  limits: {timeout: 5ms}"),
        system(&["slow"], ""),
        task_manifest(
            "t",
            "s",
            "  retry: {max_attempts: 4, backoff: 1s}\n  message_retry: {max_attempts: 3, backoff: 10ms, max_backoff: 20ms, jitter: none}"
        )
    );
    apply(&env.store, &yaml).await;
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
    let w = worker(&env, config("w", ExecutionMode::MessageDriven), Some(bus));
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    let s = wait_terminal(&env.store, "t").await;
    cancel.cancel();
    handle.await.expect("join").expect("worker");
    assert_eq!(s.phase, "DeadLetter", "{s:#?}");
    assert_eq!(s.attempts, 1, "message retries do not start task attempts");
    assert_eq!(s.messages.len(), 1);
    assert_eq!(s.messages[0].phase, "DeadLetter");
    assert_eq!(s.messages[0].attempts, 3);
    let retries = s
        .trace
        .iter()
        .filter(|t| t.event_type == "agent_message_retry_scheduled")
        .count();
    assert_eq!(retries, 2);
    assert!(
        s.last_error.contains("dead-lettered after 3 attempts"),
        "{}",
        s.last_error
    );
    assert_eq!(env.model.requests.lock().expect("lock").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_retryable_message_failure_ends_the_task_failed() {
    let env = env_with(MockModel::default());
    let yaml = format!(
        "{ENDPOINT}{}{}{}",
        agent("a", "  prompt: hi\n  tools: [forbidden]"),
        tool("forbidden")
            + "---\napiVersion: orloj.dev/v1\nkind: AgentPolicy\nmetadata: {name: p}\nspec: {target_systems: [s], blocked_tools: [forbidden]}\n",
        system(&["a"], "") + &task_manifest("t", "s", "  message_retry: {max_attempts: 5}")
    );
    apply(&env.store, &yaml).await;
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
    let w = worker(&env, config("w", ExecutionMode::MessageDriven), Some(bus));
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    let s = wait_terminal(&env.store, "t").await;
    cancel.cancel();
    handle.await.expect("join").expect("worker");
    assert_eq!(s.phase, "Failed", "{s:#?}");
    assert_eq!(s.messages[0].attempts, 1, "not retried");
}

/// Model calls per agent so far.
fn calls(env: &Env, agent: &str) -> usize {
    env.model
        .requests
        .lock()
        .expect("lock")
        .iter()
        .filter(|r| r.agent == agent)
        .count()
}

/// The pipeline graph on a fresh store whose model takes 300 ms per call, and a memory bus.
async fn slow_pipeline() -> (Env, Arc<dyn Bus>) {
    let model = MockModel {
        delay: Duration::from_millis(300),
        ..Default::default()
    };
    let env = env_with(model);
    let (_, yaml) = graphs().remove(0);
    apply(&env.store, &yaml).await;
    (env, Arc::new(MemoryBus::default()))
}

async fn takeover_skips_completed_steps(mode: ExecutionMode) {
    let (env, bus) = slow_pipeline().await;
    let bus_for = |mode| (mode == ExecutionMode::MessageDriven).then(|| bus.clone());
    let first = worker(&env, config("first", mode), bus_for(mode));
    // Its own runtime, so the kill below stops all of its tasks at once, as a process kill
    // does (aborting its `run` future would leave its spawned handlers a last poll each).
    let first_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let _first = first_runtime.spawn(first.run(CancellationToken::new()));
    // Wait until planner's step is recorded and research's model call is in flight.
    for _ in 0..500 {
        let s = status(&task(&env.store, "t").await);
        if s.trace.iter().any(|t| t.event_type == "agent_end") && calls(&env, "research") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(calls(&env, "research"), 1, "research is in flight");
    // Kill the first worker mid-step; its lease stays until it expires.
    first_runtime.shutdown_background();
    let second = worker(&env, config("second", mode), bus_for(mode));
    let cancel_second = CancellationToken::new();
    let second = tokio::spawn(second.run(cancel_second.clone()));
    let s = wait_terminal(&env.store, "t").await;
    cancel_second.cancel();
    second.await.expect("join").expect("worker");
    assert_eq!(s.phase, "Succeeded", "{mode:?}: {s:#?}");
    assert!(
        s.history.iter().any(|h| h.event_type == "takeover"),
        "{mode:?}: taken over"
    );
    assert_eq!(calls(&env, "planner"), 1, "{mode:?}: planner ran once");
    assert_eq!(
        calls(&env, "research"),
        2,
        "{mode:?}: only the step in flight ran again"
    );
    assert_eq!(calls(&env, "writer"), 1, "{mode:?}: writer ran once");
    assert_eq!(
        &*s.output["execution_order"],
        "planner -> research -> writer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_takeover_never_repeats_a_completed_step() {
    takeover_skips_completed_steps(ExecutionMode::Sequential).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_driven_takeover_never_repeats_a_completed_step() {
    takeover_skips_completed_steps(ExecutionMode::MessageDriven).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_task_messages_do_not_stop_the_consumer() {
    use orloj_core::bus::{AgentMessage, Outgoing, inbox_subject};
    let env = env_with(MockModel::default());
    let (_, yaml) = graphs().remove(0);
    let bus = Arc::new(MemoryBus::default());
    let w = worker(
        &env,
        config("w", ExecutionMode::MessageDriven),
        Some(bus.clone()),
    );
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let subject = inbox_subject("orloj.agentmsg", "default", "planner");
    bus.publish(Outgoing {
        subject: subject.clone(),
        dedupe_id: "garbage".into(),
        payload: b"{not json".to_vec(),
    })
    .await
    .expect("publish");
    let ghost = AgentMessage {
        message_id: "default/ghost/a001/h001/system/planner".into(),
        task_id: "default/ghost".into(),
        attempt: 1,
        to_agent: "planner".into(),
        ..Default::default()
    };
    bus.publish(Outgoing {
        subject,
        dedupe_id: "ghost".into(),
        payload: ghost.encode(),
    })
    .await
    .expect("publish");
    apply(&env.store, &yaml).await;
    let s = wait_terminal(&env.store, "t").await;
    cancel.cancel();
    handle.await.expect("join").expect("worker");
    assert_eq!(s.phase, "Succeeded");
}

/// A bus that loses the first `drop` publishes (acknowledges them, delivers nothing).
struct LossyBus {
    inner: MemoryBus,
    drop: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Bus for LossyBus {
    async fn publish(&self, message: orloj_core::bus::Outgoing) -> orloj_core::Result<()> {
        use std::sync::atomic::Ordering;
        if self
            .drop
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Ok(());
        }
        self.inner.publish(message).await
    }

    async fn subscribe(
        &self,
        consumer: &orloj_core::bus::ConsumerConfig,
    ) -> orloj_core::Result<
        futures::stream::BoxStream<'static, orloj_core::Result<orloj_core::bus::Delivery>>,
    > {
        self.inner.subscribe(consumer).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_message_is_published_again_by_its_holder() {
    let env = env_with(MockModel::default());
    let (_, yaml) = graphs().remove(0);
    apply(&env.store, &yaml).await;
    let bus: Arc<dyn Bus> = Arc::new(LossyBus {
        inner: MemoryBus::default(),
        drop: 2.into(),
    });
    let w = worker(&env, config("w", ExecutionMode::MessageDriven), Some(bus));
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    let s = wait_terminal(&env.store, "t").await;
    cancel.cancel();
    handle.await.expect("join").expect("worker");
    assert_eq!(s.phase, "Succeeded", "{s:#?}");
    assert_eq!(
        env.model.requests.lock().expect("lock").len(),
        3,
        "each agent ran once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_created_again_under_the_same_name_runs_again() {
    use orloj_core::Kind;
    let env = env_with(MockModel::default());
    let (_, yaml) = graphs().remove(0);
    apply(&env.store, &yaml).await;
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
    // No safety-net republish within the test: the new task's messages must not be taken
    // for duplicates of the old one's.
    let w = worker_with_ack_wait(
        &env,
        config("w", ExecutionMode::MessageDriven),
        Some(bus),
        Duration::from_secs(120),
    );
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    assert_eq!(wait_terminal(&env.store, "t").await.phase, "Succeeded");
    env.store
        .delete(Kind::Task, "default", "t", None)
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_millis(5)).await;
    apply(
        &env.store,
        &task_manifest("t", "s", "  input: {topic: rust}"),
    )
    .await;
    let s = wait_terminal(&env.store, "t").await;
    cancel.cancel();
    handle.await.expect("join").expect("worker");
    assert_eq!(s.phase, "Succeeded", "{s:#?}");
    assert_eq!(env.model.requests.lock().expect("lock").len(), 6);
}

/// A task cancelled while a step is in flight stays cancelled: the step's write (which starts
/// from the task as the worker last wrote it) conflicts, re-reads and finds the task no longer
/// held, so nothing is written over the cancellation and no later agent runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cancelled_mid_step_is_not_written_over() {
    let (env, bus) = slow_pipeline().await;
    let w = worker(
        &env,
        config("w", ExecutionMode::MessageDriven),
        Some(bus.clone()),
    );
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    for _ in 0..500 {
        if calls(&env, "research") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(calls(&env, "research"), 1, "research is in flight");
    let running = task(&env.store, "t").await;
    let mut cancelled = running.status.clone();
    cancelled["phase"] = json!("Cancelled");
    let cancelled = env
        .store
        .update_status(orloj_core::Kind::Task, "default", "t", None, cancelled)
        .await
        .expect("cancel");
    // Past the research call and a would-be writer step.
    tokio::time::sleep(Duration::from_millis(900)).await;
    cancel.cancel();
    handle.await.expect("join").expect("worker");
    let after = task(&env.store, "t").await;
    assert_eq!(status(&after).phase, "Cancelled");
    assert_eq!(
        after.metadata.resource_version, cancelled.metadata.resource_version,
        "nothing was written after the cancellation"
    );
    assert_eq!(calls(&env, "writer"), 0, "no later agent ran");
}
