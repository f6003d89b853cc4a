//! The checker logs: what each application records of its Engine's output
//! (deliveries, views, partitions, adjust-version outcomes, in
//! `check::Logs`), with the bookkeeping the world keeps beside them (the
//! positions seen, the multicasts not confirmed yet), and who the checkers
//! expect in the final views.

use std::collections::{BTreeMap, BTreeSet};

use concord_membership::check::{self, AdjustResult, Event, NodeLog};
use concord_membership::{
    Delivery, DeliveryMode, DurableState, GroupId, Reason, VersionError, VersionEvent, View,
};

use super::{Bytes, World};
use crate::sim::rng::{FNV_START, fnv1a};

impl World {
    /// The Engine delivered `d`; false if it names an unknown group (the
    /// world failed, the drain stops).
    pub(super) fn record_delivery(&mut self, node: usize, d: Delivery<Bytes>) -> bool {
        let (id, inc, log) = self.names(node);
        let now = self.now;
        let Some(group) = self.group_index(d.group.0) else {
            self.fail_world(
                "no-creation",
                format!("n{id} delivered in unknown group {:?}", d.group),
            );
            return false;
        };
        let digest = fnv1a(FNV_START, d.payload.as_ref());
        self.cov.delivered += 1;
        self.slots[node].unconfirmed.remove(&(group, digest));
        let pos = self.slots[node].position.entry(group).or_insert(0);
        *pos = (*pos).max(d.seq);
        self.trace.note(now, &[7, node as u64, d.group.0, d.view.0, d.seq, digest], || {
            format!(
                "n{id}#{inc} DELIVER g{group} view {}.{} seq {} from n{}#{} s{} digest {digest:#x}",
                d.view.epoch(),
                d.view.change(),
                d.seq,
                d.sender.0,
                d.sender_incarnation,
                d.sender_seq
            )
        });
        self.logs.nodes[log]
            .events
            .push(Event::Delivery(check::Delivered {
                at: now,
                group: d.group.0,
                view: d.view.0,
                seq: d.seq,
                sender: d.sender.0,
                sender_incarnation: d.sender_incarnation,
                sender_seq: d.sender_seq,
                digest,
                mode: match self.sc.groups[group].mode {
                    DeliveryMode::Agreed => check::Mode::Agreed,
                    DeliveryMode::Safe => check::Mode::Safe,
                },
            }));
        true
    }

    /// The node booted a new incarnation: a fresh log, its range, and (at
    /// the first boot) the configured nodes.
    pub(super) fn record_boot(&mut self, node: usize) {
        if self.logs.configured.is_empty() {
            // As `World::config` configures every Engine.
            self.logs.configured = (1..=self.sc.nodes as u32).collect();
        }
        let slot = &mut self.slots[node];
        slot.log = self.logs.nodes.len();
        let member = check::Member {
            node: slot.id.0,
            incarnation: slot.incarnation,
        };
        self.logs
            .ranges
            .insert(member, (slot.range.min.0, slot.range.max.0));
        self.logs.nodes.push(NodeLog {
            node: member.node,
            incarnation: member.incarnation,
            crashed: false,
            events: Vec::new(),
        });
    }

    /// The Engine is about to persist `state`: what changed against its
    /// disk is a vote (a new accepted value) or a decision it learned.
    pub(super) fn record_persist(&mut self, node: usize, state: &DurableState) {
        let now = self.now;
        let slot = &self.slots[node];
        let member = check::Member {
            node: slot.id.0,
            incarnation: slot.incarnation,
        };
        let old = slot.disk.as_ref();
        let before = |g: GroupId| old.and_then(|d| d.groups.iter().find(|a| a.group == g));
        for ga in &state.groups {
            let prev = before(ga.group);
            if let Some((epoch, p)) = &ga.decided
                && prev.and_then(|a| a.decided.as_ref()) != Some(&(*epoch, p.clone()))
            {
                self.logs.decisions.push(check::Decision {
                    at: now,
                    member,
                    group: ga.group.0,
                    epoch: *epoch,
                    value: value(p),
                });
            }
            for inst in &ga.instances {
                let before = prev.and_then(|a| a.instances.iter().find(|i| i.epoch == inst.epoch));
                let had = before.and_then(|i| i.accepted.as_ref());
                let voted = inst.accepted.is_some() && had != inst.accepted.as_ref();
                if !voted && before.is_none_or(|i| i.promised != inst.promised) {
                    self.logs.promises.push(check::Promise {
                        at: now,
                        node: member.node,
                        group: ga.group.0,
                        epoch: inst.epoch,
                        ballot: check::Ballot {
                            round: inst.promised.round,
                            leader: inst.promised.leader,
                        },
                    });
                }
                let Some((ballot, p)) = &inst.accepted else {
                    continue;
                };
                if voted {
                    self.logs.votes.push(check::Vote {
                        at: now,
                        node: member.node,
                        group: ga.group.0,
                        epoch: inst.epoch,
                        ballot: check::Ballot {
                            round: ballot.round,
                            leader: ballot.leader,
                        },
                        value: value(p),
                    });
                }
            }
        }
    }

    /// The Engine installed `view` (or, with `Reason::Partitioned`, ended
    /// the member's life in the group); false if it names an unknown group
    /// (the world failed, the drain stops).
    pub(super) fn record_view(
        &mut self,
        node: usize,
        view: View,
        reason: Reason,
        position: u64,
    ) -> bool {
        let (id, inc, log) = self.names(node);
        let now = self.now;
        let Some(group) = self.group_index(view.group.0) else {
            self.fail_world(
                "view-agreement",
                format!("n{id} installed a view of unknown group {view:?}"),
            );
            return false;
        };
        let members: Vec<u32> = view.members.iter().map(|n| n.0).collect();
        self.trace.note(now, &[8, node as u64, view.group.0, view.id.0, position], || {
            format!(
                "n{id}#{inc} VIEW g{group} {}.{} members {members:?} {reason:?} at position {position}",
                view.id.epoch(),
                view.id.change()
            )
        });
        let event = if reason == Reason::Partitioned {
            self.cov.partitioned_reports += 1;
            self.slots[node].unconfirmed.retain(|(g, _)| *g != group);
            Event::Partitioned {
                at: now,
                group: view.group.0,
            }
        } else {
            self.cov.views += 1;
            let pos = self.slots[node].position.entry(group).or_insert(0);
            *pos = (*pos).max(position);
            Event::View(check::ViewInstalled {
                at: now,
                group: view.group.0,
                view: view.id.0,
                members,
                protocol: view.protocol.0,
                reason: convert(&reason),
                position,
            })
        };
        self.logs.nodes[log].events.push(event);
        true
    }

    /// The member lost the primary component of `group`.
    pub(super) fn record_partitioned(&mut self, node: usize, group: GroupId) {
        let (id, inc, log) = self.names(node);
        let now = self.now;
        self.trace.note(now, &[9, node as u64, group.0], || {
            format!("n{id}#{inc} PARTITIONED {group:?}")
        });
        if let Some(g) = self.group_index(group.0) {
            self.slots[node].unconfirmed.retain(|(x, _)| *x != g);
        }
        self.logs.nodes[log].events.push(Event::Partitioned {
            at: now,
            group: group.0,
        });
    }

    /// A member reached an adjust-version entry: its log records the outcome.
    pub(super) fn record_adjust(&mut self, node: usize, ev: VersionEvent) {
        let (id, inc, log) = self.names(node);
        let now = self.now;
        self.trace.note(now, &[24, node as u64, ev.group.0, ev.position], || {
            format!(
                "n{id}#{inc} ADJUST OUTCOME {:?} at position {} (view {}.{}): n{} request {} -> {:?}",
                ev.group,
                ev.position,
                ev.view.epoch(),
                ev.view.change(),
                ev.requester.0,
                ev.request,
                ev.outcome
            )
        });
        let result = match ev.outcome {
            Ok((from, to)) => {
                self.cov.outcomes_switched += 1;
                AdjustResult::Switched {
                    from: from.0,
                    to: to.0,
                }
            }
            Err(e) => {
                self.cov.outcomes_refused += 1;
                match e {
                    VersionError::NodeNotActive { node } => {
                        AdjustResult::NodeNotActive { node: node.0 }
                    }
                    VersionError::Partitioned { missing } => AdjustResult::Partitioned {
                        missing: missing.iter().map(|n| n.0).collect(),
                    },
                    VersionError::NotCapable { node, supported } => AdjustResult::NotCapable {
                        node: node.0,
                        min: supported.min.0,
                        max: supported.max.0,
                    },
                    other => {
                        self.fail_world(
                            "adjust-outcome",
                            format!("n{id}: an ordered adjust outcome carries {other:?}"),
                        );
                        return;
                    }
                }
            }
        };
        self.logs.nodes[log]
            .events
            .push(Event::Adjust(check::AdjustOutcome {
                at: now,
                group: ev.group.0,
                position: ev.position,
                view: ev.view.0,
                requester: ev.requester.0,
                request: ev.request,
                result,
            }));
    }

    /// Per group, who must be in the final view: nodes up at the end that
    /// want it.
    pub(super) fn expected(&self) -> BTreeMap<u64, BTreeSet<u32>> {
        self.sc
            .groups
            .iter()
            .enumerate()
            .map(|(g, spec)| {
                let members = self
                    .slots
                    .iter()
                    .filter(|s| s.engine.is_some() && s.wants.contains(&g))
                    .map(|s| s.id.0)
                    .collect();
                (spec.id.0, members)
            })
            .collect()
    }

    /// The node id, incarnation and log index of `node`'s slot.
    fn names(&self, node: usize) -> (u32, u64, usize) {
        let slot = &self.slots[node];
        (slot.id.0, slot.incarnation, slot.log)
    }
}

/// An epoch change's value as the checkers read it.
fn value(p: &concord_membership::Proposal) -> check::EpochValue {
    check::EpochValue {
        view: p.view.id.0,
        members: p.view.members.iter().map(|n| n.0).collect(),
        incarnations: p.incarnations.clone(),
        digest: fnv1a(FNV_START, format!("{p:?}").as_bytes()),
    }
}

/// The Engine's reason for a view, as the checkers read it.
fn convert(r: &Reason) -> check::Reason {
    match r {
        Reason::Join(n) => check::Reason::Join(n.0),
        Reason::Leave(n) => check::Reason::Leave(n.0),
        Reason::Failed(ns) => check::Reason::Failed(ns.iter().map(|n| n.0).collect()),
        Reason::Partitioned => check::Reason::Partitioned,
        Reason::Merged => check::Reason::Merged,
        Reason::AdjustVersion { from, to } => check::Reason::AdjustVersion {
            from: from.0,
            to: to.0,
        },
    }
}
