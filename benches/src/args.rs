//! Command-line arguments shared by the harness binaries.

use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Options every harness binary accepts.
#[derive(Debug, Clone, Args, Serialize)]
pub struct BenchArgs {
    /// Write the results as JSON to this file (the table is always printed).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Short run for CI: every case, a few thousand iterations / a fraction of a second.
    #[arg(long)]
    pub quick: bool,
    /// Measured round trips per case and size (after warm-up).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: Option<u64>,
    /// Warm-up round trips per case and size (not measured).
    #[arg(long, value_name = "N")]
    pub warmup: Option<u64>,
    /// Seconds per case and size for streaming benches.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub seconds: Option<f64>,
    /// Message sizes, comma separated; accepts suffixes k/KiB and m/MiB (64,4k).
    #[arg(long, value_name = "SIZES", value_delimiter = ',', value_parser = parse_size)]
    pub sizes: Vec<usize>,
    /// Cases to run, comma separated (default: all).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub cases: Vec<String>,
}

impl BenchArgs {
    /// `--iterations`, else the default for a full or a quick run.
    #[must_use]
    pub fn iterations_or(&self, full: u64, quick: u64) -> u64 {
        self.iterations
            .unwrap_or(if self.quick { quick } else { full })
    }

    /// `--warmup`, else the default for a full or a quick run.
    #[must_use]
    pub fn warmup_or(&self, full: u64, quick: u64) -> u64 {
        self.warmup.unwrap_or(if self.quick { quick } else { full })
    }

    /// `--seconds`, else the default for a full or a quick run.
    #[must_use]
    pub fn duration_or(&self, full: f64, quick: f64) -> Duration {
        Duration::from_secs_f64(
            self.seconds
                .unwrap_or(if self.quick { quick } else { full }),
        )
    }

    /// `--sizes`, else `default`.
    #[must_use]
    pub fn sizes_or(&self, default: &[usize]) -> Vec<usize> {
        if self.sizes.is_empty() {
            default.to_vec()
        } else {
            self.sizes.clone()
        }
    }

    /// The selected cases, in the order of `known`; an unknown name is an error
    /// that lists the valid ones.
    pub fn selected_cases(&self, known: &[&'static str]) -> anyhow::Result<Vec<&'static str>> {
        for c in &self.cases {
            if !known.contains(&c.as_str()) {
                anyhow::bail!("unknown case {c:?}; known cases: {}", known.join(","));
            }
        }
        Ok(known
            .iter()
            .copied()
            .filter(|k| self.cases.is_empty() || self.cases.iter().any(|c| c == k))
            .collect())
    }
}

/// Parses a byte size: `64`, `4k`, `4K`, `4KiB`, `1m`, `1MiB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (digits, mult) = if let Some(d) = lower
        .strip_suffix("kib")
        .or_else(|| lower.strip_suffix('k'))
    {
        (d, 1024)
    } else if let Some(d) = lower
        .strip_suffix("mib")
        .or_else(|| lower.strip_suffix('m'))
    {
        (d, 1024 * 1024)
    } else {
        (lower.strip_suffix('b').unwrap_or(&lower), 1)
    };
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {t:?} (examples: 64, 4k, 64KiB, 1m)"))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("size too large: {t:?}"))?;
    if bytes == 0 {
        return Err(format!("size must be positive: {t:?}"));
    }
    Ok(bytes)
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("not a number of seconds: {s:?}"))?;
    if !v.is_finite() || v <= 0.0 || v > 3600.0 {
        return Err(format!("seconds must be in (0, 3600]: {s:?}"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("100b"), Ok(100));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-4").is_err());
        assert!(parse_size("99999999999999999999k").is_err());
    }

    #[test]
    fn cli_parses_and_selects() {
        let cli = Cli::try_parse_from([
            "x",
            "--quick",
            "--sizes",
            "64,4k",
            "--cases",
            "blocking,floor",
            "--json",
            "o.json",
        ])
        .unwrap();
        let a = cli.args;
        assert!(a.quick);
        assert_eq!(a.sizes_or(&[1]), vec![64, 4096]);
        assert_eq!(a.iterations_or(50_000, 2_000), 2_000);
        // Order follows the known list, not the command line.
        assert_eq!(
            a.selected_cases(&["concord", "floor", "blocking"]).unwrap(),
            vec!["floor", "blocking"]
        );
        assert!(a.selected_cases(&["concord"]).is_err());
    }

    #[test]
    fn cli_rejects_bad_values() {
        assert!(Cli::try_parse_from(["x", "--iterations", "0"]).is_err());
        assert!(Cli::try_parse_from(["x", "--seconds", "-1"]).is_err());
        assert!(Cli::try_parse_from(["x", "--seconds", "NaN"]).is_err());
        assert!(Cli::try_parse_from(["x", "--sizes", "64,abc"]).is_err());
        let none = Cli::try_parse_from(["x"]).unwrap().args;
        assert_eq!(none.sizes_or(&[64]), vec![64]);
        assert_eq!(none.selected_cases(&["a", "b"]).unwrap(), vec!["a", "b"]);
    }
}
