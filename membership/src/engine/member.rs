//! A member's duties: the per-drain batches, the per-tick checks, data and
//! order records, acks and NACKs, and what waits on newly ready data.

use super::{Command, Engine, Kind, Stage};
use crate::group::{Group, Phase, WelcomeInfo, next_of};
use crate::message::{Ballot, Body, OrderEntries, OrderEntry};
use crate::types::{GroupId, NodeId, Payload, Reason, Time};

impl<P: Payload> Engine<P> {
    pub(super) fn flush_batches(&mut self) {
        let ack_every = (self.cfg.batch as u64 / 8).max(1);
        let now = self.now;
        // Runs on every drain: no allocation here.
        for (gid, g) in self.groups.iter_mut() {
            if !g.is_member() {
                continue;
            }
            if g.seq.is_some() {
                g.publish(&mut self.ctx);
            }
            let ack = g.ack_point();
            if let Some(c) = g.coordinator()
                && c != self.ctx.me
                && (ack >= g.last_ack_sent + ack_every
                    || (ack > g.last_ack_sent && g.awaits_stable()))
            {
                g.last_ack_sent = ack;
                let epoch = g.epoch();
                g.ack_to(&mut self.ctx, c, *gid, epoch, ack, now);
            }
        }
        self.drain_loopback();
    }

    /// A member's duties at a tick, in this order: failure handling, the
    /// cumulative ack, gap NACKs, own messages the sequencer lacks, the leave
    /// retry, then (as sequencer) NACKs to senders, Welcome re-sends and the
    /// order heartbeat; last what waits on own messages just ordered, and
    /// the lease. A joiner only runs its join round when one is due.
    pub(super) fn tick_group(&mut self, gid: GroupId) {
        let now = self.now;
        let hb = self.cfg.heartbeat_interval;
        let Some(g) = self.groups.get(&gid) else {
            return;
        };
        if let Phase::Joining { last_request, .. } = g.phase {
            if now.0.saturating_sub(last_request.0) >= 2 * hb {
                self.join_round(gid);
            }
            return;
        }
        self.check_failures(gid);
        let Some(g) = self.groups.get(&gid) else {
            return;
        };
        let coord = g.coordinator();
        let epoch = g.epoch();
        self.refresh_ack(gid, coord, epoch);
        self.nack_gap(gid, epoch);
        let ordered_own = self.push_own(gid, coord);
        self.retry_leave(gid);
        self.nack_senders(gid, epoch);
        self.resend_welcomes(gid);
        self.order_heartbeat(gid, epoch);
        if ordered_own {
            self.after_change(gid);
        }
        if self
            .groups
            .get(&gid)
            .is_some_and(|g| g.is_member() && g.cap == u64::MAX)
        {
            self.request_lease(gid);
        }
    }

    /// Failure handling: the first member not believed failed leads the
    /// flush; the others wait their rank in failure timeouts first.
    fn check_failures(&mut self, gid: GroupId) {
        let now = self.now;
        let ft = self.cfg.failure_timeout;
        let me = self.ctx.me;
        let Some(g) = self.groups.get(&gid) else {
            return;
        };
        let faulty = self.faulty(g);
        let frozen_long = g
            .frozen_since
            .is_some_and(|t| now.0.saturating_sub(t.0) > 2 * ft);
        // A sequencer refused its lease for a failure timeout (acceptors
        // promised a later epoch to a flush or restart that never ended)
        // decides the next epoch itself.
        let unleased = g.cap == u64::MAX
            && g.seq.as_ref().is_some_and(|s| {
                !s.retired
                    && s.lease_next != Time(0)
                    && !s.leased(now)
                    && now.0.saturating_sub(s.lease_since.max(s.lease_until).0) > ft
            });
        let need = faulty.clone().next().is_some() || frozen_long || unleased;
        // This node's rank among the members not believed failed (0 if it
        // is not one of them).
        let rank = g
            .view
            .members
            .iter()
            .copied()
            .filter(|m| !faulty.clone().any(|f| f == *m))
            .position(|m| m == me)
            .unwrap_or(0) as u64;
        drop(faulty);
        let epoch = g.epoch();
        let since = g.suspect_since;
        if need {
            let since = since.unwrap_or(now);
            if let Some(g) = self.groups.get_mut(&gid) {
                g.suspect_since = Some(since);
            }
            let due = since.plus(rank * ft);
            let running = self.proposers.get(&gid).is_some_and(|p| p.epoch > epoch);
            if now >= due && !running {
                self.start_proposer(gid, epoch + 1, Kind::Flush, None);
            }
        } else if let Some(g) = self.groups.get_mut(&gid) {
            g.suspect_since = None;
        }
    }

    /// Cumulative ack refresh (lost acks, idle groups).
    fn refresh_ack(&mut self, gid: GroupId, coord: Option<NodeId>, epoch: u32) {
        let now = self.now;
        let hb = self.cfg.heartbeat_interval;
        let me = self.ctx.me;
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let ack = g.ack_point();
        if let Some(c) = coord
            && c != me
            && (ack > g.last_ack_sent || now.0.saturating_sub(g.last_ack_time.0) >= hb)
        {
            g.last_ack_sent = ack;
            g.ack_to(&mut self.ctx, c, gid, epoch, ack, now);
        }
    }

    /// Gap: something known is missing and nothing moved since last tick.
    fn nack_gap(&mut self, gid: GroupId, epoch: u32) {
        let now = self.now;
        let me = self.ctx.me;
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let target_of = |g: &Group<P>, round: usize| -> Option<NodeId> {
            let others: Vec<NodeId> = g
                .view
                .members
                .iter()
                .copied()
                .filter(|m| *m != me)
                .collect();
            if others.is_empty() {
                return None;
            }
            if round == 0
                && let Some(c) = g.coordinator()
                && c != me
            {
                return Some(c);
            }
            Some(others[round % others.len()])
        };
        let want = match (&g.pending_install, &g.pending_accept) {
            (Some(pi), _) => pi.proposal.cut,
            (None, Some(pa)) => pa.3,
            _ => g.hi_seen,
        };
        if g.ready < want && g.ready == g.ready_at_check {
            let target = match (&g.pending_install, &g.pending_accept) {
                (_, Some(pa)) if g.nack_round % 2 == 0 => Some(pa.2),
                _ => target_of(g, g.nack_round),
            };
            if let Some(t) = target {
                let to = want.min(g.ready + self.cfg.batch as u64 * 4);
                self.ctx.stats.nacks_sent += 1;
                self.ctx.send(
                    t,
                    Body::Nack {
                        group: gid,
                        epoch,
                        positions: Some((g.ready + 1, to)),
                        sender_seqs: None,
                    },
                );
                g.nack_round += 1;
                g.last_nack = now;
            }
        } else if g.ready != g.ready_at_check {
            g.nack_round = 0;
        }
        g.ready_at_check = g.ready;
    }

    /// Own messages that the sequencer does not seem to have: the sequencer
    /// orders them, a member sends them to it again. Returns whether this
    /// node (the sequencer) just ordered some.
    fn push_own(&mut self, gid: GroupId, coord: Option<NodeId>) -> bool {
        let me = self.ctx.me;
        let Some(g) = self.groups.get_mut(&gid) else {
            return false;
        };
        let mut ordered_own = false;
        if g.my_ordered < g.my_seq
            && g.my_ordered == g.my_ordered_at_check
            && g.cap == u64::MAX
            && let Some(c) = coord
        {
            {
                if c == me {
                    let inc = self.ctx.inc;
                    g.order_sender(&mut self.ctx, me, inc);
                    // Deliver (and, alone in the view, make stable) what
                    // was just ordered: no peer's ack may come to do it.
                    ordered_own = true;
                } else {
                    g.resend_own(&mut self.ctx, &[c], self.cfg.batch);
                }
            }
        }
        g.my_ordered_at_check = g.my_ordered;
        ordered_own
    }

    /// Leave retry: to every member (ourselves included, should we
    /// coordinate a new epoch now), because the coordinator may have
    /// ordered the Leave already (then any member that installed it
    /// answers with the stable point the leaver waits for), or may have
    /// left itself.
    fn retry_leave(&mut self, gid: GroupId) {
        let now = self.now;
        let hb = self.cfg.heartbeat_interval;
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if let Some(t) = g.leaving
            && now.0.saturating_sub(t.0) >= 2 * hb
        {
            g.leaving = Some(now);
            let last_seq = g.my_seq;
            for m in g.view.members.clone() {
                self.ctx.send(
                    m,
                    Body::LeaveRequest {
                        group: gid,
                        last_seq,
                    },
                );
            }
        }
    }

    /// Sequencer: gap NACKs to senders whose messages it lacks.
    fn nack_senders(&mut self, gid: GroupId, epoch: u32) {
        let me = self.ctx.me;
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if g.is_sequencer() && g.cap == u64::MAX {
            let mut nacks = Vec::new();
            if let Some(seq) = g.seq.as_ref() {
                for (m, inc) in seq.view.members.iter().zip(seq.incs.iter()) {
                    if *m == me {
                        continue;
                    }
                    let n = next_of(&seq.next, *m, *inc);
                    let held_beyond = g
                        .senders
                        .iter()
                        .find(|b| b.node == *m && b.inc == *inc)
                        .map(|b| b.base + b.msgs.len() as u64)
                        .unwrap_or(0);
                    let leave_last = seq
                        .leaves
                        .iter()
                        .find(|(l, _)| l == m)
                        .map(|(_, last)| *last)
                        .unwrap_or(0);
                    let hi = held_beyond.saturating_sub(1).max(leave_last);
                    if hi >= n && g.payload(*m, *inc, n).is_none() {
                        nacks.push((*m, *inc, n, hi));
                    }
                }
            }
            for (m, inc, from, to) in nacks {
                self.ctx.stats.nacks_sent += 1;
                self.ctx.send(
                    m,
                    Body::Nack {
                        group: gid,
                        epoch,
                        positions: None,
                        sender_seqs: Some((m, inc, from, to)),
                    },
                );
            }
        }
    }

    /// Sequencer (a retired one too): re-send welcomes not yet acknowledged
    /// (once their Join is stable): its Leave becomes stable only with the
    /// joiner's acks.
    fn resend_welcomes(&mut self, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if g.seq.is_some() && g.cap == u64::MAX {
            let stable = g.stable;
            let welcomes: Vec<(NodeId, WelcomeInfo)> = g
                .seq
                .as_ref()
                .map(|s| s.welcomes.clone())
                .unwrap_or_default();
            for (n, w) in welcomes.into_iter().filter(|(_, w)| w.position <= stable) {
                self.ctx.send(
                    n,
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
        }
    }

    /// An empty order record tells members where the order ends (a lost
    /// last record is noticed) and carries the stable point. A retired
    /// sequencer (it ordered its own Leave) keeps doing it until its Leave
    /// is stable and it goes.
    fn order_heartbeat(&mut self, gid: GroupId, epoch: u32) {
        let me = self.ctx.me;
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if g.seq.is_some() && g.cap == u64::MAX {
            g.publish(&mut self.ctx);
            if let Some(seq) = g.seq.as_ref() {
                let first = seq.next_pos;
                let stable = seq.stable;
                // Leavers still fetching up to their Leave need it too.
                let targets = seq
                    .view
                    .members
                    .iter()
                    .copied()
                    .chain(seq.departing.iter().map(|(n, _)| *n));
                for t in targets {
                    if t != me {
                        self.ctx.send(
                            t,
                            Body::Order {
                                group: gid,
                                epoch,
                                first,
                                entries: OrderEntries::new(),
                                stable,
                            },
                        );
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn on_data(
        &mut self,
        from: NodeId,
        group: GroupId,
        epoch: u32,
        sender: NodeId,
        sinc: u64,
        sseq: u64,
        ack: u64,
        payload: P,
    ) {
        let limit = (self.cfg.window as u64) * 4 + (self.cfg.batch as u64) * 4;
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        if !g.is_member() {
            return;
        }
        let new = g.store_payload(sender, sinc, sseq, payload, limit);
        if g.seq.is_some() && epoch == g.epoch() {
            g.on_ack(from, ack);
        }
        if !new {
            self.ctx.stats.duplicates += 1;
            // A sender re-sends what it sees unordered: a sequencer that
            // took over holds the payloads already and must order them now.
            if g.is_sequencer() {
                g.order_sender(&mut self.ctx, sender, sinc);
                self.after_change(group);
            }
            return;
        }
        if g.is_sequencer() {
            g.order_sender(&mut self.ctx, sender, sinc);
        }
        self.after_change(group);
    }

    pub(super) fn on_order(
        &mut self,
        from: NodeId,
        group: GroupId,
        epoch: u32,
        first: u64,
        entries: &[OrderEntry],
        stable: u64,
    ) {
        let me = self.ctx.me;
        let Some(g) = self.groups.get_mut(&group) else {
            // The coordinator of a view that lists us: we are no member.
            self.answer_not_member(from, group, epoch);
            return;
        };
        if !g.is_member() {
            return;
        }
        if epoch < g.epoch() {
            self.ctx.stats.stale += 1;
            // A sequencer of an epoch we replaced still orders: tell it.
            self.tell_decided(from, group, epoch);
            return;
        }
        if epoch > g.epoch() {
            // We missed a decision: ask for it (a round-0 prepare is answered
            // with `Decided` by anyone who knows it).
            let ask = g.epoch() + 1;
            self.ctx.send(
                from,
                Body::Prepare {
                    group,
                    epoch: ask,
                    ballot: Ballot::default(),
                },
            );
            return;
        }
        if entries.is_empty() {
            g.hi_seen = g.hi_seen.max(first.saturating_sub(1));
        } else {
            g.insert_entries(me, first, entries);
        }
        if g.coordinator() == Some(from) {
            g.coord_heard = Some((from, self.now));
        }
        if g.coordinator() == Some(from) || g.view.contains(from) {
            // Only the coordinator publishes a stable point; a retransmitting
            // member echoes one it learned from it.
            g.stable = g.stable.max(stable.min(g.hi_seen));
        }
        self.after_change(group);
    }

    /// A member's cumulative ack. A member of an epoch we replaced learns the
    /// decision; in the current epoch the sequencer counts it. A node that
    /// is no member any more answers as the coordinator it was, or, holding
    /// no state for the group and no farewell for that epoch, that it is no
    /// member.
    pub(super) fn on_ack(&mut self, from: NodeId, group: GroupId, epoch: u32, ready: u64) {
        let now = self.now;
        if let Some(g) = self.groups.get_mut(&group)
            && g.is_member()
        {
            if epoch < g.epoch() {
                // A member of an epoch we replaced: it missed the
                // decision (it may have been excluded from it).
                self.tell_decided(from, group, epoch);
            } else if g.epoch() == epoch
                && let Some(seq) = g.seq.as_mut()
            {
                match seq.acked_at.iter_mut().find(|(n, _)| *n == from) {
                    Some(a) => a.1 = now,
                    None => seq.acked_at.push((from, now)),
                }
                g.on_ack(from, ready);
                self.after_change(group);
            }
        } else if !self.answer_farewell(from, group, epoch) && !self.groups.contains_key(&group) {
            self.answer_not_member(from, group, epoch);
        }
    }

    /// A member of a view that lists this node sent it an order record or
    /// an ack of `epoch`, and this node holds no state for the group (it
    /// left, gave the join up, or was replaced and forgot it). Its node is
    /// heard, so nobody would suspect it: say so. If this node's acceptor
    /// knows a later decision the sender learns that (it installs it or
    /// learns it was removed); otherwise `NotMember` makes the sender count
    /// it as failed, and a flush removes it. A node with state for the group
    /// (joining again) answers nothing: the rules for a member that asks to
    /// join cover it. At most one answer per peer and group per heartbeat
    /// interval.
    pub(super) fn answer_not_member(&mut self, to: NodeId, group: GroupId, epoch: u32) {
        let now = self.now;
        let hb = self.cfg.heartbeat_interval;
        self.not_member_sent
            .retain(|(_, _, t)| now.0.saturating_sub(t.0) < hb);
        if self
            .not_member_sent
            .iter()
            .any(|(g, n, _)| *g == group && *n == to)
        {
            return;
        }
        self.not_member_sent.push((group, to, now));
        let later = self
            .acceptors
            .get(&group)
            .and_then(|a| a.decided.as_ref())
            .is_some_and(|(e, _)| *e > epoch);
        if later {
            self.tell_decided(to, group, epoch);
        } else {
            self.ctx.stats.not_member_sent += 1;
            self.ctx.send(to, Body::NotMember { group, epoch });
        }
    }

    /// A node that the view lists says it holds no state for the group: in
    /// this epoch, with this incarnation, it counts as failed (`Group::gone`)
    /// and a flush removes it. Its own Leave, once ordered (or asked for in
    /// answer to a Welcome it did not install), removes it instead.
    pub(super) fn on_not_member(
        &mut self,
        from: NodeId,
        from_inc: u64,
        group: GroupId,
        epoch: u32,
    ) {
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        if !g.is_member() || g.epoch() != epoch {
            return;
        }
        let Some(i) = g.view.members.iter().position(|m| *m == from) else {
            return;
        };
        if g.incs.get(i) != Some(&from_inc) {
            return;
        }
        // Its Leave is ordered; or it gave its join up before it installed
        // the Welcome, and answers that with a `LeaveRequest` (4.3): either
        // way a Leave removes it without a flush.
        if g.seq
            .as_ref()
            .is_some_and(|s| !s.view.contains(from) || s.welcomes.iter().any(|(n, _)| *n == from))
        {
            return;
        }
        self.ctx.stats.not_member_received += 1;
        g.count_gone(from, from_inc);
    }

    /// A NACK: retransmit the positions, or the sender sequence numbers, asked for.
    pub(super) fn on_nack(
        &mut self,
        from: NodeId,
        group: GroupId,
        positions: Option<(u64, u64)>,
        sender_seqs: Option<(NodeId, u64, u64, u64)>,
    ) {
        if let Some(g) = self.groups.get(&group)
            && g.is_member()
        {
            if let Some((a, b)) = positions {
                g.retransmit_positions(&mut self.ctx, from, a, b);
            }
            if let Some((s, inc, a, b)) = sender_seqs {
                g.retransmit_seqs(&mut self.ctx, from, s, inc, a, b);
            }
        }
    }

    /// Deliver and check what waits on data after a change to `gid`.
    pub(super) fn after_change(&mut self, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if !g.is_member() {
            return;
        }
        let ready = g.ready;
        g.advance_ready();
        if g.seq.is_some() && (g.ready != ready || g.view.members.len() == 1) {
            let me = self.ctx.me;
            g.on_ack(me, g.ack_point());
        }
        // `ready` is up to date (the ack changes nothing it depends on).
        if g.deliver_ready(&mut self.ctx) {
            self.removed(gid);
            return;
        }
        if let Some((epoch, ballot, leader, cut)) = g.pending_accept
            && g.ready >= cut
        {
            g.pending_accept = None;
            self.ctx.send(
                leader,
                Body::Accepted {
                    group: gid,
                    epoch,
                    ballot,
                },
            );
        }
        let g = if g
            .seq
            .as_ref()
            .is_some_and(|s| s.welcomes.iter().any(|(_, w)| !w.sent))
        {
            self.send_due_welcomes(gid);
            let Some(g) = self.groups.get_mut(&gid) else {
                return;
            };
            g
        } else {
            g
        };
        if let Some(pi) = g.pending_install.as_ref()
            && g.ready >= pi.proposal.cut
        {
            let pi = pi.clone();
            self.install(gid, pi.epoch, pi.proposal);
            return;
        }
        let first_lease = g
            .seq
            .as_ref()
            .is_some_and(|s| s.lease_next == Time(0) && !s.retired);
        if let Some(p) = self.proposers.get(&gid)
            && let Stage::Fetch { cut, .. } = p.stage
            && g.ready >= cut
        {
            self.build_and_accept(gid);
        }
        if first_lease {
            // A new sequencer asks for its lease at once, not at its next tick.
            self.request_lease(gid);
        }
    }

    /// This member lost the primary component: stop, report, rejoin later.
    pub(super) fn go_partitioned(&mut self, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if !g.is_member() {
            return;
        }
        self.ctx.stats.partitions += 1;
        self.ctx.commands.push_back(Command::ViewChange {
            view: g.view.clone(),
            reason: Reason::Partitioned,
            position: g.delivered,
        });
        self.ctx
            .commands
            .push_back(Command::Partitioned { group: gid });
        if g.leaving.is_some() {
            // The application asked to leave: the leave ends here (its Leave
            // may never be ordered, or be ordered without us hearing of it).
            // No rejoin.
            self.forget_group(gid);
            self.proposers.remove(&gid);
            self.joiners.remove(&gid);
            return;
        }
        self.start_rejoin(gid);
    }
}
