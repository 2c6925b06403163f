//! # orloj-bins
//!
//! The command-line front ends of Orloj: `orlojd` (the server, [`daemon`]) and `orlojctl`
//! (the client). Each `main` is short; the configuration types and wiring live here so they
//! can be tested.

pub mod ctl;
pub mod daemon;
pub mod telemetry;
