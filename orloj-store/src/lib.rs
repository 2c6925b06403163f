//! # orloj-store
//!
//! Implementations of [`orloj_core::Store`]: in-memory and Postgres.
