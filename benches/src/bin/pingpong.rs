//! Loopback ping-pong: concord's transport against the socket floor, blocking
//! sockets and glommio, in one run. Prints a table; `--json FILE` writes JSON.

use clap::Parser;
use concord_bench::alloc::CountingAlloc;
use concord_bench::args::BenchArgs;
use concord_bench::pingpong::{self, PingpongRecord, PingpongReport};
use concord_bench::report::{RunInfo, write_json};
use concord_bench::{concord_case, glommio_case};
use serde::Serialize;
use std::process::ExitCode;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const CASES: &[&str] = &[
    concord_case::NAME,
    "floor",
    "blocking",
    "glommio",
    "glommio-spin",
];

/// Loopback TCP ping-pong, two pinned threads, hdrhistogram percentiles.
///
/// Cases: concord (concord's transport), floor (busy-polled non-blocking std
/// sockets), blocking (blocking std sockets), glommio (glommio 0.9 default),
/// glommio-spin (glommio with spin_before_park 200 us).
#[derive(Debug, Parser, Serialize)]
#[command(name = "pingpong", version)]
struct Cli {
    #[command(flatten)]
    #[serde(flatten)]
    args: BenchArgs,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pingpong: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let a = &cli.args;
    let sizes = a.sizes_or(&[64, 4096]);
    for &s in &sizes {
        pingpong::check_size(s)?;
    }
    let iters = a.iterations_or(50_000, 2_000);
    // 20,000 warm-up round trips of 64 B move 1.6 MB each way: more than one
    // of concord's 1 MiB receive buffers, so the measured part starts with
    // every buffer and the reassembly path touched (the reassembly buffer is
    // preallocated per connection, so none of this allocates anyway).
    let warmup = a.warmup_or(20_000, 200);
    let cases = a.selected_cases(CASES)?;
    let run = RunInfo::collect(&cli);

    let mut rows = Vec::new();
    for &size in &sizes {
        for &case in &cases {
            eprintln!("pingpong: {case} {size} B, {warmup} warm-up + {iters} round trips");
            let outcome = match case {
                "concord" => concord_case::pingpong(size, warmup, iters),
                "floor" => pingpong::floor(size, warmup, iters),
                "blocking" => pingpong::blocking(size, warmup, iters),
                "glommio" => glommio_case::pingpong(size, warmup, iters, None),
                "glommio-spin" => glommio_case::pingpong(
                    size,
                    warmup,
                    iters,
                    Some(glommio_case::SPIN_BEFORE_PARK),
                ),
                other => anyhow::bail!("case {other} is listed but has no runner"),
            };
            if let Err(e) = &outcome {
                eprintln!("pingpong: {case} {size} B: {e:#}");
            }
            rows.push(PingpongRecord::new(case, size, &outcome));
        }
    }

    let report = PingpongReport::new(run, rows);
    print!("{}", report.table());
    if let Some(path) = &a.json {
        write_json(path, &report)?;
        println!("wrote {}", path.display());
    }
    Ok(if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
