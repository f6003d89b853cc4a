//! Ping-pong: one client, one echo server, two pinned threads, one connection.
//!
//! Every message is `size` bytes whose first 8 carry a sequence number (little
//! endian). The server checks it arrives in order and echoes the message; the
//! client checks the echo carries the number it sent. A case that loses,
//! reorders or corrupts a message fails instead of reporting a latency.
//!
//! The client times each round trip into a histogram allocated before the
//! loop, and diffs the counting allocator around the measured loop only
//! (after warm-up), so the figures describe the steady state
//! ([`crate::harness::round_trip`]). The cases run in interleaved rounds
//! ([`crate::harness::rounds`]); the report gives each figure's median over
//! the rounds and its spread.

use crate::cases::std_sockets::{BLOCKING, FLOOR};
use crate::cases::{concord, std_sockets};
use crate::harness::args::CommonArgs;
use crate::harness::result::CaseResult;
use crate::harness::rounds::run_interleaved;
use crate::harness::size::check_pingpong_size;
use clap::Args;
use serde::Serialize;

pub mod report;

pub use report::{PingpongRecord, PingpongReport};

/// The cases of this build, in the order each round runs them.
pub const CASES: &[&str] = &[
    concord::NAME,
    FLOOR,
    BLOCKING,
    #[cfg(feature = "glommio")]
    crate::cases::glommio::NAME,
    #[cfg(feature = "glommio")]
    crate::cases::glommio::NAME_SPIN,
];

/// Cases that exist only with a cargo feature of this crate: (case, feature).
pub const FEATURE_CASES: &[(&str, &str)] = &[("glommio", "glommio"), ("glommio-spin", "glommio")];

/// Sizes when `--sizes` is not given.
pub const DEFAULT_SIZES: &[usize] = &[64, 4096];

/// The `pingpong` binary's flags.
#[derive(Debug, Clone, Args, Serialize)]
pub struct PingpongArgs {
    /// The flags every harness binary has.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
    /// Measured round trips per case, size and round (after warm-up).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: Option<u64>,
    /// Warm-up round trips per case, size and round (not measured).
    #[arg(long, value_name = "N")]
    pub warmup: Option<u64>,
}

impl PingpongArgs {
    /// Checks the arguments and turns them into what to run.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let sizes = self.common.sizes_or(DEFAULT_SIZES);
        for &s in &sizes {
            check_pingpong_size(s)?;
        }
        Ok(Plan {
            sizes,
            cases: self.common.selected_cases(CASES, FEATURE_CASES)?,
            rounds: self.common.rounds as usize,
            iters: self.iterations.unwrap_or(self.common.pick(50_000, 2_000)),
            // 20,000 warm-up round trips of 64 B move 1.6 MB each way: more
            // than one of concord's 1 MiB receive buffers, so the measured part
            // starts with every buffer and the reassembly path touched (the
            // reassembly buffer is preallocated per connection, so none of this
            // allocates anyway).
            warmup: self.warmup.unwrap_or(self.common.pick(20_000, 200)),
        })
    }
}

/// What a ping-pong run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Message sizes.
    pub sizes: Vec<usize>,
    /// Cases, in the order each round runs them.
    pub cases: Vec<&'static str>,
    /// Rounds.
    pub rounds: usize,
    /// Warm-up round trips per case, size and round.
    pub warmup: u64,
    /// Measured round trips per case, size and round.
    pub iters: u64,
}

impl Plan {
    /// Runs every case in interleaved rounds, logging each run (and each
    /// failure) to stderr; one row per size and case.
    #[must_use]
    pub fn run(&self) -> Vec<PingpongRecord> {
        let (warmup, iters) = (self.warmup, self.iters);
        let rows = run_interleaved(self.rounds, &self.sizes, &self.cases, |slot| {
            let (case, size) = (slot.case, slot.size);
            eprintln!(
                "pingpong: round {}/{}: {case} {size} B, {warmup} warm-up + {iters} round trips",
                slot.round + 1,
                self.rounds
            );
            let outcome = run_case(case, size, warmup, iters);
            if let Err(e) = &outcome {
                eprintln!("pingpong: {case} {size} B: {e:#}");
            }
            outcome
        });
        rows.iter().map(PingpongRecord::new).collect()
    }
}

/// Runs case `case` once.
pub fn run_case(case: &str, size: usize, warmup: u64, iters: u64) -> anyhow::Result<CaseResult> {
    match case {
        concord::NAME => concord::pingpong(size, warmup, iters),
        FLOOR => std_sockets::floor(size, warmup, iters),
        BLOCKING => std_sockets::blocking(size, warmup, iters),
        #[cfg(feature = "glommio")]
        crate::cases::glommio::NAME => crate::cases::glommio::pingpong(size, warmup, iters, None),
        #[cfg(feature = "glommio")]
        crate::cases::glommio::NAME_SPIN => crate::cases::glommio::pingpong(
            size,
            warmup,
            iters,
            Some(crate::cases::glommio::SPIN_BEFORE_PARK),
        ),
        other => anyhow::bail!("case {other} is listed but has no runner"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: PingpongArgs,
    }

    fn plan(argv: &[&str]) -> anyhow::Result<Plan> {
        let mut v = vec!["pingpong"];
        v.extend_from_slice(argv);
        Cli::try_parse_from(v)?.args.plan()
    }

    #[test]
    fn defaults_and_quick() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.sizes, DEFAULT_SIZES);
        assert_eq!(p.cases, CASES);
        assert_eq!((p.rounds, p.warmup, p.iters), (3, 20_000, 50_000));
        let p = plan(&["--quick", "--rounds", "4", "--iterations", "7"]).unwrap();
        assert_eq!((p.rounds, p.warmup, p.iters), (4, 200, 7));
    }

    #[test]
    fn stream_flags_and_bad_values_are_rejected() {
        assert!(Cli::try_parse_from(["pingpong", "--seconds", "1"]).is_err());
        assert!(Cli::try_parse_from(["pingpong", "--iterations", "0"]).is_err());
        let e = plan(&["--sizes", "4"]).unwrap_err();
        assert!(format!("{e}").contains("minimum of 8 bytes"), "{e}");
    }

    #[cfg(not(feature = "glommio"))]
    #[test]
    fn glommio_cases_need_the_feature() {
        assert!(!CASES.contains(&"glommio"));
        let e = plan(&["--cases", "glommio-spin"]).unwrap_err();
        assert!(format!("{e}").contains("--features glommio"), "{e}");
    }

    #[test]
    fn every_case_has_a_runner() {
        for case in CASES {
            let r = run_case(case, 64, 2, 10);
            assert!(r.is_ok(), "{case}: {:#}", r.unwrap_err());
        }
        assert!(run_case("nope", 64, 1, 1).is_err());
    }
}
