//! Delivery: data positions to the application, Join, Leave and version
//! entries to the view, in the order and up to the limits the mode allows.

use super::Group;
use super::ring::Slot;
use super::senders::{find_buf, mark_delivered_at, next_of, set_next, set_next_at, skip_unordered};
use crate::engine::{Command, Ctx};
use crate::message::{Body, OrderEntries};
use crate::types::{Delivery, DeliveryMode, Payload, Reason};

impl<P: Payload> Group<P> {
    /// Whether delivery waits for the stable point to reach a position this
    /// member already holds: a view change in any mode, anything in Safe
    /// mode. Its ack then goes out at once, not after `batch / 8` more
    /// positions or on the next tick: the stable point, and so the
    /// delivery, waits on it.
    pub fn awaits_stable(&self) -> bool {
        let pos = self.delivered + 1;
        pos <= self.ready
            && pos > self.stable
            && (self.mode == DeliveryMode::Safe
                || matches!(
                    self.slot(pos),
                    Some(Slot::Join { .. } | Slot::Leave { .. } | Slot::Version(_))
                ))
    }

    /// Deliver every position that may be delivered. Returns `true` if a
    /// Leave of this member was delivered (the group is over for it).
    pub fn deliver(&mut self, ctx: &mut Ctx<P>) -> bool {
        self.advance_ready();
        self.deliver_ready(ctx)
    }

    /// Deliver the data positions from `delivered + 1` on, up to the first
    /// one that is not a data entry or may not be delivered yet: exactly what
    /// the loop of [`Group::deliver_ready`] does with them, in one pass over
    /// the ring with the sender lookups of the previous position remembered
    /// (each list holds a node at most once, so a remembered index whose node
    /// matches is the one a scan finds).
    #[inline]
    fn deliver_data_run(&mut self, ctx: &mut Ctx<P>) {
        let mut limit = self.ready.min(self.cap);
        if self.mode == DeliveryMode::Safe {
            limit = limit.min(self.stable);
        }
        let Some(start) = self.delivered.checked_add(1) else {
            return;
        };
        if start > limit || start < self.base {
            return;
        }
        let (group, view) = (self.id, self.view.id);
        let (mut next_hint, mut hi_hint) = (usize::MAX, usize::MAX);
        let mut hint = self.buf_hint;
        let mut pos = start;
        // A counter, not `zip`/`enumerate`: this form runs fewer instructions
        // per position (callgrind on the order bench).
        #[allow(clippy::explicit_counter_loop)]
        for slot in self.slots.range((start - self.base) as usize..) {
            let Some(Slot::Data { sender, inc, seq }) = *slot else {
                break;
            };
            self.delivered = pos;
            set_next_at(&mut self.next, &mut next_hint, sender, inc, seq + 1);
            if mark_delivered_at(&mut self.delivered_hi, &mut hi_hint, sender, inc, seq) {
                if let Some(p) =
                    find_buf(&self.senders, sender, inc, &mut hint).and_then(|b| b.get(seq))
                {
                    ctx.stats.delivered += 1;
                    ctx.commands.push_back(Command::Deliver(Delivery {
                        group,
                        view,
                        seq: pos,
                        sender,
                        sender_incarnation: inc,
                        sender_seq: seq,
                        payload: p.clone(),
                    }));
                }
            } else {
                ctx.stats.duplicates += 1;
            }
            if pos == limit {
                break;
            }
            pos += 1;
        }
        self.buf_hint = hint;
    }

    /// [`Group::deliver`] right after [`Group::advance_ready`].
    #[inline]
    pub fn deliver_ready(&mut self, ctx: &mut Ctx<P>) -> bool {
        // Nothing to deliver (the loop below would stop at its first
        // position) and nothing to release: the common case at a member
        // whose data arrives before its order entry, checked inline.
        if self.delivered >= self.ready.min(self.cap) && self.base > self.stable.min(self.delivered)
        {
            return false;
        }
        self.deliver_held(ctx)
    }

    /// [`Group::deliver_ready`] past its check.
    #[inline(never)]
    fn deliver_held(&mut self, ctx: &mut Ctx<P>) -> bool {
        let mut hint = usize::MAX;
        loop {
            self.deliver_data_run(ctx);
            let pos = self.delivered + 1;
            if pos > self.ready || pos > self.cap {
                break;
            }
            if self.mode == DeliveryMode::Safe && pos > self.stable {
                break;
            }
            let Some(slot) = self.slot(pos) else { break };
            // A view change (Join, Leave, version switch) is installed only
            // once every member of the view holds its entry, in either mode:
            // then any later flush of this epoch has it below its cut, so no
            // member (cut off or not) installs a view the primary does not.
            if pos > self.stable && !matches!(slot, Slot::Data { .. } | Slot::Skip) {
                break;
            }
            self.delivered = pos;
            match slot {
                Slot::Data { sender, inc, seq } => {
                    set_next(&mut self.next, sender, inc, seq + 1);
                    if self.mark_delivered(sender, inc, seq) {
                        if let Some(p) =
                            find_buf(&self.senders, sender, inc, &mut hint).and_then(|b| b.get(seq))
                        {
                            let payload = p.clone();
                            ctx.stats.delivered += 1;
                            ctx.commands.push_back(Command::Deliver(Delivery {
                                group: self.id,
                                view: self.view.id,
                                seq: pos,
                                sender,
                                sender_incarnation: inc,
                                sender_seq: seq,
                                payload,
                            }));
                        }
                    } else {
                        ctx.stats.duplicates += 1;
                    }
                }
                Slot::Join {
                    node,
                    inc,
                    rejoin,
                    first_seq,
                } => {
                    if !self.view.contains(node) {
                        self.view.members.push(node);
                        self.incs.push(inc);
                    }
                    let from = next_of(&self.next, node, inc);
                    set_next(&mut self.next, node, inc, first_seq);
                    skip_unordered(&mut self.senders, node, inc, from, first_seq);
                    self.view.id = self.view.id.next_change();
                    ctx.stats.view_changes += 1;
                    let reason = if rejoin {
                        Reason::Merged
                    } else {
                        Reason::Join(node)
                    };
                    ctx.commands.push_back(Command::ViewChange {
                        view: self.view.clone(),
                        reason,
                        position: pos,
                    });
                }
                Slot::Leave { node } => {
                    let was_coordinator = self.coordinator() == Some(ctx.me);
                    if let Some(i) = self.view.members.iter().position(|m| *m == node) {
                        self.view.members.remove(i);
                        self.incs.remove(i);
                    }
                    self.view.id = self.view.id.next_change();
                    ctx.stats.view_changes += 1;
                    ctx.commands.push_back(Command::ViewChange {
                        view: self.view.clone(),
                        reason: Reason::Leave(node),
                        position: pos,
                    });
                    if node == ctx.me {
                        // A leaving sequencer sends its last batch (which
                        // holds its own Leave) and the stable point that
                        // lets the others install the Leave before it goes.
                        self.publish(ctx);
                        return true;
                    }
                    if was_coordinator {
                        // The leaver installs its Leave view once it learns
                        // the entry is stable; it is no longer a target of
                        // the order records, so tell it here (a lost one is
                        // answered again when its LeaveRequest is retried).
                        ctx.send(
                            node,
                            Body::Order {
                                group: self.id,
                                epoch: self.view.id.epoch(),
                                first: pos + 1,
                                entries: OrderEntries::new(),
                                stable: pos,
                            },
                        );
                    }
                    if !was_coordinator && self.coordinator() == Some(ctx.me) {
                        self.take_over(pos);
                        self.skip_delivered_alone(ctx.me);
                    }
                }
                // Nothing to deliver (`OrderEntry::Skip`).
                Slot::Skip => {}
                Slot::Version(change) => {
                    // Adjust-version: the switch happens exactly here.
                    if change.switches() {
                        self.view.protocol = change.to;
                        self.view.id = self.view.id.next_change();
                        ctx.stats.view_changes += 1;
                        ctx.commands.push_back(Command::ViewChange {
                            view: self.view.clone(),
                            reason: Reason::AdjustVersion {
                                from: change.from,
                                to: change.to,
                            },
                            position: pos,
                        });
                    }
                    let me = (ctx.me, ctx.inc);
                    let (view, members) = (self.view.id, &self.view.members);
                    ctx.versions
                        .on_delivered(me, self.id, pos, view, members, change);
                }
            }
        }
        self.release();
        false
    }
}
