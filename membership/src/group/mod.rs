//! Per-group state of one member: the view, the order ring, the sender
//! buffers, the sequencer role, delivery and retransmission.
//!
//! Positions form one sequence along the group's history. `slots[i]` holds
//! the order entry of position `base + i`; payloads live in per-sender rings
//! indexed by sender sequence, so a payload that arrives before its order
//! entry (the common case: data goes straight from the sender) is kept until
//! the entry names it, and nothing is copied.
//!
//! The [`Group`] methods are spread over one file per concern:
//! `ring` (the order ring), `senders` (the per-sender payload rings and
//! `SenderNext` lists), `deliver` (delivery), `sequencer` (the coordinator's
//! ordering role), `repair` (acks, NACK answers, re-sending) and, in debug
//! builds, `validate` (the ordering invariants, checked).

use std::collections::VecDeque;

use crate::message::SenderNext;
use crate::types::{DeliveryMode, GroupId, NodeId, Payload, Time, View, ViewId};

mod deliver;
mod repair;
mod ring;
mod senders;
mod sequencer;
#[cfg(any(test, debug_assertions))]
mod validate;

pub(crate) use ring::Slot;
pub(crate) use senders::{SenderBuf, delivered_of, next_of, set_next};
pub(crate) use sequencer::{Sequencer, WelcomeInfo};
#[cfg(any(test, debug_assertions))]
#[allow(unused_imports, reason = "for the Engine's debug checks")]
pub(crate) use validate::{Invariant, Violation, validate_all};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Asking to join; `rejoin` after a partition or exclusion.
    Joining {
        rejoin: bool,
        last_request: Time,
    },
    Member,
}

/// An installed decision waiting for the data up to its cut.
#[derive(Debug, Clone)]
pub(crate) struct PendingInstall {
    pub epoch: u32,
    pub proposal: crate::message::Proposal,
}

/// One member's state of one group.
#[derive(Debug)]
pub(crate) struct Group<P> {
    pub id: GroupId,
    pub mode: DeliveryMode,
    pub phase: Phase,
    pub view: View,
    pub incs: Vec<u64>,
    /// Last position delivered (or applied, for membership entries).
    pub delivered: u64,
    /// Highest position up to which every entry and payload is held.
    pub ready: u64,
    /// Highest position known to exist.
    pub hi_seen: u64,
    /// Position of `slots[0]`.
    pub base: u64,
    pub slots: VecDeque<Option<Slot>>,
    pub stable: u64,
    /// Delivery stops here while a flush is under way.
    pub cap: u64,
    pub frozen_since: Option<Time>,
    pub senders: Vec<SenderBuf<P>>,
    /// Per sender, next sender sequence to order, as of `delivered`.
    pub next: Vec<SenderNext>,
    /// Per sender, highest sender sequence this node delivered: survives a
    /// rejoin so nothing is handed to the application twice.
    pub delivered_hi: Vec<SenderNext>,
    /// Own last sender sequence.
    pub my_seq: u64,
    /// Highest own sender sequence seen ordered.
    pub my_ordered: u64,
    pub my_ordered_at_check: u64,
    pub seq: Option<Sequencer>,
    pub leaving: Option<Time>,
    pub pending_install: Option<PendingInstall>,
    /// Accepted proposals waiting for data before answering `Accepted`.
    pub pending_accept: Option<(u32, crate::message::Ballot, NodeId, u64)>,
    pub last_ack_sent: u64,
    pub last_ack_time: Time,
    pub ready_at_check: u64,
    pub nack_round: usize,
    pub last_nack: Time,
    /// When this member first saw a suspected member (flush timing).
    pub suspect_since: Option<Time>,
    /// Until then, suspicions this node formed before it was (re)admitted
    /// neither make it report Partitioned nor start a flush: peers it could
    /// not hear while it was cut off are heard again within a heartbeat.
    pub grace_until: Time,
    /// The coordinator and when its last order record arrived (kept by the
    /// Engine; reset lazily when the coordinator changes).
    pub coord_heard: Option<(NodeId, Time)>,
    /// Members (with their incarnation, and the view) that count as failed
    /// in that view although their node is heard: a coordinator that left
    /// the group on its own side (it asks to join again and its order
    /// records stopped, or it never acks a retired sequencer's Leave), or a
    /// member whose node answered `NotMember`. The others flush them out.
    pub gone: Vec<(ViewId, NodeId, u64)>,
    /// Index in `senders` of the buffer looked up last: the lookups of
    /// consecutive messages mostly ask for the same sender. Only a hint,
    /// checked against the node (and incarnation) before use; a node has at
    /// most one buffer, so a hint that matches is what a scan would find.
    pub buf_hint: usize,
}

impl<P: Payload> Group<P> {
    pub fn new(id: GroupId, mode: DeliveryMode, view: View, now: Time) -> Self {
        Group {
            id,
            mode,
            phase: Phase::Joining {
                rejoin: false,
                last_request: Time(0),
            },
            view,
            incs: Vec::new(),
            delivered: 0,
            ready: 0,
            hi_seen: 0,
            base: 1,
            slots: VecDeque::new(),
            stable: 0,
            cap: u64::MAX,
            frozen_since: None,
            senders: Vec::new(),
            next: Vec::new(),
            delivered_hi: Vec::new(),
            my_seq: 0,
            my_ordered: 0,
            my_ordered_at_check: 0,
            seq: None,
            leaving: None,
            pending_install: None,
            pending_accept: None,
            last_ack_sent: 0,
            last_ack_time: now,
            ready_at_check: 0,
            nack_round: 0,
            last_nack: now,
            suspect_since: None,
            grace_until: Time(0),
            coord_heard: None,
            gone: Vec::new(),
            buf_hint: usize::MAX,
        }
    }

    pub fn is_member(&self) -> bool {
        self.phase == Phase::Member
    }

    pub fn epoch(&self) -> u32 {
        self.view.id.epoch()
    }

    pub fn coordinator(&self) -> Option<NodeId> {
        self.view.coordinator()
    }

    /// Count `node` (incarnation `inc`) as failed in the current view
    /// (`gone`); what was counted in earlier views is forgotten.
    pub fn count_gone(&mut self, node: NodeId, inc: u64) {
        let id = self.view.id;
        self.gone.retain(|(v, _, _)| *v == id);
        if !self.gone.contains(&(id, node, inc)) {
            self.gone.push((id, node, inc));
        }
    }

    /// Whether `node` (incarnation `inc`) counts as failed in the current
    /// view although its node is heard (`gone`).
    pub fn is_gone(&self, node: NodeId, inc: u64) -> bool {
        self.gone.contains(&(self.view.id, node, inc))
    }

    /// The highest position this member acknowledges in its epoch: what it
    /// holds, but never past `cap`. A member that promised in a flush froze
    /// `cap` at the ready it reported (an accepted or decided value lowers
    /// it to its cut), and the flush may end the epoch there: a position
    /// above it must not become stable on this member's word, though the
    /// member may hold it.
    #[inline]
    pub fn ack_point(&self) -> u64 {
        self.ready.min(self.cap)
    }
}
