//! The group benchmark: three node processes on loopback, each one `Node`
//! on one shard, members of an Agreed and a Safe group; the figure is the
//! group's, not the transport's.
//!
//! The parent (the `group` binary) starts the nodes ([`procs`]: this binary
//! re-executed with a hidden role, driven over its stdin and stdout, killed
//! by PID when the run ends however it ends) and runs these cases in
//! interleaved rounds ([`crate::harness::rounds`]) at each size:
//!
//! - `floor`: busy-polled non-blocking std sockets between two of the node
//!   processes (the sender and the Agreed group's sequencer), ping-pong
//!   round trips: the baseline every latency is compared with, measured
//!   seconds apart;
//! - `agreed`, `safe`: closed loop in that group: a node that is not the
//!   sequencer of either group multicasts and waits for its own delivery,
//!   one message at a time; percentiles over the measured messages after
//!   warm-up;
//! - `tput`: every node multicasts into the Agreed group as fast as
//!   back-pressure allows for a fixed time; delivered msgs/s and MB/s at
//!   each node, and, in the steady part of the run
//!   ([`crate::harness::alloc_window`]), heap allocations and received
//!   payload copies per delivered message at each node.
//!
//! After every latency and throughput case each node waits until it has
//! delivered every message multicast in the group so far and reports its
//! running hash of the order ([`proto::order_hash`]); the hashes must agree.
//!
//! Three processes on two cores cannot all spin: how a node's shard waits
//! decides the latency ([`proto::NodeIdle`], `--idle`), and the report
//! records which strategy ran.

use crate::harness::args::{CommonArgs, parse_seconds};
use crate::harness::rounds::{CaseRounds, run_interleaved};
use crate::harness::size::check_pingpong_size;
use crate::harness::summary::Summary;
use anyhow::{Context as _, bail, ensure};
use clap::Args;
use serde::Serialize;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

pub mod member;
pub mod procs;
pub mod proto;
pub mod report;

pub use proto::{GroupName, NodeIdle, Throughput};
pub use report::{GroupRecord, GroupReport};

use procs::Members;
use proto::{Command, MemberSpec, Reply};

/// Busy-polled raw TCP round trips between two node processes.
pub const FLOOR: &str = "floor";
/// Closed-loop latency in the Agreed group.
pub const AGREED: &str = "agreed";
/// Closed-loop latency in the Safe group.
pub const SAFE: &str = "safe";
/// Every node multicasting into the Agreed group.
pub const TPUT: &str = "tput";

/// The cases, in the order each round runs them.
pub const CASES: &[&str] = &[FLOOR, AGREED, SAFE, TPUT];

/// Sizes when `--sizes` is not given.
pub const DEFAULT_SIZES: &[usize] = &[64, 1024];

/// Nodes in the group.
pub const NODES: u32 = 3;

/// The `group` binary's flags.
#[derive(Debug, Clone, Args, Serialize)]
pub struct GroupArgs {
    /// The flags every harness binary has.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,
    /// Measured closed-loop messages per latency case, size and round
    /// (after warm-up).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: Option<u64>,
    /// Closed-loop messages (and floor round trips) not measured, per case,
    /// size and round.
    #[arg(long, value_name = "N")]
    pub warmup: Option<u64>,
    /// Seconds of sending per throughput case, size and round.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub seconds: Option<f64>,
    /// How each node's shard waits when it has nothing to do.
    #[arg(long, value_enum, default_value_t)]
    pub idle: NodeIdle,
}

impl GroupArgs {
    /// Checks the arguments and turns them into what to run.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let sizes = self.common.sizes_or(DEFAULT_SIZES);
        for &s in &sizes {
            check_pingpong_size(s)?;
        }
        // Quick: a Safe message waits about 5 ms for its acknowledgements,
        // so 1 200 of them take about 6 s per case and round.
        let messages = self.messages.unwrap_or(self.common.pick(20_000, 1_000));
        let warmup = self.warmup.unwrap_or(self.common.pick(5_000, 200));
        Ok(Plan {
            sizes,
            cases: self.common.selected_cases(CASES, &[])?,
            rounds: self.common.rounds as usize,
            messages,
            warmup,
            // The floor's round trips are cheap: as many as pingpong's
            // (50 000 after 20 000) in a full run.
            floor_iters: messages * 5 / 2,
            floor_warmup: warmup * 4,
            seconds: self.seconds.unwrap_or(self.common.pick(10.0, 1.0)),
            idle: self.idle,
        })
    }
}

/// What a group run does.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Payload sizes.
    pub sizes: Vec<usize>,
    /// Cases, in the order each round runs them.
    pub cases: Vec<&'static str>,
    /// Rounds.
    pub rounds: usize,
    /// Measured closed-loop messages per latency case.
    pub messages: u64,
    /// Closed-loop messages not measured.
    pub warmup: u64,
    /// Measured floor round trips.
    pub floor_iters: u64,
    /// Floor round trips not measured.
    pub floor_warmup: u64,
    /// Sending time per throughput case.
    pub seconds: f64,
    /// How the nodes' shards wait.
    pub idle: NodeIdle,
}

/// What one case measured in one round.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Round trips (`floor`) or closed-loop latencies (`agreed`, `safe`),
    /// and for the latter the sender's allocations per measured message.
    Latency(Summary, Option<f64>),
    /// Every node's part of a throughput run, by node id.
    Throughput(Vec<(u32, Throughput)>),
}

/// Who is who in a run.
#[derive(Debug, Clone, Serialize)]
pub struct Roles {
    /// The sequencer of the Agreed group: the floor's echoing side.
    pub sequencer: u32,
    /// The sequencer of each group ([`GroupName::ALL`] order): whichever
    /// node's join formed the group, so the two may differ.
    pub sequencers: Vec<u32>,
    /// The node that runs the closed loops and the floor's measuring side.
    pub sender: u32,
    /// Process id of each node, by node id order.
    pub pids: Vec<u32>,
}

/// The order checks of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OrderChecks {
    /// Checks made (one per latency or throughput case run).
    pub checks: u64,
    /// The ones where some node's count or hash differed, described.
    pub disagreements: Vec<String>,
    /// View changes the nodes saw after they were ready (a node suspected
    /// on a busy machine, say), as `node N group: reason -> members`; none
    /// in a clean run.
    pub view_changes: Vec<String>,
}

/// The running nodes and what the parent knows of them.
#[derive(Debug)]
pub struct Cluster {
    members: Members,
    /// Roles of the nodes.
    pub roles: Roles,
    /// Messages multicast in each group so far ([`GroupName::ALL`] order).
    expected: [u64; 2],
    /// The order checks so far.
    pub order: OrderChecks,
}

fn free_ports(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    // Hold every listener until all are chosen, so no port repeats.
    let ls = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("choosing loopback ports")?;
    ls.iter()
        .map(|l| l.local_addr().map_err(Into::into))
        .collect()
}

impl Cluster {
    /// Starts the nodes and waits until every node is a member of both
    /// groups.
    pub fn start(idle: NodeIdle) -> anyhow::Result<Cluster> {
        let addrs = free_ports(NODES as usize)?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let dir =
            std::env::temp_dir().join(format!("concord-group-{}-{stamp:x}", std::process::id()));
        let nodes: Vec<(u32, SocketAddr)> = (1..=NODES).zip(addrs).collect();
        let specs: Vec<MemberSpec> = (1..=NODES)
            .map(|id| MemberSpec {
                id,
                cluster: stamp,
                nodes: nodes.clone(),
                data_dir: dir.join(format!("n{id}")),
                idle,
                // Three busy processes on two cores, on a machine shared
                // with builds: a node descheduled for a while must not be
                // suspected, or the run measures a view change. The
                // heartbeat stays at its default: idle Safe deliveries wait
                // for the acknowledgements it carries.
                failure_timeout: Duration::from_secs(3),
            })
            .collect();
        let mut members = Members::spawn(&specs, dir)?;
        let mut coordinators = Vec::new();
        let mut pids = Vec::new();
        for id in 1..=NODES {
            match members.recv(id, Duration::from_secs(60))? {
                Reply::Ready {
                    node,
                    pid,
                    coordinators: c,
                } => {
                    ensure!(node == id, "node {id} says it is node {node}");
                    pids.push(pid);
                    coordinators.extend(c);
                }
                other => bail!("node {id}: expected ready, got {other:?}"),
            }
        }
        // Every node's view of each group, node by node.
        let groups = GroupName::ALL.len();
        let sequencers = coordinators[..groups].to_vec();
        ensure!(
            coordinators.chunks(groups).all(|c| c == sequencers),
            "the nodes disagree on the groups' sequencers: {coordinators:?}"
        );
        // Two groups on three nodes: some node sequences neither.
        let sender = (1..=NODES)
            .find(|n| !sequencers.contains(n))
            .context("every node sequences a group")?;
        let sequencer = sequencers[GroupName::Agreed as usize];
        Ok(Cluster {
            members,
            roles: Roles {
                sequencer,
                sequencers,
                sender,
                pids,
            },
            expected: [0, 0],
            order: OrderChecks::default(),
        })
    }

    /// Busy-polled raw TCP round trips from the sender to the Agreed
    /// group's sequencer.
    pub fn floor(&mut self, size: usize, warmup: u64, iters: u64) -> anyhow::Result<Summary> {
        let (server, client) = (self.roles.sequencer, self.roles.sender);
        let t = Duration::from_secs(30);
        let Reply::FloorPort { port } =
            self.members.ask(server, &Command::FloorServe { size }, t)?
        else {
            bail!("node {server}: expected a floor port");
        };
        let ping = Command::FloorPing {
            port,
            size,
            warmup,
            iters,
        };
        let wait = member::floor_limit(warmup + iters) + Duration::from_secs(30);
        let measured = self.members.ask(client, &ping, wait);
        let echoed = self.members.ask(server, &Command::FloorJoin, wait)?;
        let Reply::Floor { summary } = measured? else {
            bail!("node {client}: expected floor round trips");
        };
        match echoed {
            Reply::FloorEchoed { echoed } if echoed == warmup + iters => Ok(summary),
            other => bail!(
                "node {server}: {other:?}, expected {} echoed",
                warmup + iters
            ),
        }
    }

    /// Closed-loop latency of the sender in `group`, then the order check.
    pub fn latency(
        &mut self,
        group: GroupName,
        size: usize,
        warmup: u64,
        count: u64,
    ) -> anyhow::Result<(Summary, Option<f64>)> {
        let sender = self.roles.sender;
        let cmd = Command::Latency {
            group,
            size,
            warmup,
            count,
        };
        // A Safe delivery waits for acknowledgements that travel with
        // heartbeats (10 ms apart): allow 40 ms per message.
        let per = Duration::from_millis(40);
        let wait =
            Duration::from_secs(60) + per * u32::try_from(warmup + count).unwrap_or(u32::MAX);
        let r = self.members.ask(sender, &cmd, wait)?;
        let Reply::Latency {
            summary,
            sent,
            allocs,
        } = r
        else {
            bail!("node {sender}: expected latencies, got {r:?}");
        };
        self.expected[group as usize] += sent;
        self.check_order(group)?;
        Ok((summary, allocs.map(|a| a as f64 / count as f64)))
    }

    /// Every node multicasting into the Agreed group for `secs`, then the
    /// order check.
    pub fn throughput(&mut self, size: usize, secs: f64) -> anyhow::Result<Vec<(u32, Throughput)>> {
        let group = GroupName::Agreed;
        let cmd = Command::Throughput { group, size, secs };
        for id in 1..=NODES {
            self.members.send(id, &cmd)?;
        }
        let wait = Duration::from_secs_f64(secs) + Duration::from_secs(60);
        let mut out = Vec::new();
        for id in 1..=NODES {
            match self.members.recv(id, wait)? {
                Reply::Throughput(t) => out.push((id, t)),
                other => bail!("node {id}: expected throughput, got {other:?}"),
            }
        }
        self.expected[group as usize] += out.iter().map(|(_, t)| t.sent).sum::<u64>();
        self.check_order(group)?;
        Ok(out)
    }

    /// Waits until every node delivered every message of `group` so far and
    /// compares their counts and order hashes.
    fn check_order(&mut self, group: GroupName) -> anyhow::Result<()> {
        let expected = self.expected[group as usize];
        let cmd = Command::Drain { group, expected };
        for id in 1..=NODES {
            self.members.send(id, &cmd)?;
        }
        let mut seen = Vec::new();
        for id in 1..=NODES {
            match self.members.recv(id, Duration::from_secs(90))? {
                Reply::Drained {
                    delivered,
                    hash,
                    view_changes,
                } => seen.push((id, delivered, hash, view_changes)),
                other => bail!("node {id}: expected drained, got {other:?}"),
            }
        }
        self.order.checks += 1;
        for (id, _, _, changes) in &mut seen {
            let known = self
                .order
                .view_changes
                .iter()
                .filter(|c| c.starts_with(&format!("node {id} {}:", group.name())))
                .count();
            for c in changes.drain(..).skip(known) {
                self.order
                    .view_changes
                    .push(format!("node {id} {}: {c}", group.name()));
            }
        }
        let (_, d0, h0, _) = seen[0];
        if seen
            .iter()
            .any(|&(_, d, h, _)| d != d0 || h != h0 || d != expected)
        {
            let what = seen
                .iter()
                .map(|(id, d, h, _)| format!("node {id}: {d} delivered, hash {h:016x}"))
                .collect::<Vec<_>>()
                .join("; ");
            let msg = format!("{}: {expected} multicast; {what}", group.name());
            self.order.disagreements.push(msg.clone());
            bail!("the nodes delivered different sequences: {msg}");
        }
        Ok(())
    }

    /// Stops the nodes (the guard kills any that do not exit).
    pub fn stop(self) {
        self.members.quit();
    }
}

impl Plan {
    /// Runs every case in interleaved rounds on one cluster, logging each
    /// run (and each failure) to stderr; one row per size and case.
    pub fn run(&self, cluster: &mut Cluster) -> Vec<CaseRounds<Outcome>> {
        run_interleaved(self.rounds, &self.sizes, &self.cases, |slot| {
            let (case, size) = (slot.case, slot.size);
            eprintln!(
                "group: round {}/{}: {case} {size} B",
                slot.round + 1,
                self.rounds
            );
            let outcome = self.run_case(cluster, case, size);
            if let Err(e) = &outcome {
                eprintln!("group: {case} {size} B: {e:#}");
            }
            outcome
        })
    }

    fn run_case(&self, c: &mut Cluster, case: &str, size: usize) -> anyhow::Result<Outcome> {
        match case {
            FLOOR => c
                .floor(size, self.floor_warmup, self.floor_iters)
                .map(|s| Outcome::Latency(s, None)),
            AGREED => c
                .latency(GroupName::Agreed, size, self.warmup, self.messages)
                .map(|(s, a)| Outcome::Latency(s, a)),
            SAFE => c
                .latency(GroupName::Safe, size, self.warmup, self.messages)
                .map(|(s, a)| Outcome::Latency(s, a)),
            TPUT => c.throughput(size, self.seconds).map(Outcome::Throughput),
            other => bail!("case {other} is listed but has no runner"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: GroupArgs,
    }

    fn plan(argv: &[&str]) -> anyhow::Result<Plan> {
        let mut v = vec!["group"];
        v.extend_from_slice(argv);
        Cli::try_parse_from(v)?.args.plan()
    }

    #[test]
    fn defaults_and_quick() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.sizes, DEFAULT_SIZES);
        assert_eq!(p.cases, CASES);
        assert_eq!((p.rounds, p.messages, p.seconds), (3, 20_000, 10.0));
        assert_eq!(p.idle, NodeIdle::Yield);
        let p = plan(&["--quick", "--idle", "adaptive"]).unwrap();
        assert_eq!((p.rounds, p.messages, p.seconds), (3, 1_000, 1.0));
        assert_eq!(p.idle, NodeIdle::Adaptive);
    }

    #[test]
    fn other_binaries_flags_and_bad_values_are_rejected() {
        assert!(Cli::try_parse_from(["group", "--iterations", "10"]).is_err());
        assert!(Cli::try_parse_from(["group", "--concord-idle", "spin"]).is_err());
        assert!(Cli::try_parse_from(["group", "--messages", "0"]).is_err());
        assert!(plan(&["--sizes", "4"]).is_err());
        assert!(plan(&["--cases", "std"]).is_err());
    }
}
