//! Adjust-version (issue 4): one named test per claim group and per error.
//! docs/CLAIMS.md maps each of the 31 claims to these tests.
//!
//! Driven by the in-test network of `net/mod.rs` with a window of 256 and
//! every message routed through the wire codec (so the v2 `DataBatch` frame
//! and the new control messages are exercised on the wire): fixed latency of
//! one 0.1 ms step, crash/restart with the node's persisted acceptor state,
//! adjust-version requests held back to stage races.

#[allow(dead_code)]
mod net;

use std::collections::BTreeMap;
use std::rc::Rc;

use concord_membership::version::{self, VersionChange};
use concord_membership::{
    AdjustError, BatchError, Body, Config, ConfigError, Engine, GroupId, Message, Multicast,
    NodeId, ProtocolVersion, Reason, Scope, Target, Time, VersionError, VersionEvent, VersionRange,
    View, wire,
};
use net::{Ev, Net, P, STEP, Setup};

fn range(min: u16, max: u16) -> VersionRange {
    VersionRange {
        min: ProtocolVersion(min),
        max: ProtocolVersion(max),
    }
}

/// `n` nodes, each with its own range.
fn cluster(ranges: &[VersionRange]) -> Net {
    Setup::new(ranges.len() as u32)
        .window(256)
        .ranges(ranges)
        .through_wire()
        .start()
}

/// Holds back adjust-version requests.
fn adjust_requests(_: NodeId, _: NodeId, body: &Body<P>) -> bool {
    matches!(body, Body::AdjustRequest { .. })
}

/// What only these tests do with the network.
impl Net {
    /// A multicast the Engine accepts.
    fn send_ok(&mut self, node: u32, group: GroupId, bytes: &[u8]) {
        assert!(matches!(
            self.send(node, group, bytes),
            Multicast::Sent { .. }
        ));
    }

    /// Join every node of `nodes` in turn; each is a member before the next
    /// joins.
    fn form_each(&mut self, group: GroupId, nodes: &[u32]) {
        for n in nodes {
            self.join(*n, group);
            self.run(30);
            assert!(self.engine(*n).is_member(group), "node {n} not a member");
        }
    }

    fn adjust(&mut self, node: u32, scope: Scope, target: Target) -> Result<usize, AdjustError> {
        let now = Time(self.now);
        let r = self.engine(node).adjust_version(now, scope, target);
        self.drain((node - 1) as usize);
        r.map(|v| v.len())
    }

    /// Rolling-upgrade step for one node: ordered leave of every group,
    /// stop, restart with range `r`, join `groups` again.
    fn upgrade(&mut self, node: u32, r: VersionRange, groups: &[GroupId]) {
        let now = Time(self.now);
        let leaving = self.engine(node).shutdown(now);
        assert_eq!(leaving.len(), groups.len(), "node {node} leaves its groups");
        self.drain((node - 1) as usize);
        for _ in 0..500 {
            if !self.engine(node).has_groups() {
                break;
            }
            self.run(1);
        }
        assert!(!self.engine(node).has_groups(), "node {node} left");
        self.crash(node);
        self.run(2);
        self.recover(node, r);
        self.run(5);
        for g in groups {
            self.join(node, *g);
        }
        self.run(30);
        for g in groups {
            assert!(self.engine(node).is_member(*g), "node {node} rejoined");
        }
    }

    fn switches(&self, node: u32, group: GroupId) -> Vec<(u64, ProtocolVersion, ProtocolVersion)> {
        self.views(node)
            .into_iter()
            .filter(|(v, _, _)| v.group == group)
            .filter_map(|(_, r, p)| match r {
                Reason::AdjustVersion { from, to } => Some((p, from, to)),
                _ => None,
            })
            .collect()
    }

    fn protocol(&mut self, node: u32, group: GroupId) -> ProtocolVersion {
        self.engine(node).view(group).unwrap().protocol
    }
}

fn g1() -> GroupId {
    GroupId::from_name("version-a")
}
fn g2() -> GroupId {
    GroupId::from_name("version-b")
}

/// Three "old release" nodes (max version 1) with a v1 group.
fn old_cluster(groups: &[GroupId]) -> Net {
    let mut net = cluster(&[range(1, 1); 3]);
    net.run(5);
    for g in groups {
        net.form_each(*g, &[1, 2, 3]);
    }
    net
}

fn upgrade_all(net: &mut Net, groups: &[GroupId]) {
    for n in 1..=3 {
        net.upgrade(n, range(1, 2), groups);
    }
}

fn no_flush_anywhere(net: &mut Net) {
    for n in 1..=3 {
        let s = net.engine(n).stats().clone();
        assert_eq!((s.flushes, s.flush_installs), (0, 0), "node {n}: {s:?}");
    }
}

// ----------------------------------------------------------------------
// Claims 1, 4, 5, 11, 18, 25: rolling upgrade keeps the group active, then
// one notification switches the version in use.
// ----------------------------------------------------------------------

#[test]
fn rolling_upgrade_keeps_group_active_then_adjust_switches_it() {
    let g = g1();
    let mut net = old_cluster(&[g]);
    assert_eq!(net.protocol(1, g), ProtocolVersion(1));
    // Traffic runs throughout; each node in turn leaves (ordered), restarts
    // as the new release and rejoins.
    let mut sent = 0u32;
    for n in 1..=3u32 {
        for m in (1..=3).filter(|m| *m != n) {
            sent += 1;
            net.send_ok(m, g, format!("before-{n}-{sent}").as_bytes());
        }
        net.upgrade(n, range(1, 2), &[g]);
        // The group stayed active: the others were members all along.
        for m in (1..=3).filter(|m| *m != n) {
            assert!(net.engine(m).is_member(g));
        }
    }
    // Leaves and joins are ordered fast paths: no flush anywhere.
    no_flush_anywhere(&mut net);
    assert_eq!(
        net.protocol(1, g),
        ProtocolVersion(1),
        "upgrade alone switches nothing"
    );
    // Step (B)+(C): notify the group; it switches dynamically.
    assert_eq!(net.adjust(2, Scope::Group(g), Target::HighestCommon), Ok(1));
    net.run(10);
    let at = net.switches(1, g);
    assert_eq!(at.len(), 1);
    assert_eq!((at[0].1, at[0].2), (ProtocolVersion(1), ProtocolVersion(2)));
    for n in 1..=3 {
        assert_eq!(
            net.switches(n, g),
            at,
            "node {n} switched at the same position"
        );
        assert_eq!(net.protocol(n, g), ProtocolVersion(2));
    }
    no_flush_anywhere(&mut net);
    // Traffic continues after the switch.
    net.send_ok(3, g, b"after");
    net.run(10);
    for n in 1..=3 {
        assert!(net.deliveries(n).iter().any(|(_, p)| p == b"after"));
    }
}

/// Claim 5: shutting a node down removes its members from their groups (an
/// ordered leave every other member sees), restarting adds them back (a
/// join); the other members stay members throughout, and nothing flushes.
#[test]
fn shutdown_removes_the_members_with_an_ordered_leave_and_restart_adds_them_back() {
    let (a, b) = (g1(), g2());
    let mut net = old_cluster(&[a, b]);
    let flushes = |net: &mut Net| -> Vec<(u64, u64)> {
        [1, 3]
            .iter()
            .map(|n| {
                let s = net.engine(*n).stats();
                (s.flushes, s.flush_installs)
            })
            .collect()
    };
    let before = flushes(&mut net);
    eprintln!("flushes before the upgrade (nodes 1, 3): {before:?}");
    net.upgrade(2, range(1, 2), &[a, b]);
    assert_eq!(net.incs[1], 1, "node 2 runs a new incarnation");
    for n in [1u32, 3] {
        for g in [a, b] {
            let views: Vec<(View, Reason, u64)> = net
                .views(n)
                .into_iter()
                .filter(|(v, _, _)| v.group == g)
                .collect();
            let leave = views
                .iter()
                .position(|(_, r, _)| *r == Reason::Leave(NodeId(2)))
                .unwrap_or_else(|| panic!("node {n} saw no leave of node 2: {views:?}"));
            assert!(!views[leave].0.contains(NodeId(2)));
            let join = views
                .iter()
                .rposition(|(_, r, _)| *r == Reason::Join(NodeId(2)))
                .unwrap_or_else(|| panic!("node {n} saw no join of node 2: {views:?}"));
            assert!(join > leave, "node {n}: the join follows the leave");
            assert!(views[join].0.contains(NodeId(2)));
            // Ordered at one position each, the same at every member.
            assert_eq!(
                (views[leave].2, views[join].2),
                {
                    let other = net.views(if n == 1 { 3 } else { 1 });
                    let pos = |r: &Reason| {
                        other
                            .iter()
                            .filter(|(v, x, _)| v.group == g && x == r)
                            .map(|(_, _, p)| *p)
                            .next_back()
                            .unwrap()
                    };
                    (
                        pos(&Reason::Leave(NodeId(2))),
                        pos(&Reason::Join(NodeId(2))),
                    )
                },
                "node {n}: same positions everywhere"
            );
            assert!(net.engine(n).is_member(g), "node {n} stayed a member");
        }
    }
    // Leaves and joins are fast paths: the upgrade flushed nothing.
    assert_eq!(flushes(&mut net), before);
}

// ----------------------------------------------------------------------
// Claims 6, 7, 13, 14, 20, 21, 27, 28: the notification is an ordered
// membership-change message with the AdjustVersion reason; the switch splits
// the order exactly at its position.
// ----------------------------------------------------------------------

#[test]
fn adjust_is_an_ordered_membership_change_at_one_position() {
    let g = g1();
    let mut net = old_cluster(&[g]);
    upgrade_all(&mut net, &[g]);
    // Messages in flight on both sides of the request.
    for i in 0..20u32 {
        net.send_ok(1 + i % 3, g, format!("x{i}").as_bytes());
        if i == 10 {
            assert_eq!(
                net.adjust(3, Scope::Group(g), Target::Exact(ProtocolVersion(2))),
                Ok(1)
            );
        }
        net.step();
    }
    net.run(20);
    let p = net.switches(1, g)[0].0;
    for n in 1..=3 {
        // The ViewChange carries the reason code and the new version.
        let (view, reason, position) = net
            .views(n)
            .into_iter()
            .find(|(_, r, _)| matches!(r, Reason::AdjustVersion { .. }))
            .unwrap();
        assert_eq!(position, p);
        assert_eq!(view.protocol, ProtocolVersion(2));
        assert_eq!(
            reason,
            Reason::AdjustVersion {
                from: ProtocolVersion(1),
                to: ProtocolVersion(2)
            }
        );
        // Every delivery before p carries a v1 view id, every one after the
        // switch view's id (or later).
        for e in &net.logs[(n - 1) as usize] {
            if let Ev::Deliver { seq, view: v, .. } = e {
                assert_ne!(*seq, p, "the switch takes a position of its own");
                if *seq < p {
                    assert!(*v < view.id.0, "node {n}: seq {seq} before the switch");
                } else {
                    assert!(*v >= view.id.0, "node {n}: seq {seq} after the switch");
                }
            }
        }
        // The ordered outcome, the same at every member.
        assert_eq!(net.events[(n - 1) as usize].len(), 1);
        let ev = &net.events[(n - 1) as usize][0];
        assert_eq!((ev.position, ev.requester, ev.request), (p, NodeId(3), 1));
        assert_eq!(ev.outcome, Ok((ProtocolVersion(1), ProtocolVersion(2))));
    }
    let a = net.deliveries(1);
    assert_eq!(a.len(), 20);
    for n in 2..=3 {
        assert_eq!(net.deliveries(n), a, "same order at node {n}");
    }
    no_flush_anywhere(&mut net);
}

// ----------------------------------------------------------------------
// Claim 3: one command notifies every group on the cluster.
// ----------------------------------------------------------------------

#[test]
fn one_command_adjusts_every_group() {
    let (a, b) = (g1(), g2());
    let mut net = old_cluster(&[a, b]);
    upgrade_all(&mut net, &[a, b]);
    assert_eq!(net.adjust(1, Scope::All, Target::HighestCommon), Ok(2));
    net.run(10);
    for n in 1..=3 {
        assert_eq!(net.protocol(n, a), ProtocolVersion(2));
        assert_eq!(net.protocol(n, b), ProtocolVersion(2));
        assert_eq!(net.switches(n, a).len(), 1);
        assert_eq!(net.switches(n, b).len(), 1);
    }
    // Again: every group already runs the target, nothing is ordered.
    assert_eq!(net.adjust(1, Scope::All, Target::HighestCommon), Ok(0));
}

// ----------------------------------------------------------------------
// Claims 2, 12, 19, 26: the new version brings a new function, available to
// every member at once after the switch.
// ----------------------------------------------------------------------

#[test]
fn multicast_batch_needs_version_2_and_works_for_every_member_after_the_switch() {
    let g = g1();
    let mut net = old_cluster(&[g]);
    upgrade_all(&mut net, &[g]);
    let batch = |n: u32, tag: &str| -> Vec<P> {
        (0..5)
            .map(|i| Rc::from(format!("{tag}-{n}-{i}").as_bytes()))
            .collect()
    };
    let now = Time(net.now);
    let before = net.engine(1).multicast_batch(now, g, batch(1, "early"));
    assert_eq!(
        before,
        Err(BatchError::Version(VersionError::VersionTooLow {
            required: ProtocolVersion(2),
            active: ProtocolVersion(1)
        }))
    );
    assert_eq!(net.adjust(1, Scope::Group(g), Target::HighestCommon), Ok(1));
    net.run(10);
    for n in 1..=3 {
        let now = Time(net.now);
        let r = net.engine(n).multicast_batch(now, g, batch(n, "b"));
        assert!(matches!(r, Ok(Multicast::Sent { .. })), "node {n}: {r:?}");
        net.drain((n - 1) as usize);
    }
    net.run(10);
    let a = net.deliveries(1);
    let batched: Vec<&(u64, Vec<u8>)> = a.iter().filter(|(_, p)| p.starts_with(b"b-")).collect();
    assert_eq!(batched.len(), 15, "each payload delivered on its own");
    for n in 1..=3u32 {
        // A batch is contiguous in its sender's FIFO order.
        let mine: Vec<Vec<u8>> = batched
            .iter()
            .filter(|(_, p)| p.starts_with(format!("b-{n}-").as_bytes()))
            .map(|(_, p)| p.clone())
            .collect();
        assert_eq!(
            mine,
            batch(n, "b").iter().map(|p| p.to_vec()).collect::<Vec<_>>()
        );
        assert_eq!(net.deliveries(n), a, "same order at node {n}");
    }
    // The function's own bad inputs are typed errors.
    let now = Time(net.now);
    assert_eq!(
        net.engine(1).multicast_batch(now, g, Vec::new()),
        Err(BatchError::Version(VersionError::EmptyBatch))
    );
    let big: Vec<P> = (0..300).map(|_| Rc::from(&b"z"[..])).collect();
    assert_eq!(
        net.engine(1).multicast_batch(now, g, big),
        Err(BatchError::Version(VersionError::BatchTooLarge {
            len: 300,
            max: 256
        }))
    );
}

// ----------------------------------------------------------------------
// Claims 8, 15, 22, 29: every node must be active.
// ----------------------------------------------------------------------

#[test]
fn adjust_refused_while_a_node_is_not_active_names_it() {
    let g = g1();
    let mut net = old_cluster(&[g]);
    upgrade_all(&mut net, &[g]);
    net.crash(3);
    net.run(25); // past the failure timeout: node 3 is suspected
    let r = net.adjust(2, Scope::Group(g), Target::Exact(ProtocolVersion(2)));
    assert_eq!(
        r,
        Err(AdjustError::Version(VersionError::NodeNotActive {
            node: NodeId(3)
        }))
    );
    // Nothing was ordered.
    assert!(net.events[0].is_empty() && net.events[1].is_empty());
    assert_eq!(net.protocol(1, g), ProtocolVersion(1));
}

// ----------------------------------------------------------------------
// Claims 9, 16, 23, 30: the group must not be partitioned.
// ----------------------------------------------------------------------

#[test]
fn adjust_refused_when_the_group_lacks_a_configured_node_names_it() {
    let g = g1();
    let mut net = cluster(&[range(1, 1), range(1, 1), range(1, 1)]);
    net.run(5);
    net.form_each(g, &[1, 2]); // node 3 is up but not a member
    net.run(5);
    assert_eq!(
        net.adjust(1, Scope::Group(g), Target::Exact(ProtocolVersion(1))),
        Err(AdjustError::Version(VersionError::Partitioned {
            missing: vec![NodeId(3)]
        }))
    );
}

#[test]
fn adjust_refused_on_a_member_cut_off_in_a_minority() {
    let g = g1();
    let mut net = old_cluster(&[g]);
    upgrade_all(&mut net, &[g]);
    net.side[2] = 1; // node 3 alone
    net.run(40);
    let r = net.adjust(3, Scope::Group(g), Target::Exact(ProtocolVersion(2)));
    match r {
        Err(AdjustError::Version(VersionError::Partitioned { missing })) => {
            assert_eq!(missing, vec![NodeId(1), NodeId(2)]);
        }
        other => panic!("expected Partitioned, got {other:?}"),
    }
    // The majority side: node 3 is suspected, so not active.
    assert_eq!(
        net.adjust(1, Scope::Group(g), Target::Exact(ProtocolVersion(2))),
        Err(AdjustError::Version(VersionError::NodeNotActive {
            node: NodeId(3)
        }))
    );
}

// ----------------------------------------------------------------------
// Claims 10, 17, 24, 31: every node must be capable of the target.
// ----------------------------------------------------------------------

#[test]
fn adjust_refused_when_a_node_cannot_run_the_target_names_it() {
    let g = g1();
    let mut net = old_cluster(&[g]);
    // Only nodes 1 and 2 are upgraded.
    net.upgrade(1, range(1, 2), &[g]);
    net.upgrade(2, range(1, 2), &[g]);
    assert_eq!(
        net.adjust(1, Scope::Group(g), Target::Exact(ProtocolVersion(2))),
        Err(AdjustError::Version(VersionError::NotCapable {
            node: NodeId(3),
            supported: range(1, 1)
        }))
    );
    // Highest common resolves to 1, which the group already runs.
    assert_eq!(net.adjust(1, Scope::Group(g), Target::HighestCommon), Ok(0));
    // A version no node implements is refused on the requester itself.
    assert_eq!(
        net.adjust(1, Scope::All, Target::Exact(ProtocolVersion(3))),
        Err(AdjustError::Version(VersionError::NotCapable {
            node: NodeId(1),
            supported: range(1, 2)
        }))
    );
}

// ----------------------------------------------------------------------
// Races: the check is repeated at ordering time; a failure is ordered and
// reported identically by every member.
// ----------------------------------------------------------------------

fn same_rejection_everywhere(net: &Net, members: &[u32]) -> VersionEvent {
    let first = net.events[(members[0] - 1) as usize].clone();
    assert_eq!(first.len(), 1, "{first:?}");
    for n in members {
        assert_eq!(net.events[(*n - 1) as usize], first, "node {n}");
    }
    assert!(first[0].outcome.is_err());
    first[0].clone()
}

#[test]
fn race_join_of_an_old_release_fails_the_request_at_every_member() {
    let g = g1();
    let mut net = old_cluster(&[g]);
    upgrade_all(&mut net, &[g]);
    net.hold = Some(adjust_requests);
    assert_eq!(
        net.adjust(2, Scope::Group(g), Target::Exact(ProtocolVersion(2))),
        Ok(1)
    );
    // While the request is in flight node 3 is replaced by an old release.
    net.upgrade(3, range(1, 1), &[g]);
    net.release_held();
    net.run(20);
    let ev = same_rejection_everywhere(&net, &[1, 2, 3]);
    assert_eq!(
        ev.outcome,
        Err(VersionError::NotCapable {
            node: NodeId(3),
            supported: range(1, 1)
        })
    );
    for n in 1..=3 {
        assert_eq!(net.protocol(n, g), ProtocolVersion(1));
        assert!(net.switches(n, g).is_empty());
    }
}

#[test]
fn race_crash_fails_the_request_at_every_survivor() {
    let g = g1();
    let mut net = old_cluster(&[g]);
    upgrade_all(&mut net, &[g]);
    net.hold = Some(adjust_requests);
    assert_eq!(
        net.adjust(2, Scope::Group(g), Target::Exact(ProtocolVersion(2))),
        Ok(1)
    );
    net.crash(3);
    net.run(60); // suspicion, flush, new view without node 3
    net.release_held();
    net.run(20);
    let ev = same_rejection_everywhere(&net, &[1, 2]);
    assert!(
        matches!(
            ev.outcome,
            Err(VersionError::NodeNotActive { node: NodeId(3) })
        ),
        "{ev:?}"
    );
    assert_eq!(net.protocol(1, g), ProtocolVersion(1));
}

#[test]
fn race_partition_fails_the_request_at_every_member_of_the_primary() {
    let g = g1();
    let mut net = old_cluster(&[g]);
    upgrade_all(&mut net, &[g]);
    net.hold = Some(adjust_requests);
    assert_eq!(
        net.adjust(2, Scope::Group(g), Target::Exact(ProtocolVersion(2))),
        Ok(1)
    );
    net.side[2] = 1;
    net.run(60);
    net.release_held();
    net.run(20);
    let ev = same_rejection_everywhere(&net, &[1, 2]);
    assert!(
        matches!(
            ev.outcome,
            Err(VersionError::NodeNotActive { node: NodeId(3) })
                | Err(VersionError::Partitioned { .. })
        ),
        "{ev:?}"
    );
    if let Err(VersionError::Partitioned { missing }) = &ev.outcome {
        assert_eq!(missing, &vec![NodeId(3)]);
    }
    // After the heal node 3 rejoins; a new request then succeeds.
    net.side[2] = 0;
    net.run(100);
    assert!(net.engine(3).is_member(g));
    assert_eq!(
        net.adjust(2, Scope::Group(g), Target::Exact(ProtocolVersion(2))),
        Ok(1)
    );
    net.run(10);
    for n in 1..=3 {
        assert_eq!(net.protocol(n, g), ProtocolVersion(2));
    }
}

// ----------------------------------------------------------------------
// Joining across versions.
// ----------------------------------------------------------------------

#[test]
fn join_refused_when_the_active_version_is_outside_the_range_and_wider_ranges_join() {
    let g = g1();
    // An old release (max 1) and new ones: the group is created at 1, and the
    // new releases join it and speak version 1.
    let mut net = cluster(&[range(1, 1), range(1, 2), range(1, 2)]);
    net.run(5);
    net.form_each(g, &[1, 2, 3]);
    for n in 1..=3 {
        assert_eq!(net.protocol(n, g), ProtocolVersion(1));
    }
    // Switch to 2 (after node 1 is upgraded); then an old release is refused.
    net.upgrade(1, range(1, 2), &[g]);
    assert_eq!(net.adjust(1, Scope::Group(g), Target::HighestCommon), Ok(1));
    net.run(10);
    let now = Time(net.now);
    assert_eq!(net.engine(3).shutdown(now), vec![g]);
    net.drain(2);
    net.run(10);
    net.crash(3);
    net.recover(3, range(1, 1));
    net.run(5);
    net.join(3, g);
    net.run(30);
    assert!(!net.engine(3).is_member(g));
    assert!(
        net.logs[2].contains(&Ev::Refused {
            active: ProtocolVersion(2)
        }),
        "{:?}",
        net.logs[2]
    );
}

#[test]
fn config_may_cap_the_version_but_not_exceed_the_build() {
    let nodes = [NodeId(1)];
    let mut c = Config::new(NodeId(1), nodes.to_vec());
    assert_eq!(c.protocol, range(1, version::CURRENT.0));
    c.protocol = range(1, version::CURRENT.0 + 1);
    assert!(matches!(
        Engine::<P>::new(c.clone(), Time(0)),
        Err(ConfigError::InvalidConfig { .. })
    ));
    c.protocol = range(1, 1);
    assert!(Engine::<P>::new(c, Time(0)).is_ok());
}

// ----------------------------------------------------------------------
// No pause: the switch costs one position, no ordering step.
// ----------------------------------------------------------------------

/// With a fixed link delay of one step, node 2 multicasts one message per
/// step. Latency = steps from multicast to delivery at the last member.
/// Prints the median before the switch and the latency of the first
/// messages ordered after it; asserts only step counts.
#[test]
fn switch_adds_no_ordering_step_to_messages_ordered_after_it() {
    let g = g1();
    let mut net = old_cluster(&[g]);
    upgrade_all(&mut net, &[g]);
    net.run(10);
    let mut sent_at: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for i in 0..200u32 {
        let p = format!("m{i:04}").into_bytes();
        sent_at.insert(p.clone(), net.now);
        net.send_ok(2, g, &p);
        if i == 100 {
            assert_eq!(net.adjust(2, Scope::Group(g), Target::HighestCommon), Ok(1));
        }
        net.step();
    }
    net.run(20);
    let switch = net.switches(1, g)[0].0;
    // Latency per message (steps) at the slowest member, keyed by position.
    let mut lat: BTreeMap<u64, u64> = BTreeMap::new();
    for n in 1..=3usize {
        for e in &net.logs[n - 1] {
            if let Ev::Deliver {
                seq, payload, at, ..
            } = e
                && let Some(t) = sent_at.get(payload)
            {
                let l = (at - t) / STEP;
                let v = lat.entry(*seq).or_default();
                *v = (*v).max(l);
            }
        }
    }
    let before: Vec<u64> = lat.range(..switch).map(|(_, l)| *l).collect();
    let after: Vec<u64> = lat.range(switch + 1..).take(10).map(|(_, l)| *l).collect();
    let mut sorted = before.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    println!(
        "switch at position {switch}: median latency before {median} steps ({} msgs), \
         first 10 after: {after:?} steps",
        before.len()
    );
    assert_eq!(after.len(), 10);
    assert!(
        after.iter().all(|l| *l <= median + 1),
        "the switch delayed messages ordered after it: median {median}, after {after:?}"
    );
    no_flush_anywhere(&mut net);
}

// ----------------------------------------------------------------------
// Wire: the new frames round-trip, and hostile bytes never panic.
// ----------------------------------------------------------------------

#[test]
fn version_frames_round_trip_on_the_wire() {
    let msgs: Vec<Message<Vec<u8>>> = vec![
        Message {
            incarnation: 3,
            body: Body::Versions { range: range(1, 2) },
        },
        Message {
            incarnation: 3,
            body: Body::AdjustRequest {
                group: g1(),
                request: 9,
                to: ProtocolVersion(2),
            },
        },
        Message {
            incarnation: 3,
            body: Body::DataBatch {
                group: g1(),
                epoch: 1,
                sender: NodeId(2),
                sender_incarnation: 3,
                first_seq: 7,
                ack: 4,
                payloads: vec![b"a".to_vec(), Vec::new(), b"ccc".to_vec()].into(),
            },
        },
        Message {
            incarnation: 3,
            body: Body::Order {
                group: g1(),
                epoch: 1,
                first: 5,
                entries: vec![concord_membership::OrderEntry::Version(VersionChange {
                    requester: NodeId(2),
                    incarnation: 3,
                    request: 1,
                    from: ProtocolVersion(1),
                    to: ProtocolVersion(2),
                    rejected: Some(version::Rejection::NotCapable {
                        node: NodeId(3),
                        supported: range(1, 1),
                    }),
                })]
                .into(),
                stable: 4,
            },
        },
    ];
    for m in msgs {
        let mut bytes = Vec::new();
        wire::encode(&m, &mut bytes).unwrap();
        let back = wire::decode(&bytes).unwrap().map_payload(|p| p.to_vec());
        assert_eq!(back, m);
        // Every truncation is an error, never a panic.
        for cut in 0..bytes.len() {
            assert!(wire::decode(&bytes[..cut]).is_err());
        }
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn mutated_batch_frames_never_panic(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..6),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let m: Message<Vec<u8>> = Message {
                incarnation: 1,
                body: Body::DataBatch {
                    group: g1(), epoch: 1, sender: NodeId(1), sender_incarnation: 1,
                    first_seq: 1, ack: 0, payloads: payloads.clone().into(),
                },
            };
            let mut bytes = Vec::new();
            wire::encode(&m, &mut bytes).unwrap();
            for (i, b) in flips {
                let i = i % bytes.len();
                bytes[i] ^= b;
            }
            if let Ok(back) = wire::decode(&bytes)
                && let Body::DataBatch { payloads: p, .. } = back.body
            {
                // Whatever decodes stays inside the frame.
                prop_assert!(p.iter().map(|x| x.len()).sum::<usize>() <= bytes.len());
            }
        }
    }
}
