//! What one seed yields: its result (or why it failed), what it exercised,
//! the checker logs, and the no-pause measurement over those logs.

use std::collections::BTreeMap;

use concord_membership::Stats;
use concord_membership::check::{self, Event, Logs};

use super::World;
use crate::sim::scenario::Race;

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
    /// One-way cuts, single-link (non-transitive) cuts, flapping links,
    /// and their link toggles.
    pub one_way_cuts: u64,
    pub link_cuts: u64,
    pub flaps: u64,
    pub flap_toggles: u64,
    /// The liveness phase's link model at work.
    pub lost_after_heal: u64,
    pub duplicated_after_heal: u64,
    pub reordered_after_heal: u64,
    /// Flush traps armed, and the crashes they made per phase.
    pub flush_traps: u64,
    pub flush_crash_prepare: u64,
    pub flush_crash_promise: u64,
    pub flush_crash_accept: u64,
    pub flush_crash_decided: u64,
    pub flush_crash_install: u64,
    /// Crashes at a `Persist`: before the state was written, right after.
    pub persist_crashes_before: u64,
    pub persist_crashes_after: u64,
    /// Pauses; paused members the peers removed; removals the resumed
    /// member learned.
    pub pauses: u64,
    pub paused_removed: u64,
    pub removals_learned: u64,
    /// Nodes whose clock runs at another rate than the world's.
    pub drifting_clocks: u64,
    /// Times a majority promise closed earlier epochs (the lease watch).
    pub lease_closings: u64,
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
        self.drifting_clocks += o.drifting_clocks;
        self.one_way_cuts += o.one_way_cuts;
        self.pauses += o.pauses;
        self.flush_traps += o.flush_traps;
        self.flush_crash_prepare += o.flush_crash_prepare;
        self.flush_crash_promise += o.flush_crash_promise;
        self.flush_crash_accept += o.flush_crash_accept;
        self.flush_crash_decided += o.flush_crash_decided;
        self.flush_crash_install += o.flush_crash_install;
        self.persist_crashes_before += o.persist_crashes_before;
        self.persist_crashes_after += o.persist_crashes_after;
        self.paused_removed += o.paused_removed;
        self.removals_learned += o.removals_learned;
        self.link_cuts += o.link_cuts;
        self.flaps += o.flaps;
        self.flap_toggles += o.flap_toggles;
        self.lost_after_heal += o.lost_after_heal;
        self.duplicated_after_heal += o.duplicated_after_heal;
        self.reordered_after_heal += o.reordered_after_heal;
        self.lease_closings += o.lease_closings;
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

    pub(super) fn add_stats(&mut self, s: &Stats) {
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
    /// The no-pause measurement over this seed's logs (see [`Gaps`]).
    pub(super) fn measure(&mut self) {
        let sent_at: BTreeMap<u64, u64> = self.logs.sent.iter().map(|s| (s.digest, s.at)).collect();
        let (mut worst_switch, mut worst_ordinary, mut samples) = (0u64, 0u64, 0u64);
        let unraced = self
            .sc
            .upgrade
            .as_ref()
            .is_some_and(|p| p.race == Race::None);
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
}
