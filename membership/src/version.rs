//! Protocol versions of a group and adjust-version.
//!
//! # The model
//!
//! Every node supports a [`VersionRange`] (`Config::protocol`; configuration
//! may cap `max` below [`CURRENT`] to run an "old release" from today's
//! binary). It advertises the range to every peer with each heartbeat
//! ([`crate::Body::Versions`]) and in every `JoinRequest`. Every group has an
//! active [`ProtocolVersion`], recorded in each [`crate::View`]: at creation
//! it is the highest version that the creator and every peer it has heard
//! from support. A joiner whose range does not contain the active version
//! is refused ([`crate::Command::JoinRefused`]); a joiner with a wider range
//! joins and speaks the active version.
//!
//! # Adjust-version
//!
//! [`crate::Engine::adjust_version`] switches one group, or every group at
//! once ([`Scope::All`]), to a target version (a number, or
//! [`Target::HighestCommon`]). It is checked twice with the same pure
//! function, [`check`]:
//!
//! 1. **On the requesting node, before anything is sent.** A failure is
//!    returned at once as [`VersionError`]: a configured node that is not
//!    active ([`VersionError::NodeNotActive`]), a view that does not hold
//!    every configured node or a requester cut off from the primary
//!    ([`VersionError::Partitioned`]), or a node whose range lacks the target
//!    ([`VersionError::NotCapable`]).
//! 2. **By the sequencer, at the moment it assigns the request a position.**
//!    It checks against the view in force after everything it ordered so far
//!    (so a join ordered in between counts), its own failure detector and
//!    the ranges it knows. The outcome is written into the ordered entry
//!    itself ([`VersionChange::rejected`]), so every member learns the same
//!    outcome at the same position: a race with a crash, a join or a
//!    partition fails the request deterministically everywhere.
//!
//! An accepted switch is a fast-path membership change: the view id moves
//! to the next change, the view's `protocol` becomes the target, and every
//! member reports `ViewChange { reason: Reason::AdjustVersion { from, to } }`
//! exactly at that position. Everything ordered before it ran under `from`,
//! everything after under `to`. No flush, no timeout, no pause: the entry
//! takes one position in an ordinary order record. Either way every member
//! also queues a [`VersionEvent`] (drained with
//! [`crate::Engine::poll_version_event`]) naming the requester, its request
//! number, the position and the outcome. A rejection installs no view.
//!
//! # Version 2: batched multicast
//!
//! [`crate::Engine::multicast_batch`] sends many payloads as one
//! [`crate::Body::DataBatch`] message per member (one send instead of one per
//! payload, consecutive sender sequence numbers) which the sequencer orders
//! as one run entry; each payload is then delivered as its own
//! [`crate::Delivery`]. Groups below [`BATCH`] refuse it with
//! [`VersionError::VersionTooLow`]; after the switch every member can use it.

use std::collections::VecDeque;

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::{GroupId, NodeId, ProtocolVersion, Time, VersionRange, ViewId};

/// The highest protocol version this build implements.
pub const CURRENT: ProtocolVersion = ProtocolVersion(2);

/// The lowest protocol version this build still speaks.
pub const OLDEST: ProtocolVersion = ProtocolVersion(1);

/// The version that brings [`crate::Engine::multicast_batch`].
pub const BATCH: ProtocolVersion = ProtocolVersion(2);

/// Most payloads in one batch (also capped by the sender window).
pub const MAX_BATCH: usize = 1024;

/// What version to switch to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// This version.
    Exact(ProtocolVersion),
    /// The highest version every configured node supports.
    HighestCommon,
}

/// Which groups to switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One group.
    Group(GroupId),
    /// Every group this node is a member of. Since a group can only be
    /// adjusted when its view holds every configured node, that is every
    /// group on the cluster that can be adjusted.
    All,
}

/// Why a version operation was refused. Every variant names the culprit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum VersionError {
    /// A configured node is not active: suspected by the failure detector,
    /// or not heard from yet (its range is unknown).
    #[error("node {node:?} is not active")]
    NodeNotActive {
        /// The node.
        node: NodeId,
    },
    /// The group is partitioned: its view lacks configured nodes, or the
    /// requester is cut off from the primary component.
    #[error("group is partitioned: {missing:?} missing")]
    Partitioned {
        /// The configured nodes missing from the view (or unreachable).
        missing: Vec<NodeId>,
    },
    /// A node cannot run the target version.
    #[error("node {node:?} supports {supported:?}, not the target version")]
    NotCapable {
        /// The node.
        node: NodeId,
        /// What it supports.
        supported: VersionRange,
    },
    /// The function needs a newer active version of the group.
    #[error("needs protocol version {required:?}, group runs {active:?}")]
    VersionTooLow {
        /// The version the function needs.
        required: ProtocolVersion,
        /// The group's active version.
        active: ProtocolVersion,
    },
    /// `multicast_batch` with no payloads.
    #[error("empty batch")]
    EmptyBatch,
    /// `multicast_batch` with more payloads than one batch may carry.
    #[error("batch of {len} payloads exceeds {max}")]
    BatchTooLarge {
        /// Payloads given.
        len: usize,
        /// The limit (`MAX_BATCH`, or the window if smaller).
        max: usize,
    },
}

/// The outcome of the sequencer's check, carried in the ordered entry.
/// [`VersionError::Partitioned`]'s list is recomputed at delivery from the
/// view at that position, which every member shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub enum Rejection {
    /// See [`VersionError::NodeNotActive`].
    NodeNotActive {
        /// The node.
        node: NodeId,
    },
    /// See [`VersionError::Partitioned`].
    Partitioned,
    /// See [`VersionError::NotCapable`].
    NotCapable {
        /// The node.
        node: NodeId,
        /// Its range.
        supported: VersionRange,
    },
}

/// An ordered adjust-version entry (one position in the total order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct VersionChange {
    /// Who asked.
    pub requester: NodeId,
    /// Its incarnation.
    pub incarnation: u64,
    /// Its request number (from [`AdjustRequest::request`]).
    pub request: u64,
    /// The version in force before this position.
    pub from: ProtocolVersion,
    /// The version asked for.
    pub to: ProtocolVersion,
    /// `None`: the group switches to `to` at this position. `Some`: the
    /// sequencer's check failed; nothing changes.
    pub rejected: Option<Rejection>,
}

impl VersionChange {
    /// Whether the entry changes the view (an accepted switch to a different
    /// version; a switch to the version already active changes nothing).
    pub fn switches(&self) -> bool {
        self.rejected.is_none() && self.from != self.to
    }
}

/// A request handed to the sequencer of one group by
/// [`crate::Engine::adjust_version`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdjustRequest {
    /// The group.
    pub group: GroupId,
    /// Request number; the matching [`VersionEvent`] carries it.
    pub request: u64,
    /// The version asked for.
    pub to: ProtocolVersion,
}

/// The ordered outcome of an adjust-version request, queued at every member
/// when it reaches the entry's position.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionEvent {
    /// The group.
    pub group: GroupId,
    /// The entry's position in the group's total order.
    pub position: u64,
    /// The view in force after the position.
    pub view: ViewId,
    /// Who asked.
    pub requester: NodeId,
    /// The requester's incarnation when it asked: request numbers count per
    /// incarnation, so (requester, incarnation, request) names a request.
    pub requester_incarnation: u64,
    /// Its request number.
    pub request: u64,
    /// `Ok((from, to))` if the group switched (or already ran `to`), else why
    /// not (the same error at every member).
    pub outcome: Result<(ProtocolVersion, ProtocolVersion), VersionError>,
}

/// The checks of adjust-version, in order: every configured node active
/// (`range_of` returns `None` for a node that is not), then every configured
/// node in `members`, then every node capable of `target`. Used by the
/// requester and, again, by the sequencer at ordering time.
pub fn check(
    nodes: &[NodeId],
    members: &[NodeId],
    target: ProtocolVersion,
    range_of: impl Fn(NodeId) -> Option<VersionRange>,
) -> Result<(), VersionError> {
    let mut ranges = Vec::with_capacity(nodes.len());
    for n in nodes {
        match range_of(*n) {
            Some(r) => ranges.push((*n, r)),
            None => return Err(VersionError::NodeNotActive { node: *n }),
        }
    }
    let missing: Vec<NodeId> = nodes
        .iter()
        .filter(|n| !members.contains(n))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(VersionError::Partitioned { missing });
    }
    for (node, supported) in ranges {
        if !supported.contains(target) {
            return Err(VersionError::NotCapable { node, supported });
        }
    }
    Ok(())
}

/// Refuse a configured range this build cannot run.
pub(crate) fn validate_config(range: &VersionRange) -> Result<(), crate::ConfigError> {
    if range.min < OLDEST || range.max > CURRENT {
        return Err(crate::ConfigError::InvalidConfig {
            reason: "protocol range outside what this build implements (version::OLDEST..=CURRENT)",
        });
    }
    Ok(())
}

/// The highest version in every given range's `max`, i.e. the minimum of the
/// maxima (a node whose `min` is above it then fails [`check`] with
/// `NotCapable`, which names it).
pub fn highest_common(ranges: impl IntoIterator<Item = VersionRange>) -> Option<ProtocolVersion> {
    ranges.into_iter().map(|r| r.max).min()
}

impl Rejection {
    /// The error a rejection stands for; `missing` fills `Partitioned`.
    pub fn to_error(self, missing: Vec<NodeId>) -> VersionError {
        match self {
            Rejection::NodeNotActive { node } => VersionError::NodeNotActive { node },
            Rejection::Partitioned => VersionError::Partitioned { missing },
            Rejection::NotCapable { node, supported } => {
                VersionError::NotCapable { node, supported }
            }
        }
    }

    /// The rejection an error stands for (`None` for errors a sequencer
    /// never orders).
    pub fn from_error(e: &VersionError) -> Option<Rejection> {
        match e {
            VersionError::NodeNotActive { node } => Some(Rejection::NodeNotActive { node: *node }),
            VersionError::Partitioned { .. } => Some(Rejection::Partitioned),
            VersionError::NotCapable { node, supported } => Some(Rejection::NotCapable {
                node: *node,
                supported: *supported,
            }),
            _ => None,
        }
    }
}

/// A request this node sent and has not seen ordered yet (re-sent to the
/// current coordinator until it is).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    pub group: GroupId,
    pub request: u64,
    pub to: ProtocolVersion,
    pub sent: Time,
}

/// Node-level version state, shared by the Engine and its groups.
#[derive(Debug, Default)]
pub(crate) struct Versions {
    /// The configured node set (sorted).
    pub nodes: Vec<NodeId>,
    /// Advertised ranges: `(node, incarnation, range)`.
    pub ranges: Vec<(NodeId, u64, VersionRange)>,
    /// Ordered outcomes not yet polled.
    pub events: VecDeque<VersionEvent>,
    pub next_request: u64,
    pub pending: Vec<Pending>,
    /// Per group: `(requester, incarnation, request)` already ordered, so a
    /// re-sent request is not ordered twice.
    pub done: Vec<(GroupId, NodeId, u64, u64)>,
}

impl Versions {
    pub fn new(nodes: &[NodeId]) -> Self {
        Versions {
            nodes: nodes.to_vec(),
            next_request: 1,
            ..Versions::default()
        }
    }

    /// Record what `node` (at `inc`) advertised; a newer incarnation replaces
    /// the old range (a restarted node may run another release).
    pub fn record(&mut self, node: NodeId, inc: u64, range: VersionRange) {
        if let Some(e) = self.ranges.iter_mut().find(|e| e.0 == node) {
            if inc >= e.1 {
                *e = (node, inc, range);
            }
        } else {
            self.ranges.push((node, inc, range));
        }
    }

    /// The range `node` advertised in incarnation `inc`.
    pub fn range(&self, node: NodeId, inc: u64) -> Option<VersionRange> {
        self.ranges
            .iter()
            .find(|e| e.0 == node && e.1 == inc)
            .map(|e| e.2)
    }

    pub fn is_done(&self, group: GroupId, node: NodeId, inc: u64, request: u64) -> bool {
        self.done
            .iter()
            .any(|d| d.0 == group && d.1 == node && d.2 == inc && d.3 >= request)
    }

    pub fn mark_done(&mut self, group: GroupId, node: NodeId, inc: u64, request: u64) {
        if let Some(d) = self
            .done
            .iter_mut()
            .find(|d| d.0 == group && d.1 == node && d.2 <= inc)
        {
            if d.2 < inc || d.3 < request {
                *d = (group, node, inc, request);
            }
        } else if !self.is_done(group, node, inc, request) {
            self.done.push((group, node, inc, request));
        }
    }

    /// A member reached an adjust-version entry at `position`: queue its
    /// outcome (and forget the request if it was ours).
    pub fn on_delivered(
        &mut self,
        me: (NodeId, u64),
        group: GroupId,
        position: u64,
        view: ViewId,
        members: &[NodeId],
        change: VersionChange,
    ) {
        self.mark_done(group, change.requester, change.incarnation, change.request);
        if (change.requester, change.incarnation) == me {
            self.pending
                .retain(|p| !(p.group == group && p.request == change.request));
        }
        let outcome = match change.rejected {
            None => Ok((change.from, change.to)),
            Some(r) => {
                let missing = self
                    .nodes
                    .iter()
                    .filter(|n| !members.contains(n))
                    .copied()
                    .collect();
                Err(r.to_error(missing))
            }
        };
        self.events.push_back(VersionEvent {
            group,
            position,
            view,
            requester: change.requester,
            requester_incarnation: change.incarnation,
            request: change.request,
            outcome,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(min: u16, max: u16) -> VersionRange {
        VersionRange {
            min: ProtocolVersion(min),
            max: ProtocolVersion(max),
        }
    }

    #[test]
    fn check_reports_the_first_culprit_of_each_kind_in_order() {
        let nodes = [NodeId(1), NodeId(2), NodeId(3)];
        let all = |_: NodeId| Some(r(1, 2));
        assert_eq!(check(&nodes, &nodes, ProtocolVersion(2), all), Ok(()));
        let dead = |n: NodeId| (n != NodeId(2)).then_some(r(1, 2));
        assert_eq!(
            check(&nodes, &nodes, ProtocolVersion(2), dead),
            Err(VersionError::NodeNotActive { node: NodeId(2) })
        );
        assert_eq!(
            check(&nodes, &nodes[..2], ProtocolVersion(2), all),
            Err(VersionError::Partitioned {
                missing: vec![NodeId(3)]
            })
        );
        let old = |n: NodeId| Some(if n == NodeId(3) { r(1, 1) } else { r(1, 2) });
        assert_eq!(
            check(&nodes, &nodes, ProtocolVersion(2), old),
            Err(VersionError::NotCapable {
                node: NodeId(3),
                supported: r(1, 1)
            })
        );
        assert_eq!(
            highest_common([r(1, 2), r(1, 1), r(1, 3)]),
            Some(ProtocolVersion(1))
        );
    }
}
