//! The simulated world: a virtual clock, a queue of events ordered by time,
//! the network between Engines, and the applications on top of them that
//! multicast, join, leave and record what they are handed.
//!
//! Nothing here reads a clock or a thread-local random source: the scenario
//! (drawn from the seed) and the world's own seeded generator decide
//! everything, and every map is ordered, so a seed replays exactly.
//!
//! By concern:
//! - this file: the `World`, its event queue, the run loop, the dispatch of
//!   the script's actions, convergence and the checks at the end of a run;
//! - `node`: a node slot (its Engine, incarnation, disk, what its
//!   application waits to multicast), the clock its Engine reads, its boot,
//!   and the drain of the Engine's commands;
//! - `app`: the application's calls (multicast, batch, join, leave,
//!   adjust-version);
//! - `net`: the network between the Engines, its link model and the wire
//!   codec option;
//! - `faults`: the fault injector (crashes, restarts, partitions, heals,
//!   rolling-upgrade steps) and the final heal;
//! - `logs`: the checker logs built from what the applications see;
//! - `trace`: the event trace and its hash;
//! - `outcome`: what a seed yields (failure, coverage, the no-pause
//!   measurement).

mod app;
mod faults;
mod flush;
mod lease;
mod logs;
mod net;
mod node;
mod outcome;
mod pause;
mod trace;

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use concord_membership::check::{self, Logs};
use concord_membership::{NodeId, ProtocolVersion, version};

pub use outcome::{Coverage, Failure, Gaps, Outcome};
pub use trace::TraceLines;

use super::rng::Rng;
use super::scenario::{Action, Drift, MS, RATE_ONE, Race, Scenario};
use lease::LeaseWatch;
use net::{Flight, Network};
use node::Slot;
use trace::{Trace, show};

/// The payload type the simulated applications use.
pub type Bytes = Rc<[u8]>;

/// How long after the final heal the world gives the cluster to converge.
const HEAL_DEADLINE: u64 = 4_000 * MS;
/// A hard cap on events per seed: an Engine that asks to be woken in a loop
/// must not hang the test.
const EVENT_BUDGET: u64 = 3_000_000;

/// What the event queue holds: everything that happens at a time.
#[derive(Debug)]
enum Ev {
    /// A message in flight reaches `to`.
    Arrive {
        from: usize,
        to: usize,
        flight: Flight,
    },
    /// A wake-up an Engine asked for.
    Wake {
        node: usize,
        incarnation: u64,
        at: u64,
    },
    /// The script's action at this index.
    Script(usize),
    /// A rolling-upgrade step waits for its leaves.
    UpgradeStep {
        node: usize,
        incarnation: u64,
        max: u16,
        down: u64,
        since: u64,
    },
    /// ... and restarts the node.
    UpgradeBoot { node: usize },
    /// Upgrade family: the application tries a refused join again (a join
    /// right after a leave is refused while the leave completes).
    RetryJoin {
        node: usize,
        group: usize,
        incarnation: u64,
        tries: u32,
    },
    /// A flapping link goes down (`down`) or up; the next toggle follows
    /// `period` later until `until`.
    Flap {
        a: usize,
        b: usize,
        period: u64,
        until: u64,
        down: bool,
    },
    /// A trapped node restarts.
    Restart { node: usize },
    /// A paused node is stepped again.
    Resume { node: usize, incarnation: u64 },
    /// The end of the chaos phase.
    FinalHeal,
    /// After the final heal: has the cluster converged?
    Poll,
    /// The end of the run.
    Stop,
}

/// The world for one seed.
#[derive(Debug)]
pub struct World {
    sc: Scenario,
    now: u64,
    tie: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    slots: Vec<Slot>,
    logs: Logs,
    /// The network between the nodes.
    net: Network,
    /// The world's generator: the link model's draws and the payloads'
    /// filler, in the order the events happen.
    rng: Rng,
    trace: Trace,
    cov: Coverage,
    converged_at: Option<u64>,
    world_failure: Option<Failure>,
    /// Script actions not run yet (the run does not stop before they are).
    scripts_left: usize,
    /// The no-pause measurement (upgrade family).
    gaps: Gaps,
    /// The sequencer lease's promise, watched.
    lease: LeaseWatch,
    /// Per paused member and group: was it removed, did it learn it.
    pause_records: Vec<pause::PauseRecord>,
    /// Armed flush traps.
    flush_traps: Vec<flush::FlushTrap>,
    /// Armed persist traps: (node, incarnation, before writing, down).
    persist_traps: Vec<(usize, u64, bool, u64)>,
    /// Per group, the coordinators `CrashCoordinator` crashed.
    crashed_coordinators: BTreeMap<usize, Vec<usize>>,
}

impl World {
    pub fn new(seed: u64, trace: Option<TraceLines>) -> World {
        World::with(Scenario::from_seed(seed), trace)
    }

    pub fn upgrade(seed: u64, trace: Option<TraceLines>) -> World {
        World::with(Scenario::upgrade_from_seed(seed), trace)
    }

    /// The base family's seed with clocks beyond the lease's drift bound.
    pub fn drifting(seed: u64, trace: Option<TraceLines>) -> World {
        World::with(Scenario::base(seed, Drift::Beyond), trace)
    }

    fn with(sc: Scenario, trace: Option<TraceLines>) -> World {
        let seed = sc.seed;
        let mut w = World {
            now: 0,
            tie: 0,
            queue: BTreeMap::new(),
            slots: Vec::new(),
            logs: Logs::default(),
            net: Network::new(sc.nodes),
            rng: Rng::new(seed ^ 0x005e_ed0f_3a11),
            trace: Trace::new(trace),
            cov: Coverage {
                seeds: 1,
                ..Coverage::default()
            },
            converged_at: None,
            world_failure: None,
            scripts_left: sc.script.len(),
            gaps: Gaps::default(),
            lease: LeaseWatch::default(),
            pause_records: Vec::new(),
            flush_traps: Vec::new(),
            persist_traps: Vec::new(),
            crashed_coordinators: BTreeMap::new(),
            sc,
        };
        let sc = w.sc.clone();
        w.trace.note(0, &[sc.nodes as u64], || {
            format!(
                "seed {} nodes {} groups (g<i>: name, id, mode) {:?} hb {}ms timeout {}ms window {} batch {} wire {} chaos until {}ms net {:?}",
                sc.seed,
                sc.nodes,
                sc.groups
                    .iter()
                    .map(|g| (&g.name, format!("{:#x}", g.id.0), g.mode))
                    .collect::<Vec<_>>(),
                sc.heartbeat / MS,
                sc.timeout / MS,
                sc.window,
                sc.batch,
                sc.wire,
                sc.chaos_end / MS,
                sc.net
            )
        });
        w.trace.note(0, &[sc.lease_drift], || {
            format!(
                "clocks ({:?} the bound, lease_drift {:.3}ms; per node offset ms, rate ppm off 1): {:?}",
                sc.drift,
                sc.lease_drift as f64 / MS as f64,
                sc.clocks
                    .iter()
                    .map(|c| (c.offset / MS, c.rate as i64 / 1000 - (RATE_ONE / 1000) as i64))
                    .collect::<Vec<_>>()
            )
        });
        w.cov.drifting_clocks += sc.clocks.iter().filter(|c| c.rate != RATE_ONE).count() as u64;
        if let Some(plan) = &sc.upgrade {
            w.cov.races += u64::from(plan.race != Race::None);
            w.trace
                .note(0, &[99], || format!("upgrade family: {plan:?}"));
        }
        for i in 0..sc.nodes {
            let id = NodeId(i as u32 + 1);
            w.slots
                .push(Slot::new(id, ProtocolVersion(sc.initial_max[i])));
            w.boot(i);
        }
        for (i, (at, _)) in sc.script.iter().enumerate() {
            w.schedule(*at, Ev::Script(i));
        }
        w.schedule(sc.chaos_end, Ev::FinalHeal);
        w.schedule(sc.chaos_end + HEAL_DEADLINE, Ev::Stop);
        w
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.tie += 1;
        self.queue.insert((at, self.tie), ev);
    }

    fn fail_world(&mut self, invariant: &'static str, detail: String) {
        if self.world_failure.is_none() {
            self.world_failure = Some(Failure::World { invariant, detail });
        }
    }

    /// Runs the seed to the end and checks every invariant.
    pub fn run(mut self) -> Outcome {
        let mut events = 0u64;
        while let Some(((at, _), ev)) = self.queue.pop_first() {
            self.now = at;
            events += 1;
            if events > EVENT_BUDGET {
                self.fail_world(
                    "liveness",
                    format!(
                        "event budget of {EVENT_BUDGET} exhausted at t={}ms (a wake-up loop?)",
                        at / MS
                    ),
                );
                break;
            }
            if self.world_failure.is_some() {
                break;
            }
            match ev {
                Ev::Stop => break,
                Ev::Arrive { from, to, flight } => self.arrive(from, to, flight),
                Ev::Wake {
                    node,
                    incarnation,
                    at,
                } => self.wake(node, incarnation, at),
                Ev::Script(i) => {
                    self.scripts_left -= 1;
                    let action = self.sc.script[i].1.clone();
                    self.act(action, i);
                }
                Ev::UpgradeStep {
                    node,
                    incarnation,
                    max,
                    down,
                    since,
                } => self.upgrade_step(node, incarnation, max, down, since),
                Ev::RetryJoin {
                    node,
                    group,
                    incarnation,
                    tries,
                } => {
                    if self.slots[node].incarnation != incarnation {
                    } else if self.paused(node) {
                        self.schedule(
                            self.now + 5 * MS,
                            Ev::RetryJoin {
                                node,
                                group,
                                incarnation,
                                tries,
                            },
                        );
                    } else {
                        self.join_retrying(node, group, tries);
                    }
                }
                Ev::UpgradeBoot { node } => self.restart(node),
                Ev::Flap {
                    a,
                    b,
                    period,
                    until,
                    down,
                } => self.flap(a, b, period, until, down),
                Ev::Resume { node, incarnation } => self.resume(node, incarnation),
                Ev::Restart { node } => self.restart(node),
                Ev::FinalHeal => self.final_heal(),
                Ev::Poll => self.poll(),
            }
        }
        self.finish(events)
    }

    /// The end of a run: the coverage of the last incarnations, the
    /// expected final views, the no-pause measurement, then the world's
    /// own failure, or the checkers, or the applications' liveness.
    fn finish(mut self, events: u64) -> Outcome {
        self.cov.events = events;
        self.cov.lease_closings = self.lease.closings;
        self.check_pauses();
        for slot in &self.slots {
            if let Some(e) = &slot.engine {
                self.cov.add_stats(e.stats());
            }
        }
        self.logs.expected_final = Some(self.expected());
        if self.sc.upgrade.is_some() {
            self.measure();
            self.count_switched_groups();
        }
        let mut result = match self.world_failure.take() {
            Some(f) => Err(f),
            None => check::check_all(&self.logs).map_err(Failure::Violation),
        };
        if result.is_ok()
            && let Some(stuck) = self.stuck_application()
        {
            result = Err(stuck);
        }
        Outcome {
            result,
            trace_hash: self.trace.hash(),
            coverage: self.cov,
            logs: self.logs,
            gaps: self.gaps,
        }
    }

    /// Upgrade family: how many groups run the new version at the end.
    fn count_switched_groups(&mut self) {
        for spec in &self.sc.groups {
            self.cov.groups += 1;
            let at_new = self.slots.iter().any(|s| {
                s.engine
                    .as_ref()
                    .and_then(|e| e.view(spec.id))
                    .is_some_and(|v| v.protocol >= version::BATCH)
            });
            self.cov.groups_switched += u64::from(at_new);
        }
    }

    /// The applications' own view of liveness: nothing they wanted to
    /// multicast is still refused after the heal and the quiet period (the
    /// first live node that still waits, if any).
    fn stuck_application(&self) -> Option<Failure> {
        let slot = self
            .slots
            .iter()
            .filter(|s| s.engine.is_some())
            .find(|s| !s.pending.is_empty())?;
        let (g, _) = slot.pending.front()?;
        Some(Failure::World {
            invariant: "liveness",
            detail: format!(
                "n{}#{} still cannot multicast to {} ({} messages waiting) {}ms after the final heal",
                slot.id.0,
                slot.incarnation,
                self.sc.groups[*g].name,
                slot.pending.len(),
                HEAL_DEADLINE / MS
            ),
        })
    }

    /// Carries out the script's action `index`; one of a paused node's
    /// application waits for its resume.
    fn act(&mut self, action: Action, index: usize) {
        let now = self.now;
        self.trace
            .note(now, &[3], || format!("script: {}", show(&action)));
        let app = match action {
            Action::Multicast { node, .. }
            | Action::Join { node, .. }
            | Action::Leave { node, .. }
            | Action::Upgrade { node, .. }
            | Action::Adjust { node, .. }
            | Action::Batch { node, .. }
            | Action::Pause { node, .. } => Some(node),
            Action::LeaveCoordinator { group } => self.coordinator(group),
            _ => None,
        };
        if let Some(node) = app.filter(|&n| self.paused(n)) {
            self.hold_action(node, index);
            return;
        }
        match action {
            Action::Multicast { node, group, count } => self.multicast(node, group, count),
            Action::Join { node, group } => self.scripted_join(node, group),
            Action::Leave { node, group } => {
                if !self.slots[node].upgrading {
                    self.leave(node, group);
                }
            }
            Action::LeaveCoordinator { group } => self.leave_coordinator(group),
            Action::Crash { node } => {
                self.crash(node);
            }
            Action::CrashCoordinator { group } => self.crash_coordinator(group),
            Action::Restart { node } => self.restart(node),
            Action::Partition { side } => self.partition(side),
            Action::CutOneWay { side } => {
                self.cov.one_way_cuts += 1;
                self.net.cut_one_way(side);
            }
            Action::CutLink { a, b } => {
                self.cov.link_cuts += 1;
                self.net.set_link(a, b, true);
            }
            Action::Flap {
                a,
                b,
                period,
                until,
            } => {
                self.cov.flaps += 1;
                self.flap(a, b, period, until, true);
            }
            Action::Pause { node, len } => self.pause(node, len),
            Action::ArmFlushTrap {
                group,
                phase,
                target,
                down,
                window,
            } => self.arm_flush_trap(group, phase, target, down, window),
            Action::RestartCoordinatorsOf { group } => {
                for node in self.crashed_coordinators.remove(&group).unwrap_or_default() {
                    self.restart(node);
                }
            }
            Action::ArmPersistTrap { node, before, down } => {
                self.arm_persist_trap(node, before, down)
            }
            Action::Heal => self.net.heal(),
            Action::Upgrade { node, max, down } => self.upgrade_start(node, max, down),
            Action::Adjust { node, group, to } => self.adjust(node, group, to),
            Action::Batch { node, group, count } => self.batch(node, group, count),
        }
    }

    /// The index of the group with id `gid` in the scenario.
    fn group_index(&self, gid: u64) -> Option<usize> {
        self.sc.groups.iter().position(|g| g.id.0 == gid)
    }

    /// After the final heal: stop once the cluster has converged and stayed so
    /// for a few failure timeouts.
    fn poll(&mut self) {
        if self.scripts_left == 0 && self.converged() {
            let since = *self.converged_at.get_or_insert(self.now);
            if self.now >= since + 3 * self.sc.timeout + 20 * MS {
                self.schedule(self.now, Ev::Stop);
                return;
            }
        } else {
            self.converged_at = None;
        }
        self.schedule(self.now + 10 * MS, Ev::Poll);
    }

    fn converged(&self) -> bool {
        let live: Vec<&Slot> = self.slots.iter().filter(|s| s.engine.is_some()).collect();
        if live
            .iter()
            .any(|s| !s.pending.is_empty() || !s.unconfirmed.is_empty())
        {
            return false;
        }
        for (g, spec) in self.sc.groups.iter().enumerate() {
            let want: BTreeSet<NodeId> = live
                .iter()
                .filter(|s| s.wants.contains(&g))
                .map(|s| s.id)
                .collect();
            let mut seen: Option<(u64, u64)> = None;
            for s in &live {
                let view = s.engine.as_ref().and_then(|e| e.view(spec.id));
                match (view, want.contains(&s.id)) {
                    (Some(v), true) => {
                        let members: BTreeSet<NodeId> = v.members.iter().copied().collect();
                        if members != want {
                            return false;
                        }
                        let here = (v.id.0, s.position.get(&g).copied().unwrap_or(0));
                        if *seen.get_or_insert(here) != here {
                            return false;
                        }
                    }
                    (None, false) => {}
                    _ => return false,
                }
            }
        }
        true
    }
}
