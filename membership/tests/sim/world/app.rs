//! The application on each node: what it multicasts (one by one, or as a
//! batch where the group's version allows), the groups it joins and
//! leaves, and the adjust-version calls the script makes on it.

use std::rc::Rc;

use concord_membership::check::Sent;
use concord_membership::{
    AdjustError, BatchError, Multicast, NodeId, ProtocolVersion, Scope, Target, VersionError,
    version,
};

use super::{Bytes, Ev, World};
use crate::sim::rng::{FNV_START, fnv1a};
use crate::sim::scenario::MS;

impl World {
    /// The script has the application multicast `count` messages to
    /// `group` (if it is up, not upgrading, and in the group).
    pub(super) fn multicast(&mut self, node: usize, group: usize, count: u32) {
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

    /// The script has the application join `group`: in the upgrade family
    /// retrying while refused, in the base family once.
    pub(super) fn scripted_join(&mut self, node: usize, group: usize) {
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

    /// A join the application tries again every 5 ms while it is refused
    /// (at most `tries` times).
    pub(super) fn join_retrying(&mut self, node: usize, group: usize, tries: u32) {
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

    pub(super) fn join(&mut self, node: usize, group: usize) {
        let spec = &self.sc.groups[group];
        let (gid, mode) = (spec.id, spec.mode);
        let now = self.clock(node);
        let Some(engine) = self.slots[node].engine.as_mut() else {
            return;
        };
        let r = engine.join(now, gid, mode);
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

    pub(super) fn leave(&mut self, node: usize, group: usize) {
        let gid = self.sc.groups[group].id;
        let now = self.clock(node);
        let slot = &mut self.slots[node];
        let Some(engine) = slot.engine.as_mut() else {
            return;
        };
        if !slot.wants.contains(&group) {
            return;
        }
        let r = engine.leave(now, gid);
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
    pub(super) fn payload(&mut self, node: usize, group: usize) -> Bytes {
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

    /// `Engine::adjust_version`; a refusal on the requester must name a
    /// configured node (and, for `NotCapable`, a range that node ran).
    pub(super) fn adjust(&mut self, node: usize, group: Option<usize>, to: Option<u16>) {
        let now = self.now;
        let scope = group.map_or(Scope::All, |g| Scope::Group(self.sc.groups[g].id));
        let target = to.map_or(Target::HighestCommon, |v| Target::Exact(ProtocolVersion(v)));
        let time = self.clock(node);
        let slot = &mut self.slots[node];
        let Some(engine) = slot.engine.as_mut() else {
            return;
        };
        if slot.upgrading {
            return;
        }
        self.cov.adjusts += 1;
        let r = engine.adjust_version(time, scope, target);
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
    pub(super) fn batch(&mut self, node: usize, group: usize, count: u32) {
        let now = self.now;
        if self.slots[node].engine.is_none()
            || self.slots[node].upgrading
            || !self.slots[node].wants.contains(&group)
        {
            return;
        }
        let payloads: Vec<Bytes> = (0..count).map(|_| self.payload(node, group)).collect();
        let gid = self.sc.groups[group].id;
        let time = self.clock(node);
        let slot = &mut self.slots[node];
        let Some(engine) = slot.engine.as_mut() else {
            return;
        };
        let running = engine
            .view(gid)
            .filter(|_| engine.is_member(gid))
            .map(|v| v.protocol);
        let r = engine.multicast_batch(time, gid, payloads.clone());
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
}
