//! Ordering-path throughput of the Engine (filled in below).
fn main() {}
