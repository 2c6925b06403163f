//! Runs durable batches (Postgres store, NATS JetStream bus, as `cargo bench` sets them up) and
//! prints every batch's time, the CPU time per task over the batch (the whole machine's, this
//! worker's, and the rest: Postgres and nats-server), and, per store method, the calls made and
//! how long they took as the worker saw them (p50, p99, total): where a busy worker waits and
//! where the CPU goes. With one task per batch it also prints when each store call started and
//! ended: the task's critical path.
//!
//! ```sh
//! TEST_DATABASE_URL=... TEST_NATS_URL=... \
//! cargo run --release -p orloj-benches --example durable_probe -- [batches] [tasks] [agents]
//! ```

use futures::stream::BoxStream;
use orloj_benches::raw::BenchDb;
use orloj_benches::{Dispatch, quantile};
use orloj_core::store::{ChangeMarker, ClaimRequest, ListOptions, WatchEvent};
use orloj_core::{Kind, Object, ObjectList, Result, Store, SystemClock};
use orloj_runtime::bus::{NatsBus, NatsBusConfig};
use orloj_store::{PostgresOptions, PostgresStore};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// As the bench and the worker binary: the worker's share of the CPU is measured as it runs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::result::Result<(), String> {
    let mut number = orloj_benches::numbers_from_args();
    let batches = number("batches", 10)?;
    let tasks = number("tasks", 200)?;
    let agents = number("agents", 3)?;
    let pg_url = std::env::var("TEST_DATABASE_URL").map_err(|_| "set TEST_DATABASE_URL")?;
    let nats_url = std::env::var("TEST_NATS_URL").map_err(|_| "set TEST_NATS_URL")?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let db = BenchDb::create(&pg_url).await?;
        let options = PostgresOptions {
            max_open_conns: 16,
            ..Default::default()
        };
        let timing = Arc::new(TimingStore {
            inner: Arc::new(
                PostgresStore::connect(&db.url, options, Arc::new(SystemClock))
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            times: Mutex::new(HashMap::new()),
            timeline: Mutex::new(Vec::new()),
        });
        let store: Arc<dyn Store> = timing.clone();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("orlojprobe.{id}");
        let nats = NatsBus::connect(NatsBusConfig {
            url: nats_url.clone(),
            stream: format!("ORLOJ_PROBE_{id}"),
            subject_prefix: prefix.clone(),
            client_name: "orloj-probe".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
        let dispatch = Dispatch::start(store, Arc::new(nats.clone()), &prefix, "probe")
            .await
            .map_err(|e| e.to_string())?;
        for b in 0..batches {
            // As the bench does between batches; not between single tasks (an ANALYZE makes
            // every statement plan again).
            if tasks > 1 {
                db.vacuum().await?;
            }
            timing
                .timeline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            let before = CpuTicks::now();
            let origin = Instant::now();
            let (t, names) = dispatch.run_tasks(agents, tasks).await?;
            let cpu = CpuTicks::now().since(&before, tasks);
            dispatch.delete_tasks(names).await?;
            println!(
                "batch {b}: {tasks} tasks in {:.0} ms = {:.0} tasks/s{cpu}",
                t.as_secs_f64() * 1000.0,
                tasks as f64 / t.as_secs_f64()
            );
            print!("{}", timing.report());
            // One task alone: when each store call started and ended, from the batch's start.
            if tasks == 1 {
                let calls =
                    std::mem::take(&mut *timing.timeline.lock().unwrap_or_else(|e| e.into_inner()));
                for (what, start, end) in calls {
                    let ms =
                        |t: Instant| t.saturating_duration_since(origin).as_secs_f64() * 1000.0;
                    println!("      {:>7.3} → {:>7.3} ms  {what}", ms(start), ms(end));
                }
            }
        }
        dispatch.stop().await;
        let _ = nats.delete_stream().await;
        db.drop_database().await?;
        Ok(())
    })
}

/// CPU time spent so far (Linux `/proc`, in clock ticks of 10 ms): by the whole machine and
/// by this process (the worker). What the rest of the machine spent is Postgres and
/// nats-server (and whatever else runs).
struct CpuTicks {
    machine: Option<u64>,
    worker: Option<u64>,
}

impl CpuTicks {
    fn now() -> Self {
        let machine = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            let fields: Vec<u64> = s
                .lines()
                .next()?
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
            Some(fields.iter().sum::<u64>() - fields.get(3)? - fields.get(4)?)
        });
        let worker = orloj_benches::process_cpu_ticks();
        Self { machine, worker }
    }

    /// ", CPU per task: … ms machine, … ms worker", or nothing where `/proc` is missing.
    fn since(&self, before: &Self, tasks: usize) -> String {
        let per_task =
            |a: Option<u64>, b: Option<u64>| Some((a? - b?) as f64 * 10.0 / tasks.max(1) as f64);
        match (
            per_task(self.machine, before.machine),
            per_task(self.worker, before.worker),
        ) {
            (Some(m), Some(w)) => {
                format!(
                    ", CPU per task {m:.2} ms machine, {w:.2} ms worker, {:.2} ms rest",
                    m - w
                )
            }
            _ => String::new(),
        }
    }
}

/// Times every store call by method (for the probe's report).
struct TimingStore {
    inner: Arc<dyn Store>,
    times: Mutex<HashMap<&'static str, Vec<Duration>>>,
    /// Every call's method, start and end (printed for batches of one task).
    timeline: Mutex<Vec<(&'static str, Instant, Instant)>>,
}

impl TimingStore {
    async fn timed<T>(&self, what: &'static str, fut: impl std::future::Future<Output = T>) -> T {
        let start = Instant::now();
        let out = fut.await;
        let took = start.elapsed();
        self.timeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((what, start, start + took));
        self.times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what)
            .or_default()
            .push(took);
        out
    }

    fn report(&self) -> String {
        let mut times = std::mem::take(&mut *self.times.lock().unwrap_or_else(|e| e.into_inner()));
        let mut names: Vec<_> = times.keys().copied().collect();
        names.sort();
        let mut out = String::new();
        for name in names {
            let v = times.get_mut(name).map(std::mem::take).unwrap_or_default();
            let total: Duration = v.iter().sum();
            out.push_str(&format!(
                "    {name:<22} {:>6} calls  p50 {:>7.3} ms  p99 {:>7.3} ms  total {:>8.1} ms\n",
                v.len(),
                quantile(&v, 0.5).as_secs_f64() * 1000.0,
                quantile(&v, 0.99).as_secs_f64() * 1000.0,
                total.as_secs_f64() * 1000.0
            ));
        }
        out
    }
}

#[async_trait::async_trait]
impl Store for TimingStore {
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
    async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object> {
        self.timed("get", self.inner.get(kind, namespace, name))
            .await
    }
    async fn list(&self, kind: Kind, options: &ListOptions) -> Result<ObjectList> {
        self.timed("list", self.inner.list(kind, options)).await
    }
    async fn create(&self, object: Object) -> Result<Object> {
        self.timed("create", self.inner.create(object)).await
    }
    async fn update(&self, object: Object) -> Result<Object> {
        self.timed("update", self.inner.update(object)).await
    }
    async fn upsert(&self, object: Object) -> Result<(Object, bool)> {
        self.timed("upsert", self.inner.upsert(object)).await
    }
    async fn update_status(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        expected: Option<&str>,
        status: serde_json::Value,
    ) -> Result<Object> {
        self.timed(
            "update_status",
            self.inner
                .update_status(kind, namespace, name, expected, status),
        )
        .await
    }
    async fn update_status_of(
        &self,
        current: &Object,
        status: serde_json::Value,
    ) -> Result<Arc<Object>> {
        self.timed(
            "update_status_of",
            self.inner.update_status_of(current, status),
        )
        .await
    }
    async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        expected: Option<&str>,
    ) -> Result<Object> {
        self.inner.delete(kind, namespace, name, expected).await
    }
    async fn current_revision(&self) -> Result<u64> {
        self.timed("current_revision", self.inner.current_revision())
            .await
    }
    async fn change_marker(&self, kinds: &[Kind]) -> Result<Option<ChangeMarker>> {
        self.timed("change_marker", self.inner.change_marker(kinds))
            .await
    }
    async fn watch(
        &self,
        kind: Option<Kind>,
        after: Option<u64>,
    ) -> Result<BoxStream<'static, Result<WatchEvent>>> {
        self.inner.watch(kind, after).await
    }
    fn claim_signal(&self) -> Option<BoxStream<'static, ()>> {
        self.inner.claim_signal()
    }
    async fn claim_task(&self, request: &ClaimRequest) -> Result<Option<Object>> {
        self.timed("claim_task", self.inner.claim_task(request))
            .await
    }
    async fn claim_task_marked(
        &self,
        request: &ClaimRequest,
        kinds: &[Kind],
    ) -> Result<Option<(Object, Option<ChangeMarker>)>> {
        self.timed(
            "claim_task_marked",
            self.inner.claim_task_marked(request, kinds),
        )
        .await
    }
    async fn claim_tasks(
        &self,
        request: &ClaimRequest,
        max: usize,
        marker_kinds: Option<&[Kind]>,
    ) -> Result<Vec<(Object, Option<ChangeMarker>)>> {
        self.timed(
            "claim_tasks",
            self.inner.claim_tasks(request, max, marker_kinds),
        )
        .await
    }
    async fn renew_task_lease(
        &self,
        namespace: &str,
        name: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<Object> {
        self.timed(
            "renew_task_lease",
            self.inner.renew_task_lease(namespace, name, worker, lease),
        )
        .await
    }
    async fn release_task(&self, namespace: &str, name: &str, worker: &str) -> Result<Object> {
        self.timed(
            "release_task",
            self.inner.release_task(namespace, name, worker),
        )
        .await
    }
    async fn append_task_log(&self, namespace: &str, name: &str, entry: &str) -> Result<()> {
        self.timed(
            "append_task_log",
            self.inner.append_task_log(namespace, name, entry),
        )
        .await
    }
    async fn task_logs(&self, namespace: &str, name: &str, limit: usize) -> Result<Vec<String>> {
        self.inner.task_logs(namespace, name, limit).await
    }
}
