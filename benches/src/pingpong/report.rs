//! The ping-pong report: one row per case and size, each figure the median
//! over the rounds with its spread, and the headline ratios to the floor.

use crate::cases::concord;
use crate::cases::std_sockets::FLOOR;
use crate::harness::report::RunInfo;
use crate::harness::result::CaseResult;
use crate::harness::rounds::{CaseRounds, RowHead, ratios};
use crate::harness::stats::{Spread, median_u64};
use crate::harness::status::Status;
use serde::Serialize;

/// The spreads of one row's figures over the rounds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PingpongSpread {
    /// Median round trip.
    pub p50_ns: Option<Spread>,
    /// 99th percentile round trip.
    pub p99_ns: Option<Spread>,
    /// 99.9th percentile round trip.
    pub p999_ns: Option<Spread>,
    /// Slowest round trip.
    pub max_ns: Option<Spread>,
    /// Allocations per message.
    pub allocs_per_msg: Option<Spread>,
}

/// One row of the ping-pong report (and of its JSON `cases`). Every figure is
/// the median over the rounds that measured; `spread` has the smallest and
/// largest round and each round's value.
#[derive(Debug, Clone, Serialize)]
pub struct PingpongRecord {
    /// Case, size and how the rounds went.
    #[serde(flatten)]
    pub head: RowHead,
    /// Measured round trips per round.
    pub round_trips: Option<u64>,
    /// Median round trip.
    pub p50_ns: Option<u64>,
    /// 99th percentile round trip.
    pub p99_ns: Option<u64>,
    /// 99.9th percentile round trip.
    pub p999_ns: Option<u64>,
    /// Slowest round trip.
    pub max_ns: Option<u64>,
    /// Fastest round trip.
    pub min_ns: Option<u64>,
    /// Mean round trip.
    pub mean_ns: Option<f64>,
    /// Allocations across the measured loop (both threads).
    pub allocs_total: Option<u64>,
    /// Allocations per message (two per round trip).
    pub allocs_per_msg: Option<f64>,
    /// Whether both threads were pinned in every round that measured.
    pub pinned: Option<bool>,
    /// Frames copied because they straddled receive buffers (concord only).
    pub straddled_frames: Option<u64>,
    /// Median, smallest and largest round, and each round's value.
    pub spread: PingpongSpread,
}

impl PingpongRecord {
    /// Builds a row from a case's rounds. An error whose root cause is
    /// [`Unavailable`](crate::harness::status::Unavailable) makes an
    /// `unavailable` row.
    #[must_use]
    pub fn new(c: &CaseRounds<CaseResult>) -> Self {
        let u = |v: u64| Some(v as f64);
        let spread = PingpongSpread {
            p50_ns: c.spread(|r| u(r.summary.p50_ns)),
            p99_ns: c.spread(|r| u(r.summary.p99_ns)),
            p999_ns: c.spread(|r| u(r.summary.p999_ns)),
            max_ns: c.spread(|r| u(r.summary.max_ns)),
            allocs_per_msg: c.spread(CaseResult::allocs_per_msg),
        };
        let rounds_ok = c.rounds_ok();
        PingpongRecord {
            head: c.head(),
            round_trips: median_u64(c.spread(|r| u(r.round_trips)).as_ref()),
            p50_ns: median_u64(spread.p50_ns.as_ref()),
            p99_ns: median_u64(spread.p99_ns.as_ref()),
            p999_ns: median_u64(spread.p999_ns.as_ref()),
            max_ns: median_u64(spread.max_ns.as_ref()),
            min_ns: median_u64(c.spread(|r| u(r.summary.min_ns)).as_ref()),
            mean_ns: c.spread(|r| Some(r.summary.mean_ns)).map(|s| s.median),
            allocs_total: median_u64(c.spread(|r| r.allocs.map(|a| a.allocs as f64)).as_ref()),
            allocs_per_msg: spread.allocs_per_msg.as_ref().map(|s| s.median),
            pinned: (rounds_ok > 0).then(|| c.ok().all(|r| r.pinned)),
            straddled_frames: median_u64(
                c.spread(|r| r.straddled_frames.map(|n| n as f64)).as_ref(),
            ),
            spread,
        }
    }
}

/// The spreads of the report's headline figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PingpongReportSpread {
    /// Per-round concord p50 / floor p50 at 64 B.
    pub ratio_p50_vs_floor_64: Option<Spread>,
    /// Per-round concord p99 / floor p99 at 64 B.
    pub ratio_p99_vs_floor_64: Option<Spread>,
    /// concord's allocations per message at 64 B.
    pub allocs_per_msg: Option<Spread>,
    /// The floor's allocations per message at 64 B.
    pub floor_allocs_per_msg: Option<Spread>,
}

/// The whole ping-pong JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct PingpongReport {
    /// Always `"pingpong"`.
    pub bench: &'static str,
    /// Machine, build, time, load and arguments of the run.
    pub run: RunInfo,
    /// Rounds each case ran.
    pub rounds: usize,
    /// One row per case and size.
    pub cases: Vec<PingpongRecord>,
    /// concord p50 / floor p50 at 64 B: the median of the per-round ratios;
    /// null when no round measured both.
    pub ratio_p50_vs_floor_64: Option<f64>,
    /// concord p99 / floor p99 at 64 B, the same way.
    pub ratio_p99_vs_floor_64: Option<f64>,
    /// Heap allocations per message in concord's 64 B steady state (median
    /// over rounds); null when concord's case did not measure at 64 B.
    pub allocs_per_msg: Option<f64>,
    /// The same for the floor (expected 0), for comparison.
    pub floor_allocs_per_msg: Option<f64>,
    /// Median, smallest and largest round, and each round's value, of the
    /// four figures above.
    pub spread: PingpongReportSpread,
    /// Names (`name@size`) of the cases that failed.
    pub failures: Vec<String>,
}

/// Each round's value of a figure (null where absent), `rounds` long.
fn per_round(s: Option<&Spread>, rounds: usize) -> Vec<Option<f64>> {
    s.map_or_else(|| vec![None; rounds], |s| s.values.clone())
}

impl PingpongReport {
    /// Derives the ratios and failure list from the rows.
    #[must_use]
    pub fn new(run: RunInfo, cases: Vec<PingpongRecord>) -> Self {
        let rounds = cases.iter().map(|c| c.head.rounds).max().unwrap_or(0);
        let find = |name: &str| {
            cases
                .iter()
                .find(|c| c.head.name == name && c.head.size == 64)
        };
        let concord = find(concord::NAME);
        let floor = find(FLOOR);
        let ratio = |fig: fn(&PingpongSpread) -> Option<&Spread>| {
            Spread::of(ratios(
                &per_round(concord.and_then(|c| fig(&c.spread)), rounds),
                &per_round(floor.and_then(|c| fig(&c.spread)), rounds),
            ))
        };
        let spread = PingpongReportSpread {
            ratio_p50_vs_floor_64: ratio(|s| s.p50_ns.as_ref()),
            ratio_p99_vs_floor_64: ratio(|s| s.p99_ns.as_ref()),
            allocs_per_msg: concord.and_then(|c| c.spread.allocs_per_msg.clone()),
            floor_allocs_per_msg: floor.and_then(|c| c.spread.allocs_per_msg.clone()),
        };
        let median = |s: &Option<Spread>| s.as_ref().map(|s| s.median);
        let failures = cases
            .iter()
            .filter(|c| c.head.status == Status::Failed)
            .map(|c| format!("{}@{}", c.head.name, c.head.size))
            .collect();
        PingpongReport {
            bench: "pingpong",
            run,
            rounds,
            ratio_p50_vs_floor_64: median(&spread.ratio_p50_vs_floor_64),
            ratio_p99_vs_floor_64: median(&spread.ratio_p99_vs_floor_64),
            allocs_per_msg: median(&spread.allocs_per_msg),
            floor_allocs_per_msg: median(&spread.floor_allocs_per_msg),
            spread,
            failures,
            cases,
        }
    }

    /// The table printed to stdout: medians, then the spreads, then the
    /// headline ratios.
    #[must_use]
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let us = |v: Option<u64>| v.map_or("-".to_string(), |n| format!("{:.2}", n as f64 / 1e3));
        let mut t = String::new();
        let _ = writeln!(t, "medians over {} round(s):", self.rounds);
        let _ = writeln!(
            t,
            "{:<14} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10} {:>7}  status",
            "case", "size", "p50 us", "p99 us", "p99.9 us", "max us", "n", "allocs/msg", "allocs"
        );
        for c in &self.cases {
            let status = match c.head.status {
                Status::Ok if c.pinned == Some(false) => "ok (NOT PINNED)".to_string(),
                Status::Ok => match c.straddled_frames {
                    Some(n) => format!("ok (straddled frames copied: {n})"),
                    None => "ok".to_string(),
                },
                Status::Unavailable => format!(
                    "unavailable: {}",
                    c.head.error.as_deref().unwrap_or("no reason given")
                ),
                Status::Failed => format!(
                    "FAILED: {}",
                    c.head.error.as_deref().unwrap_or("no reason given")
                ),
            };
            let _ = writeln!(
                t,
                "{:<14} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10} {:>7}  {}",
                c.head.name,
                c.head.size,
                us(c.p50_ns),
                us(c.p99_ns),
                us(c.p999_ns),
                us(c.max_ns),
                c.round_trips.map_or("-".into(), |n| n.to_string()),
                c.allocs_per_msg.map_or("-".into(), |a| format!("{a:.3}")),
                c.allocs_total.map_or("-".into(), |a| a.to_string()),
                status
            );
        }
        let sp = |s: &Option<Spread>, scale: f64, digits: usize| {
            s.as_ref()
                .map_or("-".to_string(), |s| s.show(scale, digits))
        };
        let _ = writeln!(t, "spread, median (min..max) over the rounds:");
        let _ = writeln!(
            t,
            "{:<14} {:>6} {:>22} {:>22} {:>22} {:>25} {:>22}",
            "case", "size", "p50 us", "p99 us", "p99.9 us", "max us", "allocs/msg"
        );
        for c in &self.cases {
            let s = &c.spread;
            let _ = writeln!(
                t,
                "{:<14} {:>6} {:>22} {:>22} {:>22} {:>25} {:>22}",
                c.head.name,
                c.head.size,
                sp(&s.p50_ns, 1e-3, 2),
                sp(&s.p99_ns, 1e-3, 2),
                sp(&s.p999_ns, 1e-3, 2),
                sp(&s.max_ns, 1e-3, 2),
                sp(&s.allocs_per_msg, 1.0, 3),
            );
        }
        let r = |s: &Option<Spread>| {
            s.as_ref()
                .map_or("null (concord or floor missing)".into(), |s| s.show(1.0, 3))
        };
        let _ = writeln!(
            t,
            "concord/floor p50 at 64 B: {}",
            r(&self.spread.ratio_p50_vs_floor_64)
        );
        let _ = writeln!(
            t,
            "concord/floor p99 at 64 B: {}",
            r(&self.spread.ratio_p99_vs_floor_64)
        );
        let a = |s: &Option<Spread>| s.as_ref().map_or("null".into(), |s| s.show(1.0, 3));
        let _ = writeln!(
            t,
            "allocs/msg at 64 B: concord {}, floor {}",
            a(&self.spread.allocs_per_msg),
            a(&self.spread.floor_allocs_per_msg)
        );
        if !self.failures.is_empty() {
            let _ = writeln!(
                t,
                "!!! {} case(s) FAILED: {}",
                self.failures.len(),
                self.failures.join(", ")
            );
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::std_sockets::floor;
    use crate::harness::status::Unavailable;
    use crate::harness::summary::Summary;
    use concord_runtime::alloc::AllocSnapshot;

    fn mk(p50: u64) -> CaseResult {
        CaseResult {
            summary: Summary {
                count: 10,
                min_ns: p50 / 2,
                p50_ns: p50,
                p99_ns: p50 * 2,
                p999_ns: p50 * 3,
                max_ns: p50 * 4,
                mean_ns: p50 as f64,
            },
            round_trips: 10,
            allocs: Some(AllocSnapshot {
                allocs: 5,
                ..Default::default()
            }),
            pinned: true,
            straddled_frames: None,
        }
    }

    fn rows(name: &'static str, outcomes: Vec<anyhow::Result<CaseResult>>) -> PingpongRecord {
        PingpongRecord::new(&CaseRounds {
            name,
            size: 64,
            outcomes,
        })
    }

    #[test]
    fn report_ratios_and_json_shape() {
        let cases = vec![
            rows("concord", vec![Ok(mk(6000)), Ok(mk(7000)), Ok(mk(6600))]),
            rows("floor", vec![Ok(mk(5000)), Ok(mk(5000)), Ok(mk(6000))]),
            rows(
                "glommio",
                vec![
                    Err(anyhow::anyhow!("memlock too low")),
                    Err(anyhow::anyhow!("memlock too low")),
                    Err(anyhow::anyhow!("memlock too low")),
                ],
            ),
        ];
        let rep = PingpongReport::new(RunInfo::collect(&"args"), cases);
        // Per-round ratios 1.2, 1.4, 1.1: the median is 1.2.
        assert_eq!(rep.ratio_p50_vs_floor_64, Some(1.2));
        let s = rep.spread.ratio_p50_vs_floor_64.as_ref().unwrap();
        assert_eq!((s.min, s.max), (1.1, 1.4));
        assert_eq!(s.values, vec![Some(1.2), Some(1.4), Some(1.1)]);
        assert_eq!(rep.cases[0].p50_ns, Some(6600));
        assert_eq!(rep.allocs_per_msg, Some(0.25));
        assert_eq!(rep.rounds, 3);
        assert_eq!(rep.failures, vec!["glommio@64".to_string()]);
        let v = serde_json::to_value(&rep).unwrap();
        for key in [
            "cases",
            "rounds",
            "ratio_p50_vs_floor_64",
            "ratio_p99_vs_floor_64",
            "allocs_per_msg",
            "floor_allocs_per_msg",
            "spread",
            "run",
            "failures",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["spread"]["ratio_p50_vs_floor_64"]["median"], 1.2);
        let case = &v["cases"][0];
        for key in [
            "name", "size", "p50_ns", "p99_ns", "p999_ns", "max_ns", "status", "spread",
        ] {
            assert!(case.get(key).is_some(), "case missing {key}");
        }
        assert_eq!(case["spread"]["p50_ns"]["min"], 6000.0);
        assert_eq!(case["spread"]["p50_ns"]["max"], 7000.0);
        assert_eq!(v["cases"][2]["status"], "failed");
        assert!(v["cases"][2]["p50_ns"].is_null());
        assert!(v["run"]["machine"]["nproc"].as_u64().unwrap() >= 1);
        let table = rep.table();
        assert!(table.contains("FAILED: memlock too low"), "{table}");
        assert!(table.contains("1.200 (1.100..1.400)"), "{table}");
    }

    #[test]
    fn ratios_use_only_rounds_where_both_measured() {
        let cases = vec![
            rows(
                "concord",
                vec![Ok(mk(6000)), Err(anyhow::anyhow!("flaky")), Ok(mk(9000))],
            ),
            rows("floor", vec![Ok(mk(5000)), Ok(mk(5000)), Ok(mk(5000))]),
        ];
        let rep = PingpongReport::new(RunInfo::collect(&"args"), cases);
        let s = rep.spread.ratio_p50_vs_floor_64.as_ref().unwrap();
        assert_eq!(s.values, vec![Some(1.2), None, Some(1.8)]);
        assert_eq!(rep.ratio_p50_vs_floor_64, Some(1.5));
        assert_eq!(rep.cases[0].head.status, Status::Failed);
        assert_eq!(rep.cases[0].head.rounds_ok, 2);
        assert_eq!(
            rep.cases[0].head.error.as_deref(),
            Some("flaky (round 2 of 3)")
        );
        assert_eq!(rep.failures, vec!["concord@64".to_string()]);
    }

    #[test]
    fn missing_concord_gives_null_ratio() {
        let cases = vec![
            rows(
                "concord",
                vec![Err(anyhow::Error::new(Unavailable { reason: "not yet" }))],
            ),
            rows("floor", vec![floor(64, 5, 50)]),
        ];
        let rep = PingpongReport::new(RunInfo::collect(&"args"), cases);
        assert_eq!(rep.cases[0].head.status, Status::Unavailable);
        assert_eq!(rep.cases[1].head.status, Status::Ok);
        assert!(rep.ratio_p50_vs_floor_64.is_none());
        assert!(rep.allocs_per_msg.is_none());
        assert!(rep.failures.is_empty());
        let v = serde_json::to_value(&rep).unwrap();
        assert!(v["ratio_p50_vs_floor_64"].is_null());
        assert!(v["spread"]["ratio_p50_vs_floor_64"].is_null());
        assert_eq!(v["cases"][0]["status"], "unavailable");
    }
}
