//! The stream report: one row per case and size, each figure the median over
//! the rounds with its spread, and concord's throughput over std's per size.

use crate::cases::concord;
use crate::cases::std_sockets::STD;
use crate::harness::report::RunInfo;
use crate::harness::result::StreamResult;
use crate::harness::rounds::{CaseRounds, RowHead, ratios};
use crate::harness::stats::{Spread, median_u64};
use crate::harness::status::Status;
use serde::Serialize;

/// The spreads of one row's figures over the rounds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamSpread {
    /// Messages per second.
    pub msgs_per_s: Option<Spread>,
    /// Payload GB (1e9 bytes) per second.
    pub gb_per_s: Option<Spread>,
    /// Allocations per message.
    pub allocs_per_msg: Option<Spread>,
}

/// One row of the stream report. Every figure is the median over the rounds
/// that measured; `spread` has the smallest and largest round and each
/// round's value.
#[derive(Debug, Clone, Serialize)]
pub struct StreamRecord {
    /// Case, size and how the rounds went.
    #[serde(flatten)]
    pub head: RowHead,
    /// Messages delivered and verified.
    pub messages: Option<u64>,
    /// Receiver-side seconds.
    pub seconds: Option<f64>,
    /// Messages per second.
    pub msgs_per_s: Option<f64>,
    /// Payload GB (1e9 bytes) per second.
    pub gb_per_s: Option<f64>,
    /// Allocations in the steady part of the stream (both threads).
    pub allocs_total: Option<u64>,
    /// Allocations per message in the steady part of the stream.
    pub allocs_per_msg: Option<f64>,
    /// Whether both threads were pinned in every round that measured.
    pub pinned: Option<bool>,
    /// Frames copied because they straddled receive buffers (concord only).
    pub straddled_frames: Option<u64>,
    /// Median, smallest and largest round, and each round's value.
    pub spread: StreamSpread,
}

impl StreamRecord {
    /// Builds a row from a case's rounds.
    #[must_use]
    pub fn new(c: &CaseRounds<StreamResult>) -> Self {
        let spread = StreamSpread {
            msgs_per_s: c.spread(|r| Some(r.msgs_per_s())),
            gb_per_s: c.spread(|r| Some(r.gb_per_s())),
            allocs_per_msg: c.spread(StreamResult::allocs_per_msg),
        };
        let rounds_ok = c.rounds_ok();
        let median = |s: &Option<Spread>| s.as_ref().map(|s| s.median);
        StreamRecord {
            head: c.head(),
            messages: median_u64(c.spread(|r| Some(r.messages as f64)).as_ref()),
            seconds: c
                .spread(|r| Some(r.elapsed.as_secs_f64()))
                .map(|s| s.median),
            msgs_per_s: median(&spread.msgs_per_s),
            gb_per_s: median(&spread.gb_per_s),
            allocs_total: median_u64(c.spread(|r| r.allocs.map(|a| a.allocs as f64)).as_ref()),
            allocs_per_msg: median(&spread.allocs_per_msg),
            pinned: (rounds_ok > 0).then(|| c.ok().all(|r| r.pinned)),
            straddled_frames: median_u64(
                c.spread(|r| r.straddled_frames.map(|n| n as f64)).as_ref(),
            ),
            spread,
        }
    }
}

/// concord / std throughput at one size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeRatio {
    /// Payload size.
    pub size: usize,
    /// concord msgs/s over std msgs/s: the median of the per-round ratios;
    /// null when no round measured both.
    pub ratio_vs_std: Option<f64>,
    /// Median, smallest and largest round, and each round's ratio.
    pub spread: Option<Spread>,
}

/// The spreads of the report's headline figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamReportSpread {
    /// Per-round concord / std throughput at 64 KiB.
    pub ratio_64k_vs_std: Option<Spread>,
}

/// The whole stream JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// Always `"stream"`.
    pub bench: &'static str,
    /// Machine, build, time, load and arguments of the run.
    pub run: RunInfo,
    /// Rounds each case ran.
    pub rounds: usize,
    /// One row per case and size.
    pub cases: Vec<StreamRecord>,
    /// Per size: concord / std throughput.
    pub ratios: Vec<SizeRatio>,
    /// concord / std throughput at 64 KiB (median of the per-round ratios);
    /// null when no round measured both.
    pub ratio_64k_vs_std: Option<f64>,
    /// Median, smallest and largest round, and each round's value, of the
    /// figure above.
    pub spread: StreamReportSpread,
    /// Names (`name@size`) of the cases that failed.
    pub failures: Vec<String>,
}

impl StreamReport {
    /// Derives ratios and failures from the rows.
    #[must_use]
    pub fn new(run: RunInfo, cases: Vec<StreamRecord>) -> Self {
        let rounds = cases.iter().map(|c| c.head.rounds).max().unwrap_or(0);
        let rates = |name: &str, size: usize| {
            cases
                .iter()
                .find(|c| c.head.name == name && c.head.size == size)
                .and_then(|c| c.spread.msgs_per_s.as_ref())
                .map_or_else(|| vec![None; rounds], |s| s.values.clone())
        };
        let mut sizes: Vec<usize> = cases.iter().map(|c| c.head.size).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let ratios: Vec<SizeRatio> = sizes
            .into_iter()
            .map(|size| {
                let spread = Spread::of(ratios(&rates(concord::NAME, size), &rates(STD, size)));
                SizeRatio {
                    size,
                    ratio_vs_std: spread.as_ref().map(|s| s.median),
                    spread,
                }
            })
            .collect();
        let at_64k = ratios.iter().find(|r| r.size == 65536);
        let spread = StreamReportSpread {
            ratio_64k_vs_std: at_64k.and_then(|r| r.spread.clone()),
        };
        let failures = cases
            .iter()
            .filter(|c| c.head.status == Status::Failed)
            .map(|c| format!("{}@{}", c.head.name, c.head.size))
            .collect();
        StreamReport {
            bench: "stream",
            run,
            rounds,
            cases,
            ratio_64k_vs_std: at_64k.and_then(|r| r.ratio_vs_std),
            ratios,
            spread,
            failures,
        }
    }

    /// The table printed to stdout: medians, then the spreads, then the
    /// ratios per size.
    #[must_use]
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut t = String::new();
        let _ = writeln!(t, "medians over {} round(s):", self.rounds);
        let _ = writeln!(
            t,
            "{:<10} {:>7} {:>14} {:>9} {:>12} {:>7} {:>10}  status",
            "case", "size", "msgs/s", "GB/s", "messages", "secs", "allocs/msg"
        );
        for c in &self.cases {
            let status = match c.head.status {
                Status::Ok if c.pinned == Some(false) => "ok (NOT PINNED)".to_string(),
                Status::Ok => match c.straddled_frames {
                    Some(n) => format!("ok (straddled frames copied: {n})"),
                    None => "ok".to_string(),
                },
                Status::Unavailable => {
                    format!("unavailable: {}", c.head.error.as_deref().unwrap_or("?"))
                }
                Status::Failed => format!("FAILED: {}", c.head.error.as_deref().unwrap_or("?")),
            };
            let _ = writeln!(
                t,
                "{:<10} {:>7} {:>14} {:>9} {:>12} {:>7} {:>10}  {}",
                c.head.name,
                c.head.size,
                c.msgs_per_s.map_or("-".into(), |v| format!("{v:.0}")),
                c.gb_per_s.map_or("-".into(), |v| format!("{v:.3}")),
                c.messages.map_or("-".into(), |v| v.to_string()),
                c.seconds.map_or("-".into(), |v| format!("{v:.2}")),
                c.allocs_per_msg.map_or("-".into(), |v| format!("{v:.3}")),
                status
            );
        }
        let sp = |s: &Option<Spread>, digits: usize| {
            s.as_ref().map_or("-".to_string(), |s| s.show(1.0, digits))
        };
        let _ = writeln!(t, "spread, median (min..max) over the rounds:");
        let _ = writeln!(
            t,
            "{:<10} {:>7} {:>34} {:>22} {:>22}",
            "case", "size", "msgs/s", "GB/s", "allocs/msg"
        );
        for c in &self.cases {
            let _ = writeln!(
                t,
                "{:<10} {:>7} {:>34} {:>22} {:>22}",
                c.head.name,
                c.head.size,
                sp(&c.spread.msgs_per_s, 0),
                sp(&c.spread.gb_per_s, 3),
                sp(&c.spread.allocs_per_msg, 3),
            );
        }
        for r in &self.ratios {
            let _ = writeln!(
                t,
                "concord/std at {:>6} B: {}",
                r.size,
                r.spread
                    .as_ref()
                    .map_or("null (concord or std missing)".into(), |s| s.show(1.0, 3))
            );
        }
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
    use concord_runtime::alloc::AllocSnapshot;
    use std::time::Duration;

    fn ok(m: u64) -> anyhow::Result<StreamResult> {
        Ok(StreamResult {
            messages: m,
            payload_bytes: m * 65536,
            elapsed: Duration::from_secs(1),
            allocs: Some(AllocSnapshot::default()),
            steady_messages: m,
            pinned: true,
            straddled_frames: None,
        })
    }

    fn row(
        name: &'static str,
        size: usize,
        outcomes: Vec<anyhow::Result<StreamResult>>,
    ) -> StreamRecord {
        StreamRecord::new(&CaseRounds {
            name,
            size,
            outcomes,
        })
    }

    #[test]
    fn report_ratio_json_shape() {
        let rows = vec![
            row("concord", 65536, vec![ok(300), ok(330), ok(400)]),
            row("std", 65536, vec![ok(200), ok(300), ok(200)]),
            row("std", 64, vec![Err(anyhow::anyhow!("boom")), ok(1), ok(1)]),
        ];
        let rep = StreamReport::new(RunInfo::collect(&"a"), rows);
        // Per-round ratios 1.5, 1.1, 2.0: the median is 1.5.
        assert_eq!(rep.ratio_64k_vs_std, Some(1.5));
        let s = rep.spread.ratio_64k_vs_std.as_ref().unwrap();
        assert_eq!((s.min, s.max), (1.1, 2.0));
        assert_eq!(rep.cases[0].msgs_per_s, Some(330.0));
        assert_eq!(rep.cases[0].allocs_per_msg, Some(0.0));
        assert_eq!(rep.failures, vec!["std@64".to_string()]);
        let v = serde_json::to_value(&rep).unwrap();
        assert_eq!(v["ratio_64k_vs_std"], 1.5);
        assert_eq!(v["spread"]["ratio_64k_vs_std"]["max"], 2.0);
        assert_eq!(v["rounds"], 3);
        assert!(v["ratios"][0]["ratio_vs_std"].is_null());
        assert_eq!(v["ratios"][1]["spread"]["median"], 1.5);
        for key in [
            "name",
            "size",
            "msgs_per_s",
            "gb_per_s",
            "messages",
            "allocs_per_msg",
            "status",
            "spread",
        ] {
            assert!(v["cases"][0].get(key).is_some(), "missing {key}");
        }
        let table = rep.table();
        assert!(table.contains("FAILED: boom (round 1 of 3)"), "{table}");
        assert!(table.contains("1.500 (1.100..2.000)"), "{table}");
    }
}
