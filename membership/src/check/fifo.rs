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
//! The rule holds from a sender's first delivery on: a receiver that
//! starts a sender's stream at message #i skips nothing the sender
//! multicast after the two became members of one view (a late joiner may
//! start mid-stream, but only where the stream stood when it joined).
//!
//! The send order comes from the [`Sent`](super::Sent) records (the order the
//! application handed messages over), not from the Engine's `sender_seq`, so
//! a renumbering bug cannot hide a reordering.

use std::collections::{BTreeMap, BTreeSet};

use super::{Digest, Event, Group, Invariant, Logs, Member, Node, Violation};

/// What a receiver knows of one sender incarnation's stream.
#[derive(Default)]
struct Stream {
    /// The index (in send order) of the last message of it delivered.
    last: Option<usize>,
    /// A view since that delivery left the sender out, or the receiver lost
    /// its membership: messages in between may be gone with it.
    excused: bool,
}

/// Checks FIFO delivery per sender incarnation at every receiver.
pub fn check(logs: &Logs) -> Result<(), Violation> {
    // digest -> (sender incarnation, index in its send order within the group)
    let mut index: BTreeMap<Digest, (Member, usize)> = BTreeMap::new();
    // (group, sender incarnation) -> (send time, digest) by index
    let mut sends: BTreeMap<(Group, Member), Vec<(u64, Digest)>> = BTreeMap::new();
    for s in &logs.sent {
        let m = Member {
            node: s.node,
            incarnation: s.incarnation,
        };
        let list = sends.entry((s.group, m)).or_default();
        index.insert(s.digest, (m, list.len()));
        list.push((s.at, s.digest));
    }
    for log in &logs.nodes {
        let mut streams: BTreeMap<(Group, Member), Stream> = BTreeMap::new();
        // (group, sender node) -> since when it has been a member of every
        // view this receiver installed, while the receiver was one too.
        let mut together: BTreeMap<(Group, Node), u64> = BTreeMap::new();
        let mut delivered: BTreeSet<Digest> = BTreeSet::new();
        for e in &log.events {
            match e {
                Event::View(v) => {
                    let member = v.members.contains(&log.node);
                    for ((g, sender), st) in streams.iter_mut() {
                        if *g == v.group && (!member || !v.members.contains(&sender.node)) {
                            st.excused = true;
                        }
                    }
                    together.retain(|(g, n), _| *g != v.group || (member && v.members.contains(n)));
                    if member {
                        for &n in &v.members {
                            together.entry((v.group, n)).or_insert(v.at);
                        }
                    }
                }
                Event::Partitioned { group, .. } => {
                    for ((g, _), st) in streams.iter_mut() {
                        if g == group {
                            st.excused = true;
                        }
                    }
                    together.retain(|(g, _), _| g != group);
                }
                Event::Adjust(_) => {}
                Event::Delivery(d) => {
                    let Some(&(sender, i)) = index.get(&d.digest) else {
                        continue; // no_creation reports it
                    };
                    let fail = |what: String| {
                        Err(Violation::new(Invariant::Fifo, what)
                            .member(log.member())
                            .group(d.group)
                            .view(d.view))
                    };
                    let st = streams.entry((d.group, sender)).or_default();
                    if let Some(prev) = st.last
                        && i <= prev
                    {
                        return fail(format!(
                            "delivered {sender}'s message #{i} after its #{prev}"
                        ));
                    }
                    // Every message of the stream between the last one
                    // delivered (or its start) and this one must have been
                    // delivered unless a gap is excused: by a view that
                    // left the sender or the receiver out since the last
                    // delivery, and then only for messages sent before the
                    // two were members of one view again; a message
                    // delivered in an earlier stint is not handed over twice.
                    let since = together.get(&(d.group, sender.node)).copied();
                    let from = st.last.map_or(0, |p| p + 1);
                    let Some(list) = sends.get(&(d.group, sender)) else {
                        continue; // sent to another group: no_creation reports it
                    };
                    let strict = st.last.is_some() && !st.excused;
                    if let Some(j) = (from..i).find(|&j| {
                        let (at, digest) = list[j];
                        !delivered.contains(&digest) && (strict || since.is_some_and(|t| at > t))
                    }) {
                        let what = match st.last {
                            Some(prev) => format!("right after its #{prev}"),
                            None => "as its first".to_string(),
                        };
                        return fail(format!(
                            "delivered {sender}'s message #{i} {what}; #{j} (sent t={}) is missing though it \
                             was multicast while both were members of this receiver's views",
                            list[j].0
                        ));
                    }
                    st.last = Some(i);
                    st.excused = false;
                    delivered.insert(d.digest);
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
            ..super::super::Logs::default()
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
        // sent before node 2 joined, so starting at #1 is allowed
        let mut logs = stream(&[2, 1]);
        for s in &mut logs.sent {
            s.at = s.sender_seq;
        }
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("#0 after its #1"), "{v}");
    }

    #[test]
    fn gap_while_both_members_is_caught() {
        let v = check(&stream(&[1, 2, 4])).unwrap_err();
        assert!(v.detail.contains("missing"), "{v}");
    }

    #[test]
    fn a_late_joiner_may_start_mid_stream() {
        // node 2 joined at t=10, after sender_seq 1 and 2 were multicast
        let mut logs = stream(&[3, 4]);
        for (k, s) in logs.sent.iter_mut().enumerate() {
            s.at = [1, 2, 30, 40][k];
        }
        assert_eq!(check(&logs), Ok(()));
    }

    #[test]
    fn a_first_delivery_that_skips_what_was_sent_after_the_join_is_caught() {
        // sender_seq 1..=4 multicast at t=51..54, after node 2 installed
        // view 1 at t=10; node 2 starts the stream at sender_seq 3.
        let v = check(&stream(&[3, 4])).unwrap_err();
        assert_eq!(v.invariant, Invariant::Fifo);
        assert!(v.detail.contains("as its first"), "{v}");
    }

    #[test]
    fn after_the_sender_rejoins_only_older_messages_may_be_missing() {
        let mut logs = stream(&[1]);
        // node 1 is excluded at t=60 and back at t=300; sender_seq 2 was
        // sent (t=52) before, sender_seq 3 and 4 at t=310, 311.
        logs.sent[2].at = 310;
        logs.sent[3].at = 311;
        let ev = &mut logs.nodes[0].events;
        ev.push(view(60, 2, &[2], Reason::Failed(vec![1])));
        ev.push(view(300, 3, &[2, 1], Reason::Join(1)));
        ev.push(deliver(320, 3, 5, 1, 3));
        assert_eq!(check(&logs), Ok(()));
        let mut skipping = logs.clone();
        if let Some(super::super::Event::Delivery(d)) = skipping.nodes[0].events.last_mut() {
            *d = match deliver(320, 3, 5, 1, 4) {
                super::super::Event::Delivery(d) => d,
                _ => unreachable!(),
            };
        }
        assert!(
            check(&skipping)
                .unwrap_err()
                .detail
                .contains("#2 (sent t=310)")
        );
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
