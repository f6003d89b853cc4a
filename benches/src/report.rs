//! What every report records besides its numbers, and how it is written.

use anyhow::Context as _;
use serde::Serialize;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The machine a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores this process may use.
    pub nproc: usize,
    /// Kernel release (`uname -r`), if readable.
    pub kernel: Option<String>,
    /// The `Max locked memory` line of /proc/self/limits (io_uring and glommio
    /// need it; a failure from a low limit is easier to read next to it).
    pub memlock: Option<String>,
}

impl Machine {
    /// Reads what it can; a missing file gives `None`, never an error.
    #[must_use]
    pub fn collect() -> Self {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_string());
        let memlock = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find(|line| line.starts_with("Max locked memory"))
                    .map(|line| {
                        line.trim_start_matches("Max locked memory")
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
            });
        Machine {
            nproc: crate::pin::available_cores(),
            kernel,
            memlock,
        }
    }
}

/// Machine, commit, time and arguments of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// The machine.
    pub machine: Machine,
    /// `git rev-parse HEAD` of the working directory, if git and a repo are there.
    pub git_commit: Option<String>,
    /// Whether the tree had uncommitted changes (`git status --porcelain`).
    pub git_dirty: Option<bool>,
    /// Seconds since the Unix epoch when the run started.
    pub timestamp_unix: u64,
    /// The parsed command-line arguments.
    pub args: serde_json::Value,
}

impl RunInfo {
    /// Collects everything; `args` is serialised as given.
    pub fn collect(args: &impl Serialize) -> Self {
        let git = |a: &[&str]| {
            std::process::Command::new("git")
                .args(a)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        RunInfo {
            machine: Machine::collect(),
            git_commit: git(&["rev-parse", "HEAD"]).filter(|s| !s.is_empty()),
            git_dirty: git(&["status", "--porcelain", "--untracked-files=no"])
                .map(|s| !s.is_empty()),
            timestamp_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            args: serde_json::to_value(args).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Writes `value` as pretty JSON to `path`, creating parent directories.
pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating directory {}", dir.display()))?;
    }
    let mut text = serde_json::to_string_pretty(value).context("serialising report")?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_info_has_machine_and_args() {
        let r = RunInfo::collect(&serde_json::json!({"quick": true}));
        assert!(r.machine.nproc >= 1);
        assert!(
            r.machine.kernel.is_some(),
            "Linux has /proc/sys/kernel/osrelease"
        );
        assert!(r.timestamp_unix > 1_600_000_000);
        assert_eq!(r.args["quick"], true);
    }

    #[test]
    fn write_json_creates_dirs_and_round_trips() {
        let dir = std::env::temp_dir().join(format!("concord-bench-test-{}", std::process::id()));
        let path = dir.join("nested").join("out.json");
        write_json(&path, &serde_json::json!({"cases": [1, 2]})).unwrap();
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back["cases"][1], 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
