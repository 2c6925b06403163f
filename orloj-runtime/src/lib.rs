//! # orloj-runtime
//!
//! Everything that runs: the REST API router, controllers and workers.
