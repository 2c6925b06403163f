//! The graph engine and the agent turn loop (spec runtime §3, §5, §6).
//!
//! * [`agent_turn`]: one agent's bounded model↔tool loop ([`agent_turn::AgentRunner`]).
//! * [`graph`]: validation at claim time, entry agents / linear order, and the graph walk as a
//!   state machine over a task's status ([`graph::GraphRun`]); the worker drives
//!   it in process.
//! * [`failure`]: retryability of failure reasons and the task retry delay (§2.3).

pub mod agent_turn;
pub mod failure;
pub mod graph;
pub mod memory_tools;
pub mod trace;
