//! The fault injector: what the script and the rolling upgrades do to the
//! nodes and the network (crashes, the coordinator's crash or leave,
//! restarts, partitions and heals, the steps of an upgrade), and the final
//! heal that ends the chaos phase.

use concord_membership::ProtocolVersion;

use super::{Ev, World};
use crate::sim::scenario::MS;

/// Longest a rolling-upgrade step waits for its ordered leaves before it
/// stops the node anyway (a stuck leave is the Engine's liveness bug, which
/// the checkers report on their own; the upgrade goes on).
const LEAVE_DEADLINE: u64 = 1_000 * MS;

impl World {
    /// `node` crashes: its Engine is gone (its disk stays), and so is what
    /// its application had not handed over yet. False if it was down.
    pub(super) fn crash(&mut self, node: usize) -> bool {
        let slot = &mut self.slots[node];
        let Some(engine) = slot.engine.take() else {
            return false;
        };
        self.cov.add_stats(engine.stats());
        self.cov.crashes += 1;
        slot.paused = None;
        slot.pending.clear();
        slot.wakes.clear();
        self.logs.nodes[slot.log].crashed = true;
        let (id, inc) = (slot.id.0, slot.incarnation);
        self.trace.note(self.now, &[2, node as u64], || {
            format!("n{id}#{inc} CRASHES")
        });
        true
    }

    /// The live coordinator of `group` crashes: the coordinator of the view
    /// the first live member holds if it is up, else (it crashed, a flush
    /// is under way) the first live member of that view, who leads the
    /// flush and coordinates next. Counted only when a node crashed.
    pub(super) fn crash_coordinator(&mut self, group: usize) {
        let Some(c) = self.live_coordinator(group) else {
            return;
        };
        if self.crash(c) {
            self.cov.coordinator_crashes += 1;
            self.crashed_coordinators.entry(group).or_default().push(c);
        }
    }

    /// See `crash_coordinator`.
    fn live_coordinator(&self, group: usize) -> Option<usize> {
        let gid = self.sc.groups[group].id;
        let view = self.slots.iter().find_map(|s| {
            let e = s.engine.as_ref()?;
            e.is_member(gid).then(|| e.view(gid)).flatten()
        })?;
        view.members
            .iter()
            .map(|m| m.0 as usize - 1)
            .find(|&m| self.slots[m].engine.is_some())
    }

    /// The coordinator of `group` (as the first live member sees it) leaves
    /// it.
    pub(super) fn leave_coordinator(&mut self, group: usize) {
        if let Some(c) = self.coordinator(group) {
            self.cov.coordinator_leaves += 1;
            self.leave(c, group);
        }
    }

    /// A node that is down boots again (a node that is up is left alone).
    pub(super) fn restart(&mut self, node: usize) {
        if self.slots[node].engine.is_none() {
            self.cov.restarts += 1;
            self.boot(node);
        }
    }

    /// The nodes of `side` (bit `i` is node `i`) are cut from the rest.
    pub(super) fn partition(&mut self, side: u64) {
        self.cov.partitions += 1;
        self.net.partition(side);
    }

    /// A flapping link between `a` and `b` goes down (`down`) or up; it
    /// toggles again `period` later, and ends up at `until`.
    pub(super) fn flap(&mut self, a: usize, b: usize, period: u64, until: u64, down: bool) {
        let now = self.now;
        let down = down && now < until;
        self.cov.flap_toggles += 1;
        self.net.set_link(a, b, down);
        self.trace
            .note(now, &[24, a as u64, b as u64, u64::from(down)], || {
                format!(
                    "link n{}-n{} {}",
                    a + 1,
                    b + 1,
                    if down { "DOWN (flapping)" } else { "up" }
                )
            });
        if now < until {
            self.schedule(
                (now + period).min(until),
                Ev::Flap {
                    a,
                    b,
                    period,
                    until,
                    down: !down,
                },
            );
        }
    }

    /// The coordinator of `group` as seen by the first live member.
    pub(super) fn coordinator(&self, group: usize) -> Option<usize> {
        let gid = self.sc.groups[group].id;
        self.slots.iter().find_map(|s| {
            let view = s.engine.as_ref()?.view(gid)?;
            let c = view.coordinator()?;
            Some(c.0 as usize - 1)
        })
    }

    /// Rolling-upgrade step: ordered leaves of every group, then (in
    /// `upgrade_step`) stop, and restart running up to `max`.
    pub(super) fn upgrade_start(&mut self, node: usize, max: u16, down: u64) {
        self.cov.upgrades += 1;
        let now = self.now;
        let time = self.clock(node);
        let slot = &mut self.slots[node];
        let Some(engine) = slot.engine.as_mut() else {
            // Down already: it comes back as the new release.
            slot.range.max = ProtocolVersion(max);
            return;
        };
        if slot.upgrading {
            return;
        }
        let leaving = engine.shutdown(time);
        slot.upgrading = true;
        // The application stops handing over messages.
        slot.pending.clear();
        let (id, inc) = (slot.id.0, slot.incarnation);
        self.trace
            .note(now, &[20, node as u64, u64::from(max)], || {
                format!(
                    "n{id}#{inc} SHUTDOWN for an upgrade to max version {max}: leaving {leaving:?}"
                )
            });
        self.settle(node);
        self.schedule(
            now + MS,
            Ev::UpgradeStep {
                node,
                incarnation: inc,
                max,
                down,
                since: now,
            },
        );
    }

    /// A rolling upgrade of `node` waits (a millisecond at a time) until
    /// every group is left or `LEAVE_DEADLINE` has passed since `since`;
    /// then the node stops, and boots `down` later running up to `max`.
    pub(super) fn upgrade_step(
        &mut self,
        node: usize,
        incarnation: u64,
        max: u16,
        down: u64,
        since: u64,
    ) {
        let now = self.now;
        let slot = &mut self.slots[node];
        if slot.incarnation != incarnation || !slot.upgrading {
            return;
        }
        let Some(engine) = slot.engine.as_ref() else {
            // Crashed while leaving: it restarts as the new release.
            slot.range.max = ProtocolVersion(max);
            slot.upgrading = false;
            self.schedule(now + down, Ev::UpgradeBoot { node });
            return;
        };
        let left = !engine.has_groups();
        if !left && now < since + LEAVE_DEADLINE {
            self.schedule(
                now + MS,
                Ev::UpgradeStep {
                    node,
                    incarnation,
                    max,
                    down,
                    since,
                },
            );
            return;
        }
        if !left {
            self.cov.upgrades_forced += 1;
        }
        // Stop: the incarnation ends like a crash, without counting as one
        // (a pause ends with it: the next incarnation is stepped).
        if let Some(engine) = slot.engine.take() {
            self.cov.add_stats(engine.stats());
        }
        slot.paused = None;
        slot.wakes.clear();
        slot.upgrading = false;
        slot.range.max = ProtocolVersion(max);
        self.logs.nodes[slot.log].crashed = true;
        let id = slot.id.0;
        self.trace
            .note(now, &[21, node as u64, u64::from(left)], || {
                format!(
                    "n{id}#{incarnation} STOPS for the upgrade ({})",
                    if left {
                        "all groups left"
                    } else {
                        "leave deadline passed"
                    }
                )
            });
        self.schedule(now + down, Ev::UpgradeBoot { node });
    }

    /// The end of the chaos phase: the network heals for good and goes
    /// clean, nodes restart (those the scenario says, then enough for a
    /// majority), and every member multicasts once more.
    pub(super) fn final_heal(&mut self) {
        self.net.calm();
        self.net.heal();
        let now = self.now;
        self.trace.note(now, &[14], || "FINAL HEAL".to_string());
        let n = self.slots.len();
        let mut down: Vec<usize> = (0..n).filter(|&i| self.slots[i].engine.is_none()).collect();
        let mut live = n - down.len();
        // Restart those the scenario says come back, and then as many as it
        // takes for a strict majority of the configured nodes to be up
        // (without one there is no primary component, and nothing to check).
        down.retain(|&i| {
            if self.sc.restart_at_heal[i] {
                live += 1;
                self.cov.restarts += 1;
                self.boot(i);
                false
            } else {
                true
            }
        });
        for i in down {
            if live * 2 > n {
                break;
            }
            live += 1;
            self.cov.restarts += 1;
            self.boot(i);
        }
        // Final traffic: every member that wants a group multicasts to it once
        // the cluster settles, so liveness covers the healed cluster too.
        for i in 0..n {
            if self.slots[i].engine.is_none() {
                continue;
            }
            let wants: Vec<usize> = self.slots[i].wants.iter().copied().collect();
            for g in wants {
                let payload = self.payload(i, g);
                self.slots[i].pending.push_back((g, payload));
            }
            self.settle(i);
        }
        self.schedule(now + 20 * MS, Ev::Poll);
    }
}
