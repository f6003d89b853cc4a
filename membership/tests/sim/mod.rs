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
//!
//! A second family, `Scenario::upgrade_from_seed` (run by
//! `upgrade_seeds_hold_every_invariant`), draws rolling upgrades and
//! adjust-version with races; its seeds are independent of the base
//! family's, which keep their meaning.

pub mod rng;
pub mod scenario;
pub mod world;

pub use world::{Coverage, Failure, Gaps, Outcome, TraceLines, World};

/// A family of scenarios: what a seed means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `Scenario::from_seed`: the base family.
    Base,
    /// `Scenario::upgrade_from_seed`: rolling upgrades and adjust-version.
    Upgrade,
    /// `Scenario::base(seed, Drift::Beyond)`: the base family's seed with
    /// clocks whose rates part beyond `Config::lease_drift`'s bound; may
    /// fail by design (it shows the bound matters).
    Drift,
}

impl Family {
    /// The test function that runs the family.
    pub fn test_name(self) -> &'static str {
        match self {
            Family::Base => "every_seed_holds_every_invariant",
            Family::Upgrade => "upgrade_seeds_hold_every_invariant",
            Family::Drift => "drift_beyond_the_bound_seeds",
        }
    }

    pub fn run(self, seed: u64, trace: Option<TraceLines>) -> Outcome {
        match self {
            Family::Base => run_seed(seed, trace),
            Family::Upgrade => run_upgrade_seed(seed, trace),
            Family::Drift => catch(move || World::drifting(seed, trace).run()),
        }
    }
}

/// Runs one seed; with `trace`, the event trace is appended there (also when
/// the Engine panics).
pub fn run_seed(seed: u64, trace: Option<TraceLines>) -> Outcome {
    catch(move || World::new(seed, trace).run())
}

/// Runs one seed of the upgrade family.
pub fn run_upgrade_seed(seed: u64, trace: Option<TraceLines>) -> Outcome {
    catch(move || World::upgrade(seed, trace).run())
}

fn catch(f: impl FnOnce() -> Outcome) -> Outcome {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
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
                gaps: Gaps::default(),
            }
        }
    }
}

/// The one-line command that replays `seed` of `family`.
pub fn replay_command(family: Family, seed: u64) -> String {
    format!(
        "CONCORD_SIM_SEED_START={seed} CONCORD_SIM_SEEDS=1 cargo test -p concord-membership --release --test sim {}{}",
        family.test_name(),
        if family == Family::Drift {
            " -- --ignored"
        } else {
            ""
        }
    )
}
