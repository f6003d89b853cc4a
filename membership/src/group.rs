//! Per-group state of one member: the view, the order ring, the sender
//! buffers, the sequencer role, delivery and retransmission.
//!
//! Positions form one sequence along the group's history. `slots[i]` holds
//! the order entry of position `base + i`; payloads live in per-sender rings
//! indexed by sender sequence, so a payload that arrives before its order
//! entry (the common case: data goes straight from the sender) is kept until
//! the entry names it, and nothing is copied.

use std::collections::VecDeque;

use crate::engine::{Command, Ctx};
use crate::message::{Body, OrderEntry, SenderNext};
use crate::types::{Delivery, DeliveryMode, GroupId, NodeId, Payload, Reason, Time, View, ViewId};

/// Positions further ahead than this are dropped (and fetched again later):
/// bounds memory against a confused or hostile peer.
const MAX_AHEAD: u64 = 1 << 20;

/// One position of the order, expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Data {
        sender: NodeId,
        inc: u64,
        seq: u64,
    },
    Join {
        node: NodeId,
        inc: u64,
        rejoin: bool,
        /// Its first sender sequence ordered from here on.
        first_seq: u64,
    },
    Leave {
        node: NodeId,
    },
    /// Adjust-version (see `crate::version`).
    Version(crate::version::VersionChange),
}

/// Payloads of one sender incarnation, indexed by sender sequence.
#[derive(Debug)]
pub(crate) struct SenderBuf<P> {
    pub node: NodeId,
    pub inc: u64,
    /// Sender sequence of `msgs[0]`.
    pub base: u64,
    pub msgs: VecDeque<Option<P>>,
}

impl<P: Payload> SenderBuf<P> {
    #[inline]
    fn get(&self, seq: u64) -> Option<&P> {
        if seq < self.base {
            return None;
        }
        self.msgs.get((seq - self.base) as usize)?.as_ref()
    }

    /// Store; `false` if it was a duplicate or out of range.
    #[inline]
    fn put(&mut self, seq: u64, payload: P, limit: u64) -> bool {
        if seq < self.base || seq - self.base >= limit {
            return false;
        }
        let idx = (seq - self.base) as usize;
        // The common case: the next sequence in sender order.
        if idx == self.msgs.len() {
            self.msgs.push_back(Some(payload));
            return true;
        }
        while self.msgs.len() <= idx {
            self.msgs.push_back(None);
        }
        if self.msgs[idx].is_some() {
            return false;
        }
        self.msgs[idx] = Some(payload);
        true
    }

    /// Drop everything below `seq`.
    #[inline]
    fn release_below(&mut self, seq: u64) {
        if self.base >= seq {
            return;
        }
        let n = (seq - self.base).min(self.msgs.len() as u64) as usize;
        self.msgs.drain(..n);
        self.base = seq;
    }
}

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
    /// The view whose coordinator (with its incarnation) left the group on
    /// its own side: it asks to join again and its order records stopped.
    /// It counts as failed in that view, so the others flush it out.
    pub coord_gone: Option<(ViewId, NodeId, u64)>,
    /// Index in `senders` of the buffer looked up last: the lookups of
    /// consecutive messages mostly ask for the same sender. Only a hint,
    /// checked against the node (and incarnation) before use; a node has at
    /// most one buffer, so a hint that matches is what a scan would find.
    pub buf_hint: usize,
}

#[inline]
pub(crate) fn next_of(next: &[SenderNext], node: NodeId, inc: u64) -> u64 {
    next.iter()
        .find(|s| s.node == node && s.incarnation == inc)
        .map_or(1, |s| s.next)
}

/// The highest sender_seq of `node`'s incarnation `inc` that a
/// `delivered_hi` list records as delivered (0: none).
#[inline]
pub(crate) fn delivered_of(delivered: &[SenderNext], node: NodeId, inc: u64) -> u64 {
    delivered
        .iter()
        .find(|s| s.node == node && s.incarnation == inc)
        .map_or(0, |s| s.next)
}

#[inline]
pub(crate) fn set_next(next: &mut Vec<SenderNext>, node: NodeId, inc: u64, value: u64) {
    if let Some(s) = next.iter_mut().find(|s| s.node == node) {
        if s.incarnation == inc {
            s.next = s.next.max(value);
        } else if s.incarnation < inc {
            s.incarnation = inc;
            s.next = value;
        }
    } else {
        next.push(SenderNext {
            node,
            incarnation: inc,
            next: value,
        });
    }
}

/// [`set_next`] trying `next[*hint]` first and leaving there the index of
/// `node`'s entry (a list holds a node at most once: `set_next` adds one
/// only when none is there).
#[inline]
fn set_next_at(next: &mut Vec<SenderNext>, hint: &mut usize, node: NodeId, inc: u64, value: u64) {
    let i = match next.get(*hint) {
        Some(s) if s.node == node => *hint,
        _ => match next.iter().position(|s| s.node == node) {
            Some(i) => i,
            None => {
                next.push(SenderNext {
                    node,
                    incarnation: inc,
                    next: value,
                });
                *hint = next.len() - 1;
                return;
            }
        },
    };
    *hint = i;
    let s = &mut next[i];
    if s.incarnation == inc {
        s.next = s.next.max(value);
    } else if s.incarnation < inc {
        s.incarnation = inc;
        s.next = value;
    }
}

/// Record `seq` of `(sender, inc)` as delivered in a `delivered_hi` list;
/// `false` if it was delivered already (or is of an older incarnation).
/// Tries `delivered[*hint]` first as [`set_next_at`] does.
#[inline]
fn mark_delivered_at(
    delivered: &mut Vec<SenderNext>,
    hint: &mut usize,
    sender: NodeId,
    inc: u64,
    seq: u64,
) -> bool {
    let i = match delivered.get(*hint) {
        Some(s) if s.node == sender => *hint,
        _ => match delivered.iter().position(|s| s.node == sender) {
            Some(i) => i,
            None => {
                delivered.push(SenderNext {
                    node: sender,
                    incarnation: inc,
                    next: seq,
                });
                *hint = delivered.len() - 1;
                return true;
            }
        },
    };
    *hint = i;
    let s = &mut delivered[i];
    if s.incarnation == inc {
        if seq <= s.next {
            return false;
        }
        s.next = seq;
        return true;
    }
    if s.incarnation > inc {
        return false;
    }
    s.incarnation = inc;
    s.next = seq;
    true
}

/// The buffer of `(node, inc)`, trying `senders[*hint]` first and leaving
/// there the index found: loops over the order look the same sender up many
/// times in a row. A node has at most one buffer (`Group::buf_index` replaces
/// an older incarnation's), so this finds what a scan would.
fn find_buf<'a, P>(
    senders: &'a [SenderBuf<P>],
    node: NodeId,
    inc: u64,
    hint: &mut usize,
) -> Option<&'a SenderBuf<P>> {
    if let Some(b) = senders.get(*hint)
        && b.node == node
        && b.inc == inc
    {
        return Some(b);
    }
    let i = senders
        .iter()
        .position(|b| b.node == node && b.inc == inc)?;
    *hint = i;
    Some(&senders[i])
}

/// [`find_buf`], mutable.
fn find_buf_mut<'a, P>(
    senders: &'a mut [SenderBuf<P>],
    node: NodeId,
    inc: u64,
    hint: &mut usize,
) -> Option<&'a mut SenderBuf<P>> {
    let i = match senders.get(*hint) {
        Some(b) if b.node == node && b.inc == inc => *hint,
        _ => {
            let i = senders
                .iter()
                .position(|b| b.node == node && b.inc == inc)?;
            *hint = i;
            i
        }
    };
    Some(&mut senders[i])
}

/// Release `sender`'s ring below the end of a run of its positions.
#[inline]
fn release_run<P: Payload>(
    senders: &mut [SenderBuf<P>],
    run: Option<(NodeId, u64, u64)>,
    hint: &mut usize,
) {
    if let Some((sender, inc, below)) = run
        && let Some(b) = find_buf_mut(senders, sender, inc, hint)
    {
        b.release_below(below);
    }
}

/// A Join entry resumes `node`'s stream at `first_seq` where it stood at
/// `from`: its payloads in `from..first_seq` will never be ordered. Drop them
/// when the ring holds nothing older (nothing ordered that a NACK may still
/// ask for), so the ring's base jumps without allocating; otherwise a ring
/// left far below the stream would refuse new payloads as out of range.
fn skip_unordered<P: Payload>(
    senders: &mut [SenderBuf<P>],
    node: NodeId,
    inc: u64,
    from: u64,
    first_seq: u64,
) {
    if let Some(b) = senders.iter_mut().find(|b| b.node == node && b.inc == inc)
        && b.base >= from
    {
        b.release_below(first_seq);
    }
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
            coord_gone: None,
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

    /// Reset the order state to start after `position` (join, install, rejoin).
    pub fn reset_order(&mut self, position: u64, next: Vec<SenderNext>) {
        self.delivered = position;
        self.ready = position;
        self.hi_seen = position;
        self.base = position.saturating_add(1);
        self.slots.clear();
        self.stable = position;
        self.cap = u64::MAX;
        self.frozen_since = None;
        self.next = next;
        self.seq = None;
        self.pending_install = None;
        self.pending_accept = None;
        self.last_ack_sent = position;
        self.ready_at_check = position;
        self.suspect_since = None;
        // Payloads below each sender's next were delivered already.
        let next = &self.next;
        for buf in &mut self.senders {
            let n = next_of(next, buf.node, buf.inc);
            buf.release_below(n);
        }
    }

    #[inline]
    fn buf_index(&mut self, node: NodeId, inc: u64) -> Option<usize> {
        let found = match self.senders.get(self.buf_hint) {
            Some(b) if b.node == node => Some(self.buf_hint),
            _ => self.senders.iter().position(|b| b.node == node),
        };
        if let Some(i) = found {
            self.buf_hint = i;
            let b = &mut self.senders[i];
            if b.inc == inc {
                return Some(i);
            }
            if b.inc > inc {
                return None;
            }
            // A newer incarnation replaces the old one's buffer.
            let base = next_of(&self.next, node, inc);
            *b = SenderBuf {
                node,
                inc,
                base,
                msgs: VecDeque::new(),
            };
            return Some(i);
        }
        let base = next_of(&self.next, node, inc);
        self.senders.push(SenderBuf {
            node,
            inc,
            base,
            msgs: VecDeque::new(),
        });
        self.buf_hint = self.senders.len() - 1;
        Some(self.buf_hint)
    }

    pub fn payload(&self, node: NodeId, inc: u64, seq: u64) -> Option<&P> {
        self.senders
            .iter()
            .find(|b| b.node == node && b.inc == inc)
            .and_then(|b| b.get(seq))
    }

    /// Store a payload; `true` if new.
    #[inline]
    pub fn store_payload(
        &mut self,
        node: NodeId,
        inc: u64,
        seq: u64,
        payload: P,
        limit: u64,
    ) -> bool {
        match self.buf_index(node, inc) {
            Some(i) => self.senders[i].put(seq, payload, limit),
            None => false,
        }
    }

    #[inline]
    pub fn slot(&self, pos: u64) -> Option<Slot> {
        if pos < self.base {
            return None;
        }
        self.slots
            .get((pos - self.base) as usize)
            .copied()
            .flatten()
    }

    /// Record the entries of positions `first..`; `true` if anything was new.
    pub fn insert_entries(&mut self, me: NodeId, first: u64, entries: &[OrderEntry]) -> bool {
        let mut pos = first;
        let mut any = false;
        for e in entries {
            match *e {
                OrderEntry::Data {
                    sender,
                    incarnation,
                    first_seq,
                    count,
                } => {
                    // Never walk past what insert_slot would keep: a hostile
                    // count must not cost four billion iterations.
                    let room = (self.base.saturating_add(MAX_AHEAD)).saturating_sub(pos);
                    let count = u32::try_from(u64::from(count).min(room)).unwrap_or(0);
                    if first_seq.checked_add(u64::from(count)).is_none()
                        || pos.checked_add(u64::from(count)).is_none()
                    {
                        break;
                    }
                    let count = u64::from(count);
                    any |= self.insert_data_run(pos, sender, incarnation, first_seq, count);
                    if sender == me && count > 0 {
                        self.my_ordered = self.my_ordered.max(first_seq + count - 1);
                    }
                    pos += count;
                }
                OrderEntry::Join {
                    node,
                    incarnation,
                    rejoin,
                    first_seq,
                } => {
                    if pos == u64::MAX {
                        break;
                    }
                    any |= self.insert_slot(
                        pos,
                        Slot::Join {
                            node,
                            inc: incarnation,
                            rejoin,
                            first_seq,
                        },
                    );
                    pos += 1;
                }
                OrderEntry::Leave { node } => {
                    if pos == u64::MAX {
                        break;
                    }
                    any |= self.insert_slot(pos, Slot::Leave { node });
                    pos += 1;
                }
                OrderEntry::Version(change) => {
                    if pos == u64::MAX {
                        break;
                    }
                    any |= self.insert_slot(pos, Slot::Version(change));
                    pos += 1;
                }
            }
        }
        if pos > first {
            self.hi_seen = self.hi_seen.max(pos - 1);
        }
        any
    }

    /// [`Group::insert_slot`] of the data positions `pos..pos + count`,
    /// holding `sender`'s sequences `first_seq..`; `true` if any was new.
    #[inline]
    fn insert_data_run(
        &mut self,
        pos: u64,
        sender: NodeId,
        inc: u64,
        first_seq: u64,
        count: u64,
    ) -> bool {
        let data = |i: u64| Slot::Data {
            sender,
            inc,
            seq: first_seq + i,
        };
        // The common case: the run extends the ring at its end, every
        // position within reach. Then `insert_slot` would push each in turn.
        if pos > self.delivered
            && pos >= self.base
            && pos - self.base == self.slots.len() as u64
            && (pos - self.base).saturating_add(count) <= MAX_AHEAD
        {
            self.slots.extend((0..count).map(|i| Some(data(i))));
            return count > 0;
        }
        let mut any = false;
        for i in 0..count {
            any |= self.insert_slot(pos + i, data(i));
        }
        any
    }

    #[inline]
    fn insert_slot(&mut self, pos: u64, slot: Slot) -> bool {
        if pos <= self.delivered || pos < self.base || pos - self.base >= MAX_AHEAD {
            return false;
        }
        let idx = (pos - self.base) as usize;
        // The common case: the next position.
        if idx == self.slots.len() {
            self.slots.push_back(Some(slot));
            return true;
        }
        while self.slots.len() <= idx {
            self.slots.push_back(None);
        }
        if self.slots[idx].is_some() {
            return false;
        }
        self.slots[idx] = Some(slot);
        true
    }

    /// Move `ready` forward over every position whose entry and payload are held.
    #[inline]
    pub fn advance_ready(&mut self) {
        let Some(start) = self.ready.checked_add(1) else {
            return;
        };
        // Checked here, where the caller is inlined: a member whose data
        // arrives before its order entry (the common case) returns at once.
        if start < self.base || start - self.base >= self.slots.len() as u64 {
            return;
        }
        self.advance_ready_from(start);
    }

    /// [`Group::advance_ready`] past the checks: `start` (= `ready + 1`) is
    /// a position the ring holds.
    #[inline(never)]
    fn advance_ready_from(&mut self, start: u64) {
        let mut hint = self.buf_hint;
        let mut ready = self.ready;
        for slot in self.slots.range((start - self.base) as usize..) {
            match slot {
                Some(Slot::Data { sender, inc, seq }) => {
                    if find_buf(&self.senders, *sender, *inc, &mut hint)
                        .and_then(|b| b.get(*seq))
                        .is_none()
                    {
                        break;
                    }
                }
                Some(_) => {}
                None => break,
            }
            ready += 1;
        }
        self.ready = ready;
        self.buf_hint = hint;
    }

    /// Drop entries and payloads every member holds and this member delivered.
    #[inline]
    pub fn release(&mut self) {
        let upto = self.stable.min(self.delivered);
        if self.base > upto {
            return;
        }
        // Every held entry up to `upto` goes, and the ring then starts at
        // `upto + 1` (held or not). `release_below` only ever raises a ring's
        // base, so a run of one sender's positions releases once, up to the
        // run's highest sequence: the same as one call per position.
        let held = (upto - self.base + 1).min(self.slots.len() as u64) as usize;
        let mut hint = self.buf_hint;
        let mut run: Option<(NodeId, u64, u64)> = None;
        for slot in self.slots.range(..held) {
            if let Some(Slot::Data { sender, inc, seq }) = *slot {
                match &mut run {
                    Some((n, i, below)) if *n == sender && *i == inc => {
                        *below = (*below).max(seq + 1);
                    }
                    _ => {
                        release_run(&mut self.senders, run, &mut hint);
                        run = Some((sender, inc, seq + 1));
                    }
                }
            }
        }
        release_run(&mut self.senders, run, &mut hint);
        self.buf_hint = hint;
        self.slots.drain(..held);
        self.base = upto + 1;
    }

    /// The oldest own sender sequence this member can still send: its oldest
    /// held message, or the next one it will multicast if it holds none.
    /// Everything below it was released (delivered and stable in some view).
    pub fn own_first(&self, me: NodeId, inc: u64) -> u64 {
        self.senders
            .iter()
            .find(|b| b.node == me && b.inc == inc)
            .and_then(|b| {
                b.msgs
                    .iter()
                    .position(Option::is_some)
                    .map(|i| b.base + i as u64)
            })
            .unwrap_or(self.my_seq + 1)
    }

    /// Drop own messages below `seq`: they will never be ordered.
    pub fn release_own_below(&mut self, me: NodeId, inc: u64, seq: u64) {
        if let Some(b) = self
            .senders
            .iter_mut()
            .find(|b| b.node == me && b.inc == inc)
        {
            b.release_below(seq);
        }
    }

    /// Own messages not yet ordered.
    #[inline]
    pub fn own_unstable(&self, me: NodeId, inc: u64) -> usize {
        let mut hint = self.buf_hint;
        find_buf(&self.senders, me, inc, &mut hint).map_or(0, |b| b.msgs.len())
    }

    #[inline]
    fn mark_delivered(&mut self, sender: NodeId, inc: u64, seq: u64) -> bool {
        let mut hint = usize::MAX;
        mark_delivered_at(&mut self.delivered_hi, &mut hint, sender, inc, seq)
    }

    /// Whether delivery waits for the stable point to reach a view change
    /// this member already holds (its ack should go out now, not on the
    /// next tick).
    pub fn awaits_stable_view_change(&self) -> bool {
        let pos = self.delivered + 1;
        pos <= self.ready
            && pos > self.stable
            && matches!(
                self.slot(pos),
                Some(Slot::Join { .. } | Slot::Leave { .. } | Slot::Version(_))
            )
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
            if pos > self.stable && !matches!(slot, Slot::Data { .. }) {
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
                                entries: Vec::new(),
                                stable: pos,
                            },
                        );
                    }
                    if !was_coordinator && self.coordinator() == Some(ctx.me) {
                        self.take_over(pos);
                        self.skip_delivered_alone(ctx.me);
                    }
                }
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
    /// re-sending sender and still lacked them, left before ordering them:
    /// seed 36636). Payloads skipped this way are dropped when nothing older
    /// in their ring was ordered; otherwise with the next release.
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
        while buf.get(n).is_some() {
            n += 1;
        }
        if n == start {
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
            if seq.retired || self.cap != u64::MAX || !seq.leased(ctx.now) {
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

    /// Sequencer: order a Join or Leave entry. Returns its position.
    pub fn order_control(&mut self, ctx: &mut Ctx<P>, entry: OrderEntry) -> Option<u64> {
        let seq = self.seq.as_mut()?;
        if !seq.leased(ctx.now) {
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
            OrderEntry::Data { .. } => return None,
        };
        let _ = self.insert_slot(pos, slot);
        self.hi_seen = self.hi_seen.max(pos);
        Some(pos)
    }

    /// Sequencer: send pending entries (and the stable point) to the members.
    pub fn publish(&mut self, ctx: &mut Ctx<P>) {
        let Some(seq) = self.seq.as_mut() else { return };
        if seq.pending.is_empty() && seq.stable <= seq.published_stable {
            return;
        }
        let entries = std::mem::take(&mut seq.pending);
        let first = if entries.is_empty() {
            seq.next_pos
        } else {
            seq.pending_first
        };
        seq.published_stable = seq.stable;
        // Send to the ordering view plus anyone who just left (they need
        // their own Leave entry).
        let epoch = self.view.id.epoch();
        let stable = seq.stable;
        let mut targets: Vec<NodeId> = seq.view.members.clone();
        targets.extend(seq.departing.iter().map(|(n, _)| *n));
        for e in &entries {
            if let OrderEntry::Leave { node } = e
                && !targets.contains(node)
            {
                targets.push(*node);
            }
        }
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
        if seq.retired {
            // Nothing more to order; the next coordinator takes over when it
            // delivers the Leave.
            let leaves = std::mem::take(&mut seq.leaves);
            let _ = leaves;
        }
    }

    /// Sequencer: a member's cumulative ack.
    pub fn on_ack(&mut self, from: NodeId, ready: u64) {
        let own_ready = self.ready;
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

    /// Whether this member's coordinator role is active.
    #[inline]
    pub fn is_sequencer(&self) -> bool {
        self.seq.as_ref().is_some_and(|s| !s.retired)
    }

    /// Answer a NACK for positions `from..=to` with entries and payloads held.
    pub fn retransmit_positions(&self, ctx: &mut Ctx<P>, to_node: NodeId, from: u64, to: u64) {
        let from = from.max(self.base);
        let to = to.min(from.saturating_add(ctx.batch as u64 * 4));
        let mut entries: Vec<OrderEntry> = Vec::new();
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
                                ack: self.ready,
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
            }
            pos += 1;
        }
        if entries.is_empty() {
            first = pos;
        }
        if !entries.is_empty() {
            ctx.stats.retransmissions += 1;
            ctx.send(
                to_node,
                Body::Order {
                    group: self.id,
                    epoch,
                    first,
                    entries,
                    stable: self.stable,
                },
            );
        }
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
                        ack: self.ready,
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
                            ack: self.ready,
                            payload: p.clone(),
                        },
                    );
                }
            }
        }
    }
}
