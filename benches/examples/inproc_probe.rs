//! Runs in-process batches (memory store, memory bus, as `cargo bench` sets them up) and prints,
//! per batch, the throughput and this process's CPU time: per task, and as cores kept busy.
//! Unlike the bench's timings, CPU per task says whether a change made the work smaller or only
//! moved it. The last argument sets the memory store's watch-history retention (default: the
//! store's own), to measure what keeping old versions costs.
//!
//! ```sh
//! cargo run --release -p orloj-benches --example inproc_probe -- [batches] [tasks] [agents] [retention]
//! ```

use orloj_benches::Dispatch;
use orloj_core::bus::Bus;
use orloj_core::{Store, SystemClock};
use orloj_runtime::bus::MemoryBus;
use orloj_store::MemoryStore;
use orloj_store::memory::DEFAULT_EVENT_RETENTION;
use std::sync::Arc;

// As the bench and the worker binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), String> {
    let mut number = orloj_benches::numbers_from_args();
    let batches = number("batches", 10)?;
    let tasks = number("tasks", 2000)?.max(1);
    let agents = number("agents", 3)?;
    let retention = number("retention", DEFAULT_EVENT_RETENTION)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::with_retention(
            Arc::new(SystemClock),
            retention,
        ));
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
        let dispatch =
            Dispatch::start(store, bus, orloj_core::bus::DEFAULT_SUBJECT_PREFIX, "probe")
                .await
                .map_err(|e| e.to_string())?;
        // Warm up: the store's history ring and the caches fill first.
        dispatch.run_batch(agents, tasks).await?;
        for b in 0..batches {
            let before = orloj_benches::process_cpu_ticks();
            let (took, names) = dispatch.run_tasks(agents, tasks).await?;
            let cpu = orloj_benches::process_cpu_ticks()
                .zip(before)
                .map(|(after, before)| (after - before) as f64 * 10.0);
            dispatch.delete_tasks(names).await?;
            let ms = took.as_secs_f64() * 1000.0;
            let cpu = cpu.map_or(String::new(), |cpu_ms| {
                format!(
                    ", CPU {:.0} µs per task, {:.2} cores busy",
                    cpu_ms * 1000.0 / tasks as f64,
                    cpu_ms / ms
                )
            });
            println!(
                "batch {b}: {tasks} tasks in {ms:.0} ms = {:.0} tasks/s{cpu}",
                tasks as f64 / took.as_secs_f64()
            );
        }
        dispatch.stop().await;
        Ok(())
    })
}
