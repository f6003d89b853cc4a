//! The sequencer role, held by the coordinator: assigning positions under
//! a lease, batching and publishing the order, and the stable point.

use super::Group;
use super::ring::Slot;
use super::senders::{find_buf, next_of, set_next, skip_unordered};
use crate::engine::Ctx;
use crate::message::{Body, OrderEntry, SenderNext};
use crate::types::{NodeId, Payload, Time, View, position};

/// What a joiner is told, kept until it acknowledges.
#[derive(Debug, Clone)]
pub(crate) struct WelcomeInfo {
    pub view: View,
    pub position: u64,
    pub next: Vec<SenderNext>,
    pub incs: Vec<u64>,
    /// The ordered Join entry's `rejoin` flag (the reason every member
    /// reports: `Merged` or `Join(joiner)`).
    pub rejoin: bool,
    /// Sent once the Join is stable (so the joiner never installs a view
    /// the primary does not); re-sent on ticks until acknowledged.
    pub sent: bool,
}

/// The sequencer role, held by the coordinator.
#[derive(Debug)]
pub(crate) struct Sequencer {
    /// Next position to assign.
    pub next_pos: u64,
    /// The first position this history may not assign: the next era's base
    /// (`position::era_end`). A position of the next era is only an orphan
    /// restart's to hand out; assigning one here could use it twice.
    pub era_end: u64,
    /// The view after every entry ordered so far.
    pub view: View,
    pub incs: Vec<u64>,
    /// Per sender: next sender sequence to order.
    pub next: Vec<SenderNext>,
    /// Per member of `view`: highest contiguous position it holds.
    /// A leaver stays here until it holds its own Leave (see `departing`).
    pub acks: Vec<(NodeId, u64)>,
    /// Leavers and the position of their Leave: the stable point waits for
    /// them up to that position, so nothing a leaver still needs before
    /// its Leave is released by everyone else.
    pub departing: Vec<(NodeId, u64)>,
    pub stable: u64,
    pub published_stable: u64,
    /// Entries ordered but not yet sent, starting at `pending_first`.
    pub pending_first: u64,
    pub pending: Vec<OrderEntry>,
    /// Members waiting to leave once their messages up to `.1` are ordered.
    pub leaves: Vec<(NodeId, u64)>,
    /// Welcomes kept until the joiner acknowledges.
    pub welcomes: Vec<(NodeId, WelcomeInfo)>,
    /// Once it ordered its own Leave, it orders nothing more.
    pub retired: bool,
    /// When each member's last `Ack` arrived (recorded by the Engine): a
    /// member that went silent and asks to join again has left the group
    /// from its own point of view.
    pub acked_at: Vec<(NodeId, Time)>,
    /// What each member this sequencer admitted had delivered of every
    /// sender when it asked to join (its `JoinRequest::delivered`).
    pub reported: Vec<(NodeId, Vec<SenderNext>)>,
    /// It assigns positions only before this time: a strict majority of the
    /// configured nodes granted its lease for this epoch, and none of them
    /// promises a later epoch before the lease ran out (see `Engine`).
    pub lease_until: Time,
    /// Send time of the current lease request (`Time(0)`: none sent yet).
    pub lease_sent: Time,
    /// Who granted the current request.
    pub lease_grants: Vec<NodeId>,
    /// When the next request goes out.
    pub lease_next: Time,
    /// Since when it has held no lease (its start as sequencer, or when the
    /// last lease ran out).
    pub lease_since: Time,
}

impl Sequencer {
    /// Whether it may assign positions now.
    #[inline]
    pub fn leased(&self, now: Time) -> bool {
        now < self.lease_until
    }
}

impl<P: Payload> Group<P> {
    /// Whether this member's coordinator role is active.
    #[inline]
    pub fn is_sequencer(&self) -> bool {
        self.seq.as_ref().is_some_and(|s| !s.retired)
    }

    /// Become the sequencer after the previous one left at `pos`.
    pub fn take_over(&mut self, pos: u64) {
        let acks = self
            .view
            .members
            .iter()
            .map(|m| (*m, self.stable))
            .collect();
        self.seq = Some(Sequencer {
            next_pos: pos + 1,
            era_end: position::era_end(pos),
            view: self.view.clone(),
            incs: self.incs.clone(),
            next: self.next.clone(),
            acks,
            departing: Vec::new(),
            stable: self.stable,
            published_stable: self.stable,
            pending_first: pos + 1,
            pending: Vec::new(),
            leaves: Vec::new(),
            welcomes: Vec::new(),
            retired: false,
            acked_at: Vec::new(),
            reported: Vec::new(),
            lease_until: Time(0),
            lease_sent: Time(0),
            lease_grants: Vec::new(),
            lease_next: Time(0),
            lease_since: Time(0),
        });
    }

    /// A member that took the sequencer role over at a Leave and is alone
    /// in its view: what it delivered itself of any sender's stream is not
    /// ordered again. It is every member of the view, so nobody would
    /// deliver those positions (the leaver, which admitted their
    /// re-sending sender and still lacked them, left before ordering them).
    /// Payloads skipped this way are dropped when nothing older in their
    /// ring was ordered; otherwise with the next release.
    pub fn skip_delivered_alone(&mut self, me: NodeId) {
        let Some(seq) = self.seq.as_mut() else { return };
        if seq.view.members.as_slice() != [me] {
            return;
        }
        for d in &self.delivered_hi {
            let from = next_of(&seq.next, d.node, d.incarnation);
            if d.next < from {
                continue;
            }
            set_next(&mut seq.next, d.node, d.incarnation, d.next + 1);
            // The member-side record too: a later flush or sequencer starts
            // from it, and the skipped payloads may be gone.
            set_next(&mut self.next, d.node, d.incarnation, d.next + 1);
            skip_unordered(&mut self.senders, d.node, d.incarnation, from, d.next + 1);
            if d.node == me {
                self.my_ordered = self.my_ordered.max(d.next);
            }
        }
    }

    /// Sequencer: order whatever of `sender`'s messages is next and held.
    pub fn order_sender(&mut self, ctx: &mut Ctx<P>, sender: NodeId, inc: u64) {
        let Some(seq) = self.seq.as_mut() else { return };
        if seq.retired || self.cap != u64::MAX || !seq.leased(ctx.now) {
            return;
        }
        let Some(mi) = seq.view.members.iter().position(|m| *m == sender) else {
            return;
        };
        if seq.incs[mi] != inc {
            return;
        }
        let Some(buf) = find_buf(&self.senders, sender, inc, &mut self.buf_hint) else {
            return;
        };
        let mut n = next_of(&seq.next, sender, inc);
        let start = n;
        let room = seq.era_end.saturating_sub(seq.next_pos);
        while buf.get(n).is_some() && n - start < room {
            n += 1;
        }
        if n == start {
            if room == 0 && buf.get(n).is_some() {
                ctx.stats.era_full += 1;
            }
            return;
        }
        let count = n - start;
        let first_pos = seq.next_pos;
        set_next(&mut seq.next, sender, inc, n);
        seq.next_pos += count;
        ctx.stats.ordered += count;
        // Merge with the previous run of the same sender when contiguous.
        let mut merged = false;
        if let Some(OrderEntry::Data {
            sender: s,
            incarnation: i,
            first_seq,
            count: c,
        }) = seq.pending.last_mut()
            && *s == sender
            && *i == inc
            && *first_seq + u64::from(*c) == start
            && u64::from(*c) + count <= u64::from(u32::MAX)
        {
            *c += count as u32;
            merged = true;
        }
        if !merged {
            if seq.pending.is_empty() {
                seq.pending_first = first_pos;
            }
            seq.pending.push(OrderEntry::Data {
                sender,
                incarnation: inc,
                first_seq: start,
                count: count as u32,
            });
        }
        let _ = self.insert_data_run(first_pos, sender, inc, start, count);
        if sender == ctx.me {
            self.my_ordered = self.my_ordered.max(n - 1);
        }
        self.hi_seen = self.hi_seen.max(first_pos + count - 1);
        if self
            .seq
            .as_ref()
            .is_some_and(|s| s.pending.len() >= ctx.batch)
        {
            self.publish(ctx);
        }
        if self.seq.as_ref().is_some_and(|s| !s.leaves.is_empty()) {
            self.order_leaves(ctx);
        }
    }

    /// Sequencer: order the Leave of members whose messages are all ordered.
    pub fn order_leaves(&mut self, ctx: &mut Ctx<P>) {
        loop {
            let Some(seq) = self.seq.as_mut() else { return };
            if seq.retired
                || self.cap != u64::MAX
                || !seq.leased(ctx.now)
                || seq.next_pos >= seq.era_end
            {
                return;
            }
            let Some(i) = seq.leaves.iter().position(|(node, last)| {
                seq.view
                    .members
                    .iter()
                    .position(|m| m == node)
                    .is_some_and(|mi| next_of(&seq.next, *node, seq.incs[mi]) > *last)
            }) else {
                return;
            };
            let (node, _) = seq.leaves.remove(i);
            self.order_control(ctx, OrderEntry::Leave { node });
        }
    }

    /// Sequencer: make the next position the first above `last`, with one
    /// `OrderEntry::Skip` over the positions in between (none if it is
    /// there already), leaving room for one more entry in the era. Used
    /// before the Join of a member that delivered up to `last` (DESIGN.md
    /// 4.4, "a minority's deliveries beyond a flush's cut"). `false` if it
    /// may not order now, or `last` is at or past its era's last position
    /// (the joiner is not admitted into a history below what it delivered).
    pub fn order_skip_past(&mut self, ctx: &mut Ctx<P>, last: u64) -> bool {
        let Some(seq) = self.seq.as_mut() else {
            return false;
        };
        if !seq.leased(ctx.now) {
            return false;
        }
        if last < seq.next_pos {
            return true;
        }
        if last >= seq.era_end {
            // Delivered in a later era: a history that replaced this one.
            return false;
        }
        if last + 1 == seq.era_end {
            ctx.stats.era_full += 1;
            return false;
        }
        let first = seq.next_pos;
        let Ok(count) = u32::try_from(last + 1 - first) else {
            return false;
        };
        seq.next_pos = last + 1;
        if seq.pending.is_empty() {
            seq.pending_first = first;
        }
        seq.pending.push(OrderEntry::Skip { count });
        for pos in first..=last {
            let _ = self.insert_slot(pos, Slot::Skip);
        }
        self.hi_seen = self.hi_seen.max(last);
        true
    }

    /// Sequencer: order a Join or Leave entry. Returns its position.
    pub fn order_control(&mut self, ctx: &mut Ctx<P>, entry: OrderEntry) -> Option<u64> {
        let seq = self.seq.as_mut()?;
        if !seq.leased(ctx.now) {
            return None;
        }
        if seq.next_pos >= seq.era_end {
            ctx.stats.era_full += 1;
            return None;
        }
        let pos = seq.next_pos;
        seq.next_pos += 1;
        if seq.pending.is_empty() {
            seq.pending_first = pos;
        }
        seq.pending.push(entry);
        let slot = match entry {
            OrderEntry::Join {
                node,
                incarnation,
                rejoin,
                first_seq,
            } => {
                seq.view.members.push(node);
                seq.incs.push(incarnation);
                seq.view.id = seq.view.id.next_change();
                // A Join right after a Leave of the same node (re-admission)
                // supersedes it: the new member acks from `pos`.
                seq.departing.retain(|(m, _)| *m != node);
                seq.acks.retain(|(m, _)| *m != node);
                seq.acks.push((node, pos));
                let from = next_of(&seq.next, node, incarnation);
                set_next(&mut seq.next, node, incarnation, first_seq);
                skip_unordered(&mut self.senders, node, incarnation, from, first_seq);
                Slot::Join {
                    node,
                    inc: incarnation,
                    rejoin,
                    first_seq,
                }
            }
            OrderEntry::Leave { node } => {
                if let Some(i) = seq.view.members.iter().position(|m| *m == node) {
                    seq.view.members.remove(i);
                    seq.incs.remove(i);
                }
                seq.view.id = seq.view.id.next_change();
                // A joiner that never acknowledged its Welcome never
                // installed a view here: it needs nothing up to its Leave,
                // so it does not hold the stable point back.
                let unwelcomed = seq.welcomes.iter().any(|(m, _)| *m == node);
                if node == ctx.me || unwelcomed {
                    seq.acks.retain(|(m, _)| *m != node);
                } else {
                    seq.departing.retain(|(m, _)| *m != node);
                    seq.departing.push((node, pos));
                }
                seq.welcomes.retain(|(m, _)| *m != node);
                seq.leaves.retain(|(m, _)| *m != node);
                if seq.view.coordinator() != Some(ctx.me) {
                    seq.retired = true;
                }
                Slot::Leave { node }
            }
            OrderEntry::Version(change) => {
                if change.switches() {
                    seq.view.protocol = change.to;
                    seq.view.id = seq.view.id.next_change();
                }
                Slot::Version(change)
            }
            OrderEntry::Data { .. } | OrderEntry::Skip { .. } => return None,
        };
        let _ = self.insert_slot(pos, slot);
        self.hi_seen = self.hi_seen.max(pos);
        Some(pos)
    }

    /// Sequencer: send pending entries (and the stable point) to the members.
    /// One shared record for every target, and the targets read from the
    /// ordering view in place: publishing allocates nothing.
    pub fn publish(&mut self, ctx: &mut Ctx<P>) {
        let Some(seq) = self.seq.as_mut() else { return };
        if seq.pending.is_empty() && seq.stable <= seq.published_stable {
            return;
        }
        let first = if seq.pending.is_empty() {
            seq.next_pos
        } else {
            seq.pending_first
        };
        let entries = ctx.records.share(&mut seq.pending);
        seq.published_stable = seq.stable;
        let epoch = self.view.id.epoch();
        let stable = seq.stable;
        if seq.retired {
            // Nothing more to order; the next coordinator takes over when it
            // delivers the Leave.
            seq.leaves.clear();
        }
        // Send to the ordering view plus anyone who just left (they need
        // their own Leave entry), each once.
        let seq = &*seq;
        let leavers = entries.iter().enumerate().filter_map(|(k, e)| match e {
            OrderEntry::Leave { node }
                if !seq.view.members.contains(node)
                    && !seq.departing.iter().any(|(n, _)| n == node)
                    && !entries[..k]
                        .iter()
                        .any(|x| matches!(x, OrderEntry::Leave { node: m } if m == node)) =>
            {
                Some(*node)
            }
            _ => None,
        });
        let targets = seq
            .view
            .members
            .iter()
            .copied()
            .chain(seq.departing.iter().map(|(n, _)| *n))
            .chain(leavers);
        for to in targets {
            if to == ctx.me {
                continue;
            }
            ctx.send(
                to,
                Body::Order {
                    group: self.id,
                    epoch,
                    first,
                    entries: entries.clone(),
                    stable,
                },
            );
        }
    }

    /// Sequencer: a member's cumulative ack.
    pub fn on_ack(&mut self, from: NodeId, ready: u64) {
        let own_ready = self.ack_point();
        let me_pos = self.coordinator();
        let Some(seq) = self.seq.as_mut() else { return };
        if seq.welcomes.is_empty() && seq.departing.is_empty() {
            // The common case, in one pass over the acks: raise the first
            // entry of `from` and the first of the coordinator (as the two
            // lookups below do), then take the minimum.
            let (mut from_done, mut me_done) = (false, me_pos.is_none());
            let mut min: Option<u64> = None;
            for a in seq.acks.iter_mut() {
                if !from_done && a.0 == from {
                    a.1 = a.1.max(ready);
                    from_done = true;
                }
                if !me_done && Some(a.0) == me_pos {
                    a.1 = a.1.max(own_ready);
                    me_done = true;
                }
                min = Some(min.map_or(a.1, |m| m.min(a.1)));
            }
            let min = min.unwrap_or(own_ready);
            if min > seq.stable {
                seq.stable = min;
                self.stable = self.stable.max(min);
            }
            return;
        }
        if let Some(a) = seq.acks.iter_mut().find(|(m, _)| *m == from) {
            a.1 = a.1.max(ready);
        }
        if let Some(me) = me_pos
            && let Some(a) = seq.acks.iter_mut().find(|(m, _)| *m == me)
        {
            a.1 = a.1.max(own_ready);
        }
        if !seq.welcomes.is_empty() {
            seq.welcomes.retain(|(n, _)| *n != from);
        }
        // A leaver that holds its own Leave no longer holds the stable
        // point back.
        if !seq.departing.is_empty() {
            let acks = &mut seq.acks;
            seq.departing.retain(|(n, p)| {
                let done = acks.iter().find(|(m, _)| m == n).is_none_or(|a| a.1 >= *p);
                if done {
                    acks.retain(|(m, _)| m != n);
                }
                !done
            });
        }
        let min = seq.acks.iter().map(|a| a.1).min().unwrap_or(own_ready);
        if min > seq.stable {
            seq.stable = min;
            self.stable = self.stable.max(min);
        }
    }
}
