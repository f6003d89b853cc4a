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
//! 3. within a view a node's positions go up by exactly one (nothing skipped);
//! 4. every member's sequence of messages in a view is a prefix of the longest
//!    one (so they start at the same place and never differ).

use std::collections::BTreeMap;

use super::{Digest, Event, Group, Invariant, Logs, Member, ViewNo, Violation};

/// Checks total order within every view.
pub fn check(logs: &Logs) -> Result<(), Violation> {
    // (group, view, seq) -> (digest, first member that delivered it)
    let mut at_pos: BTreeMap<(Group, ViewNo, u64), (Digest, Member)> = BTreeMap::new();
    // (group, view) -> member -> digests in delivery order
    let mut per_view: BTreeMap<(Group, ViewNo), BTreeMap<Member, Vec<Digest>>> = BTreeMap::new();
    for log in &logs.nodes {
        let me = log.member();
        // group -> (current view if a member, last seq delivered in it)
        let mut current: BTreeMap<Group, (Option<ViewNo>, Option<u64>)> = BTreeMap::new();
        for e in &log.events {
            match e {
                Event::View(v) => {
                    let cur = v.members.contains(&log.node).then_some(v.view);
                    current.insert(v.group, (cur, None));
                }
                Event::Partitioned { group, .. } => {
                    current.insert(*group, (None, None));
                }
                Event::Delivery(d) => {
                    let err = |what: String| {
                        Err(Violation::new(Invariant::TotalOrder, what)
                            .member(me)
                            .group(d.group)
                            .view(d.view))
                    };
                    let entry = current.entry(d.group).or_insert((None, None));
                    if entry.0 != Some(d.view) {
                        return err(format!(
                            "delivered seq {} (n{} sender_seq {}) tagged view {} while the installed view is {}",
                            d.seq,
                            d.sender,
                            d.sender_seq,
                            d.view,
                            entry.0.map_or("none".to_string(), |v| v.to_string())
                        ));
                    }
                    if let Some(last) = entry.1
                        && d.seq != last + 1
                    {
                        return err(format!(
                            "delivered seq {} right after seq {} (positions must go up by one)",
                            d.seq, last
                        ));
                    }
                    entry.1 = Some(d.seq);
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
                    per_view
                        .entry((d.group, d.view))
                        .or_default()
                        .entry(me)
                        .or_default()
                        .push(d.digest);
                }
            }
        }
    }
    for ((group, view), members) in &per_view {
        let Some((longest_member, longest)) = members.iter().max_by_key(|(_, l)| l.len()) else {
            continue;
        };
        for (m, l) in members {
            if let Some(i) = l.iter().zip(longest).position(|(a, b)| a != b) {
                return Err(Violation::new(
                    Invariant::TotalOrder,
                    format!(
                        "delivery sequence not a prefix of {}'s: its #{} in the view is digest {:#x}, theirs {:#x}",
                        longest_member, i, l[i], longest[i]
                    ),
                )
                .member(*m)
                .group(*group)
                .view(*view));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Invariant, Reason};
    use super::check;

    #[test]
    fn healthy_passes() {
        assert_eq!(check(&healthy()), Ok(()));
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
        assert!(check(&logs).unwrap_err().detail.contains("go up by one"));
    }

    #[test]
    fn different_start_in_a_view_is_caught() {
        let mut logs = healthy();
        // node 2 misses the first message of the view but is otherwise in order.
        logs.nodes[1].events.remove(1);
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("not a prefix"), "{v}");
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
}
