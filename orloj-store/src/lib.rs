//! # orloj-store
//!
//! Implementations of [`orloj_core::Store`]: [`MemoryStore`] (in process) and, for production,
//! Postgres. Both apply the same versioning rules ([`versioning`]) and task-claim rules
//! ([`orloj_core::task_queue`]), and both pass the same conformance suite.
//!
//! ```
//! use std::sync::Arc;
//! use orloj_core::{Kind, Object, Store, SystemClock};
//! use orloj_store::MemoryStore;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new(Arc::new(SystemClock));
//! let created = store.create(Object::new(Kind::Agent, "default", "writer")).await.unwrap();
//! assert_eq!(created.metadata.resource_version, "1");
//! let fetched = store.get(Kind::Agent, "default", "writer").await.unwrap();
//! assert_eq!(fetched, created);
//! # });
//! ```

pub mod memory;
pub mod versioning;

pub use memory::MemoryStore;
