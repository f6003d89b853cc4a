//! Crashes on purpose inside a flush, and a crash at a `Persist`.
//!
//! A flush trap, armed by the script for one group, fires once in the next
//! epoch change of that group: it crashes the flush leader or the next
//! coordinator (the first member of the new view other than the leader; before the
//! proposal exists, the first live member of the leader's view other
//! than the leader) at one phase, and restarts it `down` later:
//!
//! | phase    | the leader crashes                      | the next coordinator crashes                |
//! |----------|-----------------------------------------|---------------------------------------------|
//! | prepare  | right after its first `Prepare`         | when the leader's first `Prepare` goes out  |
//! | promise  | when the first `Promise` to it goes out | right after its own `Promise`               |
//! | accept   | right after its first `Accept`          | right after its `Accepted`                  |
//! | decided  | right after its first `Decided`         | when a `Decided` reaches it, unhandled      |
//! | install  | right after it installs the new view    | right after it installs the new view        |
//!
//! "Right after a command" means within the drain of the Engine's
//! commands: the ones after it are never carried out (a partial
//! broadcast), as when a process dies between two syscalls.
//!
//! A persist trap crashes a node at its next `Command::Persist`: either
//! before the state is written (the commands before it were carried out,
//! the state is lost) or right after (the state survives, the commands
//! after it are lost). `Engine::recover` reads what was written.

use concord_membership::{Body, GroupId, Message, View};

use super::{Ev, World};
use crate::sim::scenario::{FlushPhase, FlushTarget};

/// One armed flush trap.
#[derive(Debug)]
pub(super) struct FlushTrap {
    group: GroupId,
    phase: FlushPhase,
    target: FlushTarget,
    down: u64,
    until: u64,
    /// The epoch change it watches: (leader, epoch), from the first
    /// `Prepare` of a member (or the ballot of a `Promise`).
    change: Option<(usize, u32)>,
    /// The next coordinator, once known.
    next: Option<usize>,
}

/// What the traps say about a command the drain just carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trap {
    /// Nothing.
    Pass,
    /// Crash the node whose commands are drained, now.
    CrashSelf,
}

impl World {
    /// The script arms a flush trap for `group`.
    pub(super) fn arm_flush_trap(
        &mut self,
        group: usize,
        phase: FlushPhase,
        target: FlushTarget,
        down: u64,
        window: u64,
    ) {
        self.cov.flush_traps += 1;
        self.flush_traps.push(FlushTrap {
            group: self.sc.groups[group].id,
            phase,
            target,
            down,
            until: self.now + window,
            change: None,
            next: None,
        });
    }

    /// The script arms a persist trap for `node`.
    pub(super) fn arm_persist_trap(&mut self, node: usize, before: bool, down: u64) {
        if self.slots[node].engine.is_some() {
            self.persist_traps
                .push((node, self.slots[node].incarnation, before, down));
        }
    }

    /// `node`'s Engine emitted a `Persist`: whether a trap crashes it before
    /// the state is written (`Some(true)`), right after (`Some(false)`).
    pub(super) fn persist_trap(&mut self, node: usize) -> Option<bool> {
        let inc = self.slots[node].incarnation;
        let i = self
            .persist_traps
            .iter()
            .position(|t| t.0 == node && t.1 == inc)?;
        let (_, _, before, down) = self.persist_traps.remove(i);
        if before {
            self.cov.persist_crashes_before += 1;
        } else {
            self.cov.persist_crashes_after += 1;
        }
        let (id, now) = (self.slots[node].id.0, self.now);
        self.trace
            .note(now, &[27, node as u64, u64::from(before)], || {
                format!(
                    "n{id}#{inc} CRASHES {} its Persist",
                    if before {
                        "before writing"
                    } else {
                        "right after writing"
                    }
                )
            });
        self.schedule(now + down, Ev::Restart { node });
        Some(before)
    }

    /// The first live member of `view` other than `not`.
    fn next_of(&self, view: &View, not: usize) -> Option<usize> {
        view.members
            .iter()
            .map(|m| m.0 as usize - 1)
            .find(|&m| m != not && self.slots.get(m).is_some_and(|s| s.engine.is_some()))
    }

    /// `from` just sent `msg` to `to` (within its drain): whether a flush
    /// trap crashes `from` now; it may crash another node itself.
    pub(super) fn flush_trap_sent(
        &mut self,
        from: usize,
        to: usize,
        msg: &Message<super::Bytes>,
    ) -> Trap {
        let now = self.now;
        self.flush_traps.retain(|t| t.until > now);
        for i in 0..self.flush_traps.len() {
            let t = &self.flush_traps[i];
            let (group, phase, target) = (t.group, t.phase, t.target);
            let (mut change, mut next) = (t.change, t.next);
            let fire = match &msg.body {
                Body::Prepare {
                    group: g,
                    epoch,
                    ballot,
                } if *g == group && ballot.round > 0 => {
                    let view = self.slots[from]
                        .engine
                        .as_ref()
                        .filter(|e| e.is_member(group))
                        .and_then(|e| e.view(group))
                        .cloned();
                    if change.is_none()
                        && let Some(v) = view
                    {
                        change = Some((from, *epoch));
                        next = self.next_of(&v, from);
                    }
                    match target {
                        _ if phase != FlushPhase::Prepare || change != Some((from, *epoch)) => None,
                        FlushTarget::Leader => Some(from),
                        FlushTarget::Next => next,
                    }
                }
                Body::Promise {
                    group: g,
                    epoch,
                    ballot,
                    ..
                } if *g == group && ballot.round > 0 => {
                    let leader = ballot.leader as usize - 1;
                    if change.is_none() {
                        change = Some((leader, *epoch));
                    }
                    if phase != FlushPhase::Promise || change != Some((leader, *epoch)) {
                        None
                    } else {
                        match target {
                            FlushTarget::Leader => (to == leader).then_some(leader),
                            // Known from the Prepare, or the first promiser
                            // other than the leader.
                            FlushTarget::Next => {
                                let n = *next.get_or_insert(from);
                                (n == from).then_some(from)
                            }
                        }
                    }
                }
                Body::Accept {
                    group: g,
                    epoch,
                    proposal,
                    ..
                } if *g == group && change.is_none_or(|c| c == (from, *epoch)) => {
                    change = Some((from, *epoch));
                    if let Some(n) = self.next_of(&proposal.view, from) {
                        next = Some(n);
                    }
                    (phase == FlushPhase::Accept && target == FlushTarget::Leader).then_some(from)
                }
                Body::Accepted {
                    group: g, epoch, ..
                } if *g == group
                    && phase == FlushPhase::Accept
                    && target == FlushTarget::Next
                    && change.is_some_and(|c| c.1 == *epoch)
                    && next == Some(from) =>
                {
                    Some(from)
                }
                Body::Decided {
                    group: g, epoch, ..
                } if *g == group
                    && phase == FlushPhase::Decided
                    && target == FlushTarget::Leader
                    && change == Some((from, *epoch)) =>
                {
                    Some(from)
                }
                _ => None,
            };
            let t = &mut self.flush_traps[i];
            t.change = change;
            t.next = next;
            let Some(victim) = fire else { continue };
            let t = self.flush_traps.remove(i);
            if self.slots[victim].engine.is_none() {
                return Trap::Pass;
            }
            self.count_flush_crash(phase, victim, t.down);
            if victim == from {
                return Trap::CrashSelf;
            }
            self.crash(victim);
            return Trap::Pass;
        }
        Trap::Pass
    }

    /// `msg` from `from` reaches `to`: whether a flush trap crashes `to`
    /// before it handles it (the next coordinator, decided not installed).
    pub(super) fn flush_trap_arrival(&mut self, to: usize, msg: &Message<super::Bytes>) -> bool {
        let Body::Decided { group, epoch, .. } = &msg.body else {
            return false;
        };
        let now = self.now;
        let Some(i) = self.flush_traps.iter().position(|t| {
            t.until > now
                && t.group == *group
                && t.phase == FlushPhase::Decided
                && t.target == FlushTarget::Next
                && t.change.is_some_and(|c| c.1 == *epoch)
                && t.next == Some(to)
        }) else {
            return false;
        };
        let t = self.flush_traps.remove(i);
        self.count_flush_crash(t.phase, to, t.down);
        self.crash(to);
        true
    }

    /// `node` installed `view`: whether an install trap crashes it now.
    pub(super) fn flush_trap_installed(&mut self, node: usize, view: &View) -> Trap {
        let now = self.now;
        let Some(i) = self.flush_traps.iter().position(|t| {
            t.until > now
                && t.group == view.group
                && t.phase == FlushPhase::Install
                && t.change.is_some_and(|(leader, epoch)| {
                    view.id.epoch() == epoch
                        && match t.target {
                            FlushTarget::Leader => leader == node,
                            FlushTarget::Next => t.next == Some(node),
                        }
                })
        }) else {
            return Trap::Pass;
        };
        let t = self.flush_traps.remove(i);
        self.count_flush_crash(t.phase, node, t.down);
        Trap::CrashSelf
    }

    /// A flush trap fired on `node` in `phase`: counted, traced, and the
    /// node's restart scheduled.
    fn count_flush_crash(&mut self, phase: FlushPhase, node: usize, down: u64) {
        match phase {
            FlushPhase::Prepare => self.cov.flush_crash_prepare += 1,
            FlushPhase::Promise => self.cov.flush_crash_promise += 1,
            FlushPhase::Accept => self.cov.flush_crash_accept += 1,
            FlushPhase::Decided => self.cov.flush_crash_decided += 1,
            FlushPhase::Install => self.cov.flush_crash_install += 1,
        }
        let (id, inc, now) = (
            self.slots[node].id.0,
            self.slots[node].incarnation,
            self.now,
        );
        self.trace.note(now, &[28, node as u64, phase as u64], || {
            format!("n{id}#{inc} CRASHES inside the flush ({phase:?} phase)")
        });
        self.schedule(now + down, Ev::Restart { node });
    }
}
