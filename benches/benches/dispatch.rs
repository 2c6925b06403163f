//! Dispatch benchmarks: create → claim → 1- and 3-agent pipelines (mock model) → complete,
//! in process (memory store and bus) and durable (Postgres + JetStream, when
//! `TEST_DATABASE_URL` and `TEST_NATS_URL` are set), with the raw Postgres and JetStream loops
//! measured in the same run. A summary table is printed at the end; see `benches/README.md`.
#![allow(missing_docs)]

// As in orlojd and orlojworker.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput};
use orloj_benches::raw::{BenchDb, RawJetStream, RawPostgres};
use orloj_benches::{Dispatch, Row, quantile, render};
use orloj_core::bus::Bus;
use orloj_core::{Store, SystemClock};
use orloj_runtime::bus::{MemoryBus, NatsBus, NatsBusConfig};
use orloj_store::{MemoryStore, PostgresOptions, PostgresStore};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Runtime;

/// Samples recorded by the benches, by name.
#[derive(Default)]
struct Samples(Mutex<HashMap<String, Vec<Duration>>>);

impl Samples {
    fn push(&self, name: &str, d: Duration) {
        self.0
            .lock()
            .expect("samples lock")
            .entry(name.to_string())
            .or_default()
            .push(d);
    }

    fn extend(&self, name: &str, ds: Vec<Duration>) {
        self.0
            .lock()
            .expect("samples lock")
            .entry(name.to_string())
            .or_default()
            .extend(ds);
    }

    fn get(&self, name: &str) -> Vec<Duration> {
        self.0
            .lock()
            .expect("samples lock")
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A throughput bench timing whole batches of `n` (criterion times batches; we keep each
/// batch time for the medians).
fn batch_bench<F, Fut>(
    c: &mut Criterion,
    rt: &Runtime,
    samples: &Samples,
    group: &str,
    name: &str,
    n: usize,
    run: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Duration, String>>,
{
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(n as u64));
    let key = format!("{group}/{name}");
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let d = run().await.expect("benchmark batch");
                    samples.push(&key, d);
                    total += d;
                }
                total
            })
        })
    });
    g.finish();
}

/// A latency bench: one task (or operation) at a time.
fn single_bench<F, Fut>(
    c: &mut Criterion,
    rt: &Runtime,
    samples: &Samples,
    group: &str,
    name: &str,
    run: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Duration, String>>,
{
    batch_bench(c, rt, samples, group, name, 1, run);
}

/// Adds the rows of one dispatch scenario; `None` when it did not run (filtered out).
fn dispatch_row(
    samples: &Samples,
    group: &str,
    agents: usize,
    n: usize,
    baseline: Option<(&str, f64)>,
) -> Option<Row> {
    let batches = samples.get(&format!("{group}/{agents}-agent/batch"));
    if batches.is_empty() {
        return None;
    }
    let singles = samples.get(&format!("{group}/{agents}-agent/single"));
    let hops = samples.get(&format!("{group}/{agents}-agent/hops"));
    let per_second = n as f64 / quantile(&batches, 0.5).as_secs_f64();
    Some(Row {
        name: format!("{group} {agents}-agent pipeline"),
        per_second,
        task_p50: quantile(&singles, 0.5),
        task_p99: quantile(&singles, 0.99),
        hop_p50: (!hops.is_empty()).then(|| quantile(&hops, 0.5)),
        hop_p99: (!hops.is_empty()).then(|| quantile(&hops, 0.99)),
        ratio: baseline.map(|(name, base)| (name.to_string(), per_second / base)),
    })
}

fn baseline_row(samples: &Samples, group: &str, name: &str, n: usize) -> Option<Row> {
    let batches = samples.get(&format!("{group}/{name}/batch"));
    if batches.is_empty() {
        return None;
    }
    let singles = samples.get(&format!("{group}/{name}/single"));
    Some(Row {
        name: format!("{group} {name}"),
        per_second: n as f64 / quantile(&batches, 0.5).as_secs_f64(),
        task_p50: quantile(&singles, 0.5),
        task_p99: quantile(&singles, 0.99),
        ..Default::default()
    })
}

/// Batches and singles of the 1- and 3-agent pipelines on `dispatch`.
fn dispatch_benches(
    c: &mut Criterion,
    rt: &Runtime,
    samples: &Samples,
    group: &str,
    dispatch: &Dispatch,
    n: usize,
    settle: Option<&BenchDb>,
) {
    for agents in [1, 3] {
        if let Some(db) = settle {
            settle_db(rt, db);
        }
        batch_bench(
            c,
            rt,
            samples,
            group,
            &format!("{agents}-agent/batch"),
            n,
            || dispatch.run_batch(agents, n),
        );
        dispatch.bus().take_hops();
        dispatch.bus().record(true);
        if let Some(db) = settle {
            settle_db(rt, db);
        }
        single_bench(
            c,
            rt,
            samples,
            group,
            &format!("{agents}-agent/single"),
            || dispatch.run_batch(agents, 1),
        );
        dispatch.bus().record(false);
        samples.extend(
            &format!("{group}/{agents}-agent/hops"),
            dispatch.bus().take_hops(),
        );
    }
}

/// Vacuums the bench database between scenarios (untimed): a batch leaves hundreds of deleted
/// tasks and their events behind, and the autovacuum they trigger would otherwise run during
/// the next scenario's few seconds of measurement.
fn settle_db(rt: &Runtime, db: &BenchDb) {
    if let Err(e) = rt.block_on(db.vacuum()) {
        eprintln!("{e}");
    }
}

fn in_process(c: &mut Criterion, rt: &Runtime, samples: &Samples, rows: &mut Vec<Row>) {
    let n = env_usize("ORLOJ_BENCH_BATCH", 1000);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::new(SystemClock)));
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
    let dispatch = rt
        .block_on(Dispatch::start(
            store,
            bus,
            orloj_core::bus::DEFAULT_SUBJECT_PREFIX,
            "mem",
        ))
        .expect("start the in-process worker");
    dispatch_benches(c, rt, samples, "in_process", &dispatch, n, None);
    rt.block_on(dispatch.stop());
    rows.extend(dispatch_row(samples, "in_process", 1, n, None));
    rows.extend(dispatch_row(samples, "in_process", 3, n, None));
}

/// Everything the durable section sets up, torn down at the end.
struct Durable {
    db: BenchDb,
    commit: (String, String),
    raw_pg: Arc<RawPostgres>,
    raw_js: Arc<RawJetStream>,
    nats: NatsBus,
    dispatch: Dispatch,
}

async fn durable_setup(pg_url: &str, nats_url: &str) -> Result<Durable, String> {
    let db = BenchDb::create(pg_url).await?;
    let commit = db.commit_mode().await?;
    let raw_pg = Arc::new(RawPostgres::setup(&db.url, 16).await?);
    let raw_js = Arc::new(RawJetStream::setup(nats_url).await?);
    let options = PostgresOptions {
        max_open_conns: 16,
        ..Default::default()
    };
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(&db.url, options, Arc::new(SystemClock))
            .await
            .map_err(|e| format!("connecting the Postgres store: {e}"))?,
    );
    let id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("orlojbench.{id}");
    let nats = NatsBus::connect(NatsBusConfig {
        url: nats_url.to_string(),
        stream: format!("ORLOJ_BENCH_{id}"),
        subject_prefix: prefix.clone(),
        client_name: "orloj-bench".into(),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("connecting the NATS bus: {e}"))?;
    let dispatch = Dispatch::start(store, Arc::new(nats.clone()), &prefix, "durable")
        .await
        .map_err(|e| format!("starting the durable worker: {e}"))?;
    Ok(Durable {
        db,
        commit,
        raw_pg,
        raw_js,
        nats,
        dispatch,
    })
}

fn durable(
    c: &mut Criterion,
    rt: &Runtime,
    samples: &Samples,
    rows: &mut Vec<Row>,
) -> Option<String> {
    let (Some(pg_url), Some(nats_url)) = (env_set("TEST_DATABASE_URL"), env_set("TEST_NATS_URL"))
    else {
        println!(
            "skipping the durable benchmarks: TEST_DATABASE_URL and TEST_NATS_URL are not both set"
        );
        return None;
    };
    let n = env_usize("ORLOJ_BENCH_DURABLE_BATCH", 200);
    let loops = 16;
    let d = rt
        .block_on(durable_setup(&pg_url, &nats_url))
        .expect("set up the durable benchmarks");
    let mode = format!(
        "Postgres synchronous_commit={} fsync={}; JetStream file storage, server-default sync \
         (no per-message fsync), publishes wait for the PubAck",
        d.commit.0, d.commit.1
    );
    println!("durable benchmarks: {mode}");
    batch_bench(c, rt, samples, "raw", "postgres-loop/batch", n, || {
        d.raw_pg.run_batch(n, loops)
    });
    single_bench(c, rt, samples, "raw", "postgres-loop/single", || {
        d.raw_pg.one()
    });
    batch_bench(c, rt, samples, "raw", "jetstream-loop/batch", n, || {
        d.raw_js.run_batch(n, loops)
    });
    single_bench(c, rt, samples, "raw", "jetstream-loop/single", || {
        d.raw_js.one()
    });
    // The raw loop leaves its stream full (hundreds of thousands of messages, file storage)
    // and its pull consumer open: measured, that doubled the durable latencies that follow
    // (3-agent single 5.6 -> 11.6 ms). The baseline must not load the system under test.
    if let Err(e) = rt.block_on(d.raw_js.delete()) {
        eprintln!("{e}");
    }
    dispatch_benches(c, rt, samples, "durable", &d.dispatch, n, Some(&d.db));
    let Durable {
        db,
        raw_pg,
        raw_js,
        nats,
        dispatch,
        ..
    } = d;
    rt.block_on(async {
        dispatch.stop().await;
        if let Err(e) = nats.delete_stream().await {
            eprintln!("deleting the bench stream: {e}");
        }
        drop(raw_js);
        raw_pg.close().await;
        if let Err(e) = db.drop_database().await {
            eprintln!("{e}");
        }
    });
    let pg = baseline_row(samples, "raw", "postgres-loop", n);
    let js = baseline_row(samples, "raw", "jetstream-loop", n);
    let base = pg.as_ref().map(|r| ("raw postgres-loop", r.per_second));
    rows.extend(pg.clone());
    rows.extend(js);
    rows.extend(dispatch_row(samples, "durable", 1, n, base));
    rows.extend(dispatch_row(samples, "durable", 3, n, base));
    Some(mode)
}

fn verdicts(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    let find = |name: &str| rows.iter().find(|r| r.name == name);
    if let Some(r) = find("in_process 3-agent pipeline") {
        out.push(format!(
            "in process, 3-agent: {:.0} tasks/s (target >= 20000: {})",
            r.per_second,
            if r.per_second >= 20_000.0 {
                "met"
            } else {
                "MISSED"
            }
        ));
    }
    if let Some(r) = find("durable 3-agent pipeline") {
        if let Some((_, ratio)) = &r.ratio {
            out.push(format!(
                "durable, 3-agent: {:.1}% of the raw Postgres loop (target >= 35%: {})",
                ratio * 100.0,
                if *ratio >= 0.35 { "met" } else { "MISSED" }
            ));
        }
        out.push(format!(
            "durable, 3-agent: task p50 {:.3} ms (target <= 5 ms: {})",
            r.task_p50.as_secs_f64() * 1000.0,
            if r.task_p50 <= Duration::from_millis(5) {
                "met"
            } else {
                "MISSED"
            }
        ));
    }
    out
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let samples = Samples::default();
    let mut rows = Vec::new();
    in_process(&mut c, &rt, &samples, &mut rows);
    let mode = durable(&mut c, &rt, &samples, &mut rows);
    c.final_summary();
    println!(
        "\n== dispatch summary (medians of batch times; latencies with one task in flight) =="
    );
    if let Some(mode) = mode {
        println!("{mode}");
    }
    print!("{}", render(&rows));
    for line in verdicts(&rows) {
        println!("{line}");
    }
}
