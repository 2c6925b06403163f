//! Runnable examples for embedders; see the `examples/` programs.
