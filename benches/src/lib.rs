//! concord-bench: the end-to-end benchmark harness.
//!
//! The binaries (`pingpong`, `stream`) measure concord's transport
//! (`concord`: [`cases::concord`], a busy-polled `concord_transport::Driver` per
//! thread) against baselines in the same run, because these machines are
//! shared and noisy: a ratio to a baseline measured a second earlier means
//! more than an absolute number. The baselines are
//!
//! - `floor`: non-blocking std sockets, both sides busy-polling: the best a
//!   socket-based transport can do here, and the number to approach;
//! - `blocking`: blocking std sockets (the kernel wakes the thread per message);
//! - `glommio` / `glommio-spin`: glommio 0.9 executors, default and with
//!   `spin_before_park` (only with the `glommio` cargo feature; without it,
//!   asking for them is an error that names the feature);
//! - `std` (stream): blocking sockets with 64 KiB userspace batching.
//!
//! Model: every case is two pinned threads over one loopback TCP connection
//! (client on core 0, server on core 1). The client times each round trip into
//! an hdrhistogram allocated before the loop, and the counting global allocator
//! ([`concord_runtime::alloc::CountingAlloc`]) is diffed around the measured
//! loop to count heap allocations per message in steady state. Every message
//! carries a sequence number that both sides check, so a case that loses or
//! reorders fails. Warm-up (20,000 round trips by default) is long enough for
//! 64 B traffic to wrap one of concord's 1 MiB receive buffers, whose first
//! straddling frame allocates a reassembly buffer once; steady state starts
//! after that.
//!
//! The cases run in interleaved rounds (A B C A B C ..., 3 by default,
//! `--rounds N`), and every figure is reported as the median over the rounds
//! with its spread; a ratio is the median of the per-round ratios.
//!
//! A case that cannot run (glommio without enough memlock, say) is reported as
//! `FAILED` in the table and under `failures` in the JSON, the other cases still
//! run, and the binary exits with status 1; bad arguments, including a flag the
//! binary does not use, exit with status 2.
//!
//! The `group` binary ([`group`]) measures the product rather than the
//! transport: three node processes on loopback, closed-loop multicast
//! latency against the same floor measured between two of them, throughput
//! with every node sending, allocations and payload copies per delivery, and
//! whether every node delivered the same sequence.
//!
//! Modules depend one way: [`harness`] (what every case shares) <- [`cases`]
//! (one way of moving messages each) <- the workloads [`pingpong`],
//! [`stream`] and [`group`] (what to run, in which order, and the report) <-
//! the binaries.
//! They are public so later harnesses (load generator, upgrade driver) reuse
//! them:
//!
//! ```no_run
//! use concord_bench::cases::std_sockets;
//! use concord_bench::harness::summary::Summary;
//!
//! let floor = std_sockets::floor(64, 1_000, 10_000)?;
//! let s: Summary = floor.summary;
//! println!("floor p50 {} ns, p99 {} ns", s.p50_ns, s.p99_ns);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod cases;
pub mod group;
pub mod harness;
pub mod pingpong;
pub mod stream;

/// Unit tests run under the counting allocator, so the cases' `allocs` fields
/// are exercised for real.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOC: concord_runtime::alloc::CountingAlloc = concord_runtime::alloc::CountingAlloc;
