//! A node slot: the Engine on one node and the application above it (the
//! groups it wants, what it waits to multicast, what it multicast and has
//! not seen delivered, its disk), the clock the Engine reads, its boot, and
//! the drain of the Engine's commands into the world.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use concord_membership::check::Sent;
use concord_membership::{
    Command, Config, DurableState, Engine, GroupId, Multicast, NodeId, ProtocolVersion, Time,
    VersionRange, version,
};

use super::flush::Trap;
use super::outcome::Failure;
use super::{Bytes, Ev, World};
use crate::sim::rng::{FNV_START, fnv1a};
use crate::sim::scenario::RATE_ONE;

/// One node and the application on it.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) id: NodeId,
    pub(super) engine: Option<Engine<Bytes>>,
    pub(super) incarnation: u64,
    /// Index of the current incarnation's log in `Logs::nodes`.
    pub(super) log: usize,
    /// Groups the application wants to be in (joined and not left).
    pub(super) wants: BTreeSet<usize>,
    /// Multicasts the application wants to hand over, oldest first; a
    /// `BackPressured` or refused one stays at the head and is retried.
    pub(super) pending: VecDeque<(usize, Bytes)>,
    pub(super) wakes: BTreeSet<u64>,
    pub(super) counter: u64,
    /// Per group, the highest position seen (delivery or view change).
    pub(super) position: BTreeMap<usize, u64>,
    /// (group, digest) this incarnation multicast and has not delivered yet
    /// (forgotten when it is cut off: the primary may have delivered them
    /// without it).
    pub(super) unconfirmed: BTreeSet<(usize, u64)>,
    /// The Engine's last `Command::Persist` state: its "disk", which
    /// survives a crash and is handed to `Engine::recover` at restart.
    pub(super) disk: Option<DurableState>,
    /// Per group, why the last multicast was refused (for the trace).
    pub(super) refused: BTreeMap<usize, String>,
    /// The protocol versions the node runs (this incarnation).
    pub(super) range: VersionRange,
    /// Shutting down for a rolling upgrade.
    pub(super) upgrading: bool,
    /// Not stepped now, and what waits for its resume.
    pub(super) paused: Option<super::pause::Paused>,
}

impl Slot {
    /// A node not booted yet, which will run the versions up to `max`.
    pub(super) fn new(id: NodeId, max: ProtocolVersion) -> Slot {
        Slot {
            id,
            engine: None,
            incarnation: 0,
            log: 0,
            wants: BTreeSet::new(),
            pending: VecDeque::new(),
            wakes: BTreeSet::new(),
            counter: 0,
            position: BTreeMap::new(),
            unconfirmed: BTreeSet::new(),
            disk: None,
            refused: BTreeMap::new(),
            range: VersionRange {
                min: version::OLDEST,
                max,
            },
            upgrading: false,
            paused: None,
        }
    }
}

impl World {
    /// The time `node`'s Engine reads: its own clock (an offset and a rate
    /// of its own, `ClockSpec`) at the world's time, read afresh on every
    /// call; it never goes back, as the world's time does not.
    pub(super) fn clock(&self, node: usize) -> Time {
        Time(self.local_time(node, self.now))
    }

    /// `node`'s clock at world time `world`.
    fn local_time(&self, node: usize, world: u64) -> u64 {
        let c = self.sc.clocks[node];
        let ticks = u128::from(world) * u128::from(c.rate) / u128::from(RATE_ONE);
        c.offset + u64::try_from(ticks).expect("a clock past u64")
    }

    /// The earliest world time at which `node`'s clock reads `local` or more
    /// (the world time of a `WakeAt` the Engine asked for on its clock).
    fn world_time(&self, node: usize, local: u64) -> u64 {
        let c = self.sc.clocks[node];
        let Some(ahead) = local.checked_sub(c.offset) else {
            return 0;
        };
        let rate = u128::from(c.rate);
        let world = (u128::from(ahead) * u128::from(RATE_ONE)).div_ceil(rate);
        let world = u64::try_from(world).expect("a wake-up past u64");
        debug_assert!(self.local_time(node, world) >= local);
        world
    }

    fn config(&self, node: usize, incarnation: u64) -> Config {
        let mut c = Config::new(
            self.slots[node].id,
            (1..=self.sc.nodes as u32).map(NodeId).collect(),
        );
        c.incarnation = incarnation;
        c.heartbeat_interval = self.sc.heartbeat;
        c.failure_timeout = self.sc.timeout;
        c.window = self.sc.window;
        c.batch = self.sc.batch;
        c.protocol = self.slots[node].range;
        c.lease_drift = self.sc.lease_drift;
        c
    }

    /// Start (or restart) a node: a fresh Engine with a higher incarnation,
    /// a fresh log, and the application rejoins the groups it wants.
    pub(super) fn boot(&mut self, node: usize) {
        let incarnation = self.slots[node].incarnation + 1;
        let config = self.config(node, incarnation);
        let now = self.clock(node);
        let engine = match self.slots[node].disk.clone() {
            Some(disk) => Engine::recover(config, now, disk),
            None => Engine::new(config, now),
        };
        let engine = match engine {
            Ok(e) => e,
            Err(e) => {
                self.fail_world(
                    "startup",
                    format!("Engine::new refused a valid config: {e}"),
                );
                return;
            }
        };
        let slot = &mut self.slots[node];
        slot.engine = Some(engine);
        slot.upgrading = false;
        slot.incarnation = incarnation;
        slot.wakes.clear();
        slot.position.clear();
        slot.unconfirmed.clear();
        slot.refused.clear();
        let (id, range) = (slot.id.0, slot.range);
        self.record_boot(node);
        self.trace
            .note(self.now, &[1, node as u64, incarnation], || {
                if range.max == version::CURRENT {
                    format!("n{id}#{incarnation} boots")
                } else {
                    format!("n{id}#{incarnation} boots running versions {range:?}")
                }
            });
        let wants: Vec<usize> = self.slots[node].wants.iter().copied().collect();
        for g in wants {
            self.join(node, g);
        }
        self.settle(node);
    }

    /// A wake-up the Engine asked for (ignored if it belongs to an earlier
    /// incarnation or was already served).
    pub(super) fn wake(&mut self, node: usize, incarnation: u64, at: u64) {
        let now = self.clock(node);
        if self.slots[node].incarnation == incarnation && self.paused(node) {
            if self.slots[node].wakes.remove(&at) {
                self.hold_wake(node);
            }
            return;
        }
        let slot = &mut self.slots[node];
        if slot.incarnation == incarnation && slot.wakes.remove(&at) {
            if let Some(e) = slot.engine.as_mut() {
                e.tick(now);
            }
            self.settle(node);
        }
    }

    /// Hand the Engine's commands to the world, then let the application
    /// retry what it is waiting to multicast, until nothing changes.
    pub(super) fn settle(&mut self, node: usize) {
        loop {
            self.drain(node);
            if !self.pump(node) {
                break;
            }
        }
    }

    /// Tries the pending multicasts; true if any was accepted.
    fn pump(&mut self, node: usize) -> bool {
        let now = self.now;
        let time = self.clock(node);
        let slot = &mut self.slots[node];
        let Some(engine) = slot.engine.as_mut().filter(|_| slot.paused.is_none()) else {
            return false;
        };
        let mut progressed = false;
        let mut blocked: BTreeSet<usize> = BTreeSet::new();
        let mut i = 0;
        while i < slot.pending.len() {
            let g = slot.pending[i].0;
            if blocked.contains(&g) {
                i += 1;
                continue;
            }
            let gid = self.sc.groups[g].id;
            let payload = slot.pending[i].1.clone();
            match engine.multicast(time, gid, payload.clone()) {
                Ok(Multicast::Sent { sender_seq }) => {
                    slot.refused.remove(&g);
                    let digest = fnv1a(FNV_START, &payload);
                    self.logs.sent.push(Sent {
                        at: now,
                        node: slot.id.0,
                        incarnation: slot.incarnation,
                        group: gid.0,
                        sender_seq,
                        digest,
                    });
                    self.cov.sent += 1;
                    slot.unconfirmed.insert((g, digest));
                    progressed = true;
                    let _ = slot.pending.remove(i);
                    let (id, inc) = (slot.id.0, slot.incarnation);
                    self.trace.note(now, &[6, node as u64, g as u64, sender_seq, digest], || {
                        format!("n{id}#{inc} multicast g{g} sender_seq {sender_seq} digest {digest:#x}")
                    });
                }
                Ok(Multicast::BackPressured(back)) => {
                    if !Rc::ptr_eq(&back, &payload) && *back != *payload {
                        self.world_failure.get_or_insert(Failure::World {
                            invariant: "no-creation",
                            detail: format!(
                                "BackPressured returned a different payload to n{}",
                                slot.id.0
                            ),
                        });
                    }
                    self.cov.back_pressured += 1;
                    blocked.insert(g);
                    i += 1;
                }
                Err(e) => {
                    // Traced when the reason changes, not at every retry.
                    let why = e.to_string();
                    if slot.refused.get(&g) != Some(&why) {
                        let id = slot.id.0;
                        self.trace.note(now, &[15, node as u64, g as u64], || {
                            format!("n{id} multicast to g{g} refused (until further notice): {why}")
                        });
                        slot.refused.insert(g, why);
                    }
                    blocked.insert(g);
                    i += 1;
                }
            }
        }
        progressed
    }

    /// Hands the Engine's output to the world until it has none: version
    /// events first, then commands.
    fn drain(&mut self, node: usize) {
        loop {
            let slot = &mut self.slots[node];
            let Some(engine) = slot.engine.as_mut() else {
                return;
            };
            if let Some(ev) = engine.poll_version_event() {
                self.record_adjust(node, ev);
                continue;
            }
            let Some(cmd) = engine.poll_command() else {
                return;
            };
            match cmd {
                Command::Send { to, msg } => {
                    let trap = match (to.0 as usize).checked_sub(1) {
                        Some(t) if t < self.slots.len() => self.flush_trap_sent(node, t, &msg),
                        _ => Trap::Pass,
                    };
                    self.send(node, to, msg);
                    if trap == Trap::CrashSelf {
                        self.crash(node);
                        return;
                    }
                }
                Command::Persist(state) => match self.persist_trap(node) {
                    Some(true) => {
                        self.crash(node);
                        return;
                    }
                    Some(false) => {
                        self.record_persist(node, &state);
                        self.slots[node].disk = Some(state);
                        self.crash(node);
                        return;
                    }
                    None => {
                        self.record_persist(node, &state);
                        self.slots[node].disk = Some(state);
                    }
                },
                Command::Deliver(d) => {
                    let now = self.now;
                    if let Err(detail) =
                        self.lease
                            .ordered(node, d.group.0, d.view.epoch(), d.seq, now)
                    {
                        self.fail_world("lease", detail);
                    }
                    if !self.record_delivery(node, d) {
                        return;
                    }
                }
                Command::ViewChange {
                    view,
                    reason,
                    position,
                } => {
                    self.watch_view(node, &view, &reason);
                    let installed = view.clone();
                    if !self.record_view(node, view, reason, position) {
                        return;
                    }
                    if self.flush_trap_installed(node, &installed) == Trap::CrashSelf {
                        self.crash(node);
                        return;
                    }
                }
                Command::Partitioned { group } => {
                    self.watch_partitioned(node, group);
                    self.record_partitioned(node, group);
                }
                Command::JoinRefused { group, active } => self.join_refused(node, group, active),
                Command::WakeAt(t) => self.wake_at(node, t),
            }
        }
    }

    /// The Engine refused a join: only when its range lacks the group's
    /// version (an old release after the switch); the application then
    /// gives the group up.
    fn join_refused(&mut self, node: usize, group: GroupId, active: ProtocolVersion) {
        let (id, inc) = (self.slots[node].id.0, self.slots[node].incarnation);
        let now = self.now;
        self.trace.note(now, &[10, node as u64, group.0], || {
            format!("n{id}#{inc} join refused {group:?} (active {active:?})")
        });
        if self.slots[node].range.contains(active) {
            self.fail_world(
                "view-agreement",
                format!(
                    "n{id} running {:?} was refused a join of {group:?} at version {active:?}",
                    self.slots[node].range
                ),
            );
        } else {
            self.cov.joins_refused += 1;
            if let Some(g) = self.group_index(group.0) {
                self.slots[node].wants.remove(&g);
                self.slots[node].pending.retain(|(x, _)| *x != g);
            }
        }
    }

    /// The Engine asks to be woken at `t` on its clock (at once if `t` has
    /// passed); one event per distinct world time.
    fn wake_at(&mut self, node: usize, t: Time) {
        let now = self.now;
        let inc = self.slots[node].incarnation;
        let t = self.world_time(node, t.0).max(now);
        if self.slots[node].wakes.insert(t) {
            self.schedule(
                t,
                Ev::Wake {
                    node,
                    incarnation: inc,
                    at: t,
                },
            );
        }
    }
}
