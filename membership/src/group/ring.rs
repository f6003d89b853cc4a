//! The order ring: `slots[i]` holds the entry of position `base + i`;
//! entries arrive, `ready` advances over what is held, and what every
//! member holds and this member delivered is released.

use super::Group;
use super::senders::{find_buf, next_of, release_run};
use crate::message::{OrderEntry, SenderNext};
use crate::types::{NodeId, Payload};

/// Positions further ahead than this are dropped (and fetched again later):
/// bounds memory against a confused or hostile peer.
pub(super) const MAX_AHEAD: u64 = 1 << 20;

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
    /// A position that holds nothing (`OrderEntry::Skip`).
    Skip,
}

impl<P: Payload> Group<P> {
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
                OrderEntry::Skip { count } => {
                    // As for a run: never walk past what insert_slot keeps.
                    let room = (self.base.saturating_add(MAX_AHEAD)).saturating_sub(pos);
                    let count = u64::from(count).min(room);
                    let Some(end) = pos.checked_add(count) else {
                        break;
                    };
                    for p in pos..end {
                        any |= self.insert_slot(p, Slot::Skip);
                    }
                    pos = end;
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
    pub(super) fn insert_data_run(
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
            // A loop of `push_back`, not `extend`: the latter's generic
            // path was left out of line (callgrind: about 120 instructions
            // per message on the order bench).
            for i in 0..count {
                self.slots.push_back(Some(data(i)));
            }
            return count > 0;
        }
        let mut any = false;
        for i in 0..count {
            any |= self.insert_slot(pos + i, data(i));
        }
        any
    }

    #[inline]
    pub(super) fn insert_slot(&mut self, pos: u64, slot: Slot) -> bool {
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
}
