//! Named scenarios, each showing one property of the Engine, driven by the
//! small deterministic in-test network of `net/mod.rs` (fixed latency,
//! optional loss, reordering and partitions; no randomness beyond a
//! fixed-seed xorshift). One module per topic.

#[allow(dead_code)]
#[path = "../net/mod.rs"]
mod net;

mod acceptor;
mod frozen;
mod join_leave;
mod not_member;
mod ordering;
mod orphan;
mod partition;
mod rejoin;

use concord_membership::{
    Ballot, Body, Command, DeliveryMode, DurableState, Engine, GroupId, Message, Multicast, NodeId,
    Proposal, ProtocolVersion, Reason, Time, View, ViewId,
};
use net::{Ev, MS, Net, P, Setup, config};

fn group() -> GroupId {
    GroupId::from_name("scenario")
}

fn position_of(views: &[(View, Reason, u64)], reason: &Reason) -> Option<u64> {
    views
        .iter()
        .find(|(_, r, _)| r == reason)
        .map(|(_, _, p)| *p)
}

fn assert_no_flush_no_timeout(net: &mut Net, nodes: &[u32]) {
    for n in nodes {
        let s = net.stats(*n);
        assert_eq!(s.flushes, 0, "node {n} ran a flush: {s:?}");
        assert_eq!(s.timeouts_fired, 0, "node {n} fired a timeout: {s:?}");
    }
}

/// Same deliveries with the same positions.
fn assert_same(net: &Net, a: u32, b: u32) {
    assert_eq!(
        net.deliveries(a),
        net.deliveries(b),
        "nodes {a} and {b} differ"
    );
}

/// The last `k` deliveries of every node are the same (positions and payloads).
fn assert_same_tail(net: &Net, k: usize) {
    let tail = |n: u32| {
        let d = net.deliveries(n);
        d[d.len().saturating_sub(k)..].to_vec()
    };
    assert_eq!(tail(1), tail(2));
    assert_eq!(tail(1), tail(3));
}

fn partitioned_count(net: &Net, node: u32) -> usize {
    net.logs[(node - 1) as usize]
        .iter()
        .filter(|e| **e == Ev::Partitioned)
        .count()
}

/// The ids of the views a node installed, without its `Partitioned` reports
/// (they carry the last view's id again).
fn installed_ids(net: &Net, node: u32) -> Vec<ViewId> {
    net.views(node)
        .into_iter()
        .filter(|(_, r, _)| *r != Reason::Partitioned)
        .map(|(v, _, _)| v.id)
        .collect()
}
