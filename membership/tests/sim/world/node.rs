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

use super::outcome::Failure;
use super::{Bytes, Ev, World};
use crate::sim::rng::{FNV_START, fnv1a};

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
        }
    }
}

impl World {
    /// The time `node`'s Engine reads. Every node reads the world's clock,
    /// so the times an Engine asks for (`WakeAt`) are world times.
    pub(super) fn clock(&self, _node: usize) -> Time {
        Time(self.now)
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
        let Some(engine) = slot.engine.as_mut() else {
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
                Command::Send { to, msg } => self.send(node, to, msg),
                Command::Persist(state) => {
                    self.record_persist(node, &state);
                    self.slots[node].disk = Some(state);
                }
                Command::Deliver(d) => {
                    if !self.record_delivery(node, d) {
                        return;
                    }
                }
                Command::ViewChange {
                    view,
                    reason,
                    position,
                } => {
                    if !self.record_view(node, view, reason, position) {
                        return;
                    }
                }
                Command::Partitioned { group } => self.record_partitioned(node, group),
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

    /// The Engine asks to be woken at `t` (at once if `t` has passed); one
    /// event per distinct time.
    fn wake_at(&mut self, node: usize, t: Time) {
        let now = self.now;
        let inc = self.slots[node].incarnation;
        let t = t.0.max(now);
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
