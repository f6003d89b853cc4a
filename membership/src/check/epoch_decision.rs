//! Epoch decision: every epoch change was chosen by a strict majority of the
//! configured nodes, one value per epoch, and the views that start an epoch
//! are the decided ones, installed by the incarnations the decision names.
//!
//! Source: single-decree Paxos (Lamport, "Paxos Made Simple", 2001, sections
//! 2.2 and 2.3): a value is chosen when a majority of acceptors accepted it
//! in one ballot, and any two majorities intersect, so no two values are
//! chosen for one instance. The primary-component model (Ricciardi and
//! Birman, PODC 1991) rests on it: a decision without a majority of the
//! configured nodes lets a minority install an epoch the majority never
//! agreed to, and two such components diverge for good.
//!
//! Checked over [`Logs::votes`] (what each acceptor persisted before it
//! answered `Accepted`) and [`Logs::decisions`] (what each node persisted on
//! learning a decision):
//! 1. **majority**: for every decision of (group, epoch) there is one ballot
//!    at which more than half of [`Logs::configured`] had stored a vote for
//!    exactly the decided value, no later than the decision was stored;
//! 2. **one value**: every decision of one (group, epoch) has the same value;
//! 3. **phase 1 before phase 2**: an acceptor votes at a ballot only after
//!    more than half of the configured nodes stored a promise of that
//!    ballot ([`Logs::promises`]); without the promise quorum the proposer
//!    may miss a value a majority already accepted, and propose another;
//! 4. **installed as decided**: every view a member installs as the first
//!    view of an epoch (`change == 0`) was decided with the same members,
//!    and the installer is the incarnation the decision lists for it;
//! 5. **decisions only move forward**: the decided epoch a node stores for a
//!    group (its acceptor state survives restarts) never goes back to an
//!    earlier epoch. Learning a decision clears the acceptor's votes for that
//!    epoch and every earlier one; an acceptor that went back to an older
//!    decision would hold a decided epoch as open again, with its vote
//!    forgotten, and could promise and accept a second value for it.

use std::collections::{BTreeMap, BTreeSet};

use super::{Ballot, Decision, Event, Group, Invariant, Logs, Node, Violation};

/// Checks every decision against the stored votes, and every epoch's first
/// view against the decisions.
pub fn check(logs: &Logs) -> Result<(), Violation> {
    let fail = |d: &Decision, what: String| {
        Violation::new(Invariant::EpochDecision, what)
            .member(d.member)
            .group(d.group)
            .view(d.value.view)
    };
    if logs.configured.is_empty() && !logs.decisions.is_empty() {
        return Err(Violation::new(
            Invariant::EpochDecision,
            "the logs hold decisions but not the configured nodes: no majority can be counted",
        ));
    }
    let configured: BTreeSet<Node> = logs.configured.iter().copied().collect();
    let majority = configured.len() / 2 + 1;
    let mut latest: BTreeMap<(Node, Group), &Decision> = BTreeMap::new();
    for d in &logs.decisions {
        let key = (d.member.node, d.group);
        if let Some(before) = latest.get(&key)
            && d.epoch < before.epoch
        {
            return Err(fail(
                d,
                format!(
                    "stored epoch {} as decided at t={} after it had stored epoch {} (as {}, at t={}): \
                     a node's decided epoch only grows",
                    d.epoch, d.at, before.epoch, before.member, before.at
                ),
            ));
        }
        latest.insert(key, d);
    }
    let mut chosen: BTreeMap<(Group, u32), &Decision> = BTreeMap::new();
    for d in &logs.decisions {
        if let Some(first) = chosen.get(&(d.group, d.epoch)) {
            if first.value != d.value {
                return Err(fail(
                    d,
                    format!(
                        "epoch {} decided as {:?} here but as {:?} at {}",
                        d.epoch, d.value, first.value, first.member
                    ),
                ));
            }
            continue;
        }
        chosen.insert((d.group, d.epoch), d);
        // ballot -> distinct configured acceptors that voted for the value
        let mut by_ballot: BTreeMap<Ballot, BTreeSet<Node>> = BTreeMap::new();
        for v in logs.votes.iter().filter(|v| {
            v.group == d.group
                && v.epoch == d.epoch
                && v.value == d.value
                && v.at <= d.at
                && configured.contains(&v.node)
        }) {
            by_ballot.entry(v.ballot).or_default().insert(v.node);
        }
        let best = by_ballot
            .iter()
            .max_by_key(|(_, voters)| voters.len())
            .map(|(b, voters)| (*b, voters.clone()));
        match best {
            Some((_, voters)) if voters.len() >= majority => {}
            best => {
                return Err(fail(
                    d,
                    format!(
                        "epoch {} decided ({:?}) with at most {:?} of the {} configured nodes having \
                         accepted it in one ballot by t={}; a decision needs {majority}",
                        d.epoch,
                        d.value,
                        best,
                        configured.len(),
                        d.at
                    ),
                ));
            }
        }
    }
    // The first vote of each ballot, and the promises stored before it.
    let mut first_vote: BTreeMap<(Group, u32, Ballot), &super::Vote> = BTreeMap::new();
    for v in &logs.votes {
        first_vote
            .entry((v.group, v.epoch, v.ballot))
            .and_modify(|f| {
                if v.at < f.at {
                    *f = v;
                }
            })
            .or_insert(v);
    }
    for (&(group, epoch, ballot), v) in &first_vote {
        let promised: BTreeSet<Node> = logs
            .promises
            .iter()
            .filter(|p| {
                (p.group, p.epoch, p.ballot) == (group, epoch, ballot)
                    && p.at <= v.at
                    && configured.contains(&p.node)
            })
            .map(|p| p.node)
            .collect();
        if promised.len() < majority {
            return Err(Violation::new(
                Invariant::EpochDecision,
                format!(
                    "n{} voted in epoch {epoch} at ballot {ballot:?} (t={}) when only {promised:?} of the {} \
                     configured nodes had promised that ballot; phase 2 needs {majority} promises",
                    v.node,
                    v.at,
                    configured.len()
                ),
            )
            .group(group)
            .view(v.value.view));
        }
    }
    for log in &logs.nodes {
        for e in &log.events {
            let Event::View(v) = e else { continue };
            if v.view as u32 != 0 || !v.members.contains(&log.node) {
                continue;
            }
            let epoch = (v.view >> 32) as u32;
            let err = |what: String| {
                Err(Violation::new(Invariant::EpochDecision, what)
                    .member(log.member())
                    .group(v.group)
                    .view(v.view))
            };
            let Some(d) = chosen.get(&(v.group, epoch)) else {
                return err(format!(
                    "installed view {} (the first of epoch {epoch}) that no node ever stored as decided",
                    v.view
                ));
            };
            if d.value.view != v.view || d.value.members != v.members {
                return err(format!(
                    "installed view {} with members {:?} as the first of epoch {epoch}, but the epoch was \
                     decided as view {} with members {:?}",
                    v.view, v.members, d.value.view, d.value.members
                ));
            }
            let listed = v
                .members
                .iter()
                .position(|m| *m == log.node)
                .and_then(|i| d.value.incarnations.get(i));
            if listed != Some(&log.incarnation) {
                return err(format!(
                    "installed view {} as incarnation {}, but the decision lists n{} as incarnation {:?}",
                    v.view, log.incarnation, log.node, listed
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{
        Ballot, Decision, EpochValue, Invariant, Logs, Member, Promise, Reason, Vote,
    };
    use super::check;

    fn value() -> EpochValue {
        EpochValue {
            view: 1 << 32,
            members: vec![1, 2, 3],
            incarnations: vec![0, 0, 0],
            digest: 0xabc,
        }
    }

    fn vote(at: u64, node: u32, round: u32) -> Vote {
        Vote {
            at,
            node,
            group: G,
            epoch: 1,
            ballot: Ballot { round, leader: 1 },
            value: value(),
        }
    }

    fn decision(at: u64, node: u32) -> Decision {
        Decision {
            at,
            member: Member {
                node,
                incarnation: 0,
            },
            group: G,
            epoch: 1,
            value: value(),
        }
    }

    /// Three nodes install epoch 1's first view, decided by votes of 1 and 2.
    fn decided() -> Logs {
        let mut logs = healthy();
        for l in &mut logs.nodes {
            l.events
                .insert(0, view(5, 1 << 32, &[1, 2, 3], Reason::Merged));
        }
        logs.promises = (1..=2)
            .map(|node| Promise {
                at: 0,
                node,
                group: G,
                epoch: 1,
                ballot: Ballot {
                    round: 1,
                    leader: 1,
                },
            })
            .collect();
        logs.votes = vec![vote(1, 1, 1), vote(2, 2, 1)];
        logs.decisions = vec![decision(3, 1), decision(4, 2), decision(4, 3)];
        logs
    }

    #[test]
    fn a_majority_decision_installed_as_decided_passes() {
        assert_eq!(check(&decided()), Ok(()));
    }

    #[test]
    fn a_decision_without_a_majority_is_caught() {
        let mut logs = decided();
        logs.votes.pop();
        let v = check(&logs).unwrap_err();
        assert_eq!(v.invariant, Invariant::EpochDecision);
        assert!(v.detail.contains("needs 2"), "{v}");
    }

    #[test]
    fn votes_in_different_ballots_do_not_add_up() {
        let mut logs = decided();
        logs.votes[1].ballot.round = 2;
        assert!(check(&logs).is_err());
    }

    #[test]
    fn a_vote_without_a_majority_of_promises_is_caught() {
        let mut logs = decided();
        logs.promises.pop();
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("phase 2 needs 2 promises"), "{v}");
        // a promise stored after the first vote does not count either
        let mut logs = decided();
        logs.promises[1].at = 2;
        assert!(check(&logs).is_err());
    }

    #[test]
    fn a_vote_stored_after_the_decision_does_not_count() {
        let mut logs = decided();
        logs.votes[1].at = 10;
        assert!(check(&logs).is_err());
    }

    #[test]
    fn two_votes_of_one_node_count_once() {
        let mut logs = decided();
        logs.votes[1].node = 1;
        assert!(check(&logs).is_err());
    }

    #[test]
    fn two_values_for_one_epoch_are_caught() {
        let mut logs = decided();
        logs.decisions[2].value.digest = 0xdef;
        assert!(check(&logs).unwrap_err().detail.contains("decided as"));
    }

    #[test]
    fn a_decision_for_an_earlier_epoch_stored_later_is_caught() {
        let mut logs = decided();
        let mut next = decision(6, 1);
        next.epoch = 2;
        next.value.view = 2 << 32;
        let mut votes: Vec<Vote> = (1..=2).map(|n| vote(5, n, 1)).collect();
        for v in &mut votes {
            v.epoch = 2;
            v.value = next.value.clone();
        }
        let promises: Vec<Promise> = logs
            .promises
            .iter()
            .map(|p| Promise {
                epoch: 2,
                ..p.clone()
            })
            .collect();
        logs.promises.extend(promises);
        logs.votes.extend(votes);
        logs.decisions.push(next);
        assert_eq!(check(&logs), Ok(()));
        // node 1 then stores epoch 1 again (a late copy of its decision),
        // after a restart too: the acceptor state is the node's, not the
        // incarnation's
        let mut late = decision(7, 1);
        late.member.incarnation = 1;
        logs.decisions.push(late);
        let v = check(&logs).unwrap_err();
        assert!(v.detail.contains("only grows"), "{v}");
    }

    #[test]
    fn an_undecided_epoch_view_is_caught() {
        let mut logs = decided();
        logs.decisions.clear();
        logs.votes.clear();
        assert!(
            check(&logs)
                .unwrap_err()
                .detail
                .contains("no node ever stored")
        );
    }

    #[test]
    fn a_view_installed_by_another_incarnation_is_caught() {
        let mut logs = decided();
        logs.nodes[2].incarnation = 1;
        assert!(check(&logs).unwrap_err().detail.contains("incarnation"));
    }

    #[test]
    fn a_view_other_than_the_decided_one_is_caught() {
        let mut logs = decided();
        for d in &mut logs.decisions {
            d.value.members = vec![1, 2];
        }
        for v in &mut logs.votes {
            v.value.members = vec![1, 2];
        }
        assert!(check(&logs).unwrap_err().detail.contains("decided as view"));
    }
}
