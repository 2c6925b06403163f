//! Benchmarks of the dispatch path live in `benches/`.
