//! The simulated world: a virtual clock, a queue of events ordered by time,
//! the network between Engines, and the applications on top of them that
//! multicast, join, leave and record what they are handed.
//!
//! Nothing here reads a clock or a thread-local random source: the scenario
//! (drawn from the seed) and the world's own seeded generator decide
//! everything, and every map is ordered, so a seed replays exactly.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use concord_membership::check::{self, AdjustResult, Event, Logs, NodeLog, Sent};
use concord_membership::{
    AdjustError, BatchError, Body, Command, Config, DurableState, Engine, Message, Multicast,
    NodeId, ProtocolVersion, Reason, Scope, Stats, Target, Time, VersionError, VersionEvent,
    VersionRange, version, wire,
};

use super::rng::{FNV_START, Rng, fnv1a};
use super::scenario::{Action, MS, Scenario};

/// Longest a rolling-upgrade step waits for its ordered leaves before it
/// stops the node anyway (a stuck leave is the Engine's liveness bug, which
/// the checkers report on their own; the upgrade goes on).
const LEAVE_DEADLINE: u64 = 1_000 * MS;

/// The payload type the simulated applications use.
pub type Bytes = Rc<[u8]>;

/// How long after the final heal the world gives the cluster to converge.
const HEAL_DEADLINE: u64 = 4_000 * MS;
/// A hard cap on events per seed: an Engine that asks to be woken in a loop
/// must not hang the test.
const EVENT_BUDGET: u64 = 3_000_000;

/// Why a seed failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// A checker found a violation.
    Violation(check::Violation),
    /// A property the world itself checks (not visible in the logs).
    World {
        invariant: &'static str,
        detail: String,
    },
    /// The Engine panicked.
    Panic(String),
}

impl Failure {
    pub fn invariant(&self) -> String {
        match self {
            Failure::Violation(v) => v.invariant.to_string(),
            Failure::World { invariant, .. } => (*invariant).to_string(),
            Failure::Panic(_) => "engine-panic".to_string(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Violation(v) => write!(f, "{v}"),
            Failure::World { invariant, detail } => write!(f, "{invariant} violated: {detail}"),
            Failure::Panic(msg) => write!(f, "the Engine panicked: {msg}"),
        }
    }
}

/// What a run exercised (summed over seeds to show the simulator does not
/// silently test nothing).
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    pub seeds: u64,
    pub crashes: u64,
    pub coordinator_crashes: u64,
    pub restarts: u64,
    pub partitions: u64,
    pub leaves: u64,
    pub coordinator_leaves: u64,
    pub joins: u64,
    pub sent: u64,
    pub back_pressured: u64,
    pub delivered: u64,
    pub views: u64,
    pub partitioned_reports: u64,
    pub flushes: u64,
    pub retransmissions: u64,
    pub messages: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub events: u64,
    // The upgrade family.
    /// Rolling-upgrade steps (shutdown, stop, restart with another version).
    pub upgrades: u64,
    /// ... of which stopped before their leaves completed (the deadline).
    pub upgrades_forced: u64,
    /// `adjust_version` calls, and the requests they handed to sequencers.
    pub adjusts: u64,
    pub adjust_requests: u64,
    /// Refused on the requester, per error.
    pub refused_not_active: u64,
    pub refused_partitioned: u64,
    pub refused_not_capable: u64,
    pub refused_other: u64,
    /// Ordered outcomes (per member): switched, refused at ordering time.
    pub outcomes_switched: u64,
    pub outcomes_refused: u64,
    /// `multicast_batch`: refused with `VersionTooLow`, accepted.
    pub batches_too_low: u64,
    pub batches_sent: u64,
    /// Joins refused because the group's version is outside the range.
    pub joins_refused: u64,
    /// Groups at the new version at the end.
    pub groups_switched: u64,
    pub groups: u64,
    /// Seeds whose first adjust is raced by a fault.
    pub races: u64,
}

impl Coverage {
    pub fn add(&mut self, o: &Coverage) {
        self.seeds += o.seeds;
        self.crashes += o.crashes;
        self.coordinator_crashes += o.coordinator_crashes;
        self.restarts += o.restarts;
        self.partitions += o.partitions;
        self.leaves += o.leaves;
        self.coordinator_leaves += o.coordinator_leaves;
        self.joins += o.joins;
        self.sent += o.sent;
        self.back_pressured += o.back_pressured;
        self.delivered += o.delivered;
        self.views += o.views;
        self.partitioned_reports += o.partitioned_reports;
        self.flushes += o.flushes;
        self.retransmissions += o.retransmissions;
        self.messages += o.messages;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.events += o.events;
        self.upgrades += o.upgrades;
        self.upgrades_forced += o.upgrades_forced;
        self.adjusts += o.adjusts;
        self.adjust_requests += o.adjust_requests;
        self.refused_not_active += o.refused_not_active;
        self.refused_partitioned += o.refused_partitioned;
        self.refused_not_capable += o.refused_not_capable;
        self.refused_other += o.refused_other;
        self.outcomes_switched += o.outcomes_switched;
        self.outcomes_refused += o.outcomes_refused;
        self.batches_too_low += o.batches_too_low;
        self.batches_sent += o.batches_sent;
        self.joins_refused += o.joins_refused;
        self.groups_switched += o.groups_switched;
        self.groups += o.groups;
        self.races += o.races;
    }

    fn add_stats(&mut self, s: &Stats) {
        self.flushes += s.flushes;
        self.retransmissions += s.retransmissions;
    }
}

/// The result of one seed.
#[derive(Debug)]
pub struct Outcome {
    pub result: Result<(), Failure>,
    pub trace_hash: u64,
    pub coverage: Coverage,
    /// What the applications saw (and sent), as the checkers read it.
    pub logs: Logs,
    /// The no-pause measurement (upgrade family).
    pub gaps: Gaps,
}

/// A message on the wire: typed, or as bytes when the scenario routes
/// messages through the codec.
#[derive(Debug)]
enum Flight {
    Typed(Box<Message<Bytes>>),
    Encoded(Vec<u8>),
}

#[derive(Debug)]
enum Ev {
    Arrive {
        from: usize,
        to: usize,
        flight: Flight,
    },
    Wake {
        node: usize,
        incarnation: u64,
        at: u64,
    },
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
    UpgradeBoot {
        node: usize,
    },
    /// Upgrade family: the application tries a refused join again (a join
    /// right after a leave is refused while the leave completes).
    RetryJoin {
        node: usize,
        group: usize,
        incarnation: u64,
        tries: u32,
    },
    FinalHeal,
    Poll,
    Stop,
}

/// One node and the application on it.
#[derive(Debug)]
struct Slot {
    id: NodeId,
    engine: Option<Engine<Bytes>>,
    incarnation: u64,
    /// Index of the current incarnation's log in `Logs::nodes`.
    log: usize,
    /// Groups the application wants to be in (joined and not left).
    wants: BTreeSet<usize>,
    /// Multicasts the application wants to hand over, oldest first; a
    /// `BackPressured` or refused one stays at the head and is retried.
    pending: VecDeque<(usize, Bytes)>,
    wakes: BTreeSet<u64>,
    counter: u64,
    /// Per group, the highest position seen (delivery or view change).
    position: BTreeMap<usize, u64>,
    /// (group, digest) this incarnation multicast and has not delivered yet
    /// (forgotten when it is cut off: the primary may have delivered them
    /// without it).
    unconfirmed: BTreeSet<(usize, u64)>,
    /// The Engine's last `Command::Persist` state: its "disk", which
    /// survives a crash and is handed to `Engine::recover` at restart.
    disk: Option<DurableState>,
    /// Per group, why the last multicast was refused (for the trace).
    refused: BTreeMap<usize, String>,
    /// The protocol versions the node runs (this incarnation).
    range: VersionRange,
    /// Shutting down for a rolling upgrade.
    upgrading: bool,
}

/// The event trace: always hashed, kept as text only when asked.
#[derive(Debug)]
struct Trace {
    hash: u64,
    lines: Option<TraceLines>,
}

/// Where a kept trace goes; shared so a panicking run still leaves its trace.
pub type TraceLines = Rc<RefCell<Vec<String>>>;

impl Trace {
    fn note(&mut self, now: u64, key: &[u64], line: impl FnOnce() -> String) {
        let mut h = fnv1a(self.hash, &now.to_le_bytes());
        for k in key {
            h = fnv1a(h, &k.to_le_bytes());
        }
        self.hash = h;
        if let Some(lines) = &self.lines {
            lines
                .borrow_mut()
                .push(format!("{:>10.3}ms {}", now as f64 / MS as f64, line()));
        }
    }
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
    /// Component of each node; messages cross only within a component.
    component: Vec<u8>,
    /// False after the final heal: no loss, duplication, reordering or delay.
    chaos: bool,
    rng: Rng,
    trace: Trace,
    cov: Coverage,
    converged_at: Option<u64>,
    world_failure: Option<Failure>,
    /// Script actions not run yet (the run does not stop before they are).
    scripts_left: usize,
    /// The no-pause measurement (upgrade family).
    gaps: Gaps,
}

/// The no-pause measurement, in simulated nanoseconds, per member: from
/// the installation of an `AdjustVersion` view at position `p` to the
/// delivery of `p + 1`, against the gap between two consecutive ordinary
/// deliveries `q`, `q + 1` of the same view. Only pairs whose second message
/// was multicast before the first event was handed over ("backlogged": its
/// delivery waits on nothing but the ordering) are counted, so an idle
/// application does not pass for a pause.
#[derive(Debug, Clone, Default)]
pub struct Gaps {
    pub after_switch: Vec<u64>,
    /// `after_switch` of the seeds whose adjust no fault races.
    pub after_switch_unraced: Vec<u64>,
    pub ordinary: Vec<u64>,
    /// For comparison: from another fast-path view (a join or a leave) to
    /// the next delivery.
    pub after_view: Vec<u64>,
    /// Per seed with a switch sample: (largest switch gap, largest ordinary
    /// gap) of that seed, to compare within the same network.
    pub per_seed: Vec<(u64, u64, u64)>,
}

impl Gaps {
    pub fn add(&mut self, o: &Gaps) {
        self.after_switch.extend_from_slice(&o.after_switch);
        self.ordinary.extend_from_slice(&o.ordinary);
        self.after_switch_unraced
            .extend_from_slice(&o.after_switch_unraced);
        self.after_view.extend_from_slice(&o.after_view);
        self.per_seed.extend_from_slice(&o.per_seed);
    }
}

impl World {
    pub fn new(seed: u64, trace: Option<TraceLines>) -> World {
        World::with(Scenario::from_seed(seed), trace)
    }

    pub fn upgrade(seed: u64, trace: Option<TraceLines>) -> World {
        World::with(Scenario::upgrade_from_seed(seed), trace)
    }

    fn with(sc: Scenario, trace: Option<TraceLines>) -> World {
        let seed = sc.seed;
        let mut w = World {
            now: 0,
            tie: 0,
            queue: BTreeMap::new(),
            slots: Vec::new(),
            logs: Logs::default(),
            component: vec![0; sc.nodes],
            chaos: true,
            rng: Rng::new(seed ^ 0x005e_ed0f_3a11),
            trace: Trace {
                hash: FNV_START,
                lines: trace,
            },
            cov: Coverage {
                seeds: 1,
                ..Coverage::default()
            },
            converged_at: None,
            world_failure: None,
            scripts_left: sc.script.len(),
            gaps: Gaps::default(),
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
        if let Some(plan) = &sc.upgrade {
            w.cov.races += u64::from(plan.race != super::scenario::Race::None);
            w.trace
                .note(0, &[99], || format!("upgrade family: {plan:?}"));
        }
        for i in 0..sc.nodes {
            let id = NodeId(i as u32 + 1);
            w.slots.push(Slot {
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
                    max: ProtocolVersion(sc.initial_max[i]),
                },
                upgrading: false,
            });
            w.boot(i);
        }
        for (i, (at, _)) in sc.script.iter().enumerate() {
            w.schedule(*at, Ev::Script(i));
        }
        w.schedule(sc.chaos_end, Ev::FinalHeal);
        w.schedule(sc.chaos_end + HEAL_DEADLINE, Ev::Stop);
        w
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
    fn boot(&mut self, node: usize) {
        let incarnation = self.slots[node].incarnation + 1;
        let config = self.config(node, incarnation);
        let engine = match self.slots[node].disk.clone() {
            Some(disk) => Engine::recover(config, Time(self.now), disk),
            None => Engine::new(config, Time(self.now)),
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
        slot.log = self.logs.nodes.len();
        self.logs.nodes.push(NodeLog {
            node: slot.id.0,
            incarnation,
            crashed: false,
            events: Vec::new(),
        });
        let (id, range) = (slot.id.0, slot.range);
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

    fn crash(&mut self, node: usize) {
        let slot = &mut self.slots[node];
        let Some(engine) = slot.engine.take() else {
            return;
        };
        self.cov.add_stats(engine.stats());
        self.cov.crashes += 1;
        slot.pending.clear();
        slot.wakes.clear();
        self.logs.nodes[slot.log].crashed = true;
        let (id, inc) = (slot.id.0, slot.incarnation);
        self.trace.note(self.now, &[2, node as u64], || {
            format!("n{id}#{inc} CRASHES")
        });
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
                } => {
                    let slot = &mut self.slots[node];
                    if slot.incarnation == incarnation && slot.wakes.remove(&at) {
                        if let Some(e) = slot.engine.as_mut() {
                            e.tick(Time(self.now));
                        }
                        self.settle(node);
                    }
                }
                Ev::Script(i) => {
                    self.scripts_left -= 1;
                    let action = self.sc.script[i].1.clone();
                    self.act(action);
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
                    if self.slots[node].incarnation == incarnation {
                        self.join_retrying(node, group, tries);
                    }
                }
                Ev::UpgradeBoot { node } => {
                    if self.slots[node].engine.is_none() {
                        self.cov.restarts += 1;
                        self.boot(node);
                    }
                }
                Ev::FinalHeal => self.final_heal(),
                Ev::Poll => self.poll(),
            }
        }
        self.cov.events = events;
        for slot in &self.slots {
            if let Some(e) = &slot.engine {
                self.cov.add_stats(e.stats());
            }
        }
        self.logs.expected_final = Some(self.expected());
        if self.sc.upgrade.is_some() {
            self.measure();
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
        let mut result = match self.world_failure.take() {
            Some(f) => Err(f),
            None => check::check_all(&self.logs).map_err(Failure::Violation),
        };
        if result.is_ok() {
            // The applications' own view of liveness: nothing they wanted to
            // multicast is still refused after the heal and the quiet period.
            for slot in self.slots.iter().filter(|s| s.engine.is_some()) {
                if let Some((g, _)) = slot.pending.front() {
                    result = Err(Failure::World {
                        invariant: "liveness",
                        detail: format!(
                            "n{}#{} still cannot multicast to {} ({} messages waiting) {}ms after the final heal",
                            slot.id.0,
                            slot.incarnation,
                            self.sc.groups[*g].name,
                            slot.pending.len(),
                            HEAL_DEADLINE / MS
                        ),
                    });
                    break;
                }
            }
        }
        Outcome {
            result,
            trace_hash: self.trace.hash,
            coverage: self.cov,
            logs: self.logs,
            gaps: self.gaps,
        }
    }

    fn act(&mut self, action: Action) {
        let now = self.now;
        self.trace
            .note(now, &[3], || format!("script: {}", show(&action)));
        match action {
            Action::Multicast { node, group, count } => {
                if self.slots[node].engine.is_none()
                    || self.slots[node].upgrading
                    || !self.slots[node].wants.contains(&group)
                {
                    return;
                }
                for _ in 0..count {
                    let payload = self.payload(node, group);
                    self.slots[node].pending.push_back((group, payload));
                }
                self.settle(node);
            }
            Action::Join { node, group } => {
                if self.sc.upgrade.is_some() {
                    self.join_retrying(node, group, 100);
                } else if self.slots[node].engine.is_some()
                    && !self.slots[node].upgrading
                    && !self.slots[node].wants.contains(&group)
                {
                    self.join(node, group);
                    self.settle(node);
                }
            }
            Action::Leave { node, group } => {
                if !self.slots[node].upgrading {
                    self.leave(node, group);
                }
            }
            Action::LeaveCoordinator { group } => {
                if let Some(c) = self.coordinator(group) {
                    self.cov.coordinator_leaves += 1;
                    self.leave(c, group);
                }
            }
            Action::Crash { node } => self.crash(node),
            Action::CrashCoordinator { group } => {
                if let Some(c) = self.coordinator(group) {
                    self.cov.coordinator_crashes += 1;
                    self.crash(c);
                }
            }
            Action::Restart { node } => {
                if self.slots[node].engine.is_none() {
                    self.cov.restarts += 1;
                    self.boot(node);
                }
            }
            Action::Partition { side } => {
                self.cov.partitions += 1;
                for (i, c) in self.component.iter_mut().enumerate() {
                    *c = u8::from(side & (1 << i) != 0);
                }
            }
            Action::Heal => self.component.iter_mut().for_each(|c| *c = 0),
            Action::Upgrade { node, max, down } => self.upgrade_start(node, max, down),
            Action::Adjust { node, group, to } => self.adjust(node, group, to),
            Action::Batch { node, group, count } => self.batch(node, group, count),
        }
    }

    /// Rolling-upgrade step: ordered leaves of every group, then (in
    /// `upgrade_step`) stop, and restart running up to `max`.
    fn upgrade_start(&mut self, node: usize, max: u16, down: u64) {
        self.cov.upgrades += 1;
        let now = self.now;
        let slot = &mut self.slots[node];
        let Some(engine) = slot.engine.as_mut() else {
            // Down already: it comes back as the new release.
            slot.range.max = ProtocolVersion(max);
            return;
        };
        if slot.upgrading {
            return;
        }
        let leaving = engine.shutdown(Time(now));
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

    fn upgrade_step(&mut self, node: usize, incarnation: u64, max: u16, down: u64, since: u64) {
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
        // Stop: the incarnation ends like a crash, without counting as one.
        if let Some(engine) = slot.engine.take() {
            self.cov.add_stats(engine.stats());
        }
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

    /// `Engine::adjust_version`; a refusal on the requester must name a
    /// configured node (and, for `NotCapable`, a range that node ran).
    fn adjust(&mut self, node: usize, group: Option<usize>, to: Option<u16>) {
        let now = self.now;
        let scope = group.map_or(Scope::All, |g| Scope::Group(self.sc.groups[g].id));
        let target = to.map_or(Target::HighestCommon, |v| Target::Exact(ProtocolVersion(v)));
        let slot = &mut self.slots[node];
        let Some(engine) = slot.engine.as_mut() else {
            return;
        };
        if slot.upgrading {
            return;
        }
        self.cov.adjusts += 1;
        let r = engine.adjust_version(Time(now), scope, target);
        let id = slot.id.0;
        self.trace.note(now, &[22, node as u64], || {
            format!("n{id} adjust_version({scope:?}, {target:?}): {r:?}")
        });
        let n = self.slots.len() as u32;
        let configured = |x: NodeId| (1..=n).contains(&x.0);
        match r {
            Ok(reqs) => self.cov.adjust_requests += reqs.len() as u64,
            Err(AdjustError::Version(VersionError::NodeNotActive { node: culprit })) => {
                self.cov.refused_not_active += 1;
                if !configured(culprit) {
                    self.fail_world(
                        "adjust-error",
                        format!("n{id}: NodeNotActive names {culprit:?}"),
                    );
                }
            }
            Err(AdjustError::Version(VersionError::Partitioned { missing })) => {
                self.cov.refused_partitioned += 1;
                if missing.is_empty() || !missing.iter().all(|m| configured(*m)) {
                    self.fail_world(
                        "adjust-error",
                        format!("n{id}: Partitioned names {missing:?}"),
                    );
                }
            }
            Err(AdjustError::Version(VersionError::NotCapable {
                node: culprit,
                supported,
            })) => {
                self.cov.refused_not_capable += 1;
                let ran = [
                    version::OLDEST.0,
                    self.sc.upgrade.as_ref().map_or(0, |p| p.old),
                ];
                let plausible = configured(culprit)
                    && supported.min == version::OLDEST
                    && (supported.max == version::CURRENT || ran.contains(&supported.max.0))
                    && !supported.contains(to.map_or(supported.max, ProtocolVersion));
                if !plausible {
                    self.fail_world(
                        "adjust-error",
                        format!("n{id}: NotCapable names {culprit:?} with {supported:?}"),
                    );
                }
            }
            Err(_) => self.cov.refused_other += 1,
        }
        self.settle(node);
    }

    /// The application tries the version-2 function; refused, it falls back
    /// to single multicasts. Refused exactly when the node's group runs an
    /// older version.
    fn batch(&mut self, node: usize, group: usize, count: u32) {
        let now = self.now;
        if self.slots[node].engine.is_none()
            || self.slots[node].upgrading
            || !self.slots[node].wants.contains(&group)
        {
            return;
        }
        let payloads: Vec<Bytes> = (0..count).map(|_| self.payload(node, group)).collect();
        let gid = self.sc.groups[group].id;
        let slot = &mut self.slots[node];
        let Some(engine) = slot.engine.as_mut() else {
            return;
        };
        let running = engine
            .view(gid)
            .filter(|_| engine.is_member(gid))
            .map(|v| v.protocol);
        let r = engine.multicast_batch(Time(now), gid, payloads.clone());
        let (id, inc) = (slot.id.0, slot.incarnation);
        self.trace.note(now, &[23, node as u64, group as u64], || {
            format!(
                "n{id}#{inc} multicast_batch of {count} to g{group} (view runs {running:?}): {:?}",
                r.as_ref().map(|m| match m {
                    Multicast::Sent { sender_seq } => format!("Sent from sender_seq {sender_seq}"),
                    Multicast::BackPressured(_) => "BackPressured".to_string(),
                })
            )
        });
        match r {
            Ok(Multicast::Sent { sender_seq }) => {
                self.cov.batches_sent += 1;
                if running.is_none_or(|v| v < version::BATCH) {
                    self.fail_world(
                        "version-gating",
                        format!("n{id}: multicast_batch accepted while the group runs {running:?}"),
                    );
                }
                for (i, p) in payloads.iter().enumerate() {
                    let digest = fnv1a(FNV_START, p);
                    self.logs.sent.push(Sent {
                        at: now,
                        node: id,
                        incarnation: inc,
                        group: gid.0,
                        sender_seq: sender_seq + i as u64,
                        digest,
                    });
                    self.cov.sent += 1;
                    self.slots[node].unconfirmed.insert((group, digest));
                }
            }
            Err(BatchError::Version(VersionError::VersionTooLow { required, active })) => {
                self.cov.batches_too_low += 1;
                if required != version::BATCH || Some(active) != running || active >= required {
                    self.fail_world(
                        "version-gating",
                        format!(
                            "n{id}: multicast_batch refused with VersionTooLow {{ required:                              {required:?}, active: {active:?} }} while the group runs {running:?}"
                        ),
                    );
                }
                self.slots[node]
                    .pending
                    .extend(payloads.into_iter().map(|p| (group, p)));
            }
            Ok(Multicast::BackPressured(_)) | Err(_) => {
                self.slots[node]
                    .pending
                    .extend(payloads.into_iter().map(|p| (group, p)));
            }
        }
        self.settle(node);
    }

    /// A member reached an adjust-version entry: its log records the outcome.
    fn record_adjust(&mut self, node: usize, ev: VersionEvent) {
        let (id, inc, log) = (
            self.slots[node].id.0,
            self.slots[node].incarnation,
            self.slots[node].log,
        );
        let now = self.now;
        self.trace.note(now, &[24, node as u64, ev.group.0, ev.position], || {
            format!(
                "n{id}#{inc} ADJUST OUTCOME {:?} at position {} (view {}.{}): n{} request {} -> {:?}",
                ev.group,
                ev.position,
                ev.view.epoch(),
                ev.view.change(),
                ev.requester.0,
                ev.request,
                ev.outcome
            )
        });
        let result = match ev.outcome {
            Ok((from, to)) => {
                self.cov.outcomes_switched += 1;
                AdjustResult::Switched {
                    from: from.0,
                    to: to.0,
                }
            }
            Err(e) => {
                self.cov.outcomes_refused += 1;
                match e {
                    VersionError::NodeNotActive { node } => {
                        AdjustResult::NodeNotActive { node: node.0 }
                    }
                    VersionError::Partitioned { missing } => AdjustResult::Partitioned {
                        missing: missing.iter().map(|n| n.0).collect(),
                    },
                    VersionError::NotCapable { node, supported } => AdjustResult::NotCapable {
                        node: node.0,
                        min: supported.min.0,
                        max: supported.max.0,
                    },
                    other => {
                        self.fail_world(
                            "adjust-outcome",
                            format!("n{id}: an ordered adjust outcome carries {other:?}"),
                        );
                        return;
                    }
                }
            }
        };
        self.logs.nodes[log]
            .events
            .push(Event::Adjust(check::AdjustOutcome {
                at: now,
                group: ev.group.0,
                position: ev.position,
                view: ev.view.0,
                requester: ev.requester.0,
                request: ev.request,
                result,
            }));
    }

    /// The no-pause measurement over this seed's logs (see [`Gaps`]).
    fn measure(&mut self) {
        let sent_at: BTreeMap<u64, u64> = self.logs.sent.iter().map(|s| (s.digest, s.at)).collect();
        let (mut worst_switch, mut worst_ordinary, mut samples) = (0u64, 0u64, 0u64);
        let unraced = self
            .sc
            .upgrade
            .as_ref()
            .is_some_and(|p| p.race == super::scenario::Race::None);
        for log in &self.logs.nodes {
            // Per group: the last event (view id, position, time, kind).
            #[derive(Clone, Copy, PartialEq)]
            enum Kind {
                Delivery,
                Switch,
                OtherView,
                Flush,
            }
            let mut last: BTreeMap<u64, (u64, u64, u64, Kind)> = BTreeMap::new();
            for e in &log.events {
                match e {
                    Event::View(v) => {
                        let fast = last.get(&v.group).is_some_and(|l| l.0 + 1 == v.view);
                        let kind = match v.reason {
                            check::Reason::AdjustVersion { .. } => Kind::Switch,
                            _ if fast => Kind::OtherView,
                            _ => Kind::Flush,
                        };
                        last.insert(v.group, (v.view, v.position, v.at, kind));
                    }
                    Event::Delivery(d) => {
                        if let Some(&(view, pos, at, kind)) = last.get(&d.group)
                            && view == d.view
                            && d.seq == pos + 1
                            && sent_at.get(&d.digest).is_some_and(|s| *s <= at)
                        {
                            let gap = d.at - at;
                            match kind {
                                Kind::Switch => {
                                    self.gaps.after_switch.push(gap);
                                    if unraced {
                                        self.gaps.after_switch_unraced.push(gap);
                                    }
                                    worst_switch = worst_switch.max(gap);
                                    samples += 1;
                                }
                                Kind::Delivery => {
                                    self.gaps.ordinary.push(gap);
                                    worst_ordinary = worst_ordinary.max(gap);
                                }
                                Kind::OtherView => self.gaps.after_view.push(gap),
                                Kind::Flush => {}
                            }
                        }
                        last.insert(d.group, (d.view, d.seq, d.at, Kind::Delivery));
                    }
                    Event::Partitioned { group, .. } => {
                        last.remove(group);
                    }
                    Event::Adjust(_) => {}
                }
            }
        }
        if samples > 0 {
            self.gaps
                .per_seed
                .push((self.sc.seed, worst_switch, worst_ordinary));
        }
    }

    /// The coordinator of `group` as seen by the first live member.
    fn coordinator(&self, group: usize) -> Option<usize> {
        let gid = self.sc.groups[group].id;
        self.slots.iter().find_map(|s| {
            let view = s.engine.as_ref()?.view(gid)?;
            let c = view.coordinator()?;
            Some(c.0 as usize - 1)
        })
    }

    /// A join the application tries again every 5 ms while it is refused
    /// (at most `tries` times).
    fn join_retrying(&mut self, node: usize, group: usize, tries: u32) {
        let slot = &self.slots[node];
        if slot.engine.is_none() || slot.upgrading || slot.wants.contains(&group) {
            return;
        }
        let incarnation = slot.incarnation;
        self.join(node, group);
        self.settle(node);
        if !self.slots[node].wants.contains(&group) && tries > 1 {
            self.schedule(
                self.now + 5 * MS,
                Ev::RetryJoin {
                    node,
                    group,
                    incarnation,
                    tries: tries - 1,
                },
            );
        }
    }

    fn join(&mut self, node: usize, group: usize) {
        let spec = &self.sc.groups[group];
        let (gid, mode) = (spec.id, spec.mode);
        let Some(engine) = self.slots[node].engine.as_mut() else {
            return;
        };
        let r = engine.join(Time(self.now), gid, mode);
        let id = self.slots[node].id.0;
        self.trace.note(
            self.now,
            &[4, node as u64, group as u64, u64::from(r.is_ok())],
            || format!("n{id} join g{group}: {r:?}"),
        );
        if r.is_ok() {
            self.cov.joins += 1;
            self.slots[node].wants.insert(group);
        }
    }

    fn leave(&mut self, node: usize, group: usize) {
        let gid = self.sc.groups[group].id;
        let slot = &mut self.slots[node];
        let Some(engine) = slot.engine.as_mut() else {
            return;
        };
        if !slot.wants.contains(&group) {
            return;
        }
        let r = engine.leave(Time(self.now), gid);
        let id = slot.id.0;
        if r.is_ok() {
            self.cov.leaves += 1;
            slot.wants.remove(&group);
            // The application gives up what it had not handed over yet.
            slot.pending.retain(|(g, _)| *g != group);
        }
        self.trace.note(
            self.now,
            &[5, node as u64, group as u64, u64::from(r.is_ok())],
            || format!("n{id} leave g{group}: {r:?}"),
        );
        self.settle(node);
    }

    /// A unique payload: who, which incarnation, which group, a counter, then
    /// filler of a varying length.
    fn payload(&mut self, node: usize, group: usize) -> Bytes {
        let slot = &mut self.slots[node];
        slot.counter += 1;
        let mut p = Vec::with_capacity(64);
        p.extend_from_slice(&slot.id.0.to_le_bytes());
        p.extend_from_slice(&slot.incarnation.to_le_bytes());
        p.push(group as u8);
        p.extend_from_slice(&slot.counter.to_le_bytes());
        let filler = self.rng.range(0, 40) as usize;
        p.extend((0..filler).map(|i| (slot.counter as usize + i) as u8));
        Rc::from(p)
    }

    /// Hand the Engine's commands to the world, then let the application
    /// retry what it is waiting to multicast, until nothing changes.
    fn settle(&mut self, node: usize) {
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
            match engine.multicast(Time(now), gid, payload.clone()) {
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
            let (id, inc, log) = (slot.id.0, slot.incarnation, slot.log);
            let now = self.now;
            match cmd {
                Command::Send { to, msg } => self.send(node, to, msg),
                Command::Persist(state) => self.slots[node].disk = Some(state),
                Command::Deliver(d) => {
                    let Some(group) = self.group_index(d.group.0) else {
                        self.fail_world(
                            "no-creation",
                            format!("n{id} delivered in unknown group {:?}", d.group),
                        );
                        return;
                    };
                    let digest = fnv1a(FNV_START, d.payload.as_ref());
                    self.cov.delivered += 1;
                    self.slots[node].unconfirmed.remove(&(group, digest));
                    let pos = self.slots[node].position.entry(group).or_insert(0);
                    *pos = (*pos).max(d.seq);
                    self.trace.note(now, &[7, node as u64, d.group.0, d.view.0, d.seq, digest], || {
                        format!(
                            "n{id}#{inc} DELIVER g{group} view {}.{} seq {} from n{}#{} s{} digest {digest:#x}",
                            d.view.epoch(),
                            d.view.change(),
                            d.seq,
                            d.sender.0,
                            d.sender_incarnation,
                            d.sender_seq
                        )
                    });
                    self.logs.nodes[log]
                        .events
                        .push(Event::Delivery(check::Delivered {
                            at: now,
                            group: d.group.0,
                            view: d.view.0,
                            seq: d.seq,
                            sender: d.sender.0,
                            sender_seq: d.sender_seq,
                            digest,
                        }));
                }
                Command::ViewChange {
                    view,
                    reason,
                    position,
                } => {
                    let Some(group) = self.group_index(view.group.0) else {
                        self.fail_world(
                            "view-agreement",
                            format!("n{id} installed a view of unknown group {view:?}"),
                        );
                        return;
                    };
                    let members: Vec<u32> = view.members.iter().map(|n| n.0).collect();
                    self.trace.note(now, &[8, node as u64, view.group.0, view.id.0, position], || {
                        format!(
                            "n{id}#{inc} VIEW g{group} {}.{} members {members:?} {reason:?} at position {position}",
                            view.id.epoch(),
                            view.id.change()
                        )
                    });
                    let event = if reason == Reason::Partitioned {
                        self.cov.partitioned_reports += 1;
                        self.slots[node].unconfirmed.retain(|(g, _)| *g != group);
                        Event::Partitioned {
                            at: now,
                            group: view.group.0,
                        }
                    } else {
                        self.cov.views += 1;
                        let pos = self.slots[node].position.entry(group).or_insert(0);
                        *pos = (*pos).max(position);
                        Event::View(check::ViewInstalled {
                            at: now,
                            group: view.group.0,
                            view: view.id.0,
                            members,
                            protocol: view.protocol.0,
                            reason: convert(&reason),
                            position,
                        })
                    };
                    self.logs.nodes[log].events.push(event);
                }
                Command::Partitioned { group } => {
                    self.trace.note(now, &[9, node as u64, group.0], || {
                        format!("n{id}#{inc} PARTITIONED {group:?}")
                    });
                    if let Some(g) = self.group_index(group.0) {
                        self.slots[node].unconfirmed.retain(|(x, _)| *x != g);
                    }
                    self.logs.nodes[log].events.push(Event::Partitioned {
                        at: now,
                        group: group.0,
                    });
                }
                Command::JoinRefused { group, active } => {
                    self.trace.note(now, &[10, node as u64, group.0], || {
                        format!("n{id}#{inc} join refused {group:?} (active {active:?})")
                    });
                    // Refused only when its range lacks the group's version
                    // (an old release after the switch); the application
                    // then gives the group up.
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
                Command::WakeAt(t) => {
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
        }
    }

    fn group_index(&self, gid: u64) -> Option<usize> {
        self.sc.groups.iter().position(|g| g.id.0 == gid)
    }

    fn send(&mut self, from: usize, to: NodeId, msg: Message<Bytes>) {
        self.cov.messages += 1;
        let Some(to) = (to.0 as usize)
            .checked_sub(1)
            .filter(|t| *t < self.slots.len())
        else {
            self.fail_world(
                "no-creation",
                format!("n{} sent to unconfigured {to:?}", from + 1),
            );
            return;
        };
        let net = self.sc.net.clone();
        let key = [11, from as u64, to as u64];
        if from != to && self.component[from] != self.component[to] {
            self.trace.note(self.now, &key, || {
                format!("n{} -> n{} cut: {}", from + 1, to + 1, kind(&msg))
            });
            return;
        }
        if from != to && self.chaos && self.rng.chance(net.loss) {
            self.cov.lost += 1;
            self.trace.note(self.now, &key, || {
                format!("n{} -> n{} LOST: {}", from + 1, to + 1, kind(&msg))
            });
            return;
        }
        let copies = if from != to && self.chaos && self.rng.chance(net.dup) {
            self.cov.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut latency = if from == to {
                net.lat_min
            } else {
                self.rng.range(net.lat_min, net.lat_max)
            };
            if from != to && self.chaos {
                if matches!(msg.body, Body::AdjustRequest { .. }) {
                    latency += self.sc.adjust_delay;
                }
                if self.rng.chance(net.reorder) {
                    latency += self.rng.range(0, net.reorder_max);
                }
                if self.rng.chance(net.delay) {
                    latency += self.rng.range(0, net.delay_max);
                }
            }
            let flight = if self.sc.wire {
                let mut buf = Vec::new();
                if let Err(e) = wire::encode(&msg, &mut buf) {
                    self.fail_world("wire", format!("encode failed: {e} for {}", kind(&msg)));
                    return;
                }
                Flight::Encoded(buf)
            } else {
                Flight::Typed(Box::new(msg.clone()))
            };
            let at = self.now + latency;
            self.trace
                .note(self.now, &[12, from as u64, to as u64, at], || {
                    format!(
                        "n{} -> n{} {} arrives {:.3}ms",
                        from + 1,
                        to + 1,
                        describe(&msg),
                        at as f64 / MS as f64
                    )
                });
            self.schedule(at, Ev::Arrive { from, to, flight });
        }
    }

    fn arrive(&mut self, from: usize, to: usize, flight: Flight) {
        if from != to && self.component[from] != self.component[to] {
            self.trace
                .note(self.now, &[13, from as u64, to as u64], || {
                    format!("n{} -> n{} cut in flight", from + 1, to + 1)
                });
            return;
        }
        let msg = match flight {
            Flight::Typed(m) => *m,
            Flight::Encoded(bytes) => match wire::decode(&bytes) {
                Ok(m) => m.map_payload(Rc::from),
                Err(e) => {
                    self.fail_world("wire", format!("decode of an encoded frame failed: {e}"));
                    return;
                }
            },
        };
        let from_id = self.slots[from].id;
        let now = self.now;
        let Some(engine) = self.slots[to].engine.as_mut() else {
            return;
        };
        engine.handle_message(Time(now), from_id, msg);
        self.settle(to);
    }

    fn final_heal(&mut self) {
        self.chaos = false;
        self.component.iter_mut().for_each(|c| *c = 0);
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

    /// Per group, who must be in the final view: nodes up at the end that
    /// want it.
    fn expected(&self) -> BTreeMap<u64, BTreeSet<u32>> {
        self.sc
            .groups
            .iter()
            .enumerate()
            .map(|(g, spec)| {
                let members = self
                    .slots
                    .iter()
                    .filter(|s| s.engine.is_some() && s.wants.contains(&g))
                    .map(|s| s.id.0)
                    .collect();
                (spec.id.0, members)
            })
            .collect()
    }
}

/// An action with node ids (`n1` is index 0) and group names as in the rest
/// of the trace.
fn show(a: &Action) -> String {
    match a {
        Action::Multicast { node, group, count } => {
            format!("n{} multicasts {count} to g{group}", node + 1)
        }
        Action::Join { node, group } => format!("n{} joins g{group}", node + 1),
        Action::Leave { node, group } => format!("n{} leaves g{group}", node + 1),
        Action::LeaveCoordinator { group } => format!("the coordinator of g{group} leaves"),
        Action::Crash { node } => format!("n{} crashes", node + 1),
        Action::CrashCoordinator { group } => format!("the coordinator of g{group} crashes"),
        Action::Restart { node } => format!("n{} restarts", node + 1),
        Action::Partition { side } => {
            let cut: Vec<String> = (0..64)
                .filter(|i| side & (1 << i) != 0)
                .map(|i| format!("n{}", i + 1))
                .collect();
            format!("partition: {} | the rest", cut.join(" "))
        }
        Action::Heal => "heal".to_string(),
        Action::Upgrade { node, max, down } => format!(
            "n{} upgrades to max version {max} (down {}ms)",
            node + 1,
            down / MS
        ),
        Action::Adjust { node, group, to } => format!(
            "n{} adjusts {} to {}",
            node + 1,
            group.map_or("every group".to_string(), |g| format!("g{g}")),
            to.map_or("the highest common version".to_string(), |v| format!(
                "version {v}"
            ))
        ),
        Action::Batch { node, group, count } => {
            format!("n{} multicast_batch of {count} to g{group}", node + 1)
        }
    }
}

fn convert(r: &Reason) -> check::Reason {
    match r {
        Reason::Join(n) => check::Reason::Join(n.0),
        Reason::Leave(n) => check::Reason::Leave(n.0),
        Reason::Failed(ns) => check::Reason::Failed(ns.iter().map(|n| n.0).collect()),
        Reason::Partitioned => check::Reason::Partitioned,
        Reason::Merged => check::Reason::Merged,
        Reason::AdjustVersion { from, to } => check::Reason::AdjustVersion {
            from: from.0,
            to: to.0,
        },
    }
}

fn kind<P>(m: &Message<P>) -> &'static str {
    match &m.body {
        Body::Heartbeat => "Heartbeat",
        Body::Versions { .. } => "Versions",
        Body::AdjustRequest { .. } => "AdjustRequest",
        Body::DataBatch { .. } => "DataBatch",
        Body::Data { .. } => "Data",
        Body::Order { .. } => "Order",
        Body::Ack { .. } => "Ack",
        Body::Nack { .. } => "Nack",
        Body::JoinRequest { .. } => "JoinRequest",
        Body::Welcome { .. } => "Welcome",
        Body::JoinRefused { .. } => "JoinRefused",
        Body::NoGroup { .. } => "NoGroup",
        Body::LeaveRequest { .. } => "LeaveRequest",
        Body::Prepare { .. } => "Prepare",
        Body::Promise { .. } => "Promise",
        Body::Reject { .. } => "Reject",
        Body::Accept { .. } => "Accept",
        Body::Accepted { .. } => "Accepted",
        Body::Decided { .. } => "Decided",
        Body::Lease { .. } => "Lease",
        Body::LeaseGrant { .. } => "LeaseGrant",
    }
}

fn describe(m: &Message<Bytes>) -> String {
    match &m.body {
        Body::Heartbeat => format!("Heartbeat(inc {})", m.incarnation),
        _ => format!("{:?}", m.clone().map_payload(|p| p.len())),
    }
}
