//! `Runtime::build` refuses to start when RLIMIT_MEMLOCK is below what the shards
//! need and the process lacks CAP_IPC_LOCK.
//!
//! Own harness: the parent re-runs this binary as user `nobody` (which drops every
//! capability) under `ulimit -l 64`, and the child builds a runtime and reports
//! the error it got. The parent checks the child's verdict and output.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use concord_runtime::{Error, Runtime};

const CHILD_ENV: &str = "CONCORD_MEMLOCK_CHILD";

fn child() -> ExitCode {
    let built = Runtime::builder()
        .shards(2)
        .pin(false)
        .memlock_per_shard(8 << 20)
        .build();
    match built {
        Err(
            e @ Error::MemLockLimit {
                have,
                hard,
                need,
                shards,
            },
        ) => {
            println!("child: got {e}");
            if have == 64 << 10 && hard == 64 << 10 && need == 16 << 20 && shards == 2 {
                ExitCode::SUCCESS
            } else {
                println!(
                    "child: wrong numbers have={have} hard={hard} need={need} shards={shards}"
                );
                ExitCode::from(3)
            }
        }
        Err(e) => {
            println!("child: unexpected error {e}");
            ExitCode::from(4)
        }
        Ok(rt) => {
            println!("child: runtime started although memlock is too low");
            let _ = rt.shutdown();
            ExitCode::from(5)
        }
    }
}

fn main() -> ExitCode {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child();
    }
    // Speak enough of libtest's command line for `--list` and name filters.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("memlock_unprivileged: test");
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty()
        && !filters
            .iter()
            .any(|f| "memlock_unprivileged".contains(f.as_str()))
    {
        println!("running 0 tests (filtered out)");
        return ExitCode::SUCCESS;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -l 64 && exec "$0""#)
        .arg(&exe)
        .env(CHILD_ENV, "1")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ok = out.status.success()
        && stdout.contains("memlock limit too low")
        && stdout.contains("ulimit -l 16384");
    if ok {
        println!("test memlock_unprivileged ... ok");
        ExitCode::SUCCESS
    } else {
        println!("test memlock_unprivileged ... FAILED ({})", out.status);
        println!("--- child stdout\n{stdout}\n--- child stderr\n{stderr}");
        ExitCode::FAILURE
    }
}
