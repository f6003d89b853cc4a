//! Leaving a group: the leave request, the end of membership once the Leave
//! is delivered, and what a later join of the same incarnation needs.

use std::collections::BTreeMap;

use super::Engine;
use crate::error::LeaveError;
use crate::group::SenderBuf;
use crate::message::{Body, OrderEntries, SenderNext};
use crate::types::{GroupId, NodeId, Payload, Time, View};

/// What [`Engine::forget_group`] keeps of a left group: the own messages the
/// primary may not have ordered, what this incarnation delivered of every
/// sender's stream, and where its delivery stood (last view, position, and
/// each sender's next sequence there).
#[derive(Debug)]
pub(super) struct LeftOwn<P> {
    pub(super) buf: Option<SenderBuf<P>>,
    pub(super) delivered: Vec<SenderNext>,
    pub(super) view: View,
    pub(super) position: u64,
    pub(super) next: Vec<SenderNext>,
}

/// What this node keeps of the groups it left.
#[derive(Debug)]
pub(super) struct Left<P> {
    /// Own last sender sequence of groups this node left: a later join with
    /// the same incarnation continues the FIFO stream instead of reusing
    /// sequence numbers peers already delivered.
    pub(super) seqs: BTreeMap<GroupId, u64>,
    /// Own messages of groups this node left before the primary ordered
    /// them (a leave while cut off or rejoining), and what it delivered of
    /// each sender's stream: a later join with the same incarnation sends
    /// them again, so an accepted message is not lost by leaving and
    /// rejoining, and skips messages it delivered before it left that their
    /// senders send again (no duplication holds per incarnation, across a
    /// leave).
    pub(super) own: BTreeMap<GroupId, LeftOwn<P>>,
    /// Groups this node left as their sequencer: `(epoch, position)` of its
    /// own Leave. A member that missed the stable point of that Leave keeps
    /// acking its old coordinator; the answer lets it install the Leave.
    pub(super) farewells: BTreeMap<GroupId, (u32, u64)>,
}

impl<P> Left<P> {
    pub(super) fn new() -> Self {
        Left {
            seqs: BTreeMap::new(),
            own: BTreeMap::new(),
            farewells: BTreeMap::new(),
        }
    }
}

impl<P: Payload> Engine<P> {
    /// Leave `group` gracefully: an ordered Leave after this member's own
    /// messages; no flush, no timeout.
    pub fn leave(&mut self, now: Time, group: GroupId) -> Result<(), LeaveError> {
        self.now = self.now.max(now);
        self.ctx.now = self.now;
        let Some(g) = self.groups.get_mut(&group) else {
            return Err(LeaveError::NotMember { group });
        };
        if !g.is_member() {
            // Abandon a join in progress.
            self.forget_group(group);
            self.joiners.remove(&group);
            return Ok(());
        }
        if g.leaving.is_some() {
            return Err(LeaveError::InProgress { group });
        }
        g.leaving = Some(self.now);
        let last_seq = g.my_seq;
        if let Some(c) = g.coordinator() {
            self.ctx.send(c, Body::LeaveRequest { group, last_seq });
        }
        self.drain_loopback();
        Ok(())
    }

    /// An Ack to a node that is no member of the group any more: if it left
    /// as the coordinator of that epoch, the member still waits for the
    /// stable point of its Leave.
    pub(super) fn answer_farewell(&mut self, from: NodeId, group: GroupId, epoch: u32) -> bool {
        if let Some(&(e, pos)) = self.left.farewells.get(&group)
            && e == epoch
        {
            self.ctx.send(
                from,
                Body::Order {
                    group,
                    epoch,
                    first: pos + 1,
                    entries: OrderEntries::new(),
                    stable: pos,
                },
            );
            return true;
        }
        false
    }

    /// A member asks to leave (again). A member where its Leave is installed
    /// tells it the stable point; an active sequencer orders the Leave.
    pub(super) fn on_leave_request(&mut self, from: NodeId, group: GroupId, last_seq: u64) {
        if let Some(g) = self.groups.get(&group)
            && g.is_member()
            && !g.view.contains(from)
        {
            // Its Leave is installed here, so it is stable: the
            // leaver only waits to learn that.
            let body = Body::Order {
                group,
                epoch: g.epoch(),
                first: g.delivered + 1,
                entries: OrderEntries::new(),
                stable: g.stable,
            };
            self.ctx.send(from, body);
        } else if let Some(g) = self.groups.get_mut(&group)
            && g.is_member()
            && let Some(seq) = g.seq.as_mut()
            && !seq.retired
        {
            if seq.view.contains(from) && !seq.leaves.iter().any(|(n, _)| *n == from) {
                seq.leaves.push((from, last_seq));
            }
            g.order_leaves(&mut self.ctx);
            self.after_change(group);
        }
    }

    /// A Leave of this member was delivered. If the application asked to
    /// leave, the group is over for it. Otherwise the primary removed it
    /// (it asked to be re-admitted while the primary still counted it as a
    /// member, from a request that may have been stale): it joins again.
    pub(super) fn removed(&mut self, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if g.leaving.is_none() {
            self.start_rejoin(gid);
            return;
        }
        if g.seq.is_some() {
            self.left.farewells.insert(gid, (g.epoch(), g.delivered));
        }
        self.forget_group(gid);
    }

    /// Drop `gid`'s state after a leave, keeping what a later join with the
    /// same incarnation needs: the last own sender sequence, the own
    /// messages the primary may not have ordered, and what this node
    /// delivered of every sender's stream. A leave that ends without its
    /// Leave ordered (cut off, or while rejoining) leaves messages this node
    /// delivered in a minority that the primary never ordered; their senders
    /// send them again, and the next join must not deliver them twice.
    pub(super) fn forget_group(&mut self, gid: GroupId) {
        let (me, inc) = (self.ctx.me, self.ctx.inc);
        let Some(mut g) = self.groups.remove(&gid) else {
            return;
        };
        self.left.seqs.insert(gid, g.my_seq);
        let buf = g
            .senders
            .iter()
            .position(|b| b.node == me && b.inc == inc)
            .map(|i| g.senders.swap_remove(i))
            .filter(|b| b.msgs.iter().any(Option::is_some));
        let delivered = std::mem::take(&mut g.delivered_hi);
        self.left.own.insert(
            gid,
            LeftOwn {
                buf,
                delivered,
                view: g.view,
                position: g.delivered,
                next: g.next,
            },
        );
    }
}
