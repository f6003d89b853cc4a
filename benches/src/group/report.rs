//! The group report: one row per case and size, each figure the median over
//! the rounds with its spread, and the headline figures the issue asks for.

use super::{AGREED, Cluster, FLOOR, OrderChecks, Outcome, Plan, Roles, SAFE, TPUT, Throughput};
use crate::harness::report::RunInfo;
use crate::harness::rounds::{CaseRounds, RowHead, ratios};
use crate::harness::stats::{Spread, median_u64};
use crate::harness::status::Status;
use serde::Serialize;

/// One node's throughput figures in one round.
#[derive(Debug, Clone, Copy)]
struct NodeFigures {
    msgs_per_s: f64,
    mb_per_s: f64,
    allocs_per_delivery: Option<f64>,
    node_allocs_per_delivery: Option<f64>,
    copies_per_delivery: Option<f64>,
    straddled_per_delivery: Option<f64>,
    backlogged_per_delivery: Option<f64>,
}

fn per_delivery(n: u64, deliveries: u64) -> Option<f64> {
    (deliveries > 0).then(|| n as f64 / deliveries as f64)
}

impl NodeFigures {
    fn of(t: &Throughput, size: usize) -> Self {
        let msgs_per_s = if t.secs > 0.0 {
            t.delivered as f64 / t.secs
        } else {
            0.0
        };
        let w = t.window_deliveries;
        NodeFigures {
            msgs_per_s,
            mb_per_s: msgs_per_s * size as f64 / 1e6,
            allocs_per_delivery: t.window_allocs.and_then(|a| per_delivery(a, w)),
            node_allocs_per_delivery: t
                .window_allocs
                .and_then(|a| per_delivery(a.saturating_sub(t.payload_allocs), w)),
            copies_per_delivery: per_delivery(t.pressure_copies, w),
            straddled_per_delivery: per_delivery(t.straddled, w),
            backlogged_per_delivery: per_delivery(t.backlogged, w),
        }
    }
}

/// A node's id and figures.
type Figures = (u32, NodeFigures);

fn nodes(o: &Outcome, size: usize) -> Option<Vec<Figures>> {
    match o {
        Outcome::Throughput(v) => Some(
            v.iter()
                .map(|(id, t)| (*id, NodeFigures::of(t, size)))
                .collect(),
        ),
        Outcome::Latency(..) => None,
    }
}

fn lowest(v: &[Figures], f: impl Fn(&NodeFigures) -> f64) -> Option<f64> {
    v.iter().map(|(_, n)| f(n)).reduce(f64::min)
}

fn highest(v: &[Figures], f: impl Fn(&NodeFigures) -> Option<f64>) -> Option<f64> {
    let all: Option<Vec<f64>> = v.iter().map(|(_, n)| f(n)).collect();
    all?.into_iter().reduce(f64::max)
}

/// The spreads of one row's figures over the rounds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupSpread {
    /// Median latency.
    pub p50_ns: Option<Spread>,
    /// 99th percentile.
    pub p99_ns: Option<Spread>,
    /// 99.9th percentile.
    pub p999_ns: Option<Spread>,
    /// Largest sample.
    pub max_ns: Option<Spread>,
    /// Delivered msgs/s at the slowest node.
    pub msgs_per_s: Option<Spread>,
    /// Delivered payload MB/s at the slowest node.
    pub mb_per_s: Option<Spread>,
    /// Allocations per delivery at the worst node.
    pub allocs_per_delivery: Option<Spread>,
    /// Received-payload copies per delivery at the worst node.
    pub copies_per_delivery: Option<Spread>,
}

/// One node's throughput row figures (medians over the rounds).
#[derive(Debug, Clone, Serialize)]
pub struct NodeRecord {
    /// Node id.
    pub node: u32,
    /// Delivered msgs/s.
    pub msgs_per_s: Option<f64>,
    /// Delivered payload MB/s (1e6 bytes).
    pub mb_per_s: Option<f64>,
    /// Heap allocations per delivered message in the steady window, every
    /// thread of the process, the bench's own payload buffers included.
    pub allocs_per_delivery: Option<f64>,
    /// The same without the bench's payload buffers: the node's own.
    pub node_allocs_per_delivery: Option<f64>,
    /// Received payloads copied out under receive-buffer pressure, per
    /// delivery.
    pub copies_per_delivery: Option<f64>,
    /// Received frames copied because they straddled two receive buffers,
    /// per delivery.
    pub straddled_per_delivery: Option<f64>,
    /// Messages this node multicast.
    pub sent: Option<u64>,
    /// Multicasts answered `BackPressured`.
    pub back_pressured: Option<u64>,
    /// Messages queued behind a back-pressured connection, per delivery, in
    /// the window.
    pub backlogged_per_delivery: Option<f64>,
}

/// One row of the group report.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRecord {
    /// Case, size and how the rounds went.
    #[serde(flatten)]
    pub head: RowHead,
    /// Samples per round (latency cases).
    pub samples: Option<u64>,
    /// Median latency (round trip for `floor`, multicast to own delivery
    /// for `agreed` and `safe`).
    pub p50_ns: Option<u64>,
    /// 99th percentile.
    pub p99_ns: Option<u64>,
    /// 99.9th percentile.
    pub p999_ns: Option<u64>,
    /// Largest sample.
    pub max_ns: Option<u64>,
    /// Delivered msgs/s at the slowest node (`tput`).
    pub msgs_per_s: Option<f64>,
    /// Delivered payload MB/s at the slowest node (`tput`).
    pub mb_per_s: Option<f64>,
    /// Allocations per delivery at the worst node (`tput`).
    pub allocs_per_delivery: Option<f64>,
    /// The node's own allocations per delivery at the worst node (`tput`).
    pub node_allocs_per_delivery: Option<f64>,
    /// Received-payload copies per delivery at the worst node, straddled
    /// frames apart (`tput`).
    pub copies_per_delivery: Option<f64>,
    /// Straddled frames copied per delivery at the worst node (`tput`).
    pub straddled_per_delivery: Option<f64>,
    /// Heap allocations of the sender's process per measured closed-loop
    /// message, its payload buffer included (`agreed`, `safe`).
    pub sender_allocs_per_msg: Option<f64>,
    /// Each node's figures (`tput`).
    pub nodes: Vec<NodeRecord>,
    /// Median, smallest and largest round, and each round's value.
    pub spread: GroupSpread,
}

impl GroupRecord {
    /// Builds a row from a case's rounds.
    #[must_use]
    pub fn new(c: &CaseRounds<Outcome>) -> Self {
        let size = c.size;
        let lat = |f: fn(&crate::harness::summary::Summary) -> u64| {
            c.spread(move |o| match o {
                Outcome::Latency(s, _) => Some(f(s) as f64),
                Outcome::Throughput(_) => None,
            })
        };
        let tp = |f: &dyn Fn(&[Figures]) -> Option<f64>| {
            c.spread(|o| nodes(o, size).and_then(|v| f(&v)))
        };
        let spread = GroupSpread {
            p50_ns: lat(|s| s.p50_ns),
            p99_ns: lat(|s| s.p99_ns),
            p999_ns: lat(|s| s.p999_ns),
            max_ns: lat(|s| s.max_ns),
            msgs_per_s: tp(&|v| lowest(v, |n| n.msgs_per_s)),
            mb_per_s: tp(&|v| lowest(v, |n| n.mb_per_s)),
            allocs_per_delivery: tp(&|v| highest(v, |n| n.allocs_per_delivery)),
            copies_per_delivery: tp(&|v| highest(v, |n| n.copies_per_delivery)),
        };
        let median = |s: &Option<Spread>| s.as_ref().map(|s| s.median);
        let mut ids: Vec<u32> = c
            .ok()
            .filter_map(|o| nodes(o, size))
            .flatten()
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let node_rows = ids
            .into_iter()
            .map(|id| {
                let one = |f: &dyn Fn(&NodeFigures) -> Option<f64>| {
                    median(&c.spread(|o| {
                        nodes(o, size)?
                            .iter()
                            .find(|(n, _)| *n == id)
                            .and_then(|(_, n)| f(n))
                    }))
                };
                let raw = |f: &dyn Fn(&Throughput) -> u64| {
                    median_u64(
                        c.spread(|o| match o {
                            Outcome::Throughput(v) => {
                                v.iter().find(|(n, _)| *n == id).map(|(_, t)| f(t) as f64)
                            }
                            Outcome::Latency(..) => None,
                        })
                        .as_ref(),
                    )
                };
                NodeRecord {
                    node: id,
                    msgs_per_s: one(&|n| Some(n.msgs_per_s)),
                    mb_per_s: one(&|n| Some(n.mb_per_s)),
                    allocs_per_delivery: one(&|n| n.allocs_per_delivery),
                    node_allocs_per_delivery: one(&|n| n.node_allocs_per_delivery),
                    copies_per_delivery: one(&|n| n.copies_per_delivery),
                    straddled_per_delivery: one(&|n| n.straddled_per_delivery),
                    sent: raw(&|t| t.sent),
                    back_pressured: raw(&|t| t.back_pressured),
                    backlogged_per_delivery: one(&|n| n.backlogged_per_delivery),
                }
            })
            .collect();
        GroupRecord {
            head: c.head(),
            samples: median_u64(lat(|s| s.count).as_ref()),
            p50_ns: median_u64(spread.p50_ns.as_ref()),
            p99_ns: median_u64(spread.p99_ns.as_ref()),
            p999_ns: median_u64(spread.p999_ns.as_ref()),
            max_ns: median_u64(spread.max_ns.as_ref()),
            msgs_per_s: median(&spread.msgs_per_s),
            mb_per_s: median(&spread.mb_per_s),
            allocs_per_delivery: median(&spread.allocs_per_delivery),
            node_allocs_per_delivery: median(&tp(&|v| highest(v, |n| n.node_allocs_per_delivery))),
            copies_per_delivery: median(&spread.copies_per_delivery),
            straddled_per_delivery: median(&tp(&|v| highest(v, |n| n.straddled_per_delivery))),
            sender_allocs_per_msg: median(&c.spread(|o| match o {
                Outcome::Latency(_, a) => *a,
                Outcome::Throughput(_) => None,
            })),
            nodes: node_rows,
            spread,
        }
    }
}

/// The spreads of the report's ratios.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupReportSpread {
    /// Per round: Agreed 64 B p50 over the floor's 64 B p50.
    pub ratio_lat64_p50_vs_floor: Option<Spread>,
    /// Per round: Agreed 64 B p99 over the floor's 64 B p99.
    pub ratio_lat64_p99_vs_floor_p99: Option<Spread>,
}

/// The whole group JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    /// Always `"group"`.
    pub bench: &'static str,
    /// Machine, build, time, load and arguments of the run.
    pub run: RunInfo,
    /// How the nodes' shards waited (`--idle`).
    pub idle: super::NodeIdle,
    /// Sequencer, sender and process ids.
    pub roles: Option<Roles>,
    /// Rounds each case ran.
    pub rounds: usize,
    /// One row per case and size.
    pub cases: Vec<GroupRecord>,
    /// Floor round trip at 64 B, p50.
    pub floor_rtt_p50_ns: Option<u64>,
    /// Floor round trip at 64 B, p99.
    pub floor_rtt_p99_ns: Option<u64>,
    /// Agreed closed loop at 64 B, p50.
    pub lat64_p50_ns: Option<u64>,
    /// Agreed closed loop at 64 B, p99.
    pub lat64_p99_ns: Option<u64>,
    /// Agreed closed loop at 64 B, p99.9.
    pub lat64_p999_ns: Option<u64>,
    /// Agreed closed loop at 64 B, max.
    pub lat64_max_ns: Option<u64>,
    /// Median over the rounds of Agreed 64 B p50 / floor 64 B p50.
    pub ratio_lat64_p50_vs_floor: Option<f64>,
    /// Median over the rounds of Agreed 64 B p99 / floor 64 B p99.
    pub ratio_lat64_p99_vs_floor_p99: Option<f64>,
    /// Safe closed loop at 64 B, p50.
    pub lat64_safe_p50_ns: Option<u64>,
    /// Safe closed loop at 64 B, p99.
    pub lat64_safe_p99_ns: Option<u64>,
    /// Agreed closed loop at 1 KiB, p50.
    pub lat1k_p50_ns: Option<u64>,
    /// Agreed closed loop at 1 KiB, p99.
    pub lat1k_p99_ns: Option<u64>,
    /// Safe closed loop at 1 KiB, p50.
    pub lat1k_safe_p50_ns: Option<u64>,
    /// Delivered msgs/s at 64 B, the slowest node.
    pub tput64_msgs_per_s: Option<f64>,
    /// Delivered msgs/s at 1 KiB, the slowest node.
    pub tput1k_msgs_per_s: Option<f64>,
    /// Delivered payload MB/s at 1 KiB, the slowest node.
    pub tput1k_mb_per_s: Option<f64>,
    /// Every order check of the run found every node with the same count
    /// and hash (false also when no check ran).
    pub order_hash_agree: bool,
    /// The order checks.
    pub order: OrderChecks,
    /// Allocations per delivered message in the steady part of the
    /// throughput runs, the worst node and size, every allocation of the
    /// process counted (the bench's payload buffers too).
    pub allocs_per_delivery: Option<f64>,
    /// The same without the bench's own payload buffers.
    pub node_allocs_per_delivery: Option<f64>,
    /// Received payloads copied per delivered message (worst node and
    /// size), frames that straddled two receive buffers apart.
    pub copies_per_delivery: Option<f64>,
    /// Frames that straddled two receive buffers, copied, per delivered
    /// message (worst node and size).
    pub straddled_per_delivery: Option<f64>,
    /// Median, smallest and largest round, and each round's value, of the
    /// ratios.
    pub spread: GroupReportSpread,
    /// Names (`name@size`) of the cases that failed, and `start` if the
    /// nodes did not start.
    pub failures: Vec<String>,
}

impl GroupReport {
    /// Derives the headline figures from the rows.
    #[must_use]
    pub fn new(
        run: RunInfo,
        plan: &Plan,
        cluster: Option<&Cluster>,
        cases: Vec<GroupRecord>,
        start_error: Option<String>,
    ) -> Self {
        let rounds = cases.iter().map(|c| c.head.rounds).max().unwrap_or(0);
        let row = |name: &str, size: usize| {
            cases
                .iter()
                .find(|c| c.head.name == name && c.head.size == size)
        };
        let values = |name: &str, size: usize, f: fn(&GroupSpread) -> &Option<Spread>| {
            row(name, size)
                .and_then(|c| f(&c.spread).as_ref())
                .map_or_else(|| vec![None; rounds], |s| s.values.clone())
        };
        let ratio_p50 = Spread::of(ratios(
            &values(AGREED, 64, |s| &s.p50_ns),
            &values(FLOOR, 64, |s| &s.p50_ns),
        ));
        let ratio_p99 = Spread::of(ratios(
            &values(AGREED, 64, |s| &s.p99_ns),
            &values(FLOOR, 64, |s| &s.p99_ns),
        ));
        let worst = |f: fn(&GroupRecord) -> Option<f64>| {
            cases
                .iter()
                .filter(|c| c.head.name == TPUT)
                .filter_map(f)
                .reduce(f64::max)
        };
        let mut failures: Vec<String> = cases
            .iter()
            .filter(|c| c.head.status == Status::Failed)
            .map(|c| format!("{}@{}", c.head.name, c.head.size))
            .collect();
        if let Some(e) = &start_error {
            failures.push(format!("start: {e}"));
        }
        let order = cluster.map(|c| c.order.clone()).unwrap_or_default();
        GroupReport {
            bench: "group",
            run,
            idle: plan.idle,
            roles: cluster.map(|c| c.roles.clone()),
            rounds,
            floor_rtt_p50_ns: row(FLOOR, 64).and_then(|c| c.p50_ns),
            floor_rtt_p99_ns: row(FLOOR, 64).and_then(|c| c.p99_ns),
            lat64_p50_ns: row(AGREED, 64).and_then(|c| c.p50_ns),
            lat64_p99_ns: row(AGREED, 64).and_then(|c| c.p99_ns),
            lat64_p999_ns: row(AGREED, 64).and_then(|c| c.p999_ns),
            lat64_max_ns: row(AGREED, 64).and_then(|c| c.max_ns),
            ratio_lat64_p50_vs_floor: ratio_p50.as_ref().map(|s| s.median),
            ratio_lat64_p99_vs_floor_p99: ratio_p99.as_ref().map(|s| s.median),
            lat64_safe_p50_ns: row(SAFE, 64).and_then(|c| c.p50_ns),
            lat64_safe_p99_ns: row(SAFE, 64).and_then(|c| c.p99_ns),
            lat1k_p50_ns: row(AGREED, 1024).and_then(|c| c.p50_ns),
            lat1k_p99_ns: row(AGREED, 1024).and_then(|c| c.p99_ns),
            lat1k_safe_p50_ns: row(SAFE, 1024).and_then(|c| c.p50_ns),
            tput64_msgs_per_s: row(TPUT, 64).and_then(|c| c.msgs_per_s),
            tput1k_msgs_per_s: row(TPUT, 1024).and_then(|c| c.msgs_per_s),
            tput1k_mb_per_s: row(TPUT, 1024).and_then(|c| c.mb_per_s),
            order_hash_agree: order.checks > 0 && order.disagreements.is_empty(),
            order,
            allocs_per_delivery: worst(|c| c.allocs_per_delivery),
            node_allocs_per_delivery: worst(|c| c.node_allocs_per_delivery),
            copies_per_delivery: worst(|c| c.copies_per_delivery),
            straddled_per_delivery: worst(|c| c.straddled_per_delivery),
            spread: GroupReportSpread {
                ratio_lat64_p50_vs_floor: ratio_p50,
                ratio_lat64_p99_vs_floor_p99: ratio_p99,
            },
            cases,
            failures,
        }
    }

    /// The table printed to stdout.
    #[must_use]
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut t = String::new();
        let us = |v: Option<u64>| v.map_or("-".into(), |v| format!("{:.1}", v as f64 / 1e3));
        let f = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
        if let Some(r) = &self.roles {
            let _ = writeln!(
                t,
                "3 node processes (pids {:?}), sequencers (agreed, safe) {:?}, closed-loop sender node {}, idle {:?}",
                r.pids, r.sequencers, r.sender, self.idle
            );
        }
        let _ = writeln!(
            t,
            "latency, medians over {} round(s), microseconds:",
            self.rounds
        );
        let _ = writeln!(
            t,
            "{:<7} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10}  status",
            "case", "size", "samples", "p50", "p99", "p99.9", "max", "allocs/msg"
        );
        let status = |c: &GroupRecord| match c.head.status {
            Status::Ok => "ok".to_string(),
            Status::Unavailable | Status::Failed => {
                format!("FAILED: {}", c.head.error.as_deref().unwrap_or("?"))
            }
        };
        for c in self.cases.iter().filter(|c| c.head.name != TPUT) {
            let _ = writeln!(
                t,
                "{:<7} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10}  {}",
                c.head.name,
                c.head.size,
                c.samples.map_or("-".into(), |v| v.to_string()),
                us(c.p50_ns),
                us(c.p99_ns),
                us(c.p999_ns),
                us(c.max_ns),
                f(c.sender_allocs_per_msg, 2),
                status(c)
            );
        }
        let _ = writeln!(
            t,
            "throughput, every node sending, medians over the rounds (per node: msgs/s, allocs/delivery, frames backlogged/delivery):"
        );
        let _ = writeln!(
            t,
            "{:<7} {:>6} {:>12} {:>9} {:>12} {:>12} {:>12} {:>12}  per node / status",
            "case",
            "size",
            "min msgs/s",
            "min MB/s",
            "allocs/dlv",
            "node allocs",
            "copies/dlv",
            "straddled"
        );
        for c in self.cases.iter().filter(|c| c.head.name == TPUT) {
            let per: Vec<String> = c
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "n{}: {} {} (backlogged {})",
                        n.node,
                        f(n.msgs_per_s, 0),
                        f(n.allocs_per_delivery, 3),
                        f(n.backlogged_per_delivery, 3)
                    )
                })
                .collect();
            let _ = writeln!(
                t,
                "{:<7} {:>6} {:>12} {:>9} {:>12} {:>12} {:>12} {:>12}  {}{}",
                c.head.name,
                c.head.size,
                f(c.msgs_per_s, 0),
                f(c.mb_per_s, 1),
                f(c.allocs_per_delivery, 3),
                f(c.node_allocs_per_delivery, 3),
                f(c.copies_per_delivery, 4),
                f(c.straddled_per_delivery, 5),
                per.join(", "),
                if c.head.status == Status::Ok {
                    String::new()
                } else {
                    format!(" {}", status(c))
                }
            );
        }
        let sp = |s: &Option<Spread>, scale: f64, d: usize| {
            s.as_ref().map_or("-".to_string(), |s| s.show(scale, d))
        };
        let _ = writeln!(t, "spread, median (min..max) over the rounds:");
        for c in &self.cases {
            let s = &c.spread;
            if c.head.name == TPUT {
                let _ = writeln!(
                    t,
                    "{:<7} {:>6} min msgs/s {}  allocs/dlv {}",
                    c.head.name,
                    c.head.size,
                    sp(&s.msgs_per_s, 1.0, 0),
                    sp(&s.allocs_per_delivery, 1.0, 3)
                );
            } else {
                let _ = writeln!(
                    t,
                    "{:<7} {:>6} p50 {} us  p99 {} us  p99.9 {} us",
                    c.head.name,
                    c.head.size,
                    sp(&s.p50_ns, 1e-3, 1),
                    sp(&s.p99_ns, 1e-3, 1),
                    sp(&s.p999_ns, 1e-3, 1)
                );
            }
        }
        let _ = writeln!(
            t,
            "agreed 64 B / floor 64 B: p50 {}, p99 {}",
            sp(&self.spread.ratio_lat64_p50_vs_floor, 1.0, 2),
            sp(&self.spread.ratio_lat64_p99_vs_floor_p99, 1.0, 2)
        );
        let _ = writeln!(
            t,
            "order: {} check(s), hashes agree: {}, view changes after start: {}",
            self.order.checks,
            self.order_hash_agree,
            self.order.view_changes.len()
        );
        for v in &self.order.view_changes {
            let _ = writeln!(t, "!!! view change during the run: {v}");
        }
        for d in &self.order.disagreements {
            let _ = writeln!(t, "!!! order differs: {d}");
        }
        if !self.failures.is_empty() {
            let _ = writeln!(
                t,
                "!!! {} FAILED: {}",
                self.failures.len(),
                self.failures.join(", ")
            );
        }
        t
    }
}
