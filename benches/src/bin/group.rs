//! The group benchmark: 3 node processes on loopback, closed-loop latency
//! (Agreed and Safe) against the raw socket floor between two of them, and
//! throughput with every node sending, in interleaved rounds. Prints a
//! table; `--json FILE` writes JSON.

use clap::Parser;
use concord_bench::group::proto::MEMBER_ROLE;
use concord_bench::group::{Cluster, GroupArgs, GroupRecord, GroupReport, member};
use concord_bench::harness::report::{RunInfo, write_json};
use concord_runtime::alloc::CountingAlloc;
use serde::Serialize;
use std::process::ExitCode;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Three concord nodes on loopback (this binary, re-executed), one shard
/// each: closed-loop multicast latency of a node that is not the sequencer
/// (Agreed and Safe) next to the busy-polled socket round trip between two
/// of the nodes, throughput with every node sending, allocations and
/// payload copies per delivery, and a check that every node delivered the
/// same sequence. The cases run in interleaved rounds; every figure is the
/// median over the rounds, shown with its spread.
#[derive(Debug, Parser, Serialize)]
#[command(name = "group", version)]
struct Cli {
    #[command(flatten)]
    #[serde(flatten)]
    args: GroupArgs,
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some(MEMBER_ROLE) {
        let spec = argv.next().unwrap_or_default();
        return match member::main(&spec) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("group node: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("group: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let plan = cli.args.plan()?;
    let mut run = RunInfo::collect(&cli);
    let (cluster, rows, start_error) = match Cluster::start(plan.idle) {
        Ok(mut cluster) => {
            let rows = plan.run(&mut cluster);
            (Some(cluster), rows, None)
        }
        Err(e) => {
            eprintln!("group: the nodes did not start: {e:#}");
            (None, Vec::new(), Some(format!("{e:#}")))
        }
    };
    run.finish();
    let rows: Vec<GroupRecord> = rows.iter().map(GroupRecord::new).collect();
    let report = GroupReport::new(run, &plan, cluster.as_ref(), rows, start_error);
    if let Some(c) = cluster {
        c.stop();
    }
    print!("{}", report.table());
    if let Some(path) = &cli.args.common.json {
        write_json(path, &report)?;
        println!("wrote {}", path.display());
    }
    Ok(if report.failures.is_empty() && report.order_hash_agree {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
