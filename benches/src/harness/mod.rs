//! What every case and workload shares: the outcome of a case, the stall
//! timeout, sequence stamps, size checks, loopback pairs of pinned threads, the
//! round-trip loop, result, summary and report types, the shared arguments, and
//! the interleaved rounds with their medians and spreads.
//!
//! Dependencies run one way: `harness` <- `cases` <- workloads (`pingpong`,
//! `stream`) <- binaries. Nothing here names a case.

use std::time::Duration;

pub mod alloc_window;
pub mod args;
pub mod pair;
pub mod report;
pub mod result;
pub mod round_trip;
pub mod rounds;
pub mod seq;
pub mod size;
pub mod stats;
pub mod status;
pub mod summary;

/// A peer that makes no progress for this long is declared stalled, so a broken
/// case fails instead of hanging CI.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
