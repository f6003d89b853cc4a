//! What one seed decides: the cluster, the network, the workload and the
//! faults. Everything is drawn up front from the seed, so a seed names a run.

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

/// The network's misbehaviour during the chaos phase (the heal phase keeps
/// only the base latency).
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
    /// Remove every cut.
    Heal,
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
    /// Per node, whether a node still down at the final heal restarts.
    pub restart_at_heal: Vec<bool>,
}

impl Scenario {
    pub fn from_seed(seed: u64) -> Scenario {
        let mut rng = Rng::new(seed);
        let mut shape = rng.fork();
        let mut net_rng = rng.fork();
        let mut work = rng.fork();
        let mut faults = rng.fork();

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

        let lat_min = net_rng.range(20 * US, 100 * US);
        let net = Net {
            lat_min,
            lat_max: lat_min + net_rng.range(0, 500 * US),
            loss: *net_rng.pick(&[0.0, 0.0, 0.001, 0.01, 0.03]),
            dup: *net_rng.pick(&[0.0, 0.0, 0.005, 0.02]),
            reorder: *net_rng.pick(&[0.0, 0.05, 0.2]),
            reorder_max: net_rng.range(100 * US, 2 * MS),
            delay: *net_rng.pick(&[0.0, 0.0, 0.001, 0.005]),
            delay_max: net_rng.range(timeout / 2, 3 * timeout),
        };
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
        script.sort_by_key(|(at, _)| *at);
        let restart_at_heal = (0..nodes).map(|_| faults.chance(0.75)).collect();
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
            restart_at_heal,
        }
    }
}
