//! Pauses: a node that stops being stepped (a stop signal, a long GC, a
//! stalled VM) while its peers go on. What reaches it waits in its socket
//! buffers, its timers do not fire, its application stands still; when it
//! resumes, its clock has jumped by the pause (a monotonic clock runs on),
//! its timers and the waiting messages are handled in an order the world's
//! generator draws, and its application carries on.
//!
//! The pause watch: when the peers remove a paused member from a group (a
//! view of a later epoch without it, installed while it was paused), the
//! node must learn it once it resumes (report `Partitioned` or install a
//! view of a later epoch) unless it crashes or leaves first. What it delivers after
//! the resume is the checkers' and the lease watch's to judge.

use concord_membership::{GroupId, NodeId, Reason, View};

use super::net::Flight;
use super::{Ev, World};
use crate::sim::scenario::MS;

/// A paused node's waiting work.
#[derive(Debug, Default)]
pub(super) struct Paused {
    /// Messages that reached it, in arrival order.
    backlog: Vec<(usize, Flight)>,
    /// A wake-up fell due.
    wake_due: bool,
    /// Script actions of its application, by index.
    deferred: Vec<usize>,
}

/// One group a paused node was a member of.
#[derive(Debug)]
pub(super) struct PauseRecord {
    node: usize,
    incarnation: u64,
    group: GroupId,
    epoch: u32,
    resumed: bool,
    /// The peers installed a later epoch without it while it was paused.
    removed: Option<View>,
    /// After the resume it reported `Partitioned` or installed a view of a
    /// later epoch.
    learned: bool,
}

impl World {
    /// `node` stops being stepped for `len`.
    pub(super) fn pause(&mut self, node: usize, len: u64) {
        let now = self.now;
        let slot = &mut self.slots[node];
        let Some(engine) = slot.engine.as_ref() else {
            return;
        };
        if slot.paused.is_some() {
            return;
        }
        self.cov.pauses += 1;
        for spec in &self.sc.groups {
            if engine.is_member(spec.id)
                && let Some(v) = engine.view(spec.id)
            {
                self.pause_records.push(PauseRecord {
                    node,
                    incarnation: slot.incarnation,
                    group: spec.id,
                    epoch: v.id.epoch(),
                    resumed: false,
                    removed: None,
                    learned: false,
                });
            }
        }
        slot.paused = Some(Paused::default());
        let (id, inc) = (slot.id.0, slot.incarnation);
        self.trace.note(now, &[25, node as u64, len], || {
            format!(
                "n{id}#{inc} PAUSED until {:.3}ms",
                (now + len) as f64 / MS as f64
            )
        });
        self.schedule(
            now + len,
            Ev::Resume {
                node,
                incarnation: inc,
            },
        );
    }

    /// Whether `node` is paused now.
    pub(super) fn paused(&self, node: usize) -> bool {
        self.slots[node].paused.is_some()
    }

    /// A message reached paused `node`: it waits.
    pub(super) fn hold_message(&mut self, from: usize, node: usize, flight: Flight) {
        if let Some(p) = self.slots[node].paused.as_mut() {
            p.backlog.push((from, flight));
        }
    }

    /// A wake-up of paused `node` fell due: it fires at the resume.
    pub(super) fn hold_wake(&mut self, node: usize) {
        if let Some(p) = self.slots[node].paused.as_mut() {
            p.wake_due = true;
        }
    }

    /// A script action of paused `node`'s application waits for the resume.
    pub(super) fn hold_action(&mut self, node: usize, index: usize) {
        if let Some(p) = self.slots[node].paused.as_mut() {
            p.deferred.push(index);
        }
    }

    /// `node` is stepped again: its timers and the waiting messages (in
    /// an order drawn), then its application's waiting actions.
    pub(super) fn resume(&mut self, node: usize, incarnation: u64) {
        if self.slots[node].incarnation != incarnation {
            return;
        }
        let Some(p) = self.slots[node].paused.take() else {
            return;
        };
        let now = self.now;
        for r in &mut self.pause_records {
            if r.node == node && r.incarnation == incarnation {
                r.resumed = true;
            }
        }
        let (id, inc) = (self.slots[node].id.0, incarnation);
        let waiting = p.backlog.len();
        self.trace
            .note(now, &[26, node as u64, waiting as u64], || {
                format!("n{id}#{inc} RESUMES: {waiting} messages waited")
            });
        let timers_first = self.rng.chance(0.5);
        if timers_first && p.wake_due {
            self.tick_now(node);
        }
        for (from, flight) in p.backlog {
            self.arrive(from, node, flight);
        }
        if !timers_first && p.wake_due {
            self.tick_now(node);
        }
        self.settle(node);
        for index in p.deferred {
            let action = self.sc.script[index].1.clone();
            self.act(action, index);
        }
    }

    /// Ticks `node`'s Engine at its clock's now.
    fn tick_now(&mut self, node: usize) {
        let now = self.clock(node);
        if let Some(e) = self.slots[node].engine.as_mut() {
            e.tick(now);
        }
        self.settle(node);
    }

    /// `node` installed `view` (or, with `Reason::Partitioned`, ended its
    /// life in the group): a removal of a paused member, or a resumed
    /// member learning where it stands.
    pub(super) fn watch_view(&mut self, node: usize, view: &View, reason: &Reason) {
        let inc = self.slots[node].incarnation;
        for r in &mut self.pause_records {
            if r.group != view.group {
                continue;
            }
            if r.node == node && r.incarnation == inc {
                // A fast-path view of the old epoch is no news of the removal.
                if r.resumed && (view.id.epoch() > r.epoch || *reason == Reason::Partitioned) {
                    r.learned = true;
                }
            } else if !r.resumed
                && r.removed.is_none()
                && *reason != Reason::Partitioned
                && view.id.epoch() > r.epoch
                && !view.contains(NodeId(r.node as u32 + 1))
            {
                r.removed = Some(view.clone());
                self.cov.paused_removed += 1;
            }
        }
    }

    /// `node` reported `Partitioned` for `group`.
    pub(super) fn watch_partitioned(&mut self, node: usize, group: GroupId) {
        let inc = self.slots[node].incarnation;
        for r in &mut self.pause_records {
            if r.node == node && r.incarnation == inc && r.group == group && r.resumed {
                r.learned = true;
            }
        }
    }

    /// At the end: every resumed node its peers removed learned it (unless
    /// it crashed, or its application left the group).
    pub(super) fn check_pauses(&mut self) {
        let mut failure = None;
        for r in &self.pause_records {
            let Some(removed) = &r.removed else { continue };
            if !r.resumed {
                continue;
            }
            let slot = &self.slots[r.node];
            let gone = slot.incarnation != r.incarnation || slot.engine.is_none();
            let g = self.sc.groups.iter().position(|s| s.id == r.group);
            let left = g.is_some_and(|g| !slot.wants.contains(&g));
            if gone || left {
                continue;
            }
            if r.learned {
                self.cov.removals_learned += 1;
            } else if failure.is_none() {
                failure = Some(format!(
                    "n{}#{} was removed from {:?} while paused (view {}.{} members {:?}) and \
                     never learned it after resuming: no Partitioned, no view of a later epoch",
                    r.node + 1,
                    r.incarnation,
                    r.group,
                    removed.id.epoch(),
                    removed.id.change(),
                    removed.members
                ));
            }
        }
        if let Some(f) = failure {
            self.fail_world("pause-removal", f);
        }
    }
}
