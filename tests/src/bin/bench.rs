//! Benchmarks that take too long for the test run (see BENCHMARKS.md). Placeholder until the
//! first benchmark lands.

fn main() {}
