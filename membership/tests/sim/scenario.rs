//! What one seed decides: the cluster, the network, the workload and the
//! faults. Everything is drawn up front from the seed, so a seed names a run.

use concord_membership::version::{CURRENT, OLDEST};
use concord_membership::{DeliveryMode, GroupId};

use super::rng::Rng;

pub const MS: u64 = 1_000_000;
pub const US: u64 = 1_000;

/// One group of the scenario.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub name: String,
    pub id: GroupId,
    pub mode: DeliveryMode,
}

/// The network's misbehaviour: one for the chaos phase, a milder one for
/// the liveness phase after the final heal (`Net::draw_heal`).
#[derive(Debug, Clone)]
pub struct Net {
    pub lat_min: u64,
    pub lat_max: u64,
    /// Probability a message is lost.
    pub loss: f64,
    /// Probability a message is delivered twice.
    pub dup: f64,
    /// Probability a message gets up to `reorder_max` extra latency (so it
    /// overtakes or is overtaken).
    pub reorder: f64,
    pub reorder_max: u64,
    /// Probability of a long delay, up to `delay_max` (can exceed the failure
    /// timeout: a false suspicion).
    pub delay: f64,
    pub delay_max: u64,
}

impl Net {
    /// The chaos-phase network both families draw (same draws, same order,
    /// so a seed's network does not depend on which family reads it).
    fn draw(rng: &mut Rng, timeout: u64) -> Net {
        let lat_min = rng.range(20 * US, 100 * US);
        Net {
            lat_min,
            lat_max: lat_min + rng.range(0, 500 * US),
            loss: *rng.pick(&[0.0, 0.0, 0.001, 0.01, 0.03]),
            dup: *rng.pick(&[0.0, 0.0, 0.005, 0.02]),
            reorder: *rng.pick(&[0.0, 0.05, 0.2]),
            reorder_max: rng.range(100 * US, 2 * MS),
            delay: *rng.pick(&[0.0, 0.0, 0.001, 0.005]),
            delay_max: rng.range(timeout / 2, 3 * timeout),
        }
    }

    /// The liveness phase's network: the chaos phase's latency, with loss,
    /// duplication and reordering still on, at rates the liveness deadline
    /// allows, and no long delays: a delay past the failure timeout is a
    /// false suspicion, which starts a flush, so a cluster under them never
    /// stays converged for the quiet period the run ends on.
    fn draw_heal(rng: &mut Rng, chaos: &Net) -> Net {
        Net {
            lat_min: chaos.lat_min,
            lat_max: chaos.lat_max,
            loss: *rng.pick(&[0.001, 0.003, 0.01]),
            dup: *rng.pick(&[0.001, 0.005, 0.01]),
            reorder: *rng.pick(&[0.01, 0.05, 0.1]),
            reorder_max: rng.range(100 * US, MS),
            delay: 0.0,
            delay_max: 0,
        }
    }
}

/// The unit of a clock rate: a node's clock advances `rate / RATE_ONE`
/// nanoseconds per nanosecond of world time.
pub const RATE_ONE: u64 = 1_000_000_000;

/// One node's clock: it reads `offset + world_time * rate / RATE_ONE`, a
/// fresh value on every call, never going back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSpec {
    pub offset: u64,
    pub rate: u64,
}

/// How far apart the nodes' clock rates may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// Within the bound the sequencer lease assumes: over a lease
    /// (`failure_timeout / 2`) two clocks part by less than
    /// `Config::lease_drift`. The Engine's safety must hold.
    Within,
    /// Beyond it, by a factor of 2 to 8: the lease may fail, by design.
    Beyond,
}

/// Draws the lease's drift margin and every node's clock. Lease length
/// `L = timeout / 2` and margin `d`: the lease holds while the fastest
/// clock's rate over the slowest's stays below `1 + d / L` (an acceptor
/// waits `L + d` on its clock from the grant, the holder's lease ends `L`
/// on its clock after the request, which went out earlier).
fn draw_clocks(rng: &mut Rng, nodes: usize, timeout: u64, drift: Drift) -> (u64, Vec<ClockSpec>) {
    let lease = timeout / 2;
    let margin = *rng.pick(&[MS, timeout / 20, timeout / 8]);
    let bound = margin as f64 / lease as f64;
    // The spread s: the fastest rate is (1 + s) times the slowest.
    let s = match drift {
        Drift::Within => bound * rng.range(0, 95) as f64 / 100.0,
        Drift::Beyond => bound * rng.range(200, 800) as f64 / 100.0,
    };
    let slow = RATE_ONE as f64 * 2.0 / (2.0 + s);
    let fast = slow * (1.0 + s);
    // Within the bound the two ends are taken by two nodes half the time
    // (the edge of the bound); beyond it every node is at one end, at
    // least one at each.
    let ends = rng.chance(0.5) || drift == Drift::Beyond;
    let (a, b) = (rng.below(nodes), rng.below(nodes));
    let mut clocks: Vec<ClockSpec> = (0..nodes)
        .map(|i| {
            let u = match drift {
                Drift::Within if ends && i == a => 0.0,
                Drift::Within if ends && i == b => 1.0,
                Drift::Within => rng.range(0, 1000) as f64 / 1000.0,
                Drift::Beyond => f64::from(u8::from(rng.chance(0.5))),
            };
            ClockSpec {
                offset: rng.range(0, 1 << 40),
                rate: (slow + u * (fast - slow)).round() as u64,
            }
        })
        .collect();
    if drift == Drift::Beyond {
        let (lo, hi) = (slow.round() as u64, fast.round() as u64);
        clocks[a].rate = lo;
        if a != b {
            clocks[b].rate = hi;
        } else {
            clocks[(a + 1) % nodes].rate = hi;
        }
    }
    (margin, clocks)
}

/// Up to `most` cuts beyond the two-way partitions, each healed again: one
/// way, one link only (non-transitive), or a flapping link.
fn draw_net_faults(
    rng: &mut Rng,
    nodes: usize,
    timeout: u64,
    chaos_end: u64,
    most: u64,
    script: &mut Vec<(u64, Action)>,
) {
    for _ in 0..rng.range(0, most) {
        let at = rng.range(60 * MS, chaos_end - 50 * MS);
        let heal = (at + rng.range(timeout, 400 * MS)).min(chaos_end - MS);
        let a = rng.below(nodes);
        let b = (a + 1 + rng.below(nodes - 1)) % nodes;
        match rng.below(3) {
            0 => {
                let side = if rng.chance(0.5) {
                    1u64 << a
                } else {
                    rng.range(1, (1u64 << nodes) - 2)
                };
                script.push((at, Action::CutOneWay { side }));
                script.push((heal, Action::Heal));
            }
            1 => {
                script.push((at, Action::CutLink { a, b }));
                script.push((heal, Action::Heal));
            }
            _ => {
                // Around the failure timeout: suspected, then heard again.
                let period = rng.range(timeout / 4, 2 * timeout);
                script.push((
                    at,
                    Action::Flap {
                        a,
                        b,
                        period,
                        until: heal,
                    },
                ));
            }
        }
    }
}

/// Up to two pauses, most longer than the failure timeout (the peers
/// remove the node), some shorter (they do not), each over before the
/// final heal.
fn draw_pauses(
    rng: &mut Rng,
    nodes: usize,
    timeout: u64,
    chaos_end: u64,
    script: &mut Vec<(u64, Action)>,
) {
    for _ in 0..rng.range(0, 2) {
        let at = rng.range(60 * MS, chaos_end - 50 * MS);
        let len = if rng.chance(0.8) {
            rng.range(timeout + timeout / 4, 6 * timeout)
        } else {
            rng.range(timeout / 4, timeout)
        };
        let len = len.min(chaos_end - MS - at);
        let node = rng.below(nodes);
        script.push((at, Action::Pause { node, len }));
    }
}

/// A phase of a flush (an epoch change) in which a flush trap crashes a
/// node (see `world/flush.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPhase {
    Prepare,
    Promise,
    Accept,
    /// Decided, not installed yet.
    Decided,
    Install,
}

/// Whom a flush trap crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushTarget {
    /// The proposer of the epoch change.
    Leader,
    /// The coordinator of the view the flush installs (the first member
    /// other than the leader).
    Next,
}

/// Up to two flush traps (each armed as the group's live coordinator
/// crashes, which starts the flush it watches) and up to two persist
/// traps; every trapped node restarts `down` later.
fn draw_traps(
    rng: &mut Rng,
    nodes: usize,
    groups: usize,
    timeout: u64,
    chaos_end: u64,
    script: &mut Vec<(u64, Action)>,
) {
    const PHASES: [FlushPhase; 5] = [
        FlushPhase::Prepare,
        FlushPhase::Promise,
        FlushPhase::Accept,
        FlushPhase::Decided,
        FlushPhase::Install,
    ];
    for _ in 0..rng.range(0, 2) {
        let at = rng.range(60 * MS, chaos_end - 50 * MS);
        let group = rng.below(groups);
        let phase = *rng.pick(&PHASES);
        let target = *rng.pick(&[FlushTarget::Leader, FlushTarget::Next]);
        let down = rng.range(5 * MS, 150 * MS);
        script.push((
            at,
            Action::ArmFlushTrap {
                group,
                phase,
                target,
                down,
                window: 4 * timeout + 200 * MS,
            },
        ));
        script.push((at, Action::CrashCoordinator { group }));
        let back = (at + rng.range(5 * MS, 300 * MS)).min(chaos_end - MS);
        script.push((back, Action::RestartCoordinatorsOf { group }));
    }
    for _ in 0..rng.range(0, 2) {
        let at = rng.range(30 * MS, chaos_end - 50 * MS);
        script.push((
            at,
            Action::ArmPersistTrap {
                node: rng.below(nodes),
                before: rng.chance(0.5),
                down: rng.range(5 * MS, 150 * MS),
            },
        ));
    }
}

/// A scripted action. Node and group are indexes into the scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The application multicasts `count` messages at once.
    Multicast {
        node: usize,
        group: usize,
        count: u32,
    },
    Join {
        node: usize,
        group: usize,
    },
    Leave {
        node: usize,
        group: usize,
    },
    /// Gracefully remove whoever coordinates `group` right now.
    LeaveCoordinator {
        group: usize,
    },
    Crash {
        node: usize,
    },
    /// Crash whoever coordinates `group` right now.
    CrashCoordinator {
        group: usize,
    },
    Restart {
        node: usize,
    },
    /// Cut the network between the nodes whose bit is set and the others.
    Partition {
        side: u64,
    },
    /// Cut what the nodes whose bit is set send to the others; what the
    /// others send them still arrives (a one-way cut).
    CutOneWay {
        side: u64,
    },
    /// Cut the link between `a` and `b` both ways; each still reaches every
    /// other node (a non-transitive cut: a-c and c-b work).
    CutLink {
        a: usize,
        b: usize,
    },
    /// The link between `a` and `b` goes down, then up, every `period`,
    /// until `until` (it ends up).
    Flap {
        a: usize,
        b: usize,
        period: u64,
        until: u64,
    },
    /// The node stops being stepped for `len` (a stop signal, a long GC
    /// pause, a stalled VM): what reaches it waits, its timers do not fire,
    /// its application stands still; then it resumes, its clock jumped.
    Pause {
        node: usize,
        len: u64,
    },
    /// Arm a flush trap: the next epoch change of `group` (within
    /// `window`) crashes its leader or next coordinator in `phase`, and
    /// restarts it `down` later.
    ArmFlushTrap {
        group: usize,
        phase: FlushPhase,
        target: FlushTarget,
        down: u64,
        window: u64,
    },
    /// Restart the coordinator a `CrashCoordinator` of `group` crashed.
    RestartCoordinatorsOf {
        group: usize,
    },
    /// Arm a persist trap: `node` crashes at its next `Command::Persist`,
    /// before writing it or right after, and restarts `down` later.
    ArmPersistTrap {
        node: usize,
        before: bool,
        down: u64,
    },
    /// Remove every cut.
    Heal,
    /// Rolling-upgrade step (upgrade family): `Engine::shutdown` (ordered
    /// leaves of every group), stop once no group is left, restart `down`
    /// later running protocol versions up to `max`, rejoin.
    Upgrade {
        node: usize,
        max: u16,
        down: u64,
    },
    /// `Engine::adjust_version` from `node`: one group (`Some`) or all groups;
    /// to version `to` (`Some`) or the highest common one.
    Adjust {
        node: usize,
        group: Option<usize>,
        to: Option<u16>,
    },
    /// The application tries `multicast_batch` with `count` payloads; refused
    /// (`VersionTooLow` before the switch), it multicasts them one by one.
    Batch {
        node: usize,
        group: usize,
        count: u32,
    },
}

/// What a race injects around the adjust (upgrade family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Race {
    None,
    Crash,
    /// A leave and a rejoin around the adjust.
    Join,
    /// An old release replaces a node around the adjust.
    Downgrade,
    Partition,
}

/// The upgrade family's plan (for the trace and the coverage).
#[derive(Debug, Clone)]
pub struct UpgradePlan {
    /// The old release's highest version (every node starts with it).
    pub old: u16,
    /// What races the first adjust.
    pub race: Race,
}

/// One seed's run.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub nodes: usize,
    pub groups: Vec<GroupSpec>,
    pub heartbeat: u64,
    pub timeout: u64,
    pub window: usize,
    pub batch: usize,
    pub net: Net,
    /// Route every message through `wire::encode`/`decode`.
    pub wire: bool,
    /// End of the chaos phase: the final heal.
    pub chaos_end: u64,
    /// Actions by time; ties keep script order.
    pub script: Vec<(u64, Action)>,
    /// The network of the liveness phase, after the final heal.
    pub heal_net: Net,
    /// Per node, whether a node still down at the final heal restarts.
    pub restart_at_heal: Vec<bool>,
    /// Per node, the highest protocol version it runs at the start.
    pub initial_max: Vec<u16>,
    /// Extra latency of adjust-version requests during the chaos phase (a
    /// slow path to the sequencer: the window in which a race lands between
    /// the requester's check and the sequencer's).
    pub adjust_delay: u64,
    /// `Some` for the upgrade family.
    pub upgrade: Option<UpgradePlan>,
    /// `Config::lease_drift` of every node.
    pub lease_drift: u64,
    /// Per node, its clock.
    pub clocks: Vec<ClockSpec>,
    /// Whether the clocks keep within the lease's drift bound.
    pub drift: Drift,
}

impl Scenario {
    pub fn from_seed(seed: u64) -> Scenario {
        Scenario::base(seed, Drift::Within)
    }

    /// The base family's seed `seed`, its clocks drifting apart `drift`
    /// (the same cluster, network, workload and faults either way).
    pub fn base(seed: u64, drift: Drift) -> Scenario {
        let mut rng = Rng::new(seed);
        let mut shape = rng.fork();
        let mut net_rng = rng.fork();
        let mut work = rng.fork();
        let mut faults = rng.fork();
        // Drawn after the streams above, which keep their meaning.
        let mut clock_rng = rng.fork();
        let mut net_faults = rng.fork();
        let mut pauses = rng.fork();
        let mut traps = rng.fork();

        let nodes = shape.range(3, 7) as usize;
        let groups: Vec<GroupSpec> = (0..shape.range(1, 3))
            .map(|i| {
                let name = format!("sim-{i}");
                GroupSpec {
                    id: GroupId::from_name(&name),
                    name,
                    mode: if shape.chance(0.5) {
                        DeliveryMode::Agreed
                    } else {
                        DeliveryMode::Safe
                    },
                }
            })
            .collect();
        let heartbeat = *shape.pick(&[2 * MS, 5 * MS]);
        let timeout = heartbeat * shape.range(5, 10);
        let window = *shape.pick(&[4, 16, 64, 256]);
        let batch = *shape.pick(&[1, 8, 64]);
        let wire = shape.chance(0.25);

        let net = Net::draw(&mut net_rng, timeout);
        let chaos_end = work.range(400, 1200) * MS;

        let mut script = Vec::new();
        // Initial membership: every group gets a random non-empty set of nodes.
        for g in 0..groups.len() {
            let mut any = false;
            for n in 0..nodes {
                if work.chance(0.75) {
                    script.push((work.range(0, 30 * MS), Action::Join { node: n, group: g }));
                    any = true;
                }
            }
            if !any {
                let n = work.below(nodes);
                script.push((work.range(0, 30 * MS), Action::Join { node: n, group: g }));
            }
        }
        // Workload: single multicasts spread over the chaos phase, and bursts
        // that overrun the window (back-pressure).
        for _ in 0..work.range(50, 300) {
            let at = work.range(5 * MS, chaos_end);
            script.push((
                at,
                Action::Multicast {
                    node: work.below(nodes),
                    group: work.below(groups.len()),
                    count: 1,
                },
            ));
        }
        if work.chance(0.4) {
            for _ in 0..work.range(1, 3) {
                script.push((
                    work.range(40 * MS, chaos_end),
                    Action::Multicast {
                        node: work.below(nodes),
                        group: work.below(groups.len()),
                        count: work.range(20, 100) as u32,
                    },
                ));
            }
        }
        // Faults.
        let start = 60 * MS;
        for _ in 0..faults.range(0, 5) {
            let at = faults.range(start, chaos_end - 50 * MS);
            let later = |f: &mut Rng, lo: u64, hi: u64| (at + f.range(lo, hi)).min(chaos_end - MS);
            match faults.below(8) {
                0 | 1 => {
                    let node = faults.below(nodes);
                    script.push((at, Action::Crash { node }));
                    if faults.chance(0.7) {
                        let back = later(&mut faults, 5 * MS, 300 * MS);
                        script.push((back, Action::Restart { node }));
                    }
                }
                2 => {
                    let group = faults.below(groups.len());
                    script.push((at, Action::CrashCoordinator { group }));
                }
                3 | 4 => {
                    let side = if faults.chance(0.5) {
                        1u64 << faults.below(nodes)
                    } else {
                        faults.range(1, (1u64 << nodes) - 2)
                    };
                    script.push((at, Action::Partition { side }));
                    let heal = later(&mut faults, 30 * MS, 400 * MS);
                    script.push((heal, Action::Heal));
                }
                5 => {
                    let (node, group) = (faults.below(nodes), faults.below(groups.len()));
                    script.push((at, Action::Leave { node, group }));
                    if faults.chance(0.8) {
                        let back = later(&mut faults, MS, 200 * MS);
                        script.push((back, Action::Join { node, group }));
                    }
                }
                6 => {
                    let group = faults.below(groups.len());
                    script.push((at, Action::LeaveCoordinator { group }));
                }
                _ => {
                    let (node, group) = (faults.below(nodes), faults.below(groups.len()));
                    script.push((at, Action::Join { node, group }));
                }
            }
        }
        draw_net_faults(&mut net_faults, nodes, timeout, chaos_end, 3, &mut script);
        draw_pauses(&mut pauses, nodes, timeout, chaos_end, &mut script);
        draw_traps(
            &mut traps,
            nodes,
            groups.len(),
            timeout,
            chaos_end,
            &mut script,
        );
        script.sort_by_key(|(at, _)| *at);
        let restart_at_heal = (0..nodes).map(|_| faults.chance(0.75)).collect();
        let (lease_drift, clocks) = draw_clocks(&mut clock_rng, nodes, timeout, drift);
        let heal_net = Net::draw_heal(&mut net_faults, &net);
        Scenario {
            seed,
            nodes,
            groups,
            heartbeat,
            timeout,
            window,
            batch,
            net,
            wire,
            chaos_end,
            script,
            heal_net,
            restart_at_heal,
            initial_max: vec![CURRENT.0; nodes],
            adjust_delay: 0,
            upgrade: None,
            lease_drift,
            clocks,
            drift,
        }
    }

    /// The upgrade family (independent of `from_seed`: seed `s` of one family
    /// has nothing to do with seed `s` of the other). Every node joins every
    /// group running the old release (max version 1) while traffic runs, then
    /// each node in turn shuts down (ordered leaves), restarts as the new
    /// release and rejoins; then `adjust_version` runs (one group or all;
    /// a number or the highest common), possibly raced by a crash, a join, a
    /// downgrade or a partition; the application retries it later, and once
    /// more after the final heal. `multicast_batch` attempts are spread over
    /// the whole run (refused before the switch, working after it). The
    /// network misbehaves as in the base family, as the seed decides.
    pub fn upgrade_from_seed(seed: u64) -> Scenario {
        let mut rng = Rng::new(seed ^ 0x0075_9a4d_e000_0001);
        let mut shape = rng.fork();
        let mut net_rng = rng.fork();
        let mut work = rng.fork();
        let mut faults = rng.fork();
        // Drawn last, so the streams above (and what every seed meant before
        // the straggler existed) are unchanged.
        let mut straggle = rng.fork();
        let mut clock_rng = rng.fork();
        let mut net_faults = rng.fork();
        let mut pauses = rng.fork();
        let mut traps = rng.fork();
        let (old, new) = (OLDEST.0, CURRENT.0);

        let nodes = shape.range(3, 5) as usize;
        let groups: Vec<GroupSpec> = (0..shape.range(1, 3))
            .map(|i| {
                let name = format!("up-{i}");
                GroupSpec {
                    id: GroupId::from_name(&name),
                    name,
                    mode: if shape.chance(0.5) {
                        DeliveryMode::Agreed
                    } else {
                        DeliveryMode::Safe
                    },
                }
            })
            .collect();
        let heartbeat = *shape.pick(&[2 * MS, 5 * MS]);
        let timeout = heartbeat * shape.range(5, 10);
        let window = *shape.pick(&[16, 64, 256]);
        let batch = *shape.pick(&[1, 8, 64]);
        let wire = shape.chance(0.25);

        let net = Net::draw(&mut net_rng, timeout);

        let mut script = Vec::new();
        for g in 0..groups.len() {
            for n in 0..nodes {
                script.push((work.range(0, 30 * MS), Action::Join { node: n, group: g }));
            }
        }
        // The rolling upgrade, in a random order.
        let mut order: Vec<usize> = (0..nodes).collect();
        for i in (1..nodes).rev() {
            order.swap(i, work.below(i + 1));
        }
        let mut t = 80 * MS;
        for &node in &order {
            let down = work.range(5 * MS, 40 * MS);
            script.push((
                t,
                Action::Upgrade {
                    node,
                    max: new,
                    down,
                },
            ));
            t += work.range(60 * MS, 160 * MS);
        }
        let adjust_at = t + work.range(80 * MS, 250 * MS);
        let node = work.below(nodes);
        let group = work.chance(0.5).then(|| work.below(groups.len()));
        let to = work.chance(0.4).then_some(new);
        script.push((adjust_at, Action::Adjust { node, group, to }));
        // The operator's mistake: the last node of the rolling order is not
        // upgraded yet when the adjust runs (it is, a little later, and the
        // application's retries then succeed). An adjust to version 2 is
        // then refused with `NotCapable` naming that node and its old range.
        if straggle.chance(0.3) {
            let last = order[nodes - 1];
            let at = adjust_at + straggle.range(40 * MS, 120 * MS);
            for (when, action) in script.iter_mut() {
                if matches!(action, Action::Upgrade { node, .. } if *node == last) {
                    *when = at;
                }
            }
        }
        // Batches right after the first adjust (work only if it switched).
        for g in 0..groups.len() {
            script.push((
                adjust_at + work.range(MS, 30 * MS),
                Action::Batch {
                    node: work.below(nodes),
                    group: g,
                    count: work.range(2, 12) as u32,
                },
            ));
        }
        // Traffic around the adjust, so messages are waiting to be ordered
        // right behind it (the no-pause measurement).
        for _ in 0..work.range(2, 6) {
            script.push((
                adjust_at + work.range(0, 4 * MS) - 2 * MS,
                Action::Multicast {
                    node: work.below(nodes),
                    group: work.below(groups.len()),
                    count: work.range(2, 10) as u32,
                },
            ));
        }
        // The race: it lands between the requester's check and the
        // sequencer's (the request takes the slow path), or just before the
        // request.
        let race = *faults.pick(&[
            Race::None,
            Race::None,
            Race::Crash,
            Race::Join,
            Race::Downgrade,
            Race::Partition,
        ]);
        let adjust_delay = if race == Race::None && faults.chance(0.5) {
            0
        } else {
            faults.range(timeout, 3 * timeout).max(40 * MS)
        };
        let jitter = |f: &mut Rng| {
            if f.chance(0.2) {
                adjust_at - f.range(MS, 5 * MS)
            } else {
                adjust_at + f.range(0, adjust_delay / 3)
            }
        };
        match race {
            Race::None => {}
            Race::Crash => {
                let node = faults.below(nodes);
                let at = jitter(&mut faults);
                script.push((at, Action::Crash { node }));
                script.push((
                    at + faults.range(20 * MS, 150 * MS),
                    Action::Restart { node },
                ));
            }
            Race::Join => {
                let (node, group) = (faults.below(nodes), faults.below(groups.len()));
                let at = jitter(&mut faults);
                script.push((at, Action::Leave { node, group }));
                script.push((
                    at + faults.range(2 * MS, 20 * MS),
                    Action::Join { node, group },
                ));
            }
            Race::Downgrade => {
                // An old release replaces a node right after the request.
                let node = faults.below(nodes);
                let down = faults.range(2 * MS, 10 * MS);
                let at = jitter(&mut faults);
                script.push((
                    at,
                    Action::Upgrade {
                        node,
                        max: old,
                        down,
                    },
                ));
                // ... and is upgraded again later.
                script.push((
                    at + faults.range(120 * MS, 250 * MS),
                    Action::Upgrade {
                        node,
                        max: new,
                        down,
                    },
                ));
            }
            Race::Partition => {
                let side = if faults.chance(0.5) {
                    1u64 << faults.below(nodes)
                } else {
                    faults.range(1, (1u64 << nodes) - 2)
                };
                let at = jitter(&mut faults);
                script.push((at, Action::Partition { side }));
                script.push((at + faults.range(30 * MS, 300 * MS), Action::Heal));
            }
        }
        // Other faults now and then, anywhere in the chaos phase.
        let retry_at = adjust_at + work.range(300 * MS, 500 * MS);
        let chaos_end = retry_at + work.range(100 * MS, 300 * MS);
        for _ in 0..faults.range(0, 2) {
            let at = faults.range(60 * MS, chaos_end - 50 * MS);
            let later = |f: &mut Rng, lo: u64, hi: u64| (at + f.range(lo, hi)).min(chaos_end - MS);
            if faults.chance(0.5) {
                let node = faults.below(nodes);
                script.push((at, Action::Crash { node }));
                let back = later(&mut faults, 5 * MS, 300 * MS);
                script.push((back, Action::Restart { node }));
            } else {
                let side = 1u64 << faults.below(nodes);
                script.push((at, Action::Partition { side }));
                let heal = later(&mut faults, 30 * MS, 300 * MS);
                script.push((heal, Action::Heal));
            }
        }
        // The application retries (every group, highest common), during the
        // chaos and once more after the final heal.
        script.push((
            retry_at,
            Action::Adjust {
                node: work.below(nodes),
                group: None,
                to: None,
            },
        ));
        let last = chaos_end + work.range(300 * MS, 600 * MS);
        script.push((
            last,
            Action::Adjust {
                node: work.below(nodes),
                group: None,
                to: None,
            },
        ));
        for g in 0..groups.len() {
            script.push((
                last + work.range(20 * MS, 60 * MS),
                Action::Batch {
                    node: work.below(nodes),
                    group: g,
                    count: work.range(2, 12) as u32,
                },
            ));
        }
        // Workload: single multicasts and batch attempts over the chaos phase.
        for _ in 0..work.range(50, 250) {
            script.push((
                work.range(5 * MS, chaos_end),
                Action::Multicast {
                    node: work.below(nodes),
                    group: work.below(groups.len()),
                    count: 1,
                },
            ));
        }
        for _ in 0..work.range(3, 10) {
            script.push((
                work.range(40 * MS, chaos_end),
                Action::Batch {
                    node: work.below(nodes),
                    group: work.below(groups.len()),
                    count: work.range(2, 20) as u32,
                },
            ));
        }
        draw_net_faults(&mut net_faults, nodes, timeout, chaos_end, 2, &mut script);
        draw_pauses(&mut pauses, nodes, timeout, chaos_end, &mut script);
        draw_traps(
            &mut traps,
            nodes,
            groups.len(),
            timeout,
            chaos_end,
            &mut script,
        );
        script.sort_by_key(|(at, _)| *at);
        let (lease_drift, clocks) = draw_clocks(&mut clock_rng, nodes, timeout, Drift::Within);
        let heal_net = Net::draw_heal(&mut net_faults, &net);
        Scenario {
            seed,
            nodes,
            groups,
            heartbeat,
            timeout,
            window,
            batch,
            net,
            wire,
            chaos_end,
            script,
            heal_net,
            restart_at_heal: vec![true; nodes],
            initial_max: vec![old; nodes],
            adjust_delay,
            upgrade: Some(UpgradePlan { old, race }),
            lease_drift,
            clocks,
            drift: Drift::Within,
        }
    }
}
