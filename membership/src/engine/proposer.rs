//! The proposer of an epoch change (a flush, a group's creation, an orphan
//! restart) and the install of a decided epoch.

use super::{Command, Engine};
use crate::group::{PendingInstall, Phase, Slot, delivered_of, next_of};
use crate::message::{Ballot, Body, MemberState, Proposal, SenderNext};
use crate::types::{GroupId, NodeId, Payload, Reason, Time, View, ViewId, position};

/// What an epoch change is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A member replaces the previous epoch (crash, partition, stall).
    Flush,
    /// A joiner creates a group nobody knows.
    Create,
    /// A joiner restarts a group whose members are all gone.
    Orphan,
}

/// Where a proposer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Phase 1: Prepare sent, promises being collected.
    Prepare,
    /// A flush leader fetching the positions up to `cut` from `best`.
    Fetch { cut: u64, best: NodeId },
    /// Phase 2: Accept sent, acceptances being collected.
    Accept,
    /// Preempted or timed out: a new round starts at `until`.
    Backoff { until: Time },
}

/// A promise received: who, what it had accepted, its member state.
pub(super) type PromiseFrom = (NodeId, Option<(Ballot, Proposal)>, Option<MemberState>);

/// The epoch change this node leads for one group.
#[derive(Debug)]
pub(super) struct Proposer {
    pub(super) epoch: u32,
    pub(super) ballot: Ballot,
    pub(super) kind: Kind,
    pub(super) stage: Stage,
    pub(super) started: Time,
    pub(super) promises: Vec<PromiseFrom>,
    pub(super) accepts: Vec<NodeId>,
    pub(super) proposal: Option<Proposal>,
    /// Fallback for orphan recovery: the last decided value known.
    pub(super) known: Option<Proposal>,
}

impl<P: Payload> Engine<P> {
    pub(super) fn start_proposer(
        &mut self,
        gid: GroupId,
        epoch: u32,
        kind: Kind,
        known: Option<Proposal>,
    ) {
        let round = self
            .acceptors
            .get(&gid)
            .and_then(|a| a.slots.get(&epoch))
            .map_or(0, |(b, _)| b.round)
            + 1;
        let round = self
            .proposers
            .get(&gid)
            .map_or(round, |p| round.max(p.ballot.round + 1));
        if kind == Kind::Flush {
            self.ctx.stats.flushes += 1;
        }
        self.proposers.insert(
            gid,
            Proposer {
                epoch,
                ballot: Ballot {
                    round,
                    leader: self.ctx.me.0,
                },
                kind,
                stage: Stage::Prepare,
                started: self.now,
                promises: Vec::new(),
                accepts: Vec::new(),
                proposal: None,
                known,
            },
        );
        self.send_prepares(gid);
    }

    fn send_prepares(&mut self, gid: GroupId) {
        let Some(p) = self.proposers.get(&gid) else {
            return;
        };
        let (epoch, ballot) = (p.epoch, p.ballot);
        let answered: Vec<NodeId> = p.promises.iter().map(|(n, _, _)| *n).collect();
        for n in self.cfg.nodes.clone() {
            if !answered.contains(&n) {
                self.ctx.send(
                    n,
                    Body::Prepare {
                        group: gid,
                        epoch,
                        ballot,
                    },
                );
            }
        }
    }

    pub(super) fn tick_proposer(&mut self, gid: GroupId) {
        let now = self.now;
        let ft = self.cfg.failure_timeout;
        let Some(p) = self.proposers.get_mut(&gid) else {
            return;
        };
        let age = now.0.saturating_sub(p.started.0);
        match p.stage {
            Stage::Backoff { until } => {
                if now >= until {
                    p.stage = Stage::Prepare;
                    p.started = now;
                    p.promises.clear();
                    p.accepts.clear();
                    p.proposal = None;
                    self.send_prepares(gid);
                }
            }
            Stage::Prepare => {
                if age >= ft {
                    if p.promises.len() >= self.majority {
                        self.try_phase1(gid, true);
                    } else {
                        self.retry(gid);
                    }
                } else {
                    self.send_prepares(gid);
                }
            }
            Stage::Fetch { cut, best } => {
                if age >= 2 * ft {
                    self.retry(gid);
                } else if let Some(g) = self.groups.get(&gid) {
                    let from = g.ready + 1;
                    let epoch = g.epoch();
                    self.ctx.stats.nacks_sent += 1;
                    self.ctx.send(
                        best,
                        Body::Nack {
                            group: gid,
                            epoch,
                            positions: Some((from, cut)),
                            sender_seqs: None,
                        },
                    );
                }
            }
            Stage::Accept => {
                if age >= 2 * ft {
                    self.retry(gid);
                } else {
                    let (epoch, ballot) = (p.epoch, p.ballot);
                    let accepted = p.accepts.clone();
                    if let Some(prop) = p.proposal.clone() {
                        for n in self.cfg.nodes.clone() {
                            if !accepted.contains(&n) {
                                self.ctx.send(
                                    n,
                                    Body::Accept {
                                        group: gid,
                                        epoch,
                                        ballot,
                                        proposal: Box::new(prop.clone()),
                                    },
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    pub(super) fn retry(&mut self, gid: GroupId) {
        let hb = self.cfg.heartbeat_interval;
        let rank = u64::from(self.ctx.me.0 % 8);
        if let Some(p) = self.proposers.get_mut(&gid) {
            p.ballot.round += 1;
            p.stage = Stage::Backoff {
                until: self.now.plus(hb * (1 + rank)),
            };
            p.started = self.now;
        }
    }

    /// Phase 1b: a promise for the round we run.
    pub(super) fn on_promise(
        &mut self,
        from: NodeId,
        group: GroupId,
        epoch: u32,
        ballot: Ballot,
        accepted: Option<Box<(Ballot, Proposal)>>,
        state: Option<Box<MemberState>>,
    ) {
        if let Some(p) = self.proposers.get_mut(&group)
            && p.epoch == epoch
            && p.ballot == ballot
            && p.stage == Stage::Prepare
            && !p.promises.iter().any(|(n, _, _)| *n == from)
        {
            p.promises
                .push((from, accepted.map(|a| *a), state.map(|s| *s)));
            self.try_phase1(group, false);
        }
    }

    /// An acceptor promised a higher ballot: back off, then try above it.
    pub(super) fn on_reject(&mut self, group: GroupId, epoch: u32, promised: Ballot) {
        let hb = self.cfg.heartbeat_interval;
        let rank = u64::from(self.ctx.me.0 % 8);
        if let Some(p) = self.proposers.get_mut(&group)
            && p.epoch == epoch
            && promised > p.ballot
        {
            p.ballot = Ballot {
                round: promised.round + 1,
                leader: self.ctx.me.0,
            };
            p.stage = Stage::Backoff {
                until: self.now.plus(hb * (1 + rank)),
            };
        }
    }

    fn try_phase1(&mut self, gid: GroupId, force: bool) {
        let Some(p) = self.proposers.get(&gid) else {
            return;
        };
        if p.stage != Stage::Prepare || p.promises.len() < self.majority {
            return;
        }
        let all = self
            .cfg
            .nodes
            .iter()
            .filter(|n| !self.suspected(**n))
            .all(|n| p.promises.iter().any(|(m, _, _)| m == n));
        if !all && !force {
            return;
        }
        let epoch = p.epoch;
        // Paxos: adopt the highest-ballot value already accepted.
        let adopted = p
            .promises
            .iter()
            .filter_map(|(_, a, _)| a.clone())
            .max_by_key(|(b, _)| *b)
            .map(|(_, v)| v);
        if let Some(v) = adopted {
            self.send_accepts(gid, v);
            return;
        }
        let states: Vec<(NodeId, MemberState)> = p
            .promises
            .iter()
            .filter_map(|(n, _, s)| s.clone().map(|s| (*n, s)))
            .filter(|(_, s)| s.view.id.epoch() + 1 == epoch)
            .collect();
        match p.kind {
            Kind::Flush => {
                let Some((best, cut)) = states
                    .iter()
                    .map(|(n, s)| (*n, s.ready))
                    .max_by_key(|(n, r)| (*r, std::cmp::Reverse(*n)))
                else {
                    self.proposers.remove(&gid);
                    return;
                };
                let Some(g) = self.groups.get(&gid) else {
                    self.proposers.remove(&gid);
                    return;
                };
                if !g.is_member() || g.epoch() + 1 != epoch {
                    self.proposers.remove(&gid);
                    return;
                }
                if let Some(p) = self.proposers.get_mut(&gid) {
                    p.stage = Stage::Fetch { cut, best };
                    p.started = self.now;
                }
                if g.ready >= cut {
                    self.build_and_accept(gid);
                } else {
                    let (from, gepoch) = (g.ready + 1, g.epoch());
                    self.ctx.stats.nacks_sent += 1;
                    self.ctx.send(
                        best,
                        Body::Nack {
                            group: gid,
                            epoch: gepoch,
                            positions: Some((from, cut)),
                            sender_seqs: None,
                        },
                    );
                }
            }
            Kind::Create | Kind::Orphan => {
                let any_member = p.promises.iter().any(|(_, _, s)| s.is_some());
                if any_member {
                    // The group has live members: join it instead, and give
                    // them time to finish their own flush before trying
                    // again (our higher ballots would preempt it).
                    self.proposers.remove(&gid);
                    if let Some(j) = self.joiners.get_mut(&gid) {
                        j.no_restart_until = self.now.plus(2 * self.cfg.failure_timeout);
                    }
                    return;
                }
                let (mut cut, mut next, mut protocol) = match &p.known {
                    Some(k) => (k.cut, k.next.clone(), k.view.protocol),
                    None => (0, Vec::new(), self.creation_version()),
                };
                if p.kind == Kind::Orphan {
                    // A restarter that was itself a member of the epoch it
                    // replaces keeps the senders' progress of the history it
                    // delivered there (beyond the decided cut): no message
                    // it delivered is ordered again.
                    if let Some(g) = self.groups.get(&gid)
                        && g.view.id.epoch() + 1 == epoch
                        && g.delivered >= cut
                    {
                        next = g.next.clone();
                        protocol = g.view.protocol;
                    }
                    // The restarted history starts at the base of the next
                    // era. Every promise of this epoch came without an
                    // accepted value, so no later epoch than the known one
                    // was decided, and every position any history assigned
                    // since is in the era of its cut or an earlier one
                    // (DESIGN.md 4.4): none is handed out again.
                    match position::next_era_base(cut) {
                        Some(base) => cut = base,
                        None => {
                            self.ctx.stats.eras_exhausted += 1;
                            self.proposers.remove(&gid);
                            return;
                        }
                    }
                }
                let proposal = Proposal {
                    view: View {
                        group: gid,
                        id: ViewId::first_of(epoch),
                        members: vec![self.ctx.me],
                        protocol,
                    },
                    cut,
                    old_members: Vec::new(),
                    next,
                    incarnations: vec![self.ctx.inc],
                };
                self.send_accepts(gid, proposal);
            }
        }
    }

    /// Flush leader holding everything up to the cut: compute the value.
    pub(super) fn build_and_accept(&mut self, gid: GroupId) {
        let Some(p) = self.proposers.get(&gid) else {
            return;
        };
        let Stage::Fetch { cut, .. } = p.stage else {
            return;
        };
        let epoch = p.epoch;
        // Each member that promised, with what it reported it delivered.
        let responders: Vec<(NodeId, &[SenderNext])> = p
            .promises
            .iter()
            .filter_map(|(n, _, s)| {
                s.as_ref()
                    .filter(|s| s.view.id.epoch() + 1 == epoch)
                    .map(|s| (*n, s.delivered.as_slice()))
            })
            .collect();
        let Some(g) = self.groups.get(&gid) else {
            return;
        };
        // The view and sender progress in force at the cut.
        let mut members = g.view.members.clone();
        let mut incs = g.incs.clone();
        let mut next = g.next.clone();
        let mut protocol = g.view.protocol;
        let mut pos = g.delivered + 1;
        while pos <= cut {
            match g.slot(pos) {
                Some(Slot::Data { sender, inc, seq }) => {
                    crate::group::set_next(&mut next, sender, inc, seq + 1);
                }
                Some(Slot::Join {
                    node,
                    inc,
                    first_seq,
                    ..
                }) => {
                    if !members.contains(&node) {
                        members.push(node);
                        incs.push(inc);
                    }
                    crate::group::set_next(&mut next, node, inc, first_seq);
                }
                Some(Slot::Leave { node }) => {
                    if let Some(i) = members.iter().position(|m| *m == node) {
                        members.remove(i);
                        incs.remove(i);
                    }
                }
                Some(Slot::Version(change)) => {
                    if change.switches() {
                        protocol = change.to;
                    }
                }
                Some(Slot::Skip) => {}
                None => return,
            }
            pos += 1;
        }
        let mut new_members = Vec::new();
        let mut new_incs = Vec::new();
        for (m, inc) in members.iter().zip(incs.iter()) {
            if responders.iter().any(|(n, _)| n == m) && self.peer_inc(*m) == *inc {
                new_members.push(*m);
                new_incs.push(*inc);
            }
        }
        // No member of the view in force at the cut answered as a member:
        // the leader's own Leave is within the cut and the others are gone
        // (crashed, restarted, or cut off and rejoining). The epoch is still
        // decided, with no member: the leader is excluded like everyone and
        // its leave ends, and the next joiner restarts the group from this
        // decision as an orphan.
        //
        // A sender's messages that every member of the new view delivered
        // already (members cut off together delivered them beyond an
        // earlier primary's cut, and the member that still lacked them is
        // not in the new view) are not ordered again: each member would skip
        // them as duplicates, and nobody would deliver their positions. The
        // new epoch resumes such a stream after the lowest mark reported.
        let reports: Vec<&[SenderNext]> = new_members
            .iter()
            .filter_map(|m| responders.iter().find(|(n, _)| n == m).map(|(_, d)| *d))
            .collect();
        if let Some((first, rest)) = reports.split_first() {
            for s in first.iter() {
                let all = rest
                    .iter()
                    .map(|d| delivered_of(d, s.node, s.incarnation))
                    .fold(s.next, u64::min);
                if all >= next_of(&next, s.node, s.incarnation) {
                    crate::group::set_next(&mut next, s.node, s.incarnation, all + 1);
                }
            }
        }
        let proposal = Proposal {
            view: View {
                group: gid,
                id: ViewId::first_of(epoch),
                members: new_members,
                protocol,
            },
            cut,
            old_members: members,
            next,
            incarnations: new_incs,
        };
        self.send_accepts(gid, proposal);
    }

    fn send_accepts(&mut self, gid: GroupId, proposal: Proposal) {
        let Some(p) = self.proposers.get_mut(&gid) else {
            return;
        };
        p.stage = Stage::Accept;
        p.started = self.now;
        p.accepts.clear();
        p.proposal = Some(proposal.clone());
        let (epoch, ballot) = (p.epoch, p.ballot);
        for n in self.cfg.nodes.clone() {
            self.ctx.send(
                n,
                Body::Accept {
                    group: gid,
                    epoch,
                    ballot,
                    proposal: Box::new(proposal.clone()),
                },
            );
        }
    }

    pub(super) fn on_accepted(&mut self, from: NodeId, gid: GroupId, epoch: u32, ballot: Ballot) {
        let Some(p) = self.proposers.get_mut(&gid) else {
            return;
        };
        if p.epoch != epoch || p.ballot != ballot || p.stage != Stage::Accept {
            return;
        }
        if !p.accepts.contains(&from) {
            p.accepts.push(from);
        }
        let Some(prop) = p.proposal.clone() else {
            return;
        };
        if p.accepts.len() < self.majority {
            return;
        }
        let accepts = p.accepts.clone();
        let p = &accepts;
        let members_ok = prop
            .view
            .members
            .iter()
            .all(|m| p.contains(m) || self.suspected(*m));
        if !members_ok {
            return;
        }
        self.proposers.remove(&gid);
        for n in self.cfg.nodes.clone() {
            self.ctx.send(
                n,
                Body::Decided {
                    group: gid,
                    epoch,
                    proposal: Box::new(prop.clone()),
                },
            );
        }
    }

    pub(super) fn on_decided(
        &mut self,
        from: NodeId,
        gid: GroupId,
        epoch: u32,
        proposal: Proposal,
    ) {
        let me = self.ctx.me;
        let acc = self.acceptors.entry(gid).or_default();
        if acc.decided.as_ref().is_none_or(|(e, _)| *e < epoch) {
            acc.decided = Some((epoch, proposal.clone()));
            acc.slots.retain(|e, _| *e > epoch);
            self.persist();
        }
        if self.proposers.get(&gid).is_some_and(|p| p.epoch <= epoch) {
            self.proposers.remove(&gid);
        }
        let mine = proposal
            .view
            .members
            .iter()
            .zip(proposal.incarnations.iter())
            .any(|(m, i)| *m == me && *i == self.ctx.inc);
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        match g.phase {
            Phase::Joining { .. } => {
                if let Some(j) = self.joiners.get_mut(&gid) {
                    j.known = Some((epoch, proposal.clone()));
                }
                // A delayed copy of a decision we already installed (or one
                // older than a view we installed since) arriving after we saw
                // ourselves partitioned: installing it would install a view
                // again, or go back in the chain.
                if mine && proposal.view.id > g.view.id {
                    // We created (or restarted) the group.
                    self.joiners.remove(&gid);
                    g.phase = Phase::Member;
                    g.view = proposal.view.clone();
                    g.incs = proposal.incarnations.clone();
                    g.reset_order(proposal.cut, proposal.next.clone());
                    g.senders.retain(|b| b.node == me);
                    // A flush decided while we were (re)joining still lists
                    // us: install it like the other members (same reason,
                    // same stream record, its coordinator sequences).
                    let flush = !proposal.old_members.is_empty();
                    let inc = self.ctx.inc;
                    if flush {
                        g.my_ordered = next_of(&g.next, me, inc).saturating_sub(1);
                    } else {
                        // A restarted group's record of our stream may
                        // predate messages we delivered and released in an
                        // earlier life: continue from the oldest one we
                        // still hold.
                        let own_next = (delivered_of(&g.delivered_hi, me, inc) + 1)
                            .max(next_of(&g.next, me, inc))
                            .max(g.own_first(me, inc));
                        crate::group::set_next(&mut g.next, me, inc, own_next);
                        g.my_ordered = own_next - 1;
                        // Own messages below that point are never ordered
                        // here (we delivered them in the replaced history,
                        // where the primary never had them): drop them, or
                        // they fill the window for ever.
                        g.release_own_below(me, inc, own_next);
                    }
                    g.my_ordered_at_check = g.my_ordered;
                    let coordinator = proposal.view.coordinator();
                    if coordinator == Some(me) {
                        g.take_over(proposal.cut);
                    }
                    self.ctx.stats.view_changes += 1;
                    self.ctx.stats.flush_installs += 1;
                    let reason = if flush {
                        Reason::Failed(
                            proposal
                                .old_members
                                .iter()
                                .copied()
                                .filter(|m| !proposal.view.members.contains(m))
                                .collect(),
                        )
                    } else {
                        Reason::Join(me)
                    };
                    let members = proposal.view.members.clone();
                    self.ctx.commands.push_back(Command::ViewChange {
                        view: proposal.view,
                        reason,
                        position: proposal.cut,
                    });
                    if flush {
                        g.resend_own(&mut self.ctx, &members, self.cfg.window);
                        if let Some(c) = coordinator
                            && c != me
                        {
                            let ready = g.ready;
                            g.ack_to(&mut self.ctx, c, gid, epoch, ready, self.now);
                        }
                    }
                    self.after_change(gid);
                }
            }
            Phase::Member => {
                if g.epoch() >= epoch {
                    return;
                }
                if g.epoch() + 1 == epoch && mine {
                    if g.ready >= proposal.cut {
                        self.install(gid, epoch, proposal);
                    } else if g.pending_install.is_none() {
                        let (f, e) = (g.ready + 1, g.epoch());
                        g.cap = g.cap.min(proposal.cut.max(g.delivered));
                        g.pending_install = Some(PendingInstall {
                            epoch,
                            proposal: proposal.clone(),
                        });
                        self.ctx.stats.nacks_sent += 1;
                        self.ctx.send(
                            from,
                            Body::Nack {
                                group: gid,
                                epoch: e,
                                positions: Some((f, proposal.cut)),
                                sender_seqs: None,
                            },
                        );
                    }
                } else {
                    // Excluded, or too far behind to catch up: start over.
                    self.go_partitioned(gid);
                }
            }
        }
    }

    /// Deliver the old epoch up to the cut, then install the new view.
    pub(super) fn install(&mut self, gid: GroupId, epoch: u32, proposal: Proposal) {
        let me = self.ctx.me;
        let inc = self.ctx.inc;
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        g.pending_install = None;
        g.pending_accept = None;
        g.cap = proposal.cut;
        // Every member of the new view holds everything up to the cut.
        g.stable = g.stable.max(proposal.cut);
        if g.deliver(&mut self.ctx) {
            self.removed(gid);
            return;
        }
        let failed: Vec<NodeId> = proposal
            .old_members
            .iter()
            .copied()
            .filter(|m| !proposal.view.members.contains(m))
            .collect();
        g.view = proposal.view.clone();
        g.incs = proposal.incarnations.clone();
        g.reset_order(proposal.cut, proposal.next.clone());
        g.my_ordered = next_of(&g.next, me, inc).saturating_sub(1);
        g.my_ordered_at_check = g.my_ordered;
        g.senders
            .retain(|b| proposal.view.members.contains(&b.node) || b.node == me);
        self.ctx.stats.view_changes += 1;
        self.ctx.stats.flush_installs += 1;
        self.ctx.commands.push_back(Command::ViewChange {
            view: proposal.view.clone(),
            reason: Reason::Failed(failed),
            position: proposal.cut,
        });
        let _ = epoch;
        if g.coordinator() == Some(me) {
            g.take_over(proposal.cut);
            for (m, i) in proposal
                .view
                .members
                .iter()
                .zip(proposal.incarnations.iter())
            {
                g.order_sender(&mut self.ctx, *m, *i);
            }
        }
        // Messages of ours the old epoch did not order go again.
        let members = proposal.view.members.clone();
        g.resend_own(&mut self.ctx, &members, self.cfg.window);
        if let Some(c) = g.coordinator()
            && c != me
        {
            let ready = g.ready;
            g.ack_to(
                &mut self.ctx,
                c,
                gid,
                proposal.view.id.epoch(),
                ready,
                self.now,
            );
        }
        self.after_change(gid);
    }
}
