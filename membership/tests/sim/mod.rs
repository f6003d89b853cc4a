//! The deterministic simulator of the membership Engine.
//!
//! One `u64` seed decides the cluster (3 to 7 nodes, 1 to 3 groups, delivery
//! modes, timeouts, window and batch sizes), the network (latency, loss,
//! duplication, reordering, long delays, optionally the wire codec), the
//! workload (multicasts at random times and bursts that overrun the window)
//! and the faults (crashes, coordinator crashes, restarts, partitions and
//! heals, graceful leaves including the coordinator's, joins). After the chaos
//! phase comes the final heal: the network is healed and clean, crashed nodes
//! restart (at least enough for a majority), everyone multicasts once more,
//! and the world runs until the cluster has converged (or a deadline passes).
//! Then every checker of `concord_membership::check` runs over the logs.

pub mod rng;
pub mod scenario;
pub mod world;

pub use world::{Coverage, Failure, Outcome, TraceLines, World};

/// Runs one seed; with `trace`, the event trace is appended there (also when
/// the Engine panics).
pub fn run_seed(seed: u64, trace: Option<TraceLines>) -> Outcome {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        World::new(seed, trace).run()
    }));
    match run {
        Ok(o) => o,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "(non-string panic)".to_string());
            Outcome {
                result: Err(Failure::Panic(msg)),
                trace_hash: 0,
                logs: Default::default(),
                coverage: Coverage::default(),
            }
        }
    }
}

/// The one-line command that replays `seed`.
pub fn replay_command(seed: u64) -> String {
    format!(
        "CONCORD_SIM_SEED_START={seed} CONCORD_SIM_SEEDS=1 cargo test -p concord-membership --release --test sim"
    )
}
