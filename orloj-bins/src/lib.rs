//! # orloj-bins
//!
//! The command-line front ends of Orloj: `orlojd` (the server, [`daemon`]), `orlojworker`
//! (a standalone task worker, [`workerd`]) and `orlojctl` (the client). Each `main` is short; the configuration types and wiring live here so they
//! can be tested.

pub mod auth_args;
pub mod ctl;
pub mod daemon;
pub mod loadtest;
pub mod runtime_args;
pub mod telemetry;
pub mod workerd;
