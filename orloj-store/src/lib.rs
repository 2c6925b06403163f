//! # orloj-store
//!
//! Implementations of [`orloj_core::Store`]: [`MemoryStore`] (in process, no persistence) and
//! [`PostgresStore`] (production: sqlx, embedded migrations, `LISTEN/NOTIFY` watches,
//! `FOR UPDATE SKIP LOCKED` task claims). Both apply the same versioning rules ([`versioning`])
//! and task-claim rules ([`orloj_core::task_queue`]), and both pass the same conformance suite
//! (`conformance`, behind the `test-util` feature), which other `Store` implementations can run
//! too with its `store_conformance_tests!` macro.
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
//!
//! With Postgres (migrations run on connect; see [`postgres`] for the schema and guarantees):
//!
//! ```no_run
//! use std::sync::Arc;
//! use orloj_core::{Kind, Object, Store, SystemClock};
//! use orloj_store::{PostgresOptions, PostgresStore};
//!
//! # async fn run() -> orloj_core::Result<()> {
//! let store = PostgresStore::connect(
//!     "postgres://orloj@localhost:5432/orloj",
//!     PostgresOptions::default(),
//!     Arc::new(SystemClock),
//! )
//! .await?;
//! store.create(Object::new(Kind::Agent, "default", "writer")).await?;
//! # Ok(())
//! # }
//! ```

pub mod auth_memory;
#[cfg(feature = "test-util")]
pub mod conformance;
pub mod memory;
pub mod postgres;
pub mod sealed;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod versioning;

pub use auth_memory::MemoryAuthStore;
pub use memory::MemoryStore;
pub use postgres::auth::PostgresAuthStore;
pub use postgres::{PostgresOptions, PostgresStore};
pub use sealed::{SealedStore, SecretKey};
