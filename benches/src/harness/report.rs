//! What every report records besides its numbers, and how it is written.
//!
//! The commit, its dirty flag and the compiler version are the build's,
//! recorded by `build.rs`; the rest is read when the run starts (and the load
//! average again when it ends).

use anyhow::Context as _;
use serde::Serialize;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The machine a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores this process may use.
    pub nproc: usize,
    /// The first `model name` of /proc/cpuinfo, if there is one.
    pub cpu_model: Option<String>,
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
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| cpu_model(&c));
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            cpu_model,
            kernel,
            memlock,
        }
    }
}

/// The value of the first `model name` line of a /proc/cpuinfo text.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == "model name")
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The 1, 5 and 15 minute load averages of /proc/loadavg.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LoadAvg {
    /// Over the last minute.
    pub one: f64,
    /// Over the last 5 minutes.
    pub five: f64,
    /// Over the last 15 minutes.
    pub fifteen: f64,
}

impl LoadAvg {
    /// Reads /proc/loadavg now; `None` if it is missing or unreadable.
    #[must_use]
    pub fn now() -> Option<LoadAvg> {
        Self::parse(&std::fs::read_to_string("/proc/loadavg").ok()?)
    }

    fn parse(text: &str) -> Option<LoadAvg> {
        let mut f = text.split_whitespace().map(str::parse::<f64>);
        Some(LoadAvg {
            one: f.next()?.ok()?,
            five: f.next()?.ok()?,
            fifteen: f.next()?.ok()?,
        })
    }
}

/// Machine, build, time, load and arguments of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// The machine.
    pub machine: Machine,
    /// The commit the binary was built from (`git rev-parse HEAD` at build
    /// time); `"unknown"` when it was built outside a git checkout.
    pub git_commit: String,
    /// Whether that checkout had uncommitted changes to tracked files at build
    /// time; null when unknown (built outside a git checkout).
    pub git_dirty: Option<bool>,
    /// `rustc --version` of the compiler that built the binary.
    pub rustc: String,
    /// Seconds since the Unix epoch when the run started.
    pub timestamp_unix: u64,
    /// Load averages when the run started (other work on a shared machine
    /// shows here).
    pub loadavg_start: Option<LoadAvg>,
    /// Load averages when the run ended; set by [`RunInfo::finish`].
    pub loadavg_end: Option<LoadAvg>,
    /// The parsed command-line arguments.
    pub args: serde_json::Value,
}

impl RunInfo {
    /// Collects everything known at the start; `args` is serialised as given.
    pub fn collect(args: &impl Serialize) -> Self {
        RunInfo {
            machine: Machine::collect(),
            git_commit: env!("CONCORD_BENCH_GIT_COMMIT").to_string(),
            git_dirty: match env!("CONCORD_BENCH_GIT_DIRTY") {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            rustc: env!("CONCORD_BENCH_RUSTC").to_string(),
            timestamp_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            loadavg_start: LoadAvg::now(),
            loadavg_end: None,
            args: serde_json::to_value(args).unwrap_or(serde_json::Value::Null),
        }
    }

    /// Records what is known only at the end of the run (the load averages).
    pub fn finish(&mut self) {
        self.loadavg_end = LoadAvg::now();
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
    fn run_info_has_machine_build_load_and_args() {
        let mut r = RunInfo::collect(&serde_json::json!({"quick": true}));
        assert!(r.machine.nproc >= 1);
        assert!(
            r.machine.kernel.is_some(),
            "Linux has /proc/sys/kernel/osrelease"
        );
        assert!(r.timestamp_unix > 1_600_000_000);
        assert_eq!(r.args["quick"], true);
        assert!(r.rustc.starts_with("rustc "), "{}", r.rustc);
        assert!(
            r.git_commit == "unknown" || r.git_commit.len() == 40,
            "{}",
            r.git_commit
        );
        assert!(r.loadavg_start.is_some(), "Linux has /proc/loadavg");
        assert!(r.loadavg_end.is_none());
        r.finish();
        assert!(r.loadavg_end.is_some());
    }

    #[test]
    fn cpu_model_and_loadavg_parse() {
        let info = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n\nprocessor\t: 1\nmodel name\t: other\n";
        assert_eq!(
            cpu_model(info).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpu_model("processor\t: 0\nBogoMIPS\t: 50.00\n"), None);
        assert_eq!(
            LoadAvg::parse("0.52 1.20 2.00 3/456 7890\n"),
            Some(LoadAvg {
                one: 0.52,
                five: 1.2,
                fifteen: 2.0
            })
        );
        assert_eq!(LoadAvg::parse("garbage"), None);
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
