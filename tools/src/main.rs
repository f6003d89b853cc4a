//! `concord`: the command-line tool of the concord messaging runtime.
//!
//! One binary, one subcommand per job. Each subcommand lives in its own module
//! with a clap `Args` struct and a `run(args) -> anyhow::Result<ExitCode>`, so
//! the node daemon, `status`, `adjust-version`, the load generator, the
//! rolling-upgrade driver and the demo cluster slot in beside `doctor`.
//!
//! ```text
//! concord doctor            # can concord run here? what to fix if not
//! concord doctor --json     # the same, for scripts
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod doctor;

#[derive(Debug, Parser)]
#[command(
    name = "concord",
    version,
    about = "concord: totally ordered multicast over io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that this machine can run concord (kernel, io_uring, memlock, cores)
    /// and say how to fix what is missing. Exits 1 if something is.
    Doctor(doctor::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor(args) => doctor::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("concord: {e:#}");
            ExitCode::FAILURE
        }
    }
}
