//! The Store conformance suite on [`MemoryStore`].

use orloj_core::{ManualClock, Store};
use orloj_store::MemoryStore;
use orloj_store::memory::DEFAULT_EVENT_RETENTION;
use std::sync::Arc;

async fn make(clock: Arc<ManualClock>, retention: Option<usize>) -> Option<(Arc<dyn Store>, ())> {
    let store = MemoryStore::with_retention(clock, retention.unwrap_or(DEFAULT_EVENT_RETENTION));
    Some((Arc::new(store), ()))
}

orloj_store::store_conformance_tests!(make);
