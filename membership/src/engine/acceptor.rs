//! The acceptor: every configured node votes on the epoch changes of every
//! group (single-decree Paxos per epoch), member or not, and persists its
//! promises and accepted values before it answers.

use std::collections::BTreeMap;

use super::{Command, Engine};
use crate::message::{Ballot, Body, MemberState, Proposal};
use crate::types::{GroupId, NodeId, Payload, Time};

/// Acceptor state of one group (paxos, one instance per epoch).
#[derive(Debug, Default)]
pub(super) struct Acceptor {
    pub(super) decided: Option<(u32, Proposal)>,
    pub(super) slots: BTreeMap<u32, (Ballot, Option<(Ballot, Proposal)>)>,
    /// The sequencer lease granted last: `(epoch, holder, until)`. Until
    /// then this acceptor promises no epoch above `epoch` to anyone but the
    /// holder (not durable: a restarted acceptor waits out a whole lease,
    /// see `Engine::promise_after`).
    pub(super) lease: Option<(u32, NodeId, Time)>,
    /// Highest epoch of a (non-query) Prepare seen, promised or held back:
    /// no lease is granted for an epoch below it.
    pub(super) prepared_hi: u32,
}

impl<P: Payload> Engine<P> {
    /// Queue the acceptor state for stable storage, ahead of whatever
    /// depends on it.
    pub(super) fn persist(&mut self) {
        let state = self.durable_state();
        self.ctx.commands.push_back(Command::Persist(state));
    }

    /// `to` still acts in epoch `their_epoch` of `gid`: send it the latest
    /// decision we know, so it installs the next epoch or, excluded from
    /// it (or too far behind), reports Partitioned and rejoins.
    pub(super) fn tell_decided(&mut self, to: NodeId, gid: GroupId, their_epoch: u32) {
        if let Some((de, dp)) = self.acceptors.get(&gid).and_then(|a| a.decided.as_ref())
            && *de > their_epoch
        {
            let body = Body::Decided {
                group: gid,
                epoch: *de,
                proposal: Box::new(dp.clone()),
            };
            self.ctx.send(to, body);
        }
    }

    pub(super) fn on_prepare(&mut self, from: NodeId, gid: GroupId, epoch: u32, ballot: Ballot) {
        let now = self.now;
        let acc = self.acceptors.entry(gid).or_default();
        if let Some((de, dp)) = &acc.decided
            && *de >= epoch
        {
            let body = Body::Decided {
                group: gid,
                epoch: *de,
                proposal: Box::new(dp.clone()),
            };
            self.ctx.send(from, body);
            return;
        }
        if ballot == Ballot::default() {
            return;
        }
        acc.prepared_hi = acc.prepared_hi.max(epoch);
        // A lease granted for an earlier epoch holds the promise back until
        // it ran out (the holder's own flush excepted: it stopped ordering
        // when it started it). The proposer re-sends its Prepare every tick.
        let held = acc.lease.is_some_and(|(e, holder, until)| {
            e < epoch && now < until && ballot.leader != holder.0
        });
        if epoch > 1 && (held || now < self.promise_after) {
            self.ctx.stats.lease_held_prepares += 1;
            return;
        }
        let slot = acc.slots.entry(epoch).or_insert((Ballot::default(), None));
        if ballot < slot.0 {
            let promised = slot.0;
            self.ctx.send(
                from,
                Body::Reject {
                    group: gid,
                    epoch,
                    promised,
                },
            );
            return;
        }
        let changed = ballot > slot.0;
        slot.0 = ballot;
        let accepted = slot.1.clone();
        if changed {
            // The promise below must survive a crash of this node.
            self.persist();
        }
        let mut state = None;
        if let Some(g) = self.groups.get_mut(&gid)
            && g.is_member()
            && g.epoch() + 1 == epoch
        {
            // Freeze: deliver nothing beyond what we report, order nothing.
            g.advance_ready();
            g.cap = g.cap.min(g.ready);
            if g.frozen_since.is_none() {
                g.frozen_since = Some(now);
            }
            if let Some(seq) = g.seq.as_mut() {
                // Entries already ordered are in our own slots (and reported
                // through `ready`); stop ordering new ones.
                let _ = seq;
            }
            g.publish(&mut self.ctx);
            state = Some(MemberState {
                view: g.view.clone(),
                ready: g.ready,
                delivered: g.delivered_hi.clone(),
            });
        }
        self.ctx.send(
            from,
            Body::Promise {
                group: gid,
                epoch,
                ballot,
                accepted: accepted.map(Box::new),
                state: state.map(Box::new),
            },
        );
    }

    pub(super) fn on_accept(
        &mut self,
        from: NodeId,
        gid: GroupId,
        epoch: u32,
        ballot: Ballot,
        proposal: Proposal,
    ) {
        let me = self.ctx.me;
        let now = self.now;
        let acc = self.acceptors.entry(gid).or_default();
        if let Some((de, dp)) = &acc.decided
            && *de >= epoch
        {
            let body = Body::Decided {
                group: gid,
                epoch: *de,
                proposal: Box::new(dp.clone()),
            };
            self.ctx.send(from, body);
            return;
        }
        let slot = acc.slots.entry(epoch).or_insert((Ballot::default(), None));
        if ballot < slot.0 {
            let promised = slot.0;
            self.ctx.send(
                from,
                Body::Reject {
                    group: gid,
                    epoch,
                    promised,
                },
            );
            return;
        }
        let changed = ballot > slot.0 || slot.1.as_ref().is_none_or(|(b, _)| *b != ballot);
        slot.0 = ballot;
        slot.1 = Some((ballot, proposal.clone()));
        if changed {
            // The Accepted below (now or once the data is in) counts towards
            // a decision: a restart must not forget it.
            self.persist();
        }
        if let Some(g) = self.groups.get_mut(&gid)
            && g.is_member()
            && g.epoch() + 1 == epoch
        {
            g.cap = g.cap.min(proposal.cut.max(g.delivered));
            if g.frozen_since.is_none() {
                g.frozen_since = Some(now);
            }
            if proposal.view.contains(me) && g.ready < proposal.cut {
                g.pending_accept = Some((epoch, ballot, from, proposal.cut));
                let (f, e) = (g.ready + 1, g.epoch());
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
                return;
            }
        }
        self.ctx.send(
            from,
            Body::Accepted {
                group: gid,
                epoch,
                ballot,
            },
        );
    }
}
