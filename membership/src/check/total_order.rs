//! Total order: members of a view deliver the same message at the same
//! position, and their delivery sequences in that view are prefix-consistent.
//!
//! Source: "agreed" (totally ordered) delivery in the virtual synchrony model
//! (Birman and Joseph, "Exploiting Virtual Synchrony in Distributed Systems",
//! SOSP 1987; Chockler et al. 2001, property 6.1 "strong total order"). It is
//! what lets replicas apply the same commands in the same order; without it two
//! members of one view diverge.
//!
//! Checked:
//! 1. a delivery is tagged with the view the node has installed for the group
//!    (a node does not deliver into a view it never saw, or a stale one);
//! 2. the same (group, view, seq) names the same message at every node;
//! 3. prefix consistency, by position: a view installed at position `p` is
//!    followed by deliveries from `p + 1` on, and each member delivers the
//!    view's positions `p + 1, p + 2, ...` in order with no hole, so every
//!    member's sequence in the view is a prefix of one sequence. The one
//!    allowed hole is a message the member already delivered in an earlier
//!    stint of its membership (see `Stint::earlier`): handing
//!    it over again would be a duplicate. A position taken by an
//!    adjust-version entry is no hole for a member that reached it (its log
//!    has the [`Event::Adjust`] there): a refused request takes a position
//!    but installs no view.

use std::collections::{BTreeMap, BTreeSet};

use super::{Digest, Event, Group, Invariant, Logs, Member, ViewNo, Violation, groups, stints};

/// Checks total order within every view.
pub fn check(logs: &Logs) -> Result<(), Violation> {
    // (group, view, seq) -> (digest, first member that delivered it)
    let mut at_pos: BTreeMap<(Group, ViewNo, u64), (Digest, Member)> = BTreeMap::new();
    for log in &logs.nodes {
        let me = log.member();
        // group -> current view, if a member
        let mut current: BTreeMap<Group, Option<ViewNo>> = BTreeMap::new();
        for e in &log.events {
            match e {
                Event::View(v) => {
                    current.insert(v.group, v.members.contains(&log.node).then_some(v.view));
                }
                Event::Partitioned { group, .. } => {
                    current.insert(*group, None);
                }
                Event::Adjust(_) => {}
                Event::Delivery(d) => {
                    let err = |what: String| {
                        Err(Violation::new(Invariant::TotalOrder, what)
                            .member(me)
                            .group(d.group)
                            .view(d.view))
                    };
                    let installed = current.get(&d.group).copied().flatten();
                    if installed != Some(d.view) {
                        return err(format!(
                            "delivered seq {} (n{} sender_seq {}) tagged view {} while the installed view is {}",
                            d.seq,
                            d.sender,
                            d.sender_seq,
                            d.view,
                            installed.map_or("none".to_string(), |v| v.to_string())
                        ));
                    }
                    match at_pos.get(&(d.group, d.view, d.seq)) {
                        Some((digest, other)) if *digest != d.digest => {
                            return err(format!(
                                "seq {} is digest {:#x} (n{} sender_seq {}) here but digest {:#x} at {}",
                                d.seq, d.digest, d.sender, d.sender_seq, digest, other
                            ));
                        }
                        Some(_) => {}
                        None => {
                            at_pos.insert((d.group, d.view, d.seq), (d.digest, me));
                        }
                    }
                }
            }
        }
    }
    for group in groups(logs) {
        for log in &logs.nodes {
            let adjusts: BTreeSet<(ViewNo, u64)> = log
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Adjust(a) if a.group == group => Some((a.view, a.position)),
                    _ => None,
                })
                .collect();
            for stint in stints(log, group).0 {
                for (view, delivered) in &stint.views {
                    prefix(
                        log.member(),
                        (group, view.view, view.position),
                        delivered,
                        &stint.earlier,
                        &adjusts,
                        &at_pos,
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// One member's deliveries in one view must be exactly the view's positions
/// from its start, less those it already delivered in an earlier stint.
fn prefix(
    me: Member,
    (group, view, position): (Group, ViewNo, u64),
    delivered: &[super::Delivered],
    earlier: &BTreeSet<Digest>,
    adjusts: &BTreeSet<(ViewNo, u64)>,
    at_pos: &BTreeMap<(Group, ViewNo, u64), (Digest, Member)>,
) -> Result<(), Violation> {
    let mut expect = position + 1;
    for d in delivered {
        while expect < d.seq {
            if adjusts.contains(&(view, expect)) {
                expect += 1;
                continue;
            }
            match at_pos.get(&(group, view, expect)) {
                Some((digest, _)) if earlier.contains(digest) => expect += 1,
                other => {
                    let what = match other {
                        Some((digest, who)) => format!(
                            "skipped seq {expect} (digest {digest:#x}, delivered by {who}) and delivered seq {} next",
                            d.seq
                        ),
                        None => format!(
                            "skipped seq {expect}, which nobody delivered, and delivered seq {} next \
                             (the view starts after position {position})",
                            d.seq
                        ),
                    };
                    return Err(Violation::new(Invariant::TotalOrder, what)
                        .member(me)
                        .group(group)
                        .view(view));
                }
            }
        }
        if d.seq != expect {
            return Err(Violation::new(
                Invariant::TotalOrder,
                format!(
                    "delivered seq {} where seq {expect} was next (the view starts after position {position})",
                    d.seq
                ),
            )
            .member(me)
            .group(group)
            .view(view));
        }
        expect += 1;
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

    /// A refused adjust-version request takes position 2 at every member:
    /// no hole where the member reached it, a hole where it did not.
    #[test]
    fn a_position_taken_by_a_refused_adjust_is_no_hole_only_where_reached() {
        use super::super::{AdjustOutcome, AdjustResult};
        let mut logs = healthy();
        for log in &mut logs.nodes {
            log.events.remove(2);
            log.events.insert(
                2,
                Event::Adjust(AdjustOutcome {
                    at: 101,
                    group: G,
                    position: 2,
                    view: 1,
                    requester: 1,
                    request: 1,
                    result: AdjustResult::NodeNotActive { node: 3 },
                }),
            );
        }
        assert_eq!(check(&logs), Ok(()));
        logs.nodes[1].events.remove(2);
        assert_eq!(
            check(&logs).map_err(|v| v.invariant),
            Err(Invariant::TotalOrder)
        );
    }

    #[test]
    fn swapped_order_is_caught() {
        let mut logs = healthy();
        logs.nodes[2].events.swap(2, 3);
        // node 3 now delivers seq 3 after seq 1: caught as a skipped position.
        let v = check(&logs).unwrap_err();
        assert_eq!(v.invariant, Invariant::TotalOrder);
        assert_eq!(v.member.map(|m| m.node), Some(3));
    }

    #[test]
    fn different_message_at_same_position_is_caught() {
        let mut logs = healthy();
        logs.nodes[1].events[1] = deliver(101, 1, 2, 1, 2);
        logs.nodes[1].events[2] = deliver(102, 1, 3, 2, 1);
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("seq 2 is digest"), "{v}");
    }

    #[test]
    fn skipped_position_is_caught() {
        let mut logs = healthy();
        logs.nodes[0].events.remove(2);
        assert!(check(&logs).unwrap_err().detail.contains("skipped seq 2"));
    }

    #[test]
    fn different_start_in_a_view_is_caught() {
        let mut logs = healthy();
        // node 2 misses the first message of the view but is otherwise in order.
        logs.nodes[1].events.remove(1);
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("skipped seq 1"), "{v}");
        assert_eq!(v.member.map(|m| m.node), Some(2));
    }

    #[test]
    fn delivery_tagged_with_a_view_not_installed_is_caught() {
        let mut logs = healthy();
        logs.nodes[0].events[3] = deliver(102, 2, 3, 1, 2);
        assert!(
            check(&logs)
                .unwrap_err()
                .detail
                .contains("installed view is 1")
        );
    }

    #[test]
    fn delivery_after_being_removed_is_caught() {
        let mut logs = healthy();
        logs.nodes[2]
            .events
            .insert(3, view(101, 2, &[1, 2], Reason::Failed(vec![3])));
        assert!(
            check(&logs)
                .unwrap_err()
                .detail
                .contains("installed view is none")
        );
    }

    #[test]
    fn a_shorter_prefix_is_fine() {
        let mut logs = healthy();
        logs.nodes[2].events.pop();
        logs.nodes[2].crashed = true;
        assert_eq!(check(&logs), Ok(()));
    }

    #[test]
    fn a_view_must_start_right_after_its_position() {
        let mut logs = healthy();
        for l in &mut logs.nodes {
            l.events.push(view(200, 2, &[1, 2, 3], Reason::Merged)); // position 3
            l.events.push(deliver(201, 2, 5, 2, 9));
        }
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("which nobody delivered"), "{v}");
    }

    /// Node 3 is cut off after seq 2 but, in Agreed mode, still delivers
    /// seq 3 (n1's sender_seq 2) in view 1, beyond the primary's cut; the
    /// primary (nodes 1, 2) orders that message again at seq 5 in view 3,
    /// after node 3 rejoined at position 4.
    fn minority_delivered_early() -> super::super::Logs {
        let mut logs = healthy();
        for l in &mut logs.nodes[..2] {
            l.events.truncate(3);
            l.events
                .push(view(200, 2, &[1, 2], Reason::Failed(vec![3]))); // position 3
            l.events.push(deliver(210, 2, 4, 2, 2));
            l.events.push(view(300, 3, &[1, 2, 3], Reason::Merged)); // position 4
            l.events.push(deliver(310, 3, 5, 1, 2));
            l.events.push(deliver(311, 3, 6, 2, 3));
        }
        let n3 = &mut logs.nodes[2].events;
        n3.push(Event::Partitioned { at: 150, group: G });
        n3.push(view(300, 3, &[1, 2, 3], Reason::Merged));
        n3.push(deliver(311, 3, 6, 2, 3));
        logs
    }

    #[test]
    fn a_rejoined_member_may_skip_what_it_delivered_before_the_partition() {
        assert_eq!(check(&minority_delivered_early()), Ok(()));
    }

    #[test]
    fn a_rejoined_member_may_not_skip_anything_else() {
        let mut logs = minority_delivered_early();
        // node 3 never delivered n1's sender_seq 2 before, yet skips it
        logs.nodes[2].events.remove(3);
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("skipped seq 5"), "{v}");
        assert_eq!(v.member.map(|m| m.node), Some(3));
    }

    #[test]
    fn within_one_stint_nothing_may_be_skipped() {
        let mut logs = healthy();
        // node 1 stays a member from view 1 to view 2 and "skips" seq 4,
        // which is a message it delivered in view 1: still a hole.
        for l in &mut logs.nodes {
            l.events.push(view(200, 2, &[1, 2, 3], Reason::Merged)); // position 3
        }
        for l in &mut logs.nodes[1..] {
            l.events.push(deliver(201, 2, 4, 1, 1));
            l.events.push(deliver(202, 2, 5, 3, 2));
        }
        logs.nodes[0].events.push(deliver(202, 2, 5, 3, 2));
        assert!(check(&logs).unwrap_err().detail.contains("skipped seq 4"));
    }
}
