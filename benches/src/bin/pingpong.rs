//! Loopback ping-pong: concord's transport against the socket floor, blocking
//! sockets and (with the `glommio` feature) glommio, in interleaved rounds.
//! Prints a table; `--json FILE` writes JSON.

use clap::Parser;
use concord_bench::harness::report::{RunInfo, write_json};
use concord_bench::pingpong::{PingpongArgs, PingpongReport};
use concord_runtime::alloc::CountingAlloc;
use serde::Serialize;
use std::process::ExitCode;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Loopback TCP ping-pong, two pinned threads, hdrhistogram percentiles.
///
/// Cases: concord (concord's transport), floor (busy-polled non-blocking std
/// sockets), blocking (blocking std sockets); with the `glommio` feature also
/// glommio (glommio 0.9 default) and glommio-spin (glommio with
/// spin_before_park 200 us). The cases run in interleaved rounds; every figure
/// is the median over the rounds, shown with its spread.
#[derive(Debug, Parser, Serialize)]
#[command(name = "pingpong", version)]
struct Cli {
    #[command(flatten)]
    #[serde(flatten)]
    args: PingpongArgs,
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
    let plan = cli.args.plan()?;
    let mut run = RunInfo::collect(&cli);
    let rows = plan.run();
    run.finish();

    let report = PingpongReport::new(run, rows);
    print!("{}", report.table());
    if let Some(path) = &cli.args.common.json {
        write_json(path, &report)?;
        println!("wrote {}", path.display());
    }
    Ok(if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
