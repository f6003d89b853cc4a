//! The lease watch: the sequencer lease's promise, checked on what the
//! nodes send and deliver. Once a strict majority of the configured nodes
//! has promised an epoch `e'` of a group (a Paxos `Promise` of a real
//! ballot), nobody assigns a new position in any earlier epoch of it: every
//! grant majority of the old sequencer's lease meets the promise majority,
//! and an acceptor promises only after the lease it granted ran out. That
//! holds while clocks keep within `Config::lease_drift` (the `Drift::Within`
//! families), and is what a clock beyond it breaks.
//!
//! A position counts as assigned in epoch `e` when an `Order` record of `e`
//! names it or a member delivers it in `e` (a sequencer alone in its view
//! sends no order record).

use std::collections::{BTreeMap, BTreeSet};

use concord_membership::{Body, Message};

use super::Bytes;
use crate::sim::scenario::MS;

/// What the watch has seen.
#[derive(Debug, Default)]
pub(super) struct LeaseWatch {
    /// Per (group, epoch), the highest position assigned so far.
    assigned: BTreeMap<(u64, u32), u64>,
    /// Per (group, epoch), the nodes that promised it.
    promised: BTreeMap<(u64, u32), BTreeSet<usize>>,
    /// Per group, the highest epoch a majority promised, and when.
    closed: BTreeMap<u64, (u32, u64)>,
    /// Per (group, epoch) closed by a later promise, the highest position
    /// assigned at that moment.
    frozen: BTreeMap<(u64, u32), u64>,
    /// How many times a majority promise closed earlier epochs.
    pub(super) closings: u64,
}

impl LeaseWatch {
    /// `from` sends `msg`: an order record assigns positions, a promise may
    /// complete a majority. `Err` describes a violation.
    pub(super) fn sent(
        &mut self,
        from: usize,
        msg: &Message<Bytes>,
        nodes: usize,
        now: u64,
    ) -> Result<(), String> {
        match &msg.body {
            Body::Order {
                group,
                epoch,
                first,
                entries,
                ..
            } if !entries.is_empty() => {
                let last = first + entries.iter().map(|e| e.len()).sum::<u64>() - 1;
                self.ordered(from, group.0, *epoch, last, now)
            }
            Body::Promise {
                group,
                epoch,
                ballot,
                ..
            } if ballot.round > 0 => {
                let by = self.promised.entry((group.0, *epoch)).or_default();
                by.insert(from);
                if by.len() * 2 > nodes {
                    self.close(group.0, *epoch, now);
                }
                Ok(())
            }
            // A proposer sends phase 2 only with a majority of promises
            // (its own among them, which never leaves its Engine).
            Body::Accept { group, epoch, .. } => {
                self.close(group.0, *epoch, now);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A strict majority promised `epoch` of `group` by `now`: no earlier
    /// epoch assigns a position beyond what it had.
    fn close(&mut self, group: u64, epoch: u32, now: u64) {
        let before = match self.closed.get(&group) {
            Some((e, _)) if *e >= epoch => return,
            Some((e, _)) => *e,
            None => 0,
        };
        self.closings += 1;
        self.closed.insert(group, (epoch, now));
        for e in before..epoch {
            let hi = self.assigned.get(&(group, e)).copied().unwrap_or(0);
            self.frozen.entry((group, e)).or_insert(hi);
        }
    }

    /// `node` assigned (or delivered) position `pos` of `epoch`.
    pub(super) fn ordered(
        &mut self,
        node: usize,
        group: u64,
        epoch: u32,
        pos: u64,
        now: u64,
    ) -> Result<(), String> {
        if let Some(&hi) = self.frozen.get(&(group, epoch))
            && pos > hi
        {
            let (closer, at) = self.closed[&group];
            return Err(format!(
                "n{} assigned position {pos} of group {group:#x} epoch {epoch} at t={:.3}ms, \
                 after a majority promised epoch {closer} at t={:.3}ms (epoch {epoch} had \
                 reached position {hi})",
                node + 1,
                now as f64 / MS as f64,
                at as f64 / MS as f64
            ));
        }
        let hi = self.assigned.entry((group, epoch)).or_insert(0);
        *hi = (*hi).max(pos);
        Ok(())
    }
}
