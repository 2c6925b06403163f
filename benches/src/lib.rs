//! Helpers of the dispatch benchmarks (`cargo bench -p orloj-benches`, see `benches/README.md`).
//!
//! [`Dispatch`] runs the real dispatch path: tasks are created in a [`Store`], a message-driven
//! [`Worker`] claims them, kicks them off on a [`Bus`], consumes every agent message (the graph
//! engine with the mock model provider), persists each step and finalizes the task. Completion
//! is observed through the worker's control-plane events (`task.succeeded`), so nothing polls.
//! [`TimedBus`] wraps the bus to measure each hop (publish → consumed, processed and acked).
//! [`raw`] holds the baselines: a bare Postgres insert → claim → complete loop and a bare
//! JetStream publish → consume → ack loop.

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use orloj_core::bus::{Acker, AgentMessage, Bus, ConsumerConfig, Delivery, Outgoing};
use orloj_core::{Kind, Object, Store, SystemClock, resources};
use orloj_runtime::events::{Event, EventBus};
use orloj_runtime::worker::{ExecutionMode, MessageConfig, Worker, WorkerConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub mod raw;

/// How long a batch may take before the bench gives up (a stuck run, not a slow one).
const BATCH_TIMEOUT: Duration = Duration::from_secs(300);

/// The mock ModelEndpoint every agent uses.
const ENDPOINT: &str = "apiVersion: orloj.dev/v1\nkind: ModelEndpoint\nmetadata: {name: mock}\nspec: {provider: mock, default_model: mock-1}\n";

/// Manifests of a pipeline system `pipeline-<n>` of `n` agents (`p<n>-a1 -> ... -> p<n>-an`).
pub fn pipeline_manifests(n: usize) -> String {
    let names: Vec<String> = (1..=n).map(|i| format!("p{n}-a{i}")).collect();
    let mut yaml = String::new();
    for name in &names {
        yaml.push_str(&format!(
            "---\napiVersion: orloj.dev/v1\nkind: Agent\nmetadata: {{name: {name}}}\nspec:\n  model_ref: mock\n  prompt: you are {name}\n"
        ));
    }
    let graph: String = names
        .windows(2)
        .map(|w| format!("    {}: {{next: {}}}\n", w[0], w[1]))
        .collect();
    yaml.push_str(&format!(
        "---\napiVersion: orloj.dev/v1\nkind: AgentSystem\nmetadata: {{name: pipeline-{n}}}\nspec:\n  agents: [{}]\n{}",
        names.join(", "),
        if graph.is_empty() {
            String::new()
        } else {
            format!("  graph:\n{graph}")
        }
    ));
    yaml
}

/// Normalizes and stores every document of `yaml`.
pub async fn apply(store: &dyn Store, yaml: &str) -> orloj_core::Result<()> {
    for obj in orloj_core::parse_manifests("bench", yaml)? {
        store.upsert(resources::normalize(obj)?).await?;
    }
    Ok(())
}

/// A Task of system `pipeline-<agents>` named `name`.
fn task_object(name: &str, agents: usize) -> orloj_core::Result<Object> {
    let yaml = format!(
        "apiVersion: orloj.dev/v1\nkind: Task\nmetadata: {{name: {name}}}\nspec:\n  system: pipeline-{agents}\n  input: {{topic: benchmarks}}\n"
    );
    let mut docs = orloj_core::parse_manifests("bench", &yaml)?;
    let obj = docs
        .pop()
        .ok_or_else(|| orloj_core::Error::invalid("task manifest is empty"))?;
    resources::normalize(obj)
}

/// Counts terminal task transitions published by the worker.
#[derive(Default)]
pub struct Completion {
    succeeded: AtomicUsize,
    failed: AtomicUsize,
    notify: Notify,
}

impl Completion {
    /// Tasks that ended `Succeeded` so far.
    pub fn succeeded(&self) -> usize {
        self.succeeded.load(Ordering::SeqCst)
    }

    /// Tasks that ended any other way (or were rescheduled) so far.
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// Waits until `target` tasks succeeded; errors when one fails or on timeout.
    async fn wait_for(&self, target: usize) -> Result<(), String> {
        let wait = async {
            loop {
                let notified = self.notify.notified();
                if self.failed() > 0 {
                    return Err(format!("{} task(s) did not succeed", self.failed()));
                }
                if self.succeeded() >= target {
                    return Ok(());
                }
                notified.await;
            }
        };
        tokio::time::timeout(BATCH_TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| Err(format!("batch not done after {BATCH_TIMEOUT:?}")))
    }
}

impl EventBus for Completion {
    fn publish(&self, event: Event) -> Event {
        match event.event_type.as_str() {
            "task.succeeded" => {
                self.succeeded.fetch_add(1, Ordering::SeqCst);
                self.notify.notify_waiters();
            }
            "task.failed" | "task.deadletter" | "task.retry_scheduled" => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                self.notify.notify_waiters();
            }
            _ => {}
        }
        event
    }

    fn subscribe(&self, _since: Option<u64>) -> BoxStream<'static, Event> {
        futures::stream::empty().boxed()
    }
}

#[derive(Default)]
struct HopClock {
    recording: AtomicBool,
    published: Mutex<HashMap<String, Instant>>,
    hops: Mutex<Vec<Duration>>,
}

/// A [`Bus`] wrapper measuring hops: from a message's first publish to the ack of its delivery
/// (queueing, the consumer's store reads, the agent step, the step write and the next
/// publishes). Records only while [`TimedBus::record`] is on.
pub struct TimedBus {
    inner: Arc<dyn Bus>,
    clock: Arc<HopClock>,
}

impl TimedBus {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Bus>) -> Self {
        Self {
            inner,
            clock: Arc::default(),
        }
    }

    /// Turns hop recording on or off.
    pub fn record(&self, on: bool) {
        self.clock.recording.store(on, Ordering::SeqCst);
    }

    /// The hops recorded so far, emptying the record.
    pub fn take_hops(&self) -> Vec<Duration> {
        std::mem::take(&mut *lock(&self.clock.hops))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn message_id(payload: &[u8]) -> Option<String> {
    AgentMessage::decode(payload).ok().map(|m| m.message_id)
}

#[async_trait]
impl Bus for TimedBus {
    async fn publish(&self, message: Outgoing) -> orloj_core::Result<()> {
        if self.clock.recording.load(Ordering::Relaxed)
            && let Some(id) = message_id(&message.payload)
        {
            lock(&self.clock.published)
                .entry(id)
                .or_insert_with(Instant::now);
        }
        self.inner.publish(message).await
    }

    async fn subscribe(
        &self,
        consumer: &ConsumerConfig,
    ) -> orloj_core::Result<BoxStream<'static, orloj_core::Result<Delivery>>> {
        let clock = self.clock.clone();
        let stream = self.inner.subscribe(consumer).await?;
        Ok(stream
            .map(move |d| {
                d.map(|mut d| {
                    if clock.recording.load(Ordering::Relaxed) {
                        d.acker = Box::new(TimedAcker {
                            inner: d.acker,
                            id: message_id(&d.payload),
                            clock: clock.clone(),
                        });
                    }
                    d
                })
            })
            .boxed())
    }
}

struct TimedAcker {
    inner: Box<dyn Acker>,
    id: Option<String>,
    clock: Arc<HopClock>,
}

#[async_trait]
impl Acker for TimedAcker {
    async fn ack(&self) -> orloj_core::Result<()> {
        let result = self.inner.ack().await;
        if let Some(id) = &self.id
            && let Some(start) = lock(&self.clock.published).remove(id)
        {
            lock(&self.clock.hops).push(start.elapsed());
        }
        result
    }

    async fn nak(&self, delay: Duration) -> orloj_core::Result<()> {
        self.inner.nak(delay).await
    }

    async fn term(&self) -> orloj_core::Result<()> {
        self.inner.term().await
    }

    async fn in_progress(&self) -> orloj_core::Result<()> {
        self.inner.in_progress().await
    }
}

/// A tool executor for agents without tools (the bench agents call none).
struct NoTools;

#[async_trait]
impl orloj_core::tool::ToolExecutor for NoTools {
    async fn execute(
        &self,
        invocation: orloj_core::tool::ToolInvocation,
    ) -> Result<orloj_core::tool::ToolOutput, orloj_core::tool::ToolError> {
        Err(orloj_core::tool::ToolError::new(
            orloj_core::tool::ToolErrorCode::UnsupportedTool,
            format!("the benchmark has no tool {}", invocation.tool.name()),
        ))
    }
}

/// A running message-driven worker over a store and a bus, with the 1- and 3-agent pipelines
/// applied.
pub struct Dispatch {
    store: Arc<dyn Store>,
    bus: Arc<TimedBus>,
    done: Arc<Completion>,
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<orloj_core::Result<()>>,
    seq: AtomicU64,
    label: String,
}

/// Deliveries a bench worker handles at once (and tasks it claims per poll).
pub const CONCURRENCY: usize = 64;

impl Dispatch {
    /// Applies the pipelines and starts one message-driven worker (`subject_prefix` must be the
    /// prefix the bus serves).
    pub async fn start(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        subject_prefix: &str,
        label: &str,
    ) -> orloj_core::Result<Self> {
        apply(store.as_ref(), ENDPOINT).await?;
        apply(store.as_ref(), &pipeline_manifests(1)).await?;
        apply(store.as_ref(), &pipeline_manifests(3)).await?;
        let bus = Arc::new(TimedBus::new(bus));
        let done = Arc::new(Completion::default());
        let clock = Arc::new(SystemClock);
        // As orlojworker builds it: run resolution reads through a refreshed cache.
        let resolution = Arc::new(orloj_runtime::read_cache::ReadCache::for_resolution(
            store.clone(),
        ));
        let router = Arc::new(orloj_runtime::model::StoreModelRouter::with_env(
            resolution.clone(),
            "ORLOJ_BENCH_SECRET_",
            Arc::new(|_: &str| None),
        )?);
        let tools: Arc<dyn orloj_core::tool::ToolExecutor> = Arc::new(NoTools);
        // No pacing between agent steps: the reference's 25 ms tick is not dispatch work.
        let runner =
            orloj_runtime::engine::agent_turn::AgentRunner::new(tools.clone(), clock.clone())
                .with_step_interval(Duration::ZERO);
        let config = WorkerConfig {
            worker_id: format!("bench-{label}"),
            max_concurrent_tasks: CONCURRENCY,
            // New tasks are claimed on the store's claim signal; the poll only covers what
            // time alone makes claimable (none here).
            poll_interval: Duration::from_millis(100),
            heartbeat_interval: Duration::from_secs(10),
            lease_duration: Duration::from_secs(60),
            execution_mode: ExecutionMode::MessageDriven,
            ..Default::default()
        };
        let messages = MessageConfig {
            subject_prefix: subject_prefix.to_string(),
            concurrency: CONCURRENCY,
            ..Default::default()
        };
        let worker = Worker::new(config, store.clone(), clock, router, tools)
            .with_runner(runner)
            .with_events(done.clone())
            .with_read_cache(resolution)
            .with_message_bus(bus.clone(), messages);
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(worker.run(cancel.clone()));
        Ok(Self {
            store,
            bus,
            done,
            cancel,
            handle,
            seq: AtomicU64::new(0),
            label: label.to_string(),
        })
    }

    /// The bus wrapper (hop recording).
    pub fn bus(&self) -> &TimedBus {
        &self.bus
    }

    /// Creates `n` tasks of the `agents`-agent pipeline and waits until all succeeded; returns
    /// the time from the first create to the last `task.succeeded`. The tasks are deleted
    /// afterwards (not timed) so the store does not grow across batches.
    pub async fn run_batch(&self, agents: usize, n: usize) -> Result<Duration, String> {
        let (elapsed, names) = self.run_tasks(agents, n).await?;
        self.delete_tasks(names).await?;
        Ok(elapsed)
    }

    /// [`Dispatch::run_batch`] without the deletes: returns the time taken and the tasks'
    /// names.
    pub async fn run_tasks(
        &self,
        agents: usize,
        n: usize,
    ) -> Result<(Duration, Vec<String>), String> {
        let first = self.seq.fetch_add(n as u64, Ordering::SeqCst);
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n as u64 {
            let name = format!("{}-{agents}-{}", self.label, first + i);
            tasks.push(task_object(&name, agents).map_err(|e| e.to_string())?);
        }
        let names: Vec<String> = tasks.iter().map(|t| t.name().to_string()).collect();
        let target = self.done.succeeded() + n;
        let start = Instant::now();
        let store = self.store.clone();
        let created: Vec<orloj_core::Result<Object>> = futures::stream::iter(tasks)
            .map(|t| {
                let store = store.clone();
                async move { store.create(t).await }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        if let Some(Err(e)) = created.into_iter().find(|r| r.is_err()) {
            return Err(format!("creating a task: {e}"));
        }
        self.done.wait_for(target).await?;
        Ok((start.elapsed(), names))
    }

    /// Deletes the tasks named (default namespace).
    pub async fn delete_tasks(&self, names: Vec<String>) -> Result<(), String> {
        for name in names {
            self.store
                .delete(Kind::Task, orloj_core::DEFAULT_NAMESPACE, &name, None)
                .await
                .map_err(|e| format!("deleting task {name}: {e}"))?;
        }
        Ok(())
    }

    /// Stops the worker.
    pub async fn stop(self) {
        self.cancel.cancel();
        match self.handle.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("bench worker {} stopped with: {e}", self.label),
            Err(e) => eprintln!("bench worker {} panicked: {e}", self.label),
        }
    }
}

/// The diagnostic examples' positional arguments: each call reads the next one as a number,
/// or gives `default` when there is none; an argument that is not a number is an error naming
/// `what` it was for.
pub fn numbers_from_args() -> impl FnMut(&str, usize) -> Result<usize, String> {
    let mut args = std::env::args().skip(1);
    move |what, default| {
        args.next()
            .map_or(Ok(default), |a| a.parse())
            .map_err(|e| format!("{what}: {e}"))
    }
}

/// CPU time this process has used so far (user + system), in clock ticks of 10 ms; `None`
/// without Linux `/proc`.
pub fn process_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The `q` quantile (0..=1) of `samples` (nearest rank); zero when empty.
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// One row of the summary printed at the end of a run.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Scenario name.
    pub name: String,
    /// Tasks (or messages) per second: batch size / median batch time.
    pub per_second: f64,
    /// Per-task (or per-operation) latency with one in flight, p50.
    pub task_p50: Duration,
    /// Per-task latency p99.
    pub task_p99: Duration,
    /// Per-hop latency p50 (none for baselines without hops).
    pub hop_p50: Option<Duration>,
    /// Per-hop latency p99.
    pub hop_p99: Option<Duration>,
    /// Throughput relative to the named baseline row, when one applies.
    pub ratio: Option<(String, f64)>,
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// Renders the summary table (markdown, so it can be pasted into the README).
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | tasks/s | task p50 ms | task p99 ms | hop p50 ms | hop p99 ms | throughput ratio |\n|---|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let opt = |d: Option<Duration>| d.map(ms).unwrap_or_else(|| "—".into());
        let ratio = r
            .ratio
            .as_ref()
            .map(|(base, x)| format!("{:.1}% of {base}", x * 100.0))
            .unwrap_or_else(|| "—".into());
        out.push_str(&format!(
            "| {} | {:.0} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.per_second,
            ms(r.task_p50),
            ms(r.task_p99),
            opt(r.hop_p50),
            opt(r.hop_p99),
            ratio
        ));
    }
    out
}
