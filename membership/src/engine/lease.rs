//! The sequencer lease: a sequencer orders only while a strict majority of
//! acceptors promised no later epoch to anyone else.

use super::Engine;
use crate::message::Body;
use crate::types::{GroupId, NodeId, Payload, Time};

impl<P: Payload> Engine<P> {
    /// The lease a sequencer holds once a strict majority granted it.
    fn lease_len(&self) -> u64 {
        self.cfg.failure_timeout / 2
    }

    /// Sequencer: ask every acceptor for the ordering lease of its epoch when
    /// the next request is due (every `failure_timeout / 4`).
    #[cold]
    #[inline(never)]
    pub(super) fn request_lease(&mut self, gid: GroupId) {
        let now = self.now;
        let period = (self.cfg.failure_timeout / 4).max(1);
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let epoch = g.epoch();
        let Some(seq) = g.seq.as_mut() else { return };
        if seq.retired || now < seq.lease_next {
            return;
        }
        if seq.lease_next == Time(0) {
            seq.lease_since = now;
        }
        seq.lease_next = now.plus(period);
        seq.lease_sent = now;
        seq.lease_grants.clear();
        for &n in &self.cfg.nodes {
            self.ctx.send(
                n,
                Body::Lease {
                    group: gid,
                    epoch,
                    sent: now.0,
                },
            );
        }
    }

    /// Acceptor: grant the lease of `epoch` unless a later epoch of the group
    /// was decided, promised or prepared here.
    pub(super) fn on_lease(&mut self, from: NodeId, gid: GroupId, epoch: u32, sent: u64) {
        let until = self.now.plus(self.lease_len() + self.cfg.lease_drift);
        let acc = self.acceptors.entry(gid).or_default();
        if acc.decided.as_ref().is_some_and(|(e, _)| *e > epoch) {
            // Its epoch was replaced: it installs the decision or rejoins.
            self.tell_decided(from, gid, epoch);
            return;
        }
        if acc.prepared_hi > epoch || acc.slots.range(epoch + 1..).next().is_some() {
            return;
        }
        acc.lease = match acc.lease {
            // Keep the strictest of two live grants (a handover inside the
            // epoch): the earliest epoch, the latest end.
            Some((e, _, u)) if u > self.now => Some((e.min(epoch), from, u.max(until))),
            _ => Some((epoch, from, until)),
        };
        self.ctx.send(
            from,
            Body::LeaseGrant {
                group: gid,
                epoch,
                sent,
            },
        );
    }

    /// Sequencer: a grant for the current request. With a strict majority
    /// the lease runs until `sent` plus the lease length; a sequencer that
    /// had none orders what waited.
    pub(super) fn on_lease_grant(&mut self, from: NodeId, gid: GroupId, epoch: u32, sent: u64) {
        let now = self.now;
        let len = self.lease_len();
        let majority = self.majority;
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if !g.is_member() || g.epoch() != epoch {
            return;
        }
        let Some(seq) = g.seq.as_mut() else { return };
        if seq.lease_sent != Time(sent) || seq.lease_grants.contains(&from) {
            return;
        }
        seq.lease_grants.push(from);
        if seq.lease_grants.len() < majority {
            return;
        }
        let had = seq.leased(now);
        seq.lease_until = seq.lease_until.max(Time(sent).plus(len));
        if had || !seq.leased(now) {
            return;
        }
        let senders: Vec<(NodeId, u64)> = seq
            .view
            .members
            .iter()
            .copied()
            .zip(seq.incs.iter().copied())
            .collect();
        for (m, i) in senders {
            g.order_sender(&mut self.ctx, m, i);
        }
        g.order_leaves(&mut self.ctx);
        self.after_change(gid);
    }
}
