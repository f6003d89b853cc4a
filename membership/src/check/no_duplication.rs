//! No duplication: a node incarnation delivers each message at most once.
//!
//! Source: "no duplication" of reliable multicast (Hadzilacos and Toueg, "A
//! Modular Approach to Fault-Tolerant Broadcasts and Related Problems", 1994,
//! section 2.2). Without it a retransmission during a flush, a duplicated
//! frame, or an order record replayed by a new sequencer reaches the
//! application twice.
//!
//! Checked per incarnation and group, by payload digest and by position in the
//! order (`view`, `seq`): a restarted node is a new member and starts afresh,
//! so its previous incarnation's deliveries do not count.

use std::collections::BTreeMap;

use super::{Digest, Event, Group, Invariant, Logs, ViewNo, Violation};

/// Checks that nobody delivers a message, or a position, twice.
pub fn check(logs: &Logs) -> Result<(), Violation> {
    for log in &logs.nodes {
        let mut by_digest: BTreeMap<(Group, Digest), (ViewNo, u64)> = BTreeMap::new();
        let mut by_pos: BTreeMap<(Group, ViewNo, u64), Digest> = BTreeMap::new();
        for e in &log.events {
            let Event::Delivery(d) = e else { continue };
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
            if let Some(prev) = by_pos.insert((d.group, d.view, d.seq), d.digest) {
                return Err(Violation::new(
                    Invariant::NoDuplication,
                    format!(
                        "position seq {} delivered twice: digest {:#x}, then digest {:#x}",
                        d.seq, prev, d.digest
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
                sender_seq: 7,
                digest: 12345,
            }));
        assert!(check(&logs).unwrap_err().detail.contains("position seq 2"));
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
