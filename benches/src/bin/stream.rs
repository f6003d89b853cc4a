//! One-way loopback streaming: concord's transport against std sockets, in
//! interleaved rounds. Prints a table; `--json FILE` writes JSON with
//! `ratio_64k_vs_std`.

use clap::Parser;
use concord_bench::harness::report::{RunInfo, write_json};
use concord_bench::stream::{StreamArgs, StreamReport};
use concord_runtime::alloc::CountingAlloc;
use serde::Serialize;
use std::process::ExitCode;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// One-way streaming of length-prefixed frames for a fixed time per size;
/// msgs/s and payload GB/s, every sequence number checked on receipt.
///
/// Cases: concord (concord's transport), std (blocking std sockets with 64 KiB
/// userspace batching). The cases run in interleaved rounds; every figure is
/// the median over the rounds, shown with its spread.
#[derive(Debug, Parser, Serialize)]
#[command(name = "stream", version)]
struct Cli {
    #[command(flatten)]
    #[serde(flatten)]
    args: StreamArgs,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stream: {e:#}");
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

    let report = StreamReport::new(run, rows);
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
