//! View agreement: the primary component's views of a group form one chain
//! that every member sees the same way.
//!
//! Source: "primary component membership" (Chockler et al. 2001, property 2.3;
//! Birman's isis "primary partition" model; Ricciardi and Birman, "Using
//! Process Groups to Implement Failure Detection in Asynchronous
//! Environments", PODC 1991). Views are the frame every other guarantee is
//! stated in; if two nodes install different views under one id, or skip or
//! reorder views, "members of the same view" stops meaning anything.
//!
//! Checked:
//! 1. the same (group, view id) has the same members, protocol version, reason
//!    and position in the order at every node that installs it;
//! 2. a members list has no repeats;
//! 3. each incarnation installs a group's views with strictly increasing ids;
//! 4. while a node stays a member it installs every view of the chain: the
//!    view it installs right after V is the same at every such node;
//! 5. a view lists each member once, so one incarnation of it: two
//!    incarnations of one node never both install the same view as members
//!    (a restarted node that installs a view meant for its previous life
//!    acts on state it does not have). The first view of an epoch is also
//!    checked against the incarnations its decision lists
//!    ([`super::epoch_decision`]).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Event, Group, Invariant, Logs, Member, Node, ViewInstalled, ViewNo, Violation, stints,
};

/// Checks that views agree across all nodes.
pub fn check(logs: &Logs) -> Result<(), Violation> {
    let mut seen: BTreeMap<(Group, ViewNo), (&ViewInstalled, Member)> = BTreeMap::new();
    let mut installer: BTreeMap<(Group, ViewNo, Node), u64> = BTreeMap::new();
    for log in &logs.nodes {
        let me = log.member();
        let mut last_id: BTreeMap<Group, ViewNo> = BTreeMap::new();
        for e in &log.events {
            let Event::View(v) = e else { continue };
            let err = |what: String| {
                Err(Violation::new(Invariant::ViewAgreement, what)
                    .member(me)
                    .group(v.group)
                    .view(v.view))
            };
            let distinct: BTreeSet<_> = v.members.iter().collect();
            if distinct.len() != v.members.len() {
                return err(format!("members list {:?} repeats a node", v.members));
            }
            if let Some(&prev) = last_id.get(&v.group)
                && v.view <= prev
            {
                return err(format!("installed view {} after view {}", v.view, prev));
            }
            last_id.insert(v.group, v.view);
            if v.members.contains(&log.node) {
                let first = *installer
                    .entry((v.group, v.view, log.node))
                    .or_insert(log.incarnation);
                if first != log.incarnation {
                    return err(format!(
                        "view {} was installed as a member by incarnation {first} of n{} and again by \
                         incarnation {}: a view holds one incarnation of each member",
                        v.view, log.node, log.incarnation
                    ));
                }
            }
            match seen.get(&(v.group, v.view)) {
                Some((other, who)) => {
                    if other.members != v.members
                        || other.protocol != v.protocol
                        || other.reason != v.reason
                        || other.position != v.position
                    {
                        return err(format!(
                            "view {} is (members {:?}, protocol {}, reason {:?}, position {}) here but \
                             (members {:?}, protocol {}, reason {:?}, position {}) at {}",
                            v.view,
                            v.members,
                            v.protocol,
                            v.reason,
                            v.position,
                            other.members,
                            other.protocol,
                            other.reason,
                            other.position,
                            who
                        ));
                    }
                }
                None => {
                    seen.insert((v.group, v.view), (v, me));
                }
            }
        }
    }
    let mut successor: BTreeMap<(Group, ViewNo), (ViewNo, Member)> = BTreeMap::new();
    for group in super::groups(logs) {
        for log in &logs.nodes {
            for stint in stints(log, group).0 {
                for pair in stint.views.windows(2) {
                    let (v, w) = (pair[0].0.view, pair[1].0.view);
                    match successor.get(&(group, v)) {
                        Some(&(other, who)) if other != w => {
                            return Err(Violation::new(
                                Invariant::ViewAgreement,
                                format!(
                                    "installed view {w} right after view {v}, but {who} installed view {other} \
                                     right after it (a member skipped a view, or the chain forked)"
                                ),
                            )
                            .member(log.member())
                            .group(group)
                            .view(v));
                        }
                        Some(_) => {}
                        None => {
                            successor.insert((group, v), (w, log.member()));
                        }
                    }
                }
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

    fn three_views() -> super::super::Logs {
        let mut logs = healthy();
        for l in &mut logs.nodes {
            l.events.push(view(500, 2, &[1, 2], Reason::Leave(3)));
        }
        logs.nodes[2]
            .events
            .push(view(600, 4, &[1, 2, 3], Reason::Join(3)));
        for l in &mut logs.nodes[..2] {
            l.events.push(view(600, 4, &[1, 2, 3], Reason::Join(3)));
        }
        logs
    }

    #[test]
    fn agreeing_views_pass() {
        assert_eq!(check(&healthy()), Ok(()));
        assert_eq!(check(&three_views()), Ok(()));
    }

    #[test]
    fn different_members_under_one_id_is_caught() {
        let mut logs = healthy();
        logs.nodes[2].events[0] = view(10, 1, &[1, 3, 2], Reason::Join(3));
        let v = check(&logs).unwrap_err();
        assert_eq!(v.invariant, Invariant::ViewAgreement);
        assert_eq!(v.member.map(|m| m.node), Some(3));
    }

    #[test]
    fn different_reason_under_one_id_is_caught() {
        let mut logs = healthy();
        logs.nodes[1].events[0] = view(10, 1, &[1, 2, 3], Reason::Merged);
        assert!(check(&logs).is_err());
    }

    #[test]
    fn different_protocol_under_one_id_is_caught() {
        let mut logs = healthy();
        if let Event::View(v) = &mut logs.nodes[1].events[0] {
            v.protocol = 2;
        }
        assert!(check(&logs).is_err());
    }

    #[test]
    fn going_back_is_caught() {
        let mut logs = three_views();
        logs.nodes[0]
            .events
            .push(view(700, 3, &[1, 2], Reason::Leave(3)));
        assert!(check(&logs).unwrap_err().detail.contains("after view 4"));
    }

    #[test]
    fn skipping_a_view_while_a_member_is_caught() {
        let mut logs = three_views();
        // node 1 goes from view 1 straight to view 4 while staying a member
        logs.nodes[0].events.remove(4);
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("right after view 1"), "{v}");
    }

    #[test]
    fn one_view_installed_by_two_incarnations_is_caught() {
        let mut logs = healthy();
        let mut again = logs.nodes[2].clone();
        again.incarnation = 1;
        logs.nodes[2].crashed = true;
        logs.nodes.push(again);
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("incarnation 0 of n3"), "{v}");
    }

    #[test]
    fn repeated_member_is_caught() {
        let mut logs = healthy();
        for l in &mut logs.nodes {
            l.events[0] = view(10, 1, &[1, 2, 2], Reason::Join(3));
        }
        assert!(check(&logs).unwrap_err().detail.contains("repeats"));
    }
}
