//! The Store conformance suite on [`SealedStore`] over a [`MemoryStore`]: the wrapper keeps
//! the Store contract for every kind.

use orloj_core::{ManualClock, Store};
use orloj_store::memory::DEFAULT_EVENT_RETENTION;
use orloj_store::{MemoryStore, SealedStore, SecretKey};
use std::sync::Arc;

async fn make(clock: Arc<ManualClock>, retention: Option<usize>) -> Option<(Arc<dyn Store>, ())> {
    let inner = MemoryStore::with_retention(clock, retention.unwrap_or(DEFAULT_EVENT_RETENTION));
    let store = SealedStore::new(Arc::new(inner), SecretKey::from_bytes([42; 32]));
    Some((Arc::new(store), ()))
}

orloj_store::store_conformance_tests!(make);
