//! # orloj-runtime
//!
//! Everything that runs:
//!
//! * [`api`]: the REST API v1 as an [`axum::Router`] — CRUD for every kind with optimistic
//!   concurrency, status subresources, tool-approval decisions, task logs/messages/metrics, SSE
//!   watches, `/healthz`, `/v1/capabilities`, `/v1/namespaces` and a generated
//!   `/openapi.json`. Mount it in your own service or serve it with `orlojd`.
//! * [`controllers`]: status controllers (Pending → Ready, stale workers → NotReady).
//! * [`events`]: the control-plane event bus behind `/v1/events/watch`.
//! * [`events_nats`]: that event bus shared between processes over NATS.
//! * [`bus`]: the agent message bus — [`bus::MemoryBus`] and [`bus::NatsBus`] (JetStream).
//! * [`model`]: the model gateway — providers (mock, OpenAI, Azure OpenAI, Anthropic, Ollama)
//!   and [`model::StoreModelRouter`], which resolves an Agent's `model_ref`.
//! * [`tools`]: the tool runtime — HTTP, external, webhook-callback and container executors
//!   behind [`tools::GovernedToolRuntime`] (timeout, retry, auth, secrets).
//! * [`engine`]: the agent turn loop and the graph engine (a state machine over `Task.status`).
//! * [`governance`]: AgentPolicy, AgentRole/ToolPermission authorization, ToolApproval flow.
//! * [`memory`]: memory backends and the built-in `memory.*` tools.
//! * [`worker`]: claims tasks under a lease and runs them ([`worker::Worker`]).
//! * [`read_cache`]: keeps the configuration a worker resolves per task between changes.
//!
//! The router is built over any [`orloj_core::Store`]; embedders add their own layers (auth,
//! CORS, rate limits) around it.
//!
//! ```
//! use std::sync::Arc;
//! use axum::body::Body;
//! use axum::http::{Request, StatusCode};
//! use orloj_core::SystemClock;
//! use orloj_runtime::api::{ApiState, router};
//! use orloj_store::MemoryStore;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let clock = Arc::new(SystemClock);
//! let store = Arc::new(MemoryStore::new(clock.clone()));
//! let app = router(ApiState::new(store, clock));
//! let response = app
//!     .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert!(response.headers().contains_key("x-request-id"));
//! # });
//! ```

pub mod api;
pub mod bus;
pub mod controllers;
pub mod engine;
pub mod events;
pub mod events_nats;
pub mod governance;
pub mod memory;
pub mod model;
pub mod outbound;
pub mod read_cache;
pub mod scheduler;
pub mod tools;
pub mod worker;
