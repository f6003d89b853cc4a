//! Adjust outcome: all members of a view reach the same outcome for the same
//! adjust-version request, at the same position: the group switched there,
//! or the request failed there with the same error.
//!
//! Source: issue 4 (adjust-version): "the check is repeated when the message
//! is ordered, so a crash, join or partition that races with the request
//! cannot switch a group whose preconditions no longer hold (then the request
//! fails with the error, deterministically, at every member)"; and "the
//! switch itself causes no flush".
//!
//! Checked, per group and epoch (`view >> 32`), over [`Event::Adjust`]
//! records:
//! 1. **agreement**: every record at one position names the same request
//!    (requester, request number), the same view after it and the same
//!    [`AdjustResult`] (for `Partitioned`, the same missing nodes);
//! 2. **matches the views**: a record that switched (`from != to`) comes with
//!    this member's `AdjustVersion { from, to }` view installed at that
//!    position with the record's view id; a refused or no-op record installs
//!    no view at its position; and every `AdjustVersion` view a member
//!    installs comes with its record;
//! 3. **no flush**: an `AdjustVersion` view follows the member's previous
//!    view of the group in the same epoch, one change later (a fast-path
//!    change, not an epoch change);
//! 4. **completeness**: a member that went past the position in the view
//!    that was in force there (it delivered in that view at a later
//!    position, or moved from it, still a member, to a later view of the
//!    same epoch) has the record too;
//! 5. **ground truth**: the outcome is right for the view in force at the
//!    position (the view before a switch, the record's view otherwise),
//!    [`Logs::configured`] and [`Logs::ranges`]. A switch `from -> to`
//!    (`from != to`) needs every configured node in that view, the view
//!    running `from`, and every incarnation that installed it (or the switch
//!    view) as a member supporting `to`; a no-op (`from == to`) needs the
//!    view to run `to` already. A `Partitioned` refusal names exactly the
//!    configured nodes missing from the view, at least one (a sequencer
//!    orders only under its lease, so it reaches a majority); a
//!    `NotCapable` refusal needs every configured node in the view (the
//!    partition check comes first), names a configured node and the range
//!    one of its incarnations ran; a `NodeNotActive` refusal names a
//!    configured node. (Whether a node was active is the sequencer's failure
//!    detector's judgement, and a refusal's target is not in the record, so
//!    those two stay unchecked.)

use std::collections::{BTreeMap, BTreeSet};

use super::{
    AdjustOutcome, AdjustResult, Event, Group, Invariant, Logs, Member, Node, Reason,
    ViewInstalled, Violation,
};

/// Checks that every member reached the same outcome for the same request.
pub fn check(logs: &Logs) -> Result<(), Violation> {
    // (group, epoch, position) -> the first record seen there.
    let mut at: BTreeMap<(Group, u64, u64), &AdjustOutcome> = BTreeMap::new();
    for log in &logs.nodes {
        let mut last_view: BTreeMap<Group, u64> = BTreeMap::new();
        for e in &log.events {
            match e {
                Event::Adjust(a) => {
                    let fail = |detail: String| {
                        Err(Violation::new(Invariant::AdjustOutcome, detail)
                            .member(log.member())
                            .group(a.group)
                            .view(a.view))
                    };
                    let first = *at.entry((a.group, a.view >> 32, a.position)).or_insert(a);
                    if (first.requester, first.request, first.view, &first.result)
                        != (a.requester, a.request, a.view, &a.result)
                    {
                        return fail(format!(
                            "at position {}: n{} request {} -> {:?} (view {}) here, \
                             n{} request {} -> {:?} (view {}) at another member",
                            a.position,
                            a.requester,
                            a.request,
                            a.result,
                            a.view,
                            first.requester,
                            first.request,
                            first.result,
                            first.view
                        ));
                    }
                    let installed = log.events.iter().find_map(|e| match e {
                        Event::View(v)
                            if v.group == a.group
                                && v.position == a.position
                                && v.view >> 32 == a.view >> 32 =>
                        {
                            Some(v)
                        }
                        _ => None,
                    });
                    match (&a.result, installed) {
                        (AdjustResult::Switched { from, to }, Some(v))
                            if from != to
                                && (v.view != a.view
                                    || v.reason
                                        != (Reason::AdjustVersion {
                                            from: *from,
                                            to: *to,
                                        })) =>
                        {
                            return fail(format!(
                                "switched {from}->{to} at position {} but the view installed \
                                 there is {} {:?}",
                                a.position, v.view, v.reason
                            ));
                        }
                        (AdjustResult::Switched { from, to }, Some(_)) if from != to => {}
                        // The Engine hands out the outcome and the view of a
                        // switch through two queues in one call: an
                        // incarnation that crashed between taking the two
                        // ends its log with the outcome.
                        (AdjustResult::Switched { from, to }, None)
                            if from != to
                                && log.crashed
                                && log.events.last().is_some_and(|l| std::ptr::eq(l, e)) => {}
                        (AdjustResult::Switched { from, to }, None) if from != to => {
                            return fail(format!(
                                "switched {from}->{to} at position {} but installed no view there",
                                a.position
                            ));
                        }
                        (r, Some(v)) if matches!(v.reason, Reason::AdjustVersion { .. }) => {
                            return fail(format!(
                                "outcome {r:?} at position {} but installed the switch view {} \
                                 {:?} there",
                                a.position, v.view, v.reason
                            ));
                        }
                        _ => {}
                    }
                }
                Event::View(v) => {
                    if let Reason::AdjustVersion { from, to } = v.reason {
                        let fail = |detail: String| {
                            Err(Violation::new(Invariant::AdjustOutcome, detail)
                                .member(log.member())
                                .group(v.group)
                                .view(v.view))
                        };
                        if let Some(prev) = last_view.get(&v.group)
                            && *prev + 1 != v.view
                        {
                            return fail(format!(
                                "AdjustVersion {from}->{to} view {} follows view {prev}: \
                                 not a fast-path change (a flush or a skipped view)",
                                v.view
                            ));
                        }
                        let recorded = log.events.iter().any(|e| {
                            matches!(e, Event::Adjust(a)
                                if a.group == v.group
                                    && a.position == v.position
                                    && a.view == v.view)
                        });
                        if !recorded {
                            return fail(format!(
                                "installed AdjustVersion {from}->{to} at position {} with no \
                                 adjust outcome there",
                                v.position
                            ));
                        }
                    }
                    last_view.insert(v.group, v.view);
                }
                Event::Delivery(_) | Event::Partitioned { .. } => {}
            }
        }
    }
    // Completeness: whoever went past a record's position in the view in
    // force there reached it too.
    for log in &logs.nodes {
        let mine: Vec<&AdjustOutcome> = log
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Adjust(a) => Some(a),
                _ => None,
            })
            .collect();
        let has = |group: Group, epoch: u64, position: u64| {
            mine.iter()
                .any(|a| a.group == group && a.view >> 32 == epoch && a.position == position)
        };
        let mut last_view: BTreeMap<Group, u64> = BTreeMap::new();
        for e in &log.events {
            let (group, view, position, moved_from) = match e {
                Event::Delivery(d) => (d.group, d.view, d.seq, None),
                // Only a move between two views that hold this node passes
                // through the positions between them (a node that left and
                // joined again did not).
                Event::View(v) if v.members.contains(&log.node) => {
                    let prev = last_view.insert(v.group, v.view);
                    (v.group, v.view, v.position, prev)
                }
                Event::View(v) => {
                    last_view.remove(&v.group);
                    continue;
                }
                Event::Partitioned { group, .. } => {
                    last_view.remove(group);
                    continue;
                }
                Event::Adjust(_) => continue,
            };
            for (&(g, epoch, p), a) in
                at.range((group, view >> 32, 0)..(group, view >> 32, position))
            {
                debug_assert_eq!((g, epoch), (group, view >> 32));
                let switched =
                    matches!(a.result, AdjustResult::Switched { from, to } if from != to);
                // The view in force at the position, before the entry.
                let before = if switched {
                    a.view.wrapping_sub(1)
                } else {
                    a.view
                };
                let passed = view == before || moved_from == Some(before);
                if passed && p < position && !has(g, epoch, p) {
                    return Err(Violation::new(
                        Invariant::AdjustOutcome,
                        format!(
                            "went past position {p} in view {before} (to position {position} in \
                             view {view}) without reaching n{} request {}'s outcome {:?} there",
                            a.requester, a.request, a.result
                        ),
                    )
                    .member(log.member())
                    .group(g)
                    .view(view));
                }
            }
        }
    }
    for a in at.values() {
        ground_truth(logs, a)?;
    }
    Ok(())
}

/// Rule 5: the outcome is the right one for the view in force.
fn ground_truth(logs: &Logs, a: &AdjustOutcome) -> Result<(), Violation> {
    let fail = |detail: String| {
        Err(Violation::new(Invariant::AdjustOutcome, detail)
            .group(a.group)
            .view(a.view))
    };
    if logs.configured.is_empty() {
        return fail("the logs hold adjust outcomes but not the configured nodes".to_string());
    }
    let switched = matches!(a.result, AdjustResult::Switched { from, to } if from != to);
    let before = if switched {
        a.view.wrapping_sub(1)
    } else {
        a.view
    };
    // The incarnations that installed a view as members, and the view.
    let installed = |id: u64| -> (Option<&ViewInstalled>, Vec<Member>) {
        let mut view = None;
        let mut who = Vec::new();
        for log in &logs.nodes {
            for e in &log.events {
                if let Event::View(v) = e
                    && v.group == a.group
                    && v.view == id
                {
                    view.get_or_insert(v);
                    if v.members.contains(&log.node) {
                        who.push(log.member());
                    }
                }
            }
        }
        (view, who)
    };
    let (in_force, mut installers) = installed(before);
    let Some(in_force) = in_force else {
        return fail(format!(
            "outcome {:?} at position {} in view {before}, which no log installed",
            a.result, a.position
        ));
    };
    let members: BTreeSet<Node> = in_force.members.iter().copied().collect();
    let missing: Vec<Node> = logs
        .configured
        .iter()
        .filter(|n| !members.contains(n))
        .copied()
        .collect();
    let configured = |n: Node| logs.configured.contains(&n);
    match &a.result {
        AdjustResult::Switched { from, to } if from != to => {
            if !missing.is_empty() {
                return fail(format!(
                    "switched {from}->{to} at position {} although configured nodes {missing:?} were not \
                     in the view in force ({before}, members {:?})",
                    a.position, in_force.members
                ));
            }
            if in_force.protocol != *from {
                return fail(format!(
                    "switched from {from} at position {} but the view in force ran {}",
                    a.position, in_force.protocol
                ));
            }
            installers.extend(installed(a.view).1);
            for m in installers {
                match logs.ranges.get(&m) {
                    Some(&(min, max)) if (min..=max).contains(to) => {}
                    r => {
                        return fail(format!(
                            "switched to {to} at position {} although member {m} supports {r:?}",
                            a.position
                        ));
                    }
                }
            }
        }
        AdjustResult::Switched { to, .. } => {
            if in_force.protocol != *to {
                return fail(format!(
                    "a no-op switch to {to} at position {} but the view in force runs {}",
                    a.position, in_force.protocol
                ));
            }
        }
        AdjustResult::Partitioned { missing: named } => {
            if missing.is_empty() || *named != missing {
                return fail(format!(
                    "refused as Partitioned {{ missing: {named:?} }} at position {}, but the configured \
                     nodes missing from the view in force ({before}, members {:?}) are {missing:?}",
                    a.position, in_force.members
                ));
            }
        }
        AdjustResult::NotCapable { node, min, max } => {
            if !missing.is_empty() {
                return fail(format!(
                    "refused as NotCapable at position {} while configured nodes {missing:?} were missing \
                     from the view in force: Partitioned comes first",
                    a.position
                ));
            }
            let ran = logs
                .ranges
                .iter()
                .any(|(m, r)| m.node == *node && *r == (*min, *max));
            if !configured(*node) || !ran {
                return fail(format!(
                    "refused as NotCapable naming n{node} with {min}..={max}, which no incarnation of a \
                     configured n{node} ran"
                ));
            }
        }
        AdjustResult::NodeNotActive { node } => {
            if !configured(*node) {
                return fail(format!(
                    "refused as NodeNotActive naming n{node}, which is not a configured node"
                ));
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
    const G: Group = 7;

    fn view(view: u64, protocol: u16, reason: Reason, position: u64) -> Event {
        Event::View(ViewInstalled {
            at: 0,
            group: G,
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
            group: G,
            view,
            seq,
            sender: 1,
            sender_incarnation: 0,
            sender_seq: seq,
            digest: seq,
            mode: super::super::Mode::Agreed,
        })
    }

    fn outcome(position: u64, view: u64, result: AdjustResult) -> Event {
        Event::Adjust(AdjustOutcome {
            at: 0,
            group: G,
            position,
            view,
            requester: 2,
            request: 1,
            result,
        })
    }

    fn switched() -> AdjustResult {
        AdjustResult::Switched { from: 1, to: 2 }
    }

    fn not_active() -> AdjustResult {
        AdjustResult::NodeNotActive { node: 2 }
    }

    fn logs(a: Vec<Event>, b: Vec<Event>) -> Logs {
        let log = |node, events| NodeLog {
            node,
            incarnation: 0,
            crashed: false,
            events,
        };
        let range = |node| {
            (
                Member {
                    node,
                    incarnation: 0,
                },
                (1, 2),
            )
        };
        Logs {
            nodes: vec![log(1, a), log(2, b)],
            configured: vec![1, 2],
            ranges: [range(1), range(2)].into_iter().collect(),
            ..Logs::default()
        }
    }

    /// A switch at position 2, then a refused request at position 4.
    fn good() -> Vec<Event> {
        vec![
            view(E, 1, Reason::Join(2), 0),
            deliver(E, 1),
            view(E + 1, 2, Reason::AdjustVersion { from: 1, to: 2 }, 2),
            outcome(2, E + 1, switched()),
            deliver(E + 1, 3),
            outcome(4, E + 1, not_active()),
            deliver(E + 1, 5),
        ]
    }

    #[test]
    fn a_switch_without_its_view_passes_only_as_the_last_event_of_a_crashed_log() {
        let cut = || {
            vec![
                view(E, 1, Reason::Join(2), 0),
                deliver(E, 1),
                outcome(2, E + 1, switched()),
            ]
        };
        let mut l = logs(good(), cut());
        let v = check(&l).unwrap_err();
        assert!(v.detail.contains("installed no view there"), "{v:?}");
        l.nodes[1].crashed = true;
        assert_eq!(check(&l), Ok(()));
        // A log that goes on past the outcome must hold the view.
        let mut more = cut();
        more.push(deliver(E + 1, 3));
        let mut l = logs(good(), more);
        l.nodes[1].crashed = true;
        let v = check(&l).unwrap_err();
        assert!(v.detail.contains("installed no view there"), "{v:?}");
    }

    #[test]
    fn same_outcomes_pass() {
        assert_eq!(check(&logs(good(), good())), Ok(()));
    }

    #[test]
    fn different_errors_for_one_request_fail() {
        let mut b = good();
        b[5] = outcome(4, E + 1, AdjustResult::Partitioned { missing: vec![3] });
        let v = check(&logs(good(), b)).unwrap_err();
        assert_eq!(v.invariant, Invariant::AdjustOutcome);
        assert_eq!(v.member.map(|m| m.node), Some(2));
    }

    #[test]
    fn switched_here_refused_there_fails() {
        let mut b = good();
        b[2] = outcome(2, E, not_active());
        b[3] = deliver(E, 3);
        b.truncate(4);
        assert_eq!(
            check(&logs(good(), b)).map_err(|v| v.invariant),
            Err(Invariant::AdjustOutcome)
        );
    }

    #[test]
    fn a_member_that_skips_a_refusal_fails() {
        let mut b = good();
        b.remove(5);
        let v = check(&logs(good(), b)).unwrap_err();
        assert_eq!(v.invariant, Invariant::AdjustOutcome);
        assert_eq!(v.member.map(|m| m.node), Some(2));
    }

    #[test]
    fn a_member_that_left_before_a_refusal_and_rejoined_after_it_passes() {
        let mut b = good();
        b.truncate(5);
        b.push(Event::View(ViewInstalled {
            at: 0,
            group: G,
            view: E + 2,
            members: vec![1],
            protocol: 2,
            reason: Reason::Leave(2),
            position: 4,
        }));
        b.push(view(E + 3, 2, Reason::Join(2), 6));
        let mut a = good();
        a[5] = outcome(5, E + 2, not_active());
        a.insert(5, view(E + 2, 2, Reason::Leave(2), 4));
        a[7] = view(E + 3, 2, Reason::Join(2), 6);
        assert_eq!(check(&logs(a, b)), Ok(()));
    }

    #[test]
    fn a_switch_view_without_its_outcome_fails() {
        let mut b = good();
        b.remove(3);
        let v = check(&logs(good(), b)).unwrap_err();
        assert_eq!(v.invariant, Invariant::AdjustOutcome);
    }

    #[test]
    fn a_switched_outcome_without_its_view_fails() {
        let mut b = good();
        b.remove(2);
        let v = check(&logs(good(), b)).unwrap_err();
        assert_eq!(v.invariant, Invariant::AdjustOutcome);
    }

    #[test]
    fn a_switch_with_a_configured_node_missing_fails() {
        let mut l = logs(good(), good());
        l.configured.push(3);
        let v = check(&l).unwrap_err();
        assert!(v.detail.contains("[3] were not"), "{v}");
    }

    #[test]
    fn a_switch_to_a_version_a_member_lacks_fails() {
        let mut l = logs(good(), good());
        l.ranges.insert(
            Member {
                node: 2,
                incarnation: 0,
            },
            (1, 1),
        );
        assert!(
            check(&l)
                .unwrap_err()
                .detail
                .contains("supports Some((1, 1))")
        );
    }

    #[test]
    fn a_wrong_partitioned_refusal_fails() {
        let refused = |missing: Vec<Node>| {
            let mut a = good();
            a[5] = outcome(4, E + 1, AdjustResult::Partitioned { missing });
            logs(a.clone(), a)
        };
        // nothing configured is missing from [1, 2]: naming 2 is wrong
        assert!(
            check(&refused(vec![2]))
                .unwrap_err()
                .detail
                .contains("are []")
        );
        // nobody is missing: a refusal naming nobody is wrong as well
        assert!(check(&refused(vec![])).is_err());
        let without_3 = |missing: Vec<Node>| {
            let mut l = refused(missing);
            l.configured.push(3);
            // a switch at 2 without n3 is wrong too; take the switch out
            for n in &mut l.nodes {
                n.events.drain(2..4);
                for e in &mut n.events {
                    if let Event::Delivery(d) = e {
                        d.view = E;
                    }
                    if let Event::Adjust(x) = e {
                        x.view = E;
                    }
                }
            }
            l
        };
        // n3 is missing: naming nobody is wrong, naming n3 is right
        assert!(
            check(&without_3(vec![]))
                .unwrap_err()
                .detail
                .contains("are [3]")
        );
        let l = without_3(vec![3]);
        assert_eq!(check(&l), Ok(()));
    }

    #[test]
    fn a_not_capable_refusal_with_a_range_nobody_ran_fails() {
        let mut a = good();
        a[5] = outcome(
            4,
            E + 1,
            AdjustResult::NotCapable {
                node: 2,
                min: 1,
                max: 7,
            },
        );
        assert!(
            check(&logs(a.clone(), a))
                .unwrap_err()
                .detail
                .contains("no incarnation")
        );
        let mut a = good();
        a[5] = outcome(
            4,
            E + 1,
            AdjustResult::NotCapable {
                node: 2,
                min: 1,
                max: 2,
            },
        );
        assert_eq!(check(&logs(a.clone(), a)), Ok(()));
    }

    #[test]
    fn a_switch_by_flush_fails() {
        // The switch view is in a new epoch: not a fast-path change.
        let a = vec![
            view(E, 1, Reason::Join(2), 0),
            view(2 * E, 2, Reason::AdjustVersion { from: 1, to: 2 }, 2),
            outcome(2, 2 * E, switched()),
        ];
        assert_eq!(
            check(&logs(a.clone(), a)).map_err(|v| v.invariant),
            Err(Invariant::AdjustOutcome)
        );
    }
}
