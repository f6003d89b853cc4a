//! One-way streaming: a sender writes frames as fast as it can for a fixed
//! time, a receiver parses them and checks every sequence number.
//!
//! Throughput counts payload bytes only, and the clock runs on the receiver
//! from its first frame to the end of the stream, so it measures what was
//! delivered, not what sat in socket buffers. The counting allocator is
//! diffed around the steady part of the sender's streaming, both threads
//! ([`crate::harness::alloc_window`]). The cases run in
//! interleaved rounds ([`crate::harness::rounds`]); the report gives each
//! figure's median over the rounds and its spread.

use crate::cases::concord::{self, StreamIdle};
use crate::cases::std_sockets::{self, STD};
use crate::harness::args::{CommonArgs, parse_seconds};
use crate::harness::result::StreamResult;
use crate::harness::rounds::run_interleaved;
use crate::harness::size::check_stream_size;
use clap::Args;
use serde::Serialize;
use std::time::Duration;

pub mod report;

pub use report::{StreamRecord, StreamReport};

/// The cases, in the order each round runs them.
pub const CASES: &[&str] = &[concord::NAME, STD];

/// Sizes when `--sizes` is not given.
pub const DEFAULT_SIZES: &[usize] = &[64, 1024, 65536];

/// The `stream` binary's flags.
#[derive(Debug, Clone, Args, Serialize)]
pub struct StreamArgs {
    /// The flags every harness binary has.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
    /// Seconds per case, size and round.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub seconds: Option<f64>,
    /// How concord's two threads wait when a poll finds nothing to do
    /// (the std baseline always blocks).
    #[arg(long, value_enum, default_value_t)]
    pub concord_idle: StreamIdle,
}

impl StreamArgs {
    /// Checks the arguments and turns them into what to run.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let sizes = self.common.sizes_or(DEFAULT_SIZES);
        for &s in &sizes {
            check_stream_size(s)?;
        }
        Ok(Plan {
            sizes,
            cases: self.common.selected_cases(CASES, &[])?,
            rounds: self.common.rounds as usize,
            duration: Duration::from_secs_f64(self.seconds.unwrap_or(self.common.pick(3.0, 0.3))),
            concord_idle: self.concord_idle,
        })
    }
}

/// What a stream run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Payload sizes.
    pub sizes: Vec<usize>,
    /// Cases, in the order each round runs them.
    pub cases: Vec<&'static str>,
    /// Rounds.
    pub rounds: usize,
    /// Streaming time per case, size and round.
    pub duration: Duration,
    /// How concord's threads wait.
    pub concord_idle: StreamIdle,
}

impl Plan {
    /// Runs every case in interleaved rounds, logging each run (and each
    /// failure) to stderr; one row per size and case.
    #[must_use]
    pub fn run(&self) -> Vec<StreamRecord> {
        let duration = self.duration;
        let rows = run_interleaved(self.rounds, &self.sizes, &self.cases, |slot| {
            let (case, size) = (slot.case, slot.size);
            eprintln!(
                "stream: round {}/{}: {case} {size} B for {duration:?}",
                slot.round + 1,
                self.rounds
            );
            let outcome = run_case(case, size, duration, self.concord_idle);
            if let Err(e) = &outcome {
                eprintln!("stream: {case} {size} B: {e:#}");
            }
            outcome
        });
        rows.iter().map(StreamRecord::new).collect()
    }
}

/// Runs case `case` once.
pub fn run_case(
    case: &str,
    size: usize,
    duration: Duration,
    idle: StreamIdle,
) -> anyhow::Result<StreamResult> {
    match case {
        concord::NAME => concord::stream(size, duration, idle),
        STD => std_sockets::std_stream(size, duration),
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
        args: StreamArgs,
    }

    fn plan(argv: &[&str]) -> anyhow::Result<Plan> {
        let mut v = vec!["stream"];
        v.extend_from_slice(argv);
        Cli::try_parse_from(v)?.args.plan()
    }

    #[test]
    fn defaults_and_quick() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.sizes, DEFAULT_SIZES);
        assert_eq!(p.cases, CASES);
        assert_eq!((p.rounds, p.duration), (3, Duration::from_secs(3)));
        assert_eq!(p.concord_idle, StreamIdle::Park);
        let p = plan(&["--quick", "--concord-idle", "spin"]).unwrap();
        assert_eq!(p.duration, Duration::from_secs_f64(0.3));
        assert_eq!(p.concord_idle, StreamIdle::Spin);
    }

    #[test]
    fn pingpong_flags_and_bad_values_are_rejected() {
        assert!(Cli::try_parse_from(["stream", "--iterations", "10"]).is_err());
        assert!(Cli::try_parse_from(["stream", "--warmup", "10"]).is_err());
        assert!(Cli::try_parse_from(["stream", "--seconds", "0"]).is_err());
        assert!(plan(&["--sizes", "4"]).is_err());
        assert!(plan(&["--cases", "floor"]).is_err());
    }

    #[test]
    fn every_case_has_a_runner() {
        for case in CASES {
            let r = run_case(case, 64, Duration::from_millis(10), StreamIdle::Park);
            assert!(r.is_ok(), "{case}: {:#}", r.unwrap_err());
        }
        assert!(run_case("nope", 64, Duration::from_millis(1), StreamIdle::Park).is_err());
    }
}
