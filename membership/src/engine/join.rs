//! Joining a group: join rounds, the sequencer's admission of a joiner, the
//! Welcome, and the rejoin after a partition.

use super::{Command, Engine, Kind};
use crate::error::JoinError;
use crate::group::{Group, Phase, WelcomeInfo, delivered_of, next_of};
use crate::message::{Body, Message, OrderEntry, Proposal, SenderNext};
use crate::types::{
    DeliveryMode, GroupId, NodeId, Payload, ProtocolVersion, Reason, Time, VersionRange, View,
    ViewId,
};

/// A join of one group in progress (a first join or a rejoin).
#[derive(Debug, Default)]
pub(super) struct Joiner {
    /// The nodes that answered this round's request with `NoGroup`.
    pub(super) no_group: Vec<NodeId>,
    /// The last decision of the group heard of, with its epoch.
    pub(super) known: Option<(u32, Proposal)>,
    /// Join rounds run.
    pub(super) rounds: u32,
    /// A promise showed a live member (which flushes the group and then
    /// admits us): no restart proposal before then, or our higher ballots
    /// would preempt its flush round after round.
    pub(super) no_restart_until: Time,
}

impl<P: Payload> Engine<P> {
    /// Join `group` (creating it if no configured node knows it). Completes
    /// asynchronously with a [`Command::ViewChange`] that includes this node.
    pub fn join(&mut self, now: Time, group: GroupId, mode: DeliveryMode) -> Result<(), JoinError> {
        self.now = self.now.max(now);
        self.ctx.now = self.now;
        if let Some(g) = self.groups.get(&group) {
            return if g.is_member() && g.leaving.is_none() {
                Ok(())
            } else {
                Err(JoinError::InProgress { group })
            };
        }
        let view = View {
            group,
            id: ViewId(0),
            members: Vec::new(),
            protocol: self.cfg.protocol.max,
        };
        let mut g = Group::new(group, mode, view, self.now);
        g.my_seq = self.left.seqs.remove(&group).unwrap_or(0);
        if let Some(left) = self.left.own.remove(&group) {
            // Continue from where this incarnation's delivery stood, as a
            // rejoin does: an orphan restart by us then starts after what we
            // delivered, not from an older decided cut (which would order
            // again messages we delivered, at positions we already used).
            g.view = left.view;
            g.reset_order(left.position, left.next);
            g.senders.extend(left.buf);
            g.delivered_hi.extend(left.delivered);
        }
        self.groups.insert(group, g);
        self.joiners.insert(group, Joiner::default());
        self.join_round(group);
        self.drain_loopback();
        Ok(())
    }

    pub(super) fn join_round(&mut self, gid: GroupId) {
        let me = self.ctx.me;
        let now = self.now;
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let Phase::Joining { rejoin, .. } = g.phase else {
            return;
        };
        g.phase = Phase::Joining {
            rejoin,
            last_request: now,
        };
        // Where our FIFO stream can resume: the sequencer orders us from the
        // larger of this and what the group already ordered of us.
        let next_seq = g.own_first(me, self.ctx.inc);
        let delivered = g.delivered_hi.clone();
        let position = g.delivered;
        let range = self.cfg.protocol;
        // Decide from the previous round's answers whether to create (or
        // restart) the group.
        let reachable = self.detector.reachable();
        if let Some(j) = self.joiners.get_mut(&gid) {
            j.rounds += 1;
            let answered: Vec<NodeId> = std::mem::take(&mut j.no_group);
            let known = j.known.clone();
            let known_local = self.acceptors.get(&gid).and_then(|a| a.decided.clone());
            if !self.proposers.contains_key(&gid)
                && 1 + answered.len() >= self.majority
                && now >= j.no_restart_until
            {
                // The latest decided value we know of, if any.
                let latest: Option<(u32, Proposal)> = match (known, known_local) {
                    (None, None) => None,
                    (Some((e, p)), Some((le, lp))) => Some(if le >= e { (le, lp) } else { (e, p) }),
                    (Some(k), None) | (None, Some(k)) => Some(k),
                };
                match latest {
                    None => self.start_proposer(gid, 1, Kind::Create, None),
                    Some((epoch, prop)) => {
                        // Every member of the last decided view either said it
                        // is not a member any more, or is unreachable: nobody
                        // is left to admit us, so restart the group. (A live
                        // member shows up in the promises and we back off.)
                        let all_gone = prop
                            .view
                            .members
                            .iter()
                            .all(|m| *m == me || answered.contains(m) || self.suspected(*m));
                        if all_gone && reachable >= self.majority {
                            self.start_proposer(gid, epoch + 1, Kind::Orphan, Some(prop));
                        }
                    }
                }
            }
        }
        for p in &self.detector.peers {
            self.ctx.commands.push_back(Command::Send {
                to: p.node,
                msg: Message {
                    incarnation: self.ctx.inc,
                    body: Body::JoinRequest {
                        group: gid,
                        range,
                        rejoin,
                        next_seq,
                        delivered: delivered.clone(),
                        position,
                    },
                },
            });
        }
    }

    pub(super) fn on_join_request(
        &mut self,
        from: NodeId,
        from_inc: u64,
        gid: GroupId,
        range: VersionRange,
        rejoin: bool,
        (next_seq, delivered, reached): (u64, Vec<SenderNext>, u64),
    ) {
        let me = self.ctx.me;
        let Some(g) = self.groups.get_mut(&gid) else {
            let known = self
                .acceptors
                .get(&gid)
                .and_then(|a| a.decided.as_ref().map(|(_, p)| Box::new(p.clone())));
            self.ctx.send(from, Body::NoGroup { group: gid, known });
            return;
        };
        if !g.is_member() {
            let known = self
                .acceptors
                .get(&gid)
                .and_then(|a| a.decided.as_ref().map(|(_, p)| Box::new(p.clone())));
            self.ctx.send(from, Body::NoGroup { group: gid, known });
            return;
        }
        if !g.is_sequencer() {
            // Our coordinator asks to join: it left the group on its side (it
            // saw itself partitioned) while we still count it, and nobody
            // sequences for us any more. A stale copy of an old request is
            // told apart by the coordinator's order records, which go on
            // every tick while it sequences. After a failure timeout without
            // them it counts as failed here, and a flush removes it.
            let coordinator = g.coordinator() == Some(from) && g.incs.first() == Some(&from_inc);
            if coordinator {
                let now = self.now;
                let heard = match g.coord_heard {
                    Some((n, t)) if n == from => t,
                    _ => {
                        g.coord_heard = Some((from, now));
                        now
                    }
                };
                if now.0.saturating_sub(heard.0) > self.cfg.failure_timeout {
                    g.count_gone(from, from_inc);
                }
            }
            // A retired sequencer (its own Leave ordered, not yet stable)
            // admits nobody, and nobody else sequences: a member that left
            // on its side (it saw itself partitioned) and asks to join again
            // never acks that Leave, which would stay unstable for ever.
            // After a failure timeout without its acks it counts as failed
            // here, and a flush removes it (its successor admits it again).
            let now = self.now;
            if let Some(seq) = g.seq.as_mut()
                && let Some(i) = g.view.members.iter().position(|m| *m == from)
                && g.incs.get(i) == Some(&from_inc)
            {
                let heard = match seq.acked_at.iter().find(|(n, _)| *n == from) {
                    Some((_, t)) => *t,
                    None => {
                        seq.acked_at.push((from, now));
                        now
                    }
                };
                if now.0.saturating_sub(heard.0) > self.cfg.failure_timeout {
                    g.count_gone(from, from_inc);
                }
            }
            return;
        }
        if g.cap != u64::MAX || g.leaving.is_some() {
            return;
        }
        self.ctx.versions.record(from, from_inc, range);
        // The version after everything ordered so far (an adjust-version
        // may be ordered but not yet delivered here).
        let active = g.seq.as_ref().map_or(g.view.protocol, |s| s.view.protocol);
        if !range.contains(active) {
            self.ctx
                .send(from, Body::JoinRefused { group: gid, active });
            return;
        }
        let now = self.now;
        let ft = self.cfg.failure_timeout;
        let stable = g.stable;
        let Some(seq) = g.seq.as_mut() else { return };
        let known_next = next_of(&seq.next, from, from_inc);
        if let Some(i) = seq.view.members.iter().position(|m| *m == from) {
            if seq.incs[i] != from_inc {
                // An older incarnation is still a member: the flush removes
                // it first, the joiner retries.
                return;
            }
            if let Some((_, w)) = seq.welcomes.iter().find(|(n, _)| *n == from) {
                if w.position <= stable {
                    let w = w.clone();
                    self.ctx.send(
                        from,
                        Body::Welcome {
                            view: Box::new(w.view),
                            position: w.position,
                            stable,
                            next: w.next,
                            incarnations: w.incs,
                            rejoin: w.rejoin,
                        },
                    );
                }
                return;
            }
            // A member of ours asks to join: it left the group on its side
            // (it saw itself partitioned, or gave up) while we still count
            // it. Its acks stop then; a request from an active member is a
            // stale copy, and its acks keep coming. After a failure timeout
            // of silence, remove it and admit it again, in one batch.
            if !seq.leased(now) {
                return;
            }
            let heard = match seq.acked_at.iter().find(|(n, _)| *n == from) {
                Some((_, t)) => *t,
                None => {
                    seq.acked_at.push((from, now));
                    now
                }
            };
            if now.0.saturating_sub(heard.0) <= ft {
                return;
            }
            seq.acked_at.retain(|(n, _)| *n != from);
            if g.order_control(&mut self.ctx, OrderEntry::Leave { node: from })
                .is_none()
            {
                return;
            }
        }
        // Resume the joiner's stream where both sides can: messages the group
        // ordered are not sent again (the joiner re-sends from the Welcome's
        // `next`), and messages the joiner released (delivered and stable in
        // a history this group lost, e.g. before an orphan restart) cannot be.
        //
        // What every member of the new view delivered already of the
        // joiner's stream is not ordered again: each would skip it as a
        // duplicate, so nobody would deliver its position (members cut off
        // together delivered it beyond the primary's cut, and the primary
        // that replaced them never ordered it). The sequencer knows what it
        // delivered itself, what the joiner and the members it admitted said
        // in their requests (anything they delivered since was ordered here,
        // so `known_next` covers it), and nothing of the others.
        if !g.seq.as_ref().is_some_and(|s| s.leased(now)) {
            // Not ordering now: the joiner asks again.
            return;
        }
        let hi = |v: &[SenderNext]| delivered_of(v, from, from_inc);
        let mut both = hi(&delivered).min(hi(&g.delivered_hi));
        if let Some(s) = g.seq.as_ref() {
            for m in s.view.members.iter().filter(|m| **m != me && **m != from) {
                both = both.min(
                    s.reported
                        .iter()
                        .find(|(n, _)| n == m)
                        .map_or(0, |(_, v)| hi(v)),
                );
            }
        }
        let both = both + 1;
        let first_seq = known_next.max(next_seq).max(both);
        // Positions grow along the joiner's whole history: it may have
        // delivered, in an older view of this era, positions above the cut
        // this history continued from (cut off with its sequencer). Its Join
        // goes above them, and the numbers in between hold nothing.
        if !g.order_skip_past(&mut self.ctx, reached) {
            return;
        }
        let Some(position) = g.order_control(
            &mut self.ctx,
            OrderEntry::Join {
                node: from,
                incarnation: from_inc,
                rejoin,
                first_seq,
            },
        ) else {
            return;
        };
        let Some(seq) = g.seq.as_mut() else { return };
        seq.reported.retain(|(n, _)| *n != from);
        seq.reported.push((from, delivered));
        // The admitted member's silence counts from now on: an ack heard
        // from an earlier membership (an older incarnation, or before a
        // Leave) says nothing of this one.
        seq.acked_at.retain(|(n, _)| *n != from);
        let w = WelcomeInfo {
            view: seq.view.clone(),
            position,
            next: seq.next.clone(),
            incs: seq.incs.clone(),
            rejoin,
            sent: false,
        };
        seq.welcomes.push((from, w));
        // The Welcome goes out once the Join is stable (`after_change`).
        self.after_change(gid);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_welcome(
        &mut self,
        from: NodeId,
        view: View,
        position: u64,
        _stable: u64,
        next: Vec<SenderNext>,
        incs: Vec<u64>,
        rejoin: bool,
    ) {
        let me = self.ctx.me;
        let gid = view.group;
        // The Welcome admits this incarnation (not an earlier life of this
        // node, whose Welcome was delayed past its restart).
        let admits_me = view
            .members
            .iter()
            .zip(&incs)
            .any(|(m, i)| *m == me && *i == self.ctx.inc);
        let Some(g) = self.groups.get_mut(&gid) else {
            // This incarnation was admitted, but gave the join up (or left)
            // before the Welcome came: it holds nothing of the group. Ask
            // the sequencer to order its Leave, or it stays in the view,
            // never acks, and the stable point never moves again.
            if admits_me {
                self.ctx.send(
                    from,
                    Body::LeaveRequest {
                        group: gid,
                        last_seq: 0,
                    },
                );
            }
            return;
        };
        if !matches!(g.phase, Phase::Joining { .. }) {
            return;
        }
        // A delayed copy of a Welcome we already installed (the sequencer
        // re-sends it until acknowledged) arriving after we saw ourselves
        // partitioned: installing it would install the same view twice.
        // The Welcome of the view we installed last, for this incarnation,
        // is acknowledged: our ack was lost, and the sequencer re-sends it
        // (and answers our requests with it) until it hears one. Then our
        // requests count as a silent member's, which it removes and admits
        // again.
        if view.id <= g.view.id {
            if view.id == g.view.id && admits_me {
                self.ctx.send(
                    from,
                    Body::Ack {
                        group: gid,
                        epoch: view.id.epoch(),
                        ready: position,
                    },
                );
            }
            return;
        }
        if !view.contains(me) || incs.len() != view.members.len() {
            return;
        }
        // A Welcome for an earlier life of this node admits that
        // incarnation, not us: the others count the old one as the member.
        if !admits_me {
            return;
        }
        // A Welcome at or below a position this incarnation delivered: the
        // sequencer ordered a copy of a request sent before a later stint
        // of ours (delayed or duplicated). Installing it would hand us
        // positions we already passed. Acknowledged as above, so that our
        // requests count as a silent member's: the sequencer removes us and
        // admits us again, above the position the new request reports.
        if position <= g.delivered {
            self.ctx.send(
                from,
                Body::Ack {
                    group: gid,
                    epoch: view.id.epoch(),
                    ready: position,
                },
            );
            return;
        }
        self.joiners.remove(&gid);
        self.proposers.remove(&gid);
        g.phase = Phase::Member;
        g.view = view.clone();
        g.incs = incs;
        g.reset_order(position, next);
        g.senders.retain(|b| b.node == me);
        g.my_ordered = next_of(&g.next, me, self.ctx.inc).saturating_sub(1);
        g.my_ordered_at_check = g.my_ordered;
        g.leaving = None;
        g.grace_until = self.now.plus(self.cfg.failure_timeout);
        self.ctx.stats.view_changes += 1;
        // The reason comes from the ordered entry (as at every other member),
        // not from our phase: the sequencer may have ordered an older request
        // of ours, sent before we saw ourselves partitioned (or the reverse).
        let reason = if rejoin {
            Reason::Merged
        } else {
            Reason::Join(me)
        };
        self.ctx.commands.push_back(Command::ViewChange {
            view: view.clone(),
            reason,
            position,
        });
        if let Some(c) = view.coordinator() {
            g.ack_to(&mut self.ctx, c, gid, view.id.epoch(), position, self.now);
        }
        g.resend_own(&mut self.ctx, &view.members, self.cfg.window);
        self.after_change(gid);
    }

    /// Sequencer: send the Welcomes whose Join is now stable.
    pub(super) fn send_due_welcomes(&mut self, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let stable = g.stable;
        let Some(seq) = g.seq.as_mut() else { return };
        for (n, w) in seq.welcomes.iter_mut() {
            if !w.sent && w.position <= stable {
                w.sent = true;
                self.ctx.send(
                    *n,
                    Body::Welcome {
                        view: Box::new(w.view.clone()),
                        position: w.position,
                        stable,
                        next: w.next.clone(),
                        incarnations: w.incs.clone(),
                        rejoin: w.rejoin,
                    },
                );
            }
        }
    }

    /// The group refused our join (its version is outside our range).
    pub(super) fn on_join_refused(&mut self, group: GroupId, active: ProtocolVersion) {
        if self.groups.get(&group).is_some_and(|g| !g.is_member()) {
            // Keep what a later join with this incarnation needs
            // (own stream, what was delivered), as for a leave.
            self.forget_group(group);
            self.joiners.remove(&group);
            self.ctx
                .commands
                .push_back(Command::JoinRefused { group, active });
        }
    }

    /// A node that is no member of the group answered our join request,
    /// with the latest decision it knows.
    pub(super) fn on_no_group(
        &mut self,
        from: NodeId,
        group: GroupId,
        known: Option<Box<Proposal>>,
    ) {
        if let Some(j) = self.joiners.get_mut(&group) {
            if !j.no_group.contains(&from) {
                j.no_group.push(from);
            }
            if let Some(p) = known
                && j.known.as_ref().is_none_or(|(e, _)| *e < p.view.id.epoch())
            {
                j.known = Some((p.view.id.epoch(), *p));
            }
        }
    }

    /// Stop being a member and ask to be admitted again (`Reason::Merged`),
    /// keeping our own messages the primary may not have ordered.
    pub(super) fn start_rejoin(&mut self, gid: GroupId) {
        let me = self.ctx.me;
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        g.phase = Phase::Joining {
            rejoin: true,
            last_request: self.now,
        };
        let next = g.next.clone();
        let delivered = g.delivered;
        // Own messages delivered here but perhaps never ordered by the
        // primary must survive to be sent again after the rejoin.
        let own = g
            .senders
            .iter()
            .position(|b| b.node == me)
            .map(|i| g.senders.swap_remove(i));
        g.senders.clear();
        g.reset_order(delivered, next);
        g.senders.extend(own);
        g.leaving = None;
        self.proposers.remove(&gid);
        self.joiners.insert(gid, Joiner::default());
    }
}
