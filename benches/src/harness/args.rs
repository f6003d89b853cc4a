//! Command-line arguments every harness binary takes; each binary adds its
//! own (`pingpong::PingpongArgs`, `stream::StreamArgs`) and nothing else, so
//! a flag a binary does not use is an error (clap: exit status 2).

use crate::harness::rounds::DEFAULT_ROUNDS;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

/// Options every harness binary accepts.
#[derive(Debug, Clone, Args, Serialize)]
pub struct CommonArgs {
    /// Write the results as JSON to this file (the table is always printed).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Short run for CI: every case, a few thousand iterations / a fraction of a second.
    #[arg(long)]
    pub quick: bool,
    /// Message sizes, comma separated; accepts suffixes k/KiB and m/MiB (64,4k).
    #[arg(long, value_name = "SIZES", value_delimiter = ',', value_parser = parse_size)]
    pub sizes: Vec<usize>,
    /// Cases to run, comma separated (default: all).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub cases: Vec<String>,
    /// Rounds: every case runs once per round, the cases of a round one after
    /// the other (A B C A B C ...); figures are medians over the rounds.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_ROUNDS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
}

impl CommonArgs {
    /// `quick`'s value if `--quick`, else `full`'s.
    #[must_use]
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
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

    /// The selected cases, in the order of `known`. A name in `needs_feature`
    /// (case, cargo feature) is an error that says which feature to build
    /// with; any other unknown name is an error that lists the valid ones.
    pub fn selected_cases(
        &self,
        known: &[&'static str],
        needs_feature: &[(&str, &str)],
    ) -> anyhow::Result<Vec<&'static str>> {
        for c in &self.cases {
            if known.contains(&c.as_str()) {
                continue;
            }
            if let Some((_, feature)) = needs_feature.iter().find(|(n, _)| n == c) {
                anyhow::bail!(
                    "case {c:?} is not in this build; build with `--features {feature}` \
                     (cargo build --release -p concord-bench --features {feature})"
                );
            }
            anyhow::bail!("unknown case {c:?}; known cases: {}", known.join(","));
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

/// Parses a number of seconds in (0, 3600].
pub fn parse_seconds(s: &str) -> Result<f64, String> {
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
        args: CommonArgs,
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
    fn seconds_are_bounded() {
        assert_eq!(parse_seconds("0.5"), Ok(0.5));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("NaN").is_err());
        assert!(parse_seconds("3601").is_err());
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
            "--rounds",
            "5",
        ])
        .unwrap();
        let a = cli.args;
        assert!(a.quick);
        assert_eq!(a.rounds, 5);
        assert_eq!(a.sizes_or(&[1]), vec![64, 4096]);
        assert_eq!(a.pick(50_000, 2_000), 2_000);
        // Order follows the known list, not the command line.
        assert_eq!(
            a.selected_cases(&["concord", "floor", "blocking"], &[])
                .unwrap(),
            vec!["floor", "blocking"]
        );
        assert!(a.selected_cases(&["concord"], &[]).is_err());
    }

    #[test]
    fn a_case_behind_a_feature_names_the_feature() {
        let a = Cli::try_parse_from(["x", "--cases", "glommio"])
            .unwrap()
            .args;
        let e = a
            .selected_cases(&["floor"], &[("glommio", "glommio")])
            .unwrap_err();
        assert!(format!("{e}").contains("--features glommio"), "{e}");
    }

    #[test]
    fn cli_rejects_bad_values() {
        assert!(Cli::try_parse_from(["x", "--rounds", "0"]).is_err());
        assert!(Cli::try_parse_from(["x", "--sizes", "64,abc"]).is_err());
        let none = Cli::try_parse_from(["x"]).unwrap().args;
        assert_eq!(none.rounds, DEFAULT_ROUNDS);
        assert_eq!(none.sizes_or(&[64]), vec![64]);
        assert_eq!(
            none.selected_cases(&["a", "b"], &[]).unwrap(),
            vec!["a", "b"]
        );
    }
}
