//! The per-sender payload rings ([`SenderBuf`]) and the `SenderNext` lists
//! (`next`, `delivered_hi`), with the index hints their lookups try first.

use std::collections::VecDeque;

use super::Group;
use crate::message::SenderNext;
use crate::types::{NodeId, Payload};

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
    pub(super) fn get(&self, seq: u64) -> Option<&P> {
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
    pub(super) fn release_below(&mut self, seq: u64) {
        if self.base >= seq {
            return;
        }
        let n = (seq - self.base).min(self.msgs.len() as u64) as usize;
        self.msgs.drain(..n);
        self.base = seq;
    }
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
pub(super) fn set_next_at(
    next: &mut Vec<SenderNext>,
    hint: &mut usize,
    node: NodeId,
    inc: u64,
    value: u64,
) {
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
pub(super) fn mark_delivered_at(
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
pub(super) fn find_buf<'a, P>(
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
pub(super) fn release_run<P: Payload>(
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
pub(super) fn skip_unordered<P: Payload>(
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
    pub(super) fn mark_delivered(&mut self, sender: NodeId, inc: u64, seq: u64) -> bool {
        let mut hint = usize::MAX;
        mark_delivered_at(&mut self.delivered_hi, &mut hint, sender, inc, seq)
    }
}
