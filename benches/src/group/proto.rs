//! What the parent and its node processes say to each other: one JSON
//! object per line, commands on the child's stdin, replies on its stdout.
//! A child writes nothing else to stdout.

use crate::harness::summary::Summary;
use clap::ValueEnum;
use concord_runtime::IdleStrategy;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The hidden first argument that makes the `group` binary a node process.
pub const MEMBER_ROLE: &str = "__group-member";

/// The two groups every node joins, one per delivery mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupName {
    /// Joined with `DeliveryMode::Agreed`.
    Agreed,
    /// Joined with `DeliveryMode::Safe`.
    Safe,
}

impl GroupName {
    /// Both, in the order a node joins them.
    pub const ALL: [GroupName; 2] = [GroupName::Agreed, GroupName::Safe];

    /// The group's name on the wire.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            GroupName::Agreed => "bench-agreed",
            GroupName::Safe => "bench-safe",
        }
    }
}

/// How each node's shard waits when a turn of its duty loop found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeIdle {
    /// `sched_yield` on every idle turn, never sleep (the runtime's `Yield`).
    /// Default: three processes on two cores cannot all spin, and a
    /// process that yields hands its core to whichever node has work at
    /// once, without the tens of microseconds a wake-up from a park costs
    /// here (docs/DESIGN.md, "Group benchmark").
    #[default]
    Yield,
    /// Spin, then yield, then park, learning the spin budget from the
    /// traffic (the runtime's default `Adaptive`).
    Adaptive,
    /// Never yield or sleep (the runtime's `BusySpin`).
    Spin,
    /// Park at the first idle turn (the runtime's `Park`).
    Park,
}

impl NodeIdle {
    /// The runtime's strategy.
    #[must_use]
    pub fn strategy(self) -> IdleStrategy {
        match self {
            NodeIdle::Yield => IdleStrategy::Yield,
            NodeIdle::Adaptive => IdleStrategy::adaptive(),
            NodeIdle::Spin => IdleStrategy::BusySpin,
            NodeIdle::Park => IdleStrategy::Park,
        }
    }
}

/// Everything a node process needs, passed as one JSON argument.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberSpec {
    /// This node's id (1-based).
    pub id: u32,
    /// The cluster id every node of this run shares.
    pub cluster: u64,
    /// Every node: id and address.
    pub nodes: Vec<(u32, SocketAddr)>,
    /// Where this node keeps its durable state.
    pub data_dir: PathBuf,
    /// How the node's shard waits.
    pub idle: NodeIdle,
    /// The node's failure timeout.
    pub failure_timeout: Duration,
}

/// A command to a node process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Listen for one raw TCP connection and echo `size`-byte messages on
    /// it, busy-polling, until it closes. Replies [`Reply::FloorPort`] at once.
    FloorServe {
        /// Message size.
        size: usize,
    },
    /// Connect to `port` and time `warmup` + `iters` busy-polled round trips.
    FloorPing {
        /// The serving node's port on 127.0.0.1.
        port: u16,
        /// Message size.
        size: usize,
        /// Round trips not measured.
        warmup: u64,
        /// Round trips measured.
        iters: u64,
    },
    /// Wait for the echo server of the last `FloorServe` to finish.
    FloorJoin,
    /// Closed loop: multicast one message, wait for its own delivery, repeat.
    Latency {
        /// The group.
        group: GroupName,
        /// Payload size.
        size: usize,
        /// Messages not measured.
        warmup: u64,
        /// Messages measured.
        count: u64,
    },
    /// Multicast as fast as back-pressure allows for `secs`.
    Throughput {
        /// The group.
        group: GroupName,
        /// Payload size.
        size: usize,
        /// Seconds.
        secs: f64,
    },
    /// Wait until `expected` messages of `group` are delivered here.
    Drain {
        /// The group.
        group: GroupName,
        /// Deliveries to wait for, counted since the join.
        expected: u64,
    },
    /// Exit at once.
    Quit,
}

/// A node process's answer to a command (and `Ready`, unasked).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Both groups have every node as a member.
    Ready {
        /// This node.
        node: u32,
        /// Its process id.
        pid: u32,
        /// The sequencer of each group ([`GroupName::ALL`] order).
        coordinators: Vec<u32>,
    },
    /// The floor's echo server listens here.
    FloorPort {
        /// Port on 127.0.0.1.
        port: u16,
    },
    /// The floor's echo server finished.
    FloorEchoed {
        /// Messages echoed.
        echoed: u64,
    },
    /// Floor round trips.
    Floor {
        /// Their percentiles.
        summary: Summary,
    },
    /// Closed-loop latencies, multicast to own delivery.
    Latency {
        /// Their percentiles.
        summary: Summary,
        /// Messages multicast (warm-up included).
        sent: u64,
        /// Heap allocations of the sender's process over the measured
        /// messages (every thread; one payload buffer per message is the
        /// bench's own); `None` without the counting allocator.
        allocs: Option<u64>,
    },
    /// One node's part of a throughput run.
    Throughput(Throughput),
    /// The group's deliveries here, once `expected` were reached.
    Drained {
        /// Deliveries since the join.
        delivered: u64,
        /// Running hash of every delivery since the join ([`order_hash`]).
        hash: u64,
        /// View changes since the node became ready (a suspected node,
        /// say): reason and members of each.
        view_changes: Vec<String>,
    },
    /// The command failed.
    Error {
        /// Why.
        message: String,
    },
}

/// One node's part of a throughput run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Throughput {
    /// Messages this node multicast.
    pub sent: u64,
    /// Messages delivered here while it was sending (every sender's).
    pub delivered: u64,
    /// Its sending time, seconds.
    pub secs: f64,
    /// Deliveries inside the steady-state window (after the first
    /// [`ALLOC_WARMUP`](crate::harness::alloc_window::ALLOC_WARMUP) of the run).
    pub window_deliveries: u64,
    /// Heap allocations in the window, every thread of the process.
    pub window_allocs: Option<u64>,
    /// Of those, the bench's own: one buffer per payload it multicast.
    pub payload_allocs: u64,
    /// Received frames copied because they straddled two receive buffers.
    pub straddled: u64,
    /// Received payloads copied out because held payloads filled the receive
    /// buffers (`NodeStats::pressure_copies`).
    pub pressure_copies: u64,
    /// Multicasts answered `BackPressured`.
    pub back_pressured: u64,
    /// Frames this node queued behind a back-pressured connection in the
    /// window (`NodeStats::backlogged`); the backlog holds the message and
    /// encodes it again when it goes out (no copy).
    pub backlogged: u64,
}

/// Folds one delivery into a node's running hash of its group's order:
/// FNV-1a over the words that name the delivery and its first payload bytes.
/// Two nodes with equal hashes after equal counts delivered the same messages
/// in the same order (up to a 64-bit collision).
#[must_use]
pub fn order_hash(mut h: u64, words: [u64; 5]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    for w in words {
        for b in w.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// FNV-1a's offset basis: the hash of no deliveries.
pub const ORDER_HASH_START: u64 = 0xcbf2_9ce4_8422_2325;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_hash_sees_order_and_content() {
        let a = [1, 2, 1, 1, 0];
        let b = [2, 3, 1, 1, 1];
        let ab = order_hash(order_hash(ORDER_HASH_START, a), b);
        let ba = order_hash(order_hash(ORDER_HASH_START, b), a);
        assert_ne!(ab, ba);
        let mut c = b;
        c[4] = 2;
        assert_ne!(ab, order_hash(order_hash(ORDER_HASH_START, a), c));
        assert_eq!(ab, order_hash(order_hash(ORDER_HASH_START, a), b));
    }

    #[test]
    fn commands_and_replies_are_one_line_of_json() {
        let c = Command::Latency {
            group: GroupName::Safe,
            size: 64,
            warmup: 1,
            count: 2,
        };
        let line = serde_json::to_string(&c).unwrap();
        assert!(!line.contains('\n'));
        assert!(line.contains("\"cmd\":\"latency\""), "{line}");
        let back: Command = serde_json::from_str(&line).unwrap();
        assert!(matches!(back, Command::Latency { count: 2, .. }));
        let r = Reply::Throughput(Throughput {
            sent: 5,
            ..Throughput::default()
        });
        let back: Reply = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert!(matches!(back, Reply::Throughput(t) if t.sent == 5));
    }
}
