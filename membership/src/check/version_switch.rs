//! Version switch: all members of a view switch the group's protocol version
//! at the same position in the order, and nothing ordered after the switch
//! is delivered under the old version (nor anything before it under the new
//! one).
//!
//! Source: issue 4 (adjust-version): "every member switches the group's
//! active version exactly at that message's position". Within one epoch the
//! positions come from one sequencer (handed over only at ordered leaves), so
//! the positions of two members' logs are comparable there.
//!
//! Checked, per group and epoch (`view >> 32`):
//! 1. every node that installs an `AdjustVersion` view at position `p` agrees
//!    on its view id, `from` and `to` with every other node that installed an
//!    `AdjustVersion` view at `p`; and an `AdjustVersion` view id is installed
//!    at one position only;
//! 2. no application message is delivered at a switch position (the switch
//!    takes a position of its own);
//! 3. a message delivered at position `s` is delivered while the node's view
//!    runs the version in force at `s`: the `to` of the last switch of the
//!    epoch before `s`, or, when none precedes `s`, the `from` of the first
//!    switch after it. A node that delivered past a switch without installing
//!    it fails this (unless the switch kept the version);
//! 4. an `AdjustVersion` view's `protocol` is its `to`, and its `from` is the
//!    protocol of the node's previous view of the group.

use std::collections::BTreeMap;

use super::{Event, Group, Invariant, Logs, Reason, ViewNo, Violation};

/// One switch as some node saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Switch {
    view: ViewNo,
    from: u16,
    to: u16,
}

/// Checks that version switches happen at one position for everyone.
pub fn check(logs: &Logs) -> Result<(), Violation> {
    // (group, epoch) -> position -> switch.
    let mut switches: BTreeMap<(Group, u64), BTreeMap<u64, Switch>> = BTreeMap::new();
    let mut position_of: BTreeMap<(Group, ViewNo), u64> = BTreeMap::new();
    for log in &logs.nodes {
        let mut current: BTreeMap<Group, u16> = BTreeMap::new();
        for e in &log.events {
            let Event::View(v) = e else { continue };
            if let Reason::AdjustVersion { from, to } = v.reason {
                let fail = |detail: String| {
                    Err(Violation::new(Invariant::VersionSwitch, detail)
                        .member(log.member())
                        .group(v.group)
                        .view(v.view))
                };
                if v.protocol != to {
                    return fail(format!(
                        "AdjustVersion {from}->{to} view runs protocol {}",
                        v.protocol
                    ));
                }
                if let Some(prev) = current.get(&v.group)
                    && *prev != from
                {
                    return fail(format!(
                        "AdjustVersion from {from} but the previous view ran {prev}"
                    ));
                }
                let s = Switch {
                    view: v.view,
                    from,
                    to,
                };
                let at = switches
                    .entry((v.group, v.view >> 32))
                    .or_default()
                    .entry(v.position)
                    .or_insert(s);
                if *at != s {
                    return fail(format!(
                        "switch at position {} seen as {s:?} here, {at:?} elsewhere",
                        v.position
                    ));
                }
                let p = position_of.entry((v.group, v.view)).or_insert(v.position);
                if *p != v.position {
                    return fail(format!(
                        "switch view installed at position {} here, {p} elsewhere",
                        v.position
                    ));
                }
            }
            current.insert(v.group, v.protocol);
        }
    }
    for log in &logs.nodes {
        let mut current: BTreeMap<Group, u16> = BTreeMap::new();
        for e in &log.events {
            match e {
                Event::View(v) => {
                    current.insert(v.group, v.protocol);
                }
                Event::Partitioned { .. } | Event::Adjust(_) => {}
                Event::Delivery(d) => {
                    let Some(epoch) = switches.get(&(d.group, d.view >> 32)) else {
                        continue;
                    };
                    let fail = |detail: String| {
                        Err(Violation::new(Invariant::VersionSwitch, detail)
                            .member(log.member())
                            .group(d.group)
                            .view(d.view))
                    };
                    if epoch.contains_key(&d.seq) {
                        return fail(format!(
                            "delivered n{} sender_seq {} at switch position {}",
                            d.sender, d.sender_seq, d.seq
                        ));
                    }
                    let expected = match epoch.range(..d.seq).next_back() {
                        Some((_, s)) => s.to,
                        None => match epoch.range(d.seq..).next() {
                            Some((_, s)) => s.from,
                            None => continue,
                        },
                    };
                    let running = current.get(&d.group).copied();
                    if running != Some(expected) {
                        return fail(format!(
                            "delivered seq {} under protocol {running:?}, but version {expected} \
                             is in force at that position",
                            d.seq
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Delivered, NodeLog, ViewInstalled};
    use super::*;

    const E: u64 = 1 << 32;

    fn view(view: u64, protocol: u16, reason: Reason, position: u64) -> Event {
        Event::View(ViewInstalled {
            at: 0,
            group: 7,
            view,
            members: vec![1, 2],
            protocol,
            reason,
            position,
        })
    }

    fn deliver(view: u64, seq: u64) -> Event {
        Event::Delivery(Delivered {
            at: 0,
            group: 7,
            view,
            seq,
            sender: 1,
            sender_incarnation: 0,
            sender_seq: seq,
            digest: seq,
            mode: super::super::Mode::Agreed,
        })
    }

    fn adjust(from: u16, to: u16) -> Reason {
        Reason::AdjustVersion { from, to }
    }

    fn logs(a: Vec<Event>, b: Vec<Event>) -> Logs {
        Logs {
            nodes: vec![
                NodeLog {
                    node: 1,
                    incarnation: 0,
                    crashed: false,
                    events: a,
                },
                NodeLog {
                    node: 2,
                    incarnation: 0,
                    crashed: false,
                    events: b,
                },
            ],
            ..Logs::default()
        }
    }

    fn good() -> Vec<Event> {
        vec![
            view(E, 1, Reason::Join(2), 0),
            deliver(E, 1),
            view(E + 1, 2, adjust(1, 2), 2),
            deliver(E + 1, 3),
        ]
    }

    #[test]
    fn same_position_passes() {
        assert_eq!(check(&logs(good(), good())), Ok(()));
    }

    #[test]
    fn switching_at_different_positions_fails() {
        let mut b = good();
        b[2] = view(E + 1, 2, adjust(1, 2), 1);
        b[1] = deliver(E, 2);
        let v = check(&logs(good(), b)).unwrap_err();
        assert_eq!(v.invariant, Invariant::VersionSwitch);
    }

    #[test]
    fn delivering_past_the_switch_under_the_old_version_fails() {
        // Node 2 never installs the switch but delivers position 3.
        let b = vec![view(E, 1, Reason::Join(2), 0), deliver(E, 1), deliver(E, 3)];
        let v = check(&logs(good(), b)).unwrap_err();
        assert_eq!(v.invariant, Invariant::VersionSwitch);
        assert_eq!(v.member.map(|m| m.node), Some(2));
    }

    #[test]
    fn a_delivery_at_the_switch_position_fails() {
        let mut b = good();
        b.insert(2, deliver(E, 2));
        assert!(check(&logs(good(), b)).is_err());
    }

    #[test]
    fn a_switch_view_with_the_wrong_protocol_fails() {
        let mut b = good();
        b[2] = view(E + 1, 1, adjust(1, 2), 2);
        assert!(check(&logs(good(), b)).is_err());
    }
}
