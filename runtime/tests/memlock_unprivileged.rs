//! `Runtime::build` refuses to start when RLIMIT_MEMLOCK is below what the shards
//! need and the process lacks CAP_IPC_LOCK.
//!
//! Own harness: the parent re-runs this binary as user `nobody` (which drops every
//! capability) under `ulimit -l 64`, and the child builds a runtime and reports
//! the error it got. The parent checks the child's verdict and output.
//!
//! `nobody` may not be able to reach the checkout (a clone in root's home is
//! mode 700), so the parent runs a copy of the binary from a directory of its
//! own under the temp dir, readable and executable by everyone, and removes it
//! afterwards.

use std::fs::{self, DirBuilder, Permissions};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// A directory holding a copy of this test binary that any user can execute;
/// removed with its contents on drop.
struct ExeCopy {
    dir: PathBuf,
    exe: PathBuf,
}

impl ExeCopy {
    fn new(original: &Path) -> ExeCopy {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("concord-memlock-{}-{nanos}", std::process::id()));
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let copy = ExeCopy {
            exe: dir.join("memlock_unprivileged"),
            dir,
        };
        fs::copy(original, &copy.exe)
            .unwrap_or_else(|e| panic!("copy the test binary to {}: {e}", copy.exe.display()));
        fs::set_permissions(&copy.exe, Permissions::from_mode(0o755)).expect("chmod the copy");
        // Traversable (not listable) by others once the copy is in place.
        fs::set_permissions(&copy.dir, Permissions::from_mode(0o711)).expect("chmod the dir");
        copy
    }
}

impl Drop for ExeCopy {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {e}", self.dir.display());
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
    let copy = ExeCopy::new(&exe);
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -l 64 && exec "$0""#)
        .arg(&copy.exe)
        .current_dir(&copy.dir)
        .env(CHILD_ENV, "1")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("spawn child");
    drop(copy);
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
