//! Liveness: after the final heal and a quiet period, everybody expected is in
//! one final view, and every message multicast by a member that stayed up has
//! been delivered by every member of that view that was there when it was sent.
//!
//! Source: the "self delivery" and "termination of delivery" properties
//! (Chockler et al. 2001, properties 4.1 and 7.x) and the liveness half of
//! the primary-component specification: once failures stop and the network
//! heals, the membership converges and messages get through. The safety
//! checkers all pass on a system that does nothing; this one makes doing
//! nothing a failure (a stuck flush, a lost order record never retransmitted,
//! a node never re-admitted after a partition).
//!
//! Only checked when the run ended quiescent ([`Logs::expected_final`] is
//! `Some`): per group, with `E` the expected final members,
//! 1. every node in `E` is up and its last membership event for the group is a
//!    view that includes it; all of them are in the same view, whose members
//!    are exactly `E`; no other node up at the end believes it is a member;
//! 2. every member of that final view delivered the same sequence in it (less
//!    what it had delivered in an earlier stint, see `Stint::earlier`);
//! 3. every message accepted from an incarnation that stayed up (whatever
//!    happened to its membership: a message accepted just before its sender
//!    was cut off is ordered by the primary or re-sent after the rejoin) and
//!    is a member of `E` is delivered by every member of `E` that has been a
//!    member continuously since before it was sent. (That member installed
//!    its join view before the multicast, so its join precedes the message in
//!    the order, whoever sequences it and however many flushes intervene.)
//!
//! 4. every message a graceful leaver multicast in the stint of membership
//!    its leave ended (it installed the view of its own `Leave`) is
//!    delivered by every member of `E` that has been a member continuously
//!    since before it was sent: the Leave is ordered after the leaver's
//!    last message, so nothing it sent is lost with it.
//!
//! The sender itself is not required to deliver a message it multicast just
//! before it was cut off: the primary may have ordered it while the sender
//! could not follow, and the sender rejoins after that position.
//!
//! What stays exempt, and why it is no loss (`docs/DESIGN.md`, "Checkers"):
//! a message of an incarnation that crashed, or that was cut off and is not
//! back at the end, and that no final member delivered (it was never
//! stable: virtual synchrony lets a view change drop a failed member's
//! unstable messages, and [`super::safe_delivery`] checks the ones a Safe
//! delivery made stable); a message sent by an incarnation whose leave did
//! not complete (it was stopped before its Leave view: a crash, as far as
//! the group can tell); and a message a member of `E` joined too late for.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Digest, Event, Group, Invariant, Logs, Node, NodeLog, ViewInstalled, Violation, stints,
};

/// Checks liveness of a quiescent run.
pub fn check(logs: &Logs) -> Result<(), Violation> {
    let Some(expected) = &logs.expected_final else {
        return Ok(());
    };
    let mut live: BTreeMap<Node, &NodeLog> = BTreeMap::new();
    for log in logs.nodes.iter().filter(|l| !l.crashed) {
        if let Some(other) = live.insert(log.node, log) {
            return Err(Violation::new(
                Invariant::Liveness,
                format!(
                    "log is malformed: two incarnations of n{} are up at the end ({} and {})",
                    log.node, other.incarnation, log.incarnation
                ),
            ));
        }
    }
    for (&group, want) in expected {
        check_group(logs, group, want, &live)?;
    }
    Ok(())
}

/// The node's final stint in the group, when it is still a member at the end:
/// the final view, when membership began, and the deliveries of the final view.
struct Final<'a> {
    view: ViewInstalled,
    since: u64,
    in_final_view: Vec<(u64, Digest)>,
    earlier: BTreeSet<Digest>,
    log: &'a NodeLog,
}

fn final_stint(log: &NodeLog, group: Group) -> Option<Final<'_>> {
    let (runs, _) = stints(log, group);
    let last = runs.into_iter().last()?;
    if last.ended.is_some() {
        return None;
    }
    let since = last.views.first()?.0.at;
    let earlier = last.earlier;
    let (view, ds) = last.views.into_iter().last()?;
    Some(Final {
        view,
        since,
        in_final_view: ds.iter().map(|d| (d.seq, d.digest)).collect(),
        earlier,
        log,
    })
}

fn check_group(
    logs: &Logs,
    group: Group,
    want: &BTreeSet<Node>,
    live: &BTreeMap<Node, &NodeLog>,
) -> Result<(), Violation> {
    let fail = |what: String| Violation::new(Invariant::Liveness, what).group(group);
    let mut finals: BTreeMap<Node, Final<'_>> = BTreeMap::new();
    for (&node, log) in live {
        match (final_stint(log, group), want.contains(&node)) {
            (Some(f), true) => {
                finals.insert(node, f);
            }
            (None, true) => {
                let last = log.events.iter().rev().find(|e| {
                    e.group() == group && matches!(e, Event::View(_) | Event::Partitioned { .. })
                });
                return Err(fail(format!(
                    "n{node} should be a member at the end but is not (last membership event: {last:?})"
                ))
                .member(log.member()));
            }
            (Some(f), false) => {
                return Err(fail(format!(
                    "n{node} still believes it is a member (view {} {:?}) but should not be",
                    f.view.view, f.view.members
                ))
                .member(log.member()));
            }
            (None, false) => {}
        }
    }
    if let Some(missing) = want.iter().find(|n| !live.contains_key(n)) {
        return Err(fail(format!(
            "n{missing} is expected in the final view but no incarnation of it is up"
        )));
    }
    let Some((_, first)) = finals.iter().next() else {
        return Ok(());
    };
    let members: BTreeSet<Node> = first.view.members.iter().copied().collect();
    if &members != want {
        return Err(fail(format!(
            "final view {} has members {:?}, expected {:?}",
            first.view.view, first.view.members, want
        ))
        .member(first.log.member())
        .view(first.view.view));
    }
    let union: BTreeMap<u64, Digest> = finals
        .values()
        .flat_map(|f| f.in_final_view.iter().copied())
        .collect();
    if let Some(f) = finals.values().find(|f| f.view.view != first.view.view) {
        return Err(fail(format!(
            "ended in view {} while {} ended in view {}",
            f.view.view,
            first.log.member(),
            first.view.view
        ))
        .member(f.log.member())
        .view(f.view.view));
    }
    for f in finals.values() {
        let want: Vec<(u64, Digest)> = union
            .iter()
            .filter(|(_, d)| !f.earlier.contains(d))
            .map(|(s, d)| (*s, *d))
            .collect();
        if f.in_final_view != want {
            let missing = want.iter().find(|x| !f.in_final_view.contains(x));
            return Err(fail(format!(
                "delivered {} messages in the final view where the members together delivered {} \
                 (first missing: {})",
                f.in_final_view.len(),
                union.len(),
                missing.map_or("none, but the order differs".to_string(), |(s, d)| format!(
                    "seq {s} digest {d:#x}"
                ))
            ))
            .member(f.log.member())
            .view(f.view.view));
        }
    }
    let delivered: BTreeMap<Node, BTreeSet<Digest>> = finals
        .iter()
        .map(|(&n, f)| {
            let ds = f
                .log
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Delivery(d) if d.group == group => Some(d.digest),
                    _ => None,
                })
                .collect();
            (n, ds)
        })
        .collect();
    for log in &logs.nodes {
        for stint in stints(log, group).0 {
            let (Some((first, _)), Some((last, _))) = (stint.views.first(), stint.views.last())
            else {
                continue;
            };
            let left =
                last.reason == super::Reason::Leave(log.node) && !last.members.contains(&log.node);
            if !left {
                continue;
            }
            for s in logs.sent.iter().filter(|s| {
                s.group == group
                    && s.node == log.node
                    && s.incarnation == log.incarnation
                    && first.at <= s.at
                    && s.at < last.at
            }) {
                for (n, f) in &finals {
                    if f.since < s.at && !delivered[n].contains(&s.digest) {
                        return Err(fail(format!(
                            "never delivered n{}#{}'s message sender_seq {} (digest {:#x}, sent t={}), \
                             though its sender left gracefully at t={} and this member was one since \
                             before it was sent",
                            s.node, s.incarnation, s.sender_seq, s.digest, s.at, last.at
                        ))
                        .member(f.log.member())
                        .view(f.view.view));
                    }
                }
            }
        }
    }
    for s in logs.sent.iter().filter(|s| s.group == group) {
        let Some(sender) = finals.get(&s.node) else {
            continue;
        };
        if sender.log.incarnation != s.incarnation {
            continue;
        }
        for (n, f) in &finals {
            if f.since < s.at && !delivered[n].contains(&s.digest) {
                return Err(fail(format!(
                    "never delivered n{}#{}'s message sender_seq {} (digest {:#x}, sent t={}), though it was a \
                     member since before it was sent and the sender stayed up",
                    s.node, s.incarnation, s.sender_seq, s.digest, s.at
                ))
                .member(f.log.member())
                .view(f.view.view));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Event, Invariant, Reason};
    use super::check;

    #[test]
    fn healthy_passes() {
        assert_eq!(check(&healthy()), Ok(()));
    }

    #[test]
    fn not_quiescent_is_not_checked() {
        let mut logs = healthy();
        logs.expected_final = None;
        logs.nodes[0].events.truncate(1);
        assert_eq!(check(&logs), Ok(()));
    }

    #[test]
    fn a_message_never_delivered_is_caught() {
        let mut logs = healthy();
        for l in &mut logs.nodes {
            l.events.pop();
        }
        let v = check(&logs).unwrap_err();
        assert_eq!(v.invariant, Invariant::Liveness);
        assert!(v.detail.contains("never delivered"), "{v}");
    }

    #[test]
    fn one_member_behind_is_caught() {
        let mut logs = healthy();
        logs.nodes[1].events.pop();
        let v = check(&logs).unwrap_err();
        assert_eq!(v.member.map(|m| m.node), Some(2));
    }

    #[test]
    fn a_node_left_out_is_caught() {
        let mut logs = healthy();
        logs.nodes[2]
            .events
            .push(Event::Partitioned { at: 900, group: G });
        assert!(
            check(&logs)
                .unwrap_err()
                .detail
                .contains("should be a member")
        );
    }

    #[test]
    fn split_final_views_are_caught() {
        let mut logs = healthy();
        logs.nodes[0]
            .events
            .push(view(900, 2, &[1, 2, 3], Reason::Merged));
        assert!(check(&logs).unwrap_err().detail.contains("ended in view"));
    }

    #[test]
    fn wrong_final_membership_is_caught() {
        let mut logs = healthy();
        logs.expected_final = Some([(G, [1, 2].into_iter().collect())].into_iter().collect());
        assert!(check(&logs).unwrap_err().detail.contains("should not be"));
    }

    #[test]
    fn a_late_joiner_need_not_deliver_older_messages() {
        let mut logs = healthy();
        // node 3 joined at t=200, after every multicast
        let ev = &mut logs.nodes[2].events;
        ev.clear();
        ev.push(view(200, 2, &[1, 2, 3], Reason::Join(3)));
        for l in &mut logs.nodes[..2] {
            l.events[0] = view(10, 1, &[1, 2], Reason::Join(2));
            l.events.push(view(200, 2, &[1, 2, 3], Reason::Join(3)));
        }
        assert_eq!(check(&logs), Ok(()));
    }

    #[test]
    fn a_crashed_sender_is_exempt() {
        let mut logs = healthy();
        logs.nodes[1].crashed = true;
        for l in &mut logs.nodes {
            l.events
                .retain(|e| !matches!(e, Event::Delivery(d) if d.sender == 2));
        }
        logs.expected_final = Some([(G, [1, 3].into_iter().collect())].into_iter().collect());
        for l in [0, 2] {
            logs.nodes[l]
                .events
                .push(view(900, 2, &[1, 3], Reason::Failed(vec![2])));
        }
        assert_eq!(check(&logs), Ok(()));
    }

    /// Node 2 leaves gracefully at t=500 after its sender_seq 1 (t=51).
    fn graceful_leave_of_2() -> super::super::Logs {
        let mut logs = healthy();
        logs.expected_final = Some([(G, [1, 3].into_iter().collect())].into_iter().collect());
        for l in &mut logs.nodes {
            l.events.push(view(500, 2, &[1, 3], Reason::Leave(2)));
        }
        logs
    }

    #[test]
    fn a_graceful_leavers_messages_delivered_by_all_pass() {
        assert_eq!(check(&graceful_leave_of_2()), Ok(()));
    }

    #[test]
    fn a_graceful_leavers_lost_message_is_caught() {
        let mut logs = graceful_leave_of_2();
        // node 3 never delivered n2's sender_seq 1 (seq 2), and moved on
        for l in &mut logs.nodes[2..] {
            l.events.remove(2);
        }
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("left gracefully"), "{v}");
        assert_eq!(v.member.map(|m| m.node), Some(3));
    }

    #[test]
    fn a_message_lost_when_its_sender_was_cut_off_is_caught() {
        let mut logs = healthy();
        // node 2 is cut off after sending sender_seq 1, which nobody
        // delivers; it rejoins and is a member at the end.
        for l in &mut logs.nodes {
            l.events
                .retain(|e| !matches!(e, Event::Delivery(d) if d.sender == 2));
        }
        logs.nodes[1]
            .events
            .push(Event::Partitioned { at: 60, group: G });
        for l in &mut logs.nodes {
            l.events.push(view(900, 2, &[1, 2, 3], Reason::Merged));
        }
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("never delivered n2#0's message"), "{v}");
        assert_eq!(v.member.map(|m| m.node), Some(1));
    }

    #[test]
    fn a_skipped_message_delivered_before_the_partition_is_fine() {
        let mut logs = healthy();
        // node 3 delivered everything in view 1, was cut off; nodes 1 and 2
        // deliver n1's sender_seq 2 again in the final view (it had not
        // reached them in view 1); node 3 skips it.
        logs.nodes[2]
            .events
            .push(Event::Partitioned { at: 150, group: G });
        for l in &mut logs.nodes[..2] {
            l.events.pop();
            l.events
                .push(view(200, 2, &[1, 2], Reason::Failed(vec![3])));
        }
        for l in &mut logs.nodes {
            l.events.push(view(300, 3, &[1, 2, 3], Reason::Merged));
        }
        for l in &mut logs.nodes[..2] {
            l.events.push(deliver(301, 3, 5, 1, 2));
        }
        assert_eq!(check(&logs), Ok(()));
        // but node 3 missing a message it never had is caught
        for l in &mut logs.nodes[..2] {
            l.events.push(deliver(302, 3, 6, 9, 9));
        }
        assert!(
            check(&logs)
                .unwrap_err()
                .detail
                .contains("first missing: seq 6")
        );
    }
}
