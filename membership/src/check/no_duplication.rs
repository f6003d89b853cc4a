//! No duplication: a node incarnation delivers each message at most once.
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
//! already delivered): by payload digest, by message identity (sender,
//! sender incarnation, sender sequence), and by position in the group's
//! total order (`seq` numbers one order that runs across views and epochs,
//! so no position is delivered twice, even in another view). A restarted
//! node is a new member and starts afresh, so its previous incarnation's
//! deliveries do not count.

use std::collections::BTreeMap;

use super::{Digest, Event, Group, Invariant, Logs, Node, ViewNo, Violation};

/// Checks that nobody delivers a message, or a position, twice.
pub fn check(logs: &Logs) -> Result<(), Violation> {
    for log in &logs.nodes {
        let mut by_digest: BTreeMap<(Group, Digest), (ViewNo, u64)> = BTreeMap::new();
        let mut by_pos: BTreeMap<(Group, u64), (ViewNo, Digest)> = BTreeMap::new();
        let mut by_id: BTreeMap<(Group, Node, u64, u64), (ViewNo, u64)> = BTreeMap::new();
        for e in &log.events {
            let Event::Delivery(d) = e else { continue };
            if let Some((view, seq)) = by_id.insert(
                (d.group, d.sender, d.sender_incarnation, d.sender_seq),
                (d.view, d.seq),
            ) {
                return Err(Violation::new(
                    Invariant::NoDuplication,
                    format!(
                        "message n{}#{} sender_seq {} delivered twice: view {} seq {}, then view {} seq {} \
                         (digest {:#x} the second time)",
                        d.sender, d.sender_incarnation, d.sender_seq, view, seq, d.view, d.seq, d.digest
                    ),
                )
                .member(log.member())
                .group(d.group)
                .view(d.view));
            }
            if let Some((view, seq)) = by_digest.insert((d.group, d.digest), (d.view, d.seq)) {
                return Err(Violation::new(
                    Invariant::NoDuplication,
                    format!(
                        "message n{} sender_seq {} (digest {:#x}) delivered twice: view {} seq {}, then view {} seq {}",
                        d.sender, d.sender_seq, d.digest, view, seq, d.view, d.seq
                    ),
                )
                .member(log.member())
                .group(d.group)
                .view(d.view));
            }
            if let Some((view, prev)) = by_pos.insert((d.group, d.seq), (d.view, d.digest)) {
                return Err(Violation::new(
                    Invariant::NoDuplication,
                    format!(
                        "position seq {} delivered twice: digest {:#x} in view {}, then digest {:#x} in view {}",
                        d.seq, prev, view, d.digest, d.view
                    ),
                )
                .member(log.member())
                .group(d.group)
                .view(d.view));
            }
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
}
