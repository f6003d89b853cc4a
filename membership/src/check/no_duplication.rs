//! No duplication: a node incarnation delivers each message at most once,
//! and is handed each position of the group's order at most once.
//!
//! Source: "no duplication" of reliable multicast (Hadzilacos and Toueg, "A
//! Modular Approach to Fault-Tolerant Broadcasts and Related Problems", 1994,
//! section 2.2). Without it a retransmission during a flush, a duplicated
//! frame, or an order record replayed by a new sequencer reaches the
//! application twice.
//!
//! Checked per incarnation and group over its whole history, across views
//! and across stints of membership (a member that leaves or is cut off and
//! joins again is the same incarnation and must not hand over again what it
//! already delivered):
//! 1. by payload digest and by message identity (sender, sender incarnation,
//!    sender sequence): no message twice;
//! 2. by position (`seq` numbers one order that runs across views and
//!    epochs): positions **grow** along the whole history. A delivery is
//!    above every position the incarnation reached before (delivered, or
//!    reported by a view), and a view is installed at or above it, so no
//!    position is delivered twice, even in another view or after a rejoin;
//! 3. by era (`position::era`, the high bits): a delivery stays in the era
//!    of the view it is delivered in, and an incarnation enters a higher era
//!    only by installing a view of a history that an orphan restart started
//!    at that era's base (its first view: one member, `Join` of itself, at
//!    `position::era_base`), at or after that first view's epoch. At most
//!    one history starts at each era's base.
//!
//! A restarted node is a new member and starts afresh, so its previous
//! incarnation's deliveries do not count.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use super::{
    Digest, Event, Group, Invariant, Logs, Member, Node, ViewInstalled, ViewNo, Violation,
};
use crate::types::position::{era, era_base};

/// Whether `v` is the first view of a history an orphan restart started: at
/// the base of an era above the first, its restarter alone, joined.
fn starts_era(v: &ViewInstalled) -> bool {
    era(v.position) > 0
        && v.position == era_base(era(v.position))
        && matches!(v.reason, super::Reason::Join(n) if v.members == [n])
}

/// Checks that nobody delivers a message, or a position, twice, and that
/// positions grow along every incarnation's history.
pub fn check(logs: &Logs) -> Result<(), Violation> {
    // (group, era) -> the first view of the history started there.
    let mut starts: BTreeMap<(Group, u64), (ViewNo, Member)> = BTreeMap::new();
    for log in &logs.nodes {
        for e in &log.events {
            let Event::View(v) = e else { continue };
            if !starts_era(v) {
                continue;
            }
            match starts.entry((v.group, era(v.position))) {
                Entry::Vacant(x) => {
                    x.insert((v.view, log.member()));
                }
                Entry::Occupied(x) if x.get().0 != v.view => {
                    let (other, at) = *x.get();
                    return Err(Violation::new(
                        Invariant::NoDuplication,
                        format!(
                            "two histories start era {} at position {}: view {} at {}, view {} here",
                            era(v.position),
                            v.position,
                            other,
                            at,
                            v.view
                        ),
                    )
                    .member(log.member())
                    .group(v.group)
                    .view(v.view));
                }
                Entry::Occupied(_) => {}
            }
        }
    }
    for log in &logs.nodes {
        let mut by_digest: BTreeMap<(Group, Digest), (ViewNo, u64)> = BTreeMap::new();
        let mut by_pos: BTreeMap<(Group, u64), (ViewNo, Digest)> = BTreeMap::new();
        let mut by_id: BTreeMap<(Group, Node, u64, u64), (ViewNo, u64)> = BTreeMap::new();
        // group -> the highest position reached (delivered or installed at)
        // and the view that reached it.
        let mut hi: BTreeMap<Group, (u64, ViewNo)> = BTreeMap::new();
        for e in &log.events {
            let err = |group: Group, view: ViewNo, what: String| {
                Err(Violation::new(Invariant::NoDuplication, what)
                    .member(log.member())
                    .group(group)
                    .view(view))
            };
            if let Event::View(v) = e {
                let prev = hi.get(&v.group).copied();
                if let Some((h, hv)) = prev
                    && v.position < h
                {
                    return err(
                        v.group,
                        v.view,
                        format!(
                            "view {} installed at position {} after position {} was reached in view {}: \
                             positions must grow",
                            v.view, v.position, h, hv
                        ),
                    );
                }
                let k = era(v.position);
                if k > prev.map_or(0, |(h, _)| era(h)) {
                    match starts.get(&(v.group, k)) {
                        None => {
                            return err(
                                v.group,
                                v.view,
                                format!(
                                    "view {} at position {} enters era {}, which no orphan restart started",
                                    v.view, v.position, k
                                ),
                            );
                        }
                        Some((first, _)) if v.view >> 32 < first >> 32 => {
                            return err(
                                v.group,
                                v.view,
                                format!(
                                    "view {} at position {} enters era {} before its history began (view {})",
                                    v.view, v.position, k, first
                                ),
                            );
                        }
                        Some(_) => {}
                    }
                }
                hi.insert(v.group, (v.position, v.view));
                continue;
            }
            let Event::Delivery(d) = e else { continue };
            if let Some((view, seq)) = by_id.insert(
                (d.group, d.sender, d.sender_incarnation, d.sender_seq),
                (d.view, d.seq),
            ) {
                return err(
                    d.group,
                    d.view,
                    format!(
                        "message n{}#{} sender_seq {} delivered twice: view {} seq {}, then view {} seq {} \
                         (digest {:#x} the second time)",
                        d.sender,
                        d.sender_incarnation,
                        d.sender_seq,
                        view,
                        seq,
                        d.view,
                        d.seq,
                        d.digest
                    ),
                );
            }
            if let Some((view, seq)) = by_digest.insert((d.group, d.digest), (d.view, d.seq)) {
                return err(
                    d.group,
                    d.view,
                    format!(
                        "message n{} sender_seq {} (digest {:#x}) delivered twice: view {} seq {}, then view {} seq {}",
                        d.sender, d.sender_seq, d.digest, view, seq, d.view, d.seq
                    ),
                );
            }
            if let Some((view, prev)) = by_pos.insert((d.group, d.seq), (d.view, d.digest)) {
                return err(
                    d.group,
                    d.view,
                    format!(
                        "position seq {} delivered twice: digest {:#x} in view {}, then digest {:#x} in view {}",
                        d.seq, prev, view, d.digest, d.view
                    ),
                );
            }
            if let Some((h, hv)) = hi.get(&d.group).copied() {
                if d.seq <= h {
                    return err(
                        d.group,
                        d.view,
                        format!(
                            "seq {} delivered in view {} after position {} was reached in view {}: \
                             positions must grow",
                            d.seq, d.view, h, hv
                        ),
                    );
                }
                if era(d.seq) != era(h) {
                    return err(
                        d.group,
                        d.view,
                        format!(
                            "seq {} (era {}) delivered in view {} of era {}: an era changes only at a view",
                            d.seq,
                            era(d.seq),
                            d.view,
                            era(h)
                        ),
                    );
                }
            }
            hi.insert(d.group, (d.seq, d.view));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Event, Invariant, NodeLog, Reason};
    use super::check;

    #[test]
    fn healthy_passes() {
        assert_eq!(check(&healthy()), Ok(()));
    }

    #[test]
    fn same_message_twice_is_caught() {
        let mut logs = healthy();
        logs.nodes[1].events.push(deliver(300, 1, 4, 1, 1));
        let v = check(&logs).unwrap_err();
        assert_eq!(v.invariant, Invariant::NoDuplication);
        assert_eq!(v.member.map(|m| m.node), Some(2));
        assert!(v.detail.contains("delivered twice"), "{v}");
    }

    #[test]
    fn same_message_in_a_later_view_is_caught() {
        let mut logs = healthy();
        logs.nodes[0]
            .events
            .push(view(400, 2, &[1, 2], Reason::Failed(vec![3])));
        logs.nodes[0].events.push(deliver(401, 2, 4, 2, 1));
        assert!(check(&logs).is_err());
    }

    #[test]
    fn same_position_twice_is_caught() {
        let mut logs = healthy();
        logs.nodes[0]
            .events
            .push(Event::Delivery(super::super::Delivered {
                at: 500,
                group: G,
                view: 1,
                seq: 2,
                sender: 3,
                sender_incarnation: 0,
                sender_seq: 7,
                digest: 12345,
                mode: super::super::Mode::Agreed,
            }));
        assert!(check(&logs).unwrap_err().detail.contains("position seq 2"));
    }

    #[test]
    fn a_position_reused_in_a_later_view_is_caught() {
        let mut logs = healthy();
        logs.nodes[0]
            .events
            .push(view(400, 2, &[1, 2], Reason::Failed(vec![3])));
        logs.nodes[0].events.push(deliver(401, 2, 3, 2, 2));
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("position seq 3"), "{v}");
    }

    #[test]
    fn the_same_message_under_another_payload_digest_is_caught() {
        let mut logs = healthy();
        // (sender 1, incarnation 0, sender_seq 2) again, after a rejoin,
        // with a digest that differs (a re-sent copy, renumbered payload)
        let ev = &mut logs.nodes[1].events;
        ev.push(Event::Partitioned { at: 300, group: G });
        ev.push(view(400, 3, &[1, 2, 3], Reason::Merged));
        if let Event::Delivery(mut d) = deliver(401, 3, 9, 1, 2) {
            d.digest ^= 0xff;
            ev.push(Event::Delivery(d));
        }
        let v = check(&logs).unwrap_err();
        assert!(
            v.detail.contains("n1#0 sender_seq 2 delivered twice"),
            "{v}"
        );
    }

    #[test]
    fn another_incarnation_of_the_sender_is_another_message() {
        let mut logs = healthy();
        let ev = &mut logs.nodes[1].events;
        ev.push(view(400, 2, &[1, 2, 3], Reason::Merged));
        if let Event::Delivery(mut d) = deliver(401, 2, 9, 1, 2) {
            d.sender_incarnation = 1;
            d.digest = digest(1, 1, 2);
            ev.push(Event::Delivery(d));
        }
        assert_eq!(check(&logs), Ok(()));
    }

    #[test]
    fn a_new_incarnation_starts_afresh() {
        let mut logs = healthy();
        let again = NodeLog {
            incarnation: 1,
            ..logs.nodes[2].clone()
        };
        logs.nodes[2].crashed = true;
        logs.nodes.push(again);
        assert_eq!(check(&logs), Ok(()));
    }

    fn at(e: Event, position: u64) -> Event {
        match e {
            Event::View(mut v) => {
                v.position = position;
                Event::View(v)
            }
            Event::Delivery(mut d) => {
                d.seq = position;
                Event::Delivery(d)
            }
            e => e,
        }
    }

    const E1: u64 = crate::types::position::era_base(1);

    /// Node 3 restarts the group at era 1 (epoch 2); node 1, which delivered
    /// in era 0, merges into that history later.
    fn restarted() -> crate::check::Logs {
        let mut logs = healthy();
        let v2 = 2 << 32;
        logs.nodes[2]
            .events
            .push(Event::Partitioned { at: 200, group: G });
        logs.nodes[2]
            .events
            .push(at(view(300, v2, &[3], Reason::Join(3)), E1));
        logs.nodes[2]
            .events
            .push(at(deliver(301, v2, 0, 3, 3), E1 + 1));
        logs.nodes[0]
            .events
            .push(Event::Partitioned { at: 200, group: G });
        logs.nodes[0]
            .events
            .push(at(view(400, v2 + 1, &[3, 1], Reason::Merged), E1 + 2));
        logs.nodes[0]
            .events
            .push(at(deliver(401, v2 + 1, 0, 3, 4), E1 + 3));
        logs
    }

    #[test]
    fn entering_an_era_at_a_restarted_history_passes() {
        assert_eq!(check(&restarted()), Ok(()));
    }

    #[test]
    fn a_view_below_a_position_reached_is_caught() {
        let mut logs = healthy();
        logs.nodes[0]
            .events
            .push(Event::Partitioned { at: 200, group: G });
        logs.nodes[0]
            .events
            .push(at(view(300, 2 << 32, &[2, 1], Reason::Merged), 2));
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("positions must grow"), "{v}");
    }

    #[test]
    fn a_delivery_below_a_position_reached_is_caught() {
        let mut logs = healthy();
        logs.nodes[1].events.push(deliver(300, 1, 5, 2, 2));
        logs.nodes[1].events.push(deliver(301, 1, 4, 2, 3));
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("positions must grow"), "{v}");
    }

    #[test]
    fn an_era_no_restart_started_is_caught() {
        let mut logs = restarted();
        // Node 2 installs a flush view in era 2, which nobody restarted.
        let e2 = crate::types::position::era_base(2);
        logs.nodes[1].events.push(at(
            view(500, 3 << 32, &[2], Reason::Failed(vec![1, 3])),
            e2 + 7,
        ));
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("which no orphan restart started"), "{v}");
    }

    #[test]
    fn entering_an_era_before_its_history_began_is_caught() {
        let mut logs = restarted();
        // An epoch-1 view in era 1, whose history began at epoch 2.
        logs.nodes[1]
            .events
            .push(at(view(500, 1 << 32 | 5, &[1, 2], Reason::Merged), E1 + 9));
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("before its history began"), "{v}");
    }

    #[test]
    fn a_delivery_in_another_era_than_its_view_is_caught() {
        let mut logs = restarted();
        // Node 2 delivers an era-1 position in its era-0 view 1.
        logs.nodes[1]
            .events
            .push(at(deliver(500, 1, 0, 2, 9), E1 + 5));
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("an era changes only at a view"), "{v}");
    }

    #[test]
    fn two_histories_starting_one_era_are_caught() {
        let mut logs = restarted();
        logs.nodes[1]
            .events
            .push(Event::Partitioned { at: 200, group: G });
        logs.nodes[1]
            .events
            .push(at(view(300, 3 << 32, &[2], Reason::Join(2)), E1));
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("two histories start era 1"), "{v}");
    }
}
