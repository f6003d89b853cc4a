//! The client's warm-up + measure loop every synchronous ping-pong case shares.
//!
//! The client times each round trip with [`Instant`] into a histogram allocated
//! before the loop, and diffs the counting allocator around the measured loop
//! only (after warm-up), so the figures describe the steady state.

use crate::harness::summary::LatencyHistogram;
use anyhow::Context as _;
use concord_runtime::alloc::{self, AllocSnapshot};
use std::time::Instant;

/// Latencies plus the allocator diff of one measured loop.
#[derive(Debug)]
pub struct Measured {
    /// One sample per measured round trip.
    pub hist: LatencyHistogram,
    /// Allocator diff across the measured loop, if the counting allocator is installed.
    pub allocs: Option<AllocSnapshot>,
}

/// Runs `warmup` then `iters` round trips and measures the latter.
///
/// `round_trip(seq)` sends message `seq`, waits for its echo and verifies it.
/// Warm-up uses sequence numbers `0..warmup`, the measured loop continues from
/// there, so the server sees one unbroken sequence.
pub fn measure_round_trips(
    warmup: u64,
    iters: u64,
    mut round_trip: impl FnMut(u64) -> anyhow::Result<()>,
) -> anyhow::Result<Measured> {
    let mut hist = LatencyHistogram::new()?;
    let counting = alloc::is_installed();
    for seq in 0..warmup {
        round_trip(seq).with_context(|| format!("warm-up round trip {seq}"))?;
    }
    let before = alloc::snapshot();
    for seq in warmup..warmup + iters {
        let t0 = Instant::now();
        round_trip(seq).with_context(|| format!("round trip {seq}"))?;
        hist.record(t0.elapsed());
    }
    let after = alloc::snapshot();
    Ok(Measured {
        hist,
        allocs: counting.then(|| after.since(&before)),
    })
}
