//! FIFO per sender: messages of one sender incarnation are delivered in the
//! order it multicast them, without gaps while both stay members.
//!
//! Source: "FIFO order" (Hadzilacos and Toueg 1994, section 2.3; Chockler et
//! al. 2001, property 5.1), which total order must not break: the sequencer may
//! interleave senders but never reorder one sender's stream. A gap is allowed
//! only where the sender's tail was lost with a view it no longer belongs to
//! (it crashed or was cut off), or where the receiver itself stopped being a
//! member for a while.
//!
//! The send order comes from the [`Sent`](super::Sent) records (the order the
//! application handed messages over), not from the Engine's `sender_seq`, so
//! a renumbering bug cannot hide a reordering.

use std::collections::BTreeMap;

use super::{Digest, Event, Group, Invariant, Logs, Member, Node, Violation};

/// Checks FIFO delivery per sender incarnation at every receiver.
pub fn check(logs: &Logs) -> Result<(), Violation> {
    // digest -> (sender incarnation, index in its send order within the group)
    let mut index: BTreeMap<Digest, (Member, usize)> = BTreeMap::new();
    let mut next: BTreeMap<(Group, Member), usize> = BTreeMap::new();
    for s in &logs.sent {
        let m = Member {
            node: s.node,
            incarnation: s.incarnation,
        };
        let n = next.entry((s.group, m)).or_insert(0);
        index.insert(s.digest, (m, *n));
        *n += 1;
    }
    for log in &logs.nodes {
        // (group, sender) -> (last index delivered, gap allowed since then)
        let mut last: BTreeMap<(Group, Member), (usize, bool)> = BTreeMap::new();
        fn excuse(
            last: &mut BTreeMap<(Group, Member), (usize, bool)>,
            group: Group,
            who: &dyn Fn(Node) -> bool,
        ) {
            for ((g, sender), (_, gap_ok)) in last.iter_mut() {
                if *g == group && who(sender.node) {
                    *gap_ok = true;
                }
            }
        }
        for e in &log.events {
            match e {
                Event::View(v) => {
                    if v.members.contains(&log.node) {
                        excuse(&mut last, v.group, &|n| !v.members.contains(&n));
                    } else {
                        excuse(&mut last, v.group, &|_| true);
                    }
                }
                Event::Partitioned { group, .. } => excuse(&mut last, *group, &|_| true),
                Event::Adjust(_) => {}
                Event::Delivery(d) => {
                    let Some(&(sender, i)) = index.get(&d.digest) else {
                        continue; // no_creation reports it
                    };
                    match last.get(&(d.group, sender)) {
                        Some(&(prev, gap_ok)) if i <= prev || (i != prev + 1 && !gap_ok) => {
                            let what = if i <= prev {
                                format!("delivered {sender}'s message #{i} after its #{prev}")
                            } else {
                                format!(
                                    "delivered {sender}'s message #{i} right after its #{prev}; #{} .. #{} are \
                                     missing though both stayed members",
                                    prev + 1,
                                    i - 1
                                )
                            };
                            return Err(Violation::new(Invariant::Fifo, what)
                                .member(log.member())
                                .group(d.group)
                                .view(d.view));
                        }
                        _ => {}
                    }
                    last.insert((d.group, sender), (i, false));
                }
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

    /// Sender 1 multicasts #0..#3 (sender_seq 1..=4); node 2 delivers them.
    fn stream(deliveries: &[u64]) -> super::super::Logs {
        let mut events = vec![view(10, 1, &[1, 2], Reason::Join(2))];
        for (i, &s) in deliveries.iter().enumerate() {
            events.push(deliver(100 + i as u64, 1, i as u64 + 1, 1, s));
        }
        super::super::Logs {
            nodes: vec![log(2, events)],
            sent: (1..=4).map(|s| sent(50 + s, 1, s)).collect(),
            expected_final: None,
        }
    }

    #[test]
    fn in_order_passes() {
        assert_eq!(check(&stream(&[1, 2, 3, 4])), Ok(()));
        assert_eq!(check(&healthy()), Ok(()));
    }

    #[test]
    fn reordering_is_caught() {
        let v = check(&stream(&[1, 3, 2, 4])).unwrap_err();
        assert_eq!(v.invariant, Invariant::Fifo);
        assert_eq!(v.member.map(|m| m.node), Some(2));
    }

    #[test]
    fn backwards_is_caught() {
        let v = check(&stream(&[2, 1])).unwrap_err();
        assert!(v.detail.contains("#0 after its #1"), "{v}");
    }

    #[test]
    fn gap_while_both_members_is_caught() {
        let v = check(&stream(&[1, 2, 4])).unwrap_err();
        assert!(v.detail.contains("missing"), "{v}");
    }

    #[test]
    fn a_late_joiner_may_start_mid_stream() {
        assert_eq!(check(&stream(&[3, 4])), Ok(()));
    }

    #[test]
    fn gap_across_senders_exclusion_is_allowed_but_not_reordering() {
        let mut logs = stream(&[1]);
        let ev = &mut logs.nodes[0].events;
        ev.push(view(200, 2, &[2], Reason::Failed(vec![1])));
        ev.push(view(300, 3, &[2, 1], Reason::Join(1)));
        ev.push(deliver(301, 3, 5, 1, 4));
        assert_eq!(check(&logs), Ok(()));
        logs.nodes[0].events.push(deliver(302, 3, 6, 1, 3));
        assert!(check(&logs).is_err());
    }
}
