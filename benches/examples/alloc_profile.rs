//! Heap allocations per dispatched task, in process (memory store, memory bus), counted with
//! dhat: a figure that does not move with how busy the machine is, unlike the timings of
//! `cargo bench`, and a profile of where the allocations come from.
//!
//! ```sh
//! cargo run --release -p orloj-benches --example alloc_profile -- [tasks] [agents]
//! ```
//!
//! Prints allocations and bytes per task (create to `Succeeded`, as the batch bench times it), the
//! heap still live once the tasks are deleted, and writes
//! `dhat-heap.json` (open it with DHAT's viewer, `dh_view.html`).

use orloj_benches::Dispatch;
use orloj_core::bus::Bus;
use orloj_core::{Store, SystemClock};
use orloj_runtime::bus::MemoryBus;
use orloj_store::MemoryStore;
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn main() -> Result<(), String> {
    let mut number = orloj_benches::numbers_from_args();
    let tasks = number("tasks", 1000)?;
    let agents = number("agents", 3)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::new(SystemClock)));
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
        let dispatch = Dispatch::start(
            store.clone(),
            bus,
            orloj_core::bus::DEFAULT_SUBJECT_PREFIX,
            "alloc",
        )
        .await
        .map_err(|e| e.to_string())?;
        // Warm up: the store's history ring and the caches fill first.
        dispatch.run_batch(agents, tasks / 4 + 1).await?;
        let profiler = dhat::Profiler::builder().trim_backtraces(Some(40)).build();
        let before = dhat::HeapStats::get();
        let (_, names) = dispatch.run_tasks(agents, tasks).await?;
        let after = dhat::HeapStats::get();
        dispatch.delete_tasks(names).await?;
        // What stays allocated once the tasks are gone: mostly the task versions the store's
        // watch history keeps.
        let left = dhat::HeapStats::get();
        dispatch.stop().await;
        drop(profiler);
        println!(
            "{agents}-agent pipeline, {tasks} tasks: {:.0} allocations/task, {:.0} bytes/task",
            (after.total_blocks - before.total_blocks) as f64 / tasks as f64,
            (after.total_bytes - before.total_bytes) as f64 / tasks as f64,
        );
        println!(
            "live heap after deleting them: {:.1} MB in {} blocks",
            left.curr_bytes as f64 / 1e6,
            left.curr_blocks
        );
        Ok(())
    })
}
