//! One-way loopback streaming: concord's transport against std sockets, in one
//! run. Prints a table; `--json FILE` writes JSON with `ratio_64k_vs_std`.

use clap::Parser;
use concord_bench::alloc::CountingAlloc;
use concord_bench::args::BenchArgs;
use concord_bench::concord_case;
use concord_bench::report::{RunInfo, write_json};
use concord_bench::stream::{self, StreamRecord, StreamReport};
use serde::Serialize;
use std::process::ExitCode;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const CASES: &[&str] = &[concord_case::NAME, "std"];

/// One-way streaming of length-prefixed frames for a fixed time per size;
/// msgs/s and payload GB/s, every sequence number checked on receipt.
///
/// Cases: concord (concord's transport), std (blocking std sockets with 64 KiB
/// userspace batching).
#[derive(Debug, Parser, Serialize)]
#[command(name = "stream", version)]
struct Cli {
    #[command(flatten)]
    #[serde(flatten)]
    args: BenchArgs,
    /// How concord's two threads wait when a poll finds nothing to do
    /// (the std baseline always blocks).
    #[arg(long, value_enum, default_value_t)]
    concord_idle: concord_case::StreamIdle,
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
    let a = &cli.args;
    let sizes = a.sizes_or(&[64, 1024, 65536]);
    for &s in &sizes {
        stream::check_size(s)?;
    }
    let duration = a.duration_or(3.0, 0.3);
    let cases = a.selected_cases(CASES)?;
    let run = RunInfo::collect(&cli);

    let mut rows = Vec::new();
    for &size in &sizes {
        for &case in &cases {
            eprintln!("stream: {case} {size} B for {duration:?}");
            let outcome = match case {
                "concord" => concord_case::stream(size, duration, cli.concord_idle),
                "std" => stream::std_stream(size, duration),
                other => anyhow::bail!("case {other} is listed but has no runner"),
            };
            if let Err(e) = &outcome {
                eprintln!("stream: {case} {size} B: {e:#}");
            }
            rows.push(StreamRecord::new(case, size, &outcome));
        }
    }

    let report = StreamReport::new(run, rows);
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
