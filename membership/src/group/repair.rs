//! Repair: acks to the coordinator, answers to NACKs (entries and
//! payloads sent again) and the re-sending of own unordered messages.

use super::Group;
use super::ring::Slot;
use super::senders::next_of;
use crate::engine::Ctx;
use crate::message::{Body, OrderEntry};
use crate::types::{GroupId, NodeId, Payload, Time};

impl<P: Payload> Group<P> {
    /// Answer a NACK for positions `from..=to` with entries and payloads held.
    pub fn retransmit_positions(&self, ctx: &mut Ctx<P>, to_node: NodeId, from: u64, to: u64) {
        let from = from.max(self.base);
        let to = to.min(from.saturating_add(ctx.batch as u64 * 4));
        // Built in the Engine's scratch vector, then shared as a pooled
        // record: a retransmission allocates nothing either.
        let mut entries = std::mem::take(&mut ctx.scratch_entries);
        entries.clear();
        let mut first = from;
        let epoch = self.epoch();
        let mut pos = from;
        while pos <= to {
            let Some(slot) = self.slot(pos) else {
                break;
            };
            match slot {
                Slot::Data { sender, inc, seq } => {
                    if let Some(p) = self.payload(sender, inc, seq) {
                        ctx.stats.retransmissions += 1;
                        ctx.send(
                            to_node,
                            Body::Data {
                                group: self.id,
                                epoch,
                                sender,
                                sender_incarnation: inc,
                                sender_seq: seq,
                                ack: self.ack_point(),
                                payload: p.clone(),
                            },
                        );
                    }
                    entries.push(OrderEntry::Data {
                        sender,
                        incarnation: inc,
                        first_seq: seq,
                        count: 1,
                    });
                }
                Slot::Join {
                    node,
                    inc,
                    rejoin,
                    first_seq,
                } => entries.push(OrderEntry::Join {
                    node,
                    incarnation: inc,
                    rejoin,
                    first_seq,
                }),
                Slot::Leave { node } => entries.push(OrderEntry::Leave { node }),
                Slot::Version(change) => entries.push(OrderEntry::Version(change)),
                Slot::Skip => match entries.last_mut() {
                    Some(OrderEntry::Skip { count }) if *count < u32::MAX => *count += 1,
                    _ => entries.push(OrderEntry::Skip { count: 1 }),
                },
            }
            pos += 1;
        }
        if entries.is_empty() {
            first = pos;
        }
        if !entries.is_empty() {
            ctx.stats.retransmissions += 1;
            let record = ctx.records.share(&mut entries);
            ctx.send(
                to_node,
                Body::Order {
                    group: self.id,
                    epoch,
                    first,
                    entries: record,
                    stable: self.stable,
                },
            );
        }
        ctx.scratch_entries = entries;
    }

    /// Answer a NACK for unordered payloads of one sender.
    pub fn retransmit_seqs(
        &self,
        ctx: &mut Ctx<P>,
        to_node: NodeId,
        sender: NodeId,
        inc: u64,
        from: u64,
        to: u64,
    ) {
        let to = to.min(from.saturating_add(ctx.batch as u64 * 4));
        let epoch = self.epoch();
        for s in from..=to {
            if let Some(p) = self.payload(sender, inc, s) {
                ctx.stats.retransmissions += 1;
                ctx.send(
                    to_node,
                    Body::Data {
                        group: self.id,
                        epoch,
                        sender,
                        sender_incarnation: inc,
                        sender_seq: s,
                        ack: self.ack_point(),
                        payload: p.clone(),
                    },
                );
            }
        }
    }

    /// Acknowledges to coordinator `c` that this member holds the order of
    /// `epoch` up to `ready`, and restarts the clock of the periodic ack.
    pub fn ack_to(
        &mut self,
        ctx: &mut Ctx<P>,
        c: NodeId,
        gid: GroupId,
        epoch: u32,
        ready: u64,
        now: Time,
    ) {
        self.last_ack_time = now;
        ctx.send(
            c,
            Body::Ack {
                group: gid,
                epoch,
                ready,
            },
        );
    }

    /// Send own messages not yet ordered (after an epoch change or a rejoin,
    /// or when they seem lost) to `targets`.
    pub fn resend_own(&self, ctx: &mut Ctx<P>, targets: &[NodeId], limit: usize) {
        let Some(buf) = self
            .senders
            .iter()
            .find(|b| b.node == ctx.me && b.inc == ctx.inc)
        else {
            return;
        };
        let from = next_of(&self.next, ctx.me, ctx.inc)
            .max(self.my_ordered + 1)
            .max(buf.base);
        let epoch = self.epoch();
        let mut sent = 0;
        for s in from..buf.base + buf.msgs.len() as u64 {
            if sent >= limit {
                break;
            }
            if let Some(p) = buf.get(s) {
                sent += 1;
                for to in targets {
                    if *to == ctx.me {
                        continue;
                    }
                    ctx.send(
                        *to,
                        Body::Data {
                            group: self.id,
                            epoch,
                            sender: ctx.me,
                            sender_incarnation: ctx.inc,
                            sender_seq: s,
                            ack: self.ack_point(),
                            payload: p.clone(),
                        },
                    );
                }
            }
        }
    }
}
