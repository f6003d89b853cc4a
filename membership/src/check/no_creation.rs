//! No creation: every delivered message was multicast by its sender.
//!
//! Source: the "integrity" property of group communication (Chockler, Keidar
//! and Vitenberg, "Group Communication Specifications: A Comprehensive Study",
//! 2001, property 3.3). Without it a node could hand its application bytes no
//! application ever sent (a corrupted frame, a retransmission buffer reused
//! too early, a stale payload bound to a new order record).
//!
//! A delivery matches a [`Sent`] record when the digest, group,
//! sender node and sender sequence number all agree, and the delivery does not
//! happen before the send.

use std::collections::BTreeMap;

use super::{Digest, Invariant, Logs, Sent, Violation};

/// Checks that every delivery matches an accepted multicast.
pub fn check(logs: &Logs) -> Result<(), Violation> {
    let mut by_digest: BTreeMap<Digest, &Sent> = BTreeMap::new();
    for s in &logs.sent {
        if let Some(prev) = by_digest.insert(s.digest, s) {
            return Err(Violation::new(
                Invariant::NoCreation,
                format!(
                    "log is ambiguous: digest {:#x} was sent twice (by n{}#{} seq {} and n{}#{} seq {})",
                    s.digest, prev.node, prev.incarnation, prev.sender_seq, s.node, s.incarnation, s.sender_seq
                ),
            )
            .group(s.group));
        }
    }
    for log in &logs.nodes {
        for e in &log.events {
            let super::Event::Delivery(d) = e else {
                continue;
            };
            let err = |what: String| {
                Err(Violation::new(Invariant::NoCreation, what)
                    .member(log.member())
                    .group(d.group)
                    .view(d.view))
            };
            let Some(s) = by_digest.get(&d.digest) else {
                return err(format!(
                    "delivered seq {} from n{} sender_seq {} digest {:#x}, which nobody multicast",
                    d.seq, d.sender, d.sender_seq, d.digest
                ));
            };
            if s.group != d.group || s.node != d.sender || s.sender_seq != d.sender_seq {
                return err(format!(
                    "delivered seq {} as (group {:#x}, n{}, sender_seq {}) but digest {:#x} was multicast as \
                     (group {:#x}, n{}#{}, sender_seq {})",
                    d.seq,
                    d.group,
                    d.sender,
                    d.sender_seq,
                    d.digest,
                    s.group,
                    s.node,
                    s.incarnation,
                    s.sender_seq
                ));
            }
            if d.at < s.at {
                return err(format!(
                    "delivered digest {:#x} at t={} before it was multicast at t={}",
                    d.digest, d.at, s.at
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Event, Invariant};
    use super::check;

    #[test]
    fn healthy_passes() {
        assert_eq!(check(&healthy()), Ok(()));
    }

    #[test]
    fn invented_message_is_caught() {
        let mut logs = healthy();
        logs.nodes[2].events.push(deliver(200, 1, 4, 3, 9));
        let v = check(&logs).unwrap_err();
        assert_eq!(v.invariant, Invariant::NoCreation);
        assert_eq!(v.member.map(|m| m.node), Some(3));
    }

    #[test]
    fn wrong_sender_for_payload_is_caught() {
        let mut logs = healthy();
        if let Event::Delivery(d) = &mut logs.nodes[1].events[1] {
            d.sender = 3;
        }
        let v = check(&logs).unwrap_err();
        assert_eq!(v.member.map(|m| m.node), Some(2));
        assert!(v.detail.contains("was multicast as"), "{v}");
    }

    #[test]
    fn wrong_sender_seq_is_caught() {
        let mut logs = healthy();
        if let Event::Delivery(d) = &mut logs.nodes[0].events[3] {
            d.sender_seq = 1;
        }
        assert!(check(&logs).is_err());
    }

    #[test]
    fn delivery_before_send_is_caught() {
        let mut logs = healthy();
        logs.sent[0].at = 1000;
        assert!(
            check(&logs)
                .unwrap_err()
                .detail
                .contains("before it was multicast")
        );
    }

    #[test]
    fn ambiguous_digest_is_reported() {
        let mut logs = healthy();
        let dup = logs.sent[0].clone();
        logs.sent.push(dup);
        assert!(check(&logs).unwrap_err().detail.contains("ambiguous"));
    }
}
