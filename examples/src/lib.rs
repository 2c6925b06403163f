//! Runnable examples for embedders of Orloj; each program is in `src/bin/`:
//!
//! * `embed_api` — mount the REST API in your own axum service over an in-memory store.
//!
//! Manifest blueprints (apply them with `orlojctl apply -f`) live in `examples/blueprints/`.
