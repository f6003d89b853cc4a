//! Invariant checkers over delivery logs.
//!
//! These are pure functions: they read what every node handed its application
//! (and what every application successfully handed the Engine) and say whether
//! the group communication guarantees held. They know nothing of the Engine's
//! internals, so the deterministic simulator (`membership/tests/sim/`) and the
//! multi-process tests (which collect the same logs from real nodes) run the
//! SAME checks.
//!
//! # The model
//!
//! A [`Logs`] holds one [`NodeLog`] per node *incarnation* (a restart is a new
//! incarnation with an empty log) and the list of [`Sent`] records: every
//! multicast the application handed over and the Engine accepted. A message is
//! identified by its payload [`Digest`]; whoever builds the logs makes payloads
//! unique (the simulator writes sender, incarnation, group and a counter into
//! each payload), so a digest names exactly one multicast. Beside the
//! application's view, the logs hold what every acceptor stored ([`Vote`],
//! [`Decision`]: the embedder sees each `Persist`), the configured nodes and
//! each incarnation's version range. Every `at` is read from one clock
//! shared by all logs of a run (the simulator's world time; the host's clock
//! for processes on one machine): the checkers compare times across nodes.
//!
//! Each invariant lives in its own file and exposes
//! `pub fn check(logs: &Logs) -> Result<(), Violation>`:
//!
//! | file | invariant |
//! |---|---|
//! | [`total_order`] | members of a view deliver the same message at the same position; per-view delivery sequences are prefix-consistent |
//! | [`no_duplication`] | no incarnation delivers a message (by digest, or by sender, sender incarnation and sender sequence) twice, over its whole history; its positions grow along that history, and enter a higher era only at a history an orphan restart started |
//! | [`no_creation`] | every delivered message was multicast by its sender, with the sender sequence the sender was told |
//! | [`epoch_decision`] | every epoch decision had a strict majority of the configured nodes in one ballot, and every ballot voted for had a majority's promises first; one value per epoch; an epoch's first view is the decided one, installed by the incarnations it lists; a node's decided epoch never goes back |
//! | [`fifo`] | per sender incarnation, messages are delivered in send order, without gaps while sender and receiver stay members, from the first delivery on |
//! | [`virtual_synchrony`] | members that pass from view V to the same next view delivered the same set in V |
//! | [`safe_delivery`] | a message anyone delivered in Safe mode in view V is delivered in V by every member that passes from V to the next view |
//! | [`view_agreement`] | the primary component's views form one chain: same id means same members, protocol, reason, position, and one incarnation per member |
//! | [`primary_component`] | a member cut off in a minority delivers nothing until it is re-admitted by a new primary view |
//! | [`version_switch`] | all members of a view switch the protocol version at the same position; nothing ordered after a switch is delivered under the old version, nor before it under the new |
//! | [`adjust_outcome`] | all members of a view reach the same outcome for the same adjust-version request; the outcome is right for the view in force, the configured nodes and their ranges; a switch is a fast-path change, never a flush |
//! | [`liveness`] | after the final heal and a quiet period, everyone expected is in one final view and has delivered every message of a member that stayed up, and every message a graceful leaver sent before its leave |
//!
//! [`check_all`] runs them all in that order and reports the first violation.
//!
//! # Example
//!
//! ```
//! use concord_membership::check::{
//!     self, Delivered, Event, Logs, Mode, NodeLog, Reason, Sent, ViewInstalled,
//! };
//!
//! let view = |at| Event::View(ViewInstalled {
//!     at, group: 7, view: 1, members: vec![1, 2], protocol: 1, reason: Reason::Join(2), position: 0,
//! });
//! let delivery = |at| Event::Delivery(Delivered {
//!     at, group: 7, view: 1, seq: 1, sender: 1, sender_incarnation: 0, sender_seq: 1,
//!     digest: 0xfeed, mode: Mode::Agreed,
//! });
//! let logs = Logs {
//!     nodes: vec![
//!         NodeLog { node: 1, incarnation: 0, crashed: false, events: vec![view(10), delivery(30)] },
//!         NodeLog { node: 2, incarnation: 0, crashed: false, events: vec![view(11), delivery(31)] },
//!     ],
//!     sent: vec![Sent { at: 20, node: 1, incarnation: 0, group: 7, sender_seq: 1, digest: 0xfeed }],
//!     expected_final: None,
//!     configured: vec![1, 2],
//!     ..Logs::default()
//! };
//! assert_eq!(check::check_all(&logs), Ok(()));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub mod adjust_outcome;
pub mod epoch_decision;
pub mod fifo;
pub mod liveness;
pub mod no_creation;
pub mod no_duplication;
pub mod primary_component;
pub mod safe_delivery;
pub mod total_order;
pub mod version_switch;
pub mod view_agreement;
pub mod virtual_synchrony;

/// A node of the configured set (the Engine's `NodeId.0`).
pub type Node = u32;
/// A group (the Engine's `GroupId.0`).
pub type Group = u64;
/// A view id (the Engine's `ViewId.0`).
pub type ViewNo = u64;
/// A digest of a payload; unique per multicast in a well-formed log.
pub type Digest = u64;

/// One incarnation of one node: a restarted node is a new `Member`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// The node.
    pub node: Node,
    /// Its incarnation (restart count, or any value that differs per restart).
    pub incarnation: u64,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}#{}", self.node, self.incarnation)
    }
}

/// Why a view was installed (mirror of the Engine's `Reason`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A node joined.
    Join(Node),
    /// A node left gracefully.
    Leave(Node),
    /// These nodes were declared failed (crash, or cut off from the primary).
    Failed(Vec<Node>),
    /// The node lost the primary component.
    Partitioned,
    /// Components merged back.
    Merged,
    /// The group's active protocol version changed.
    AdjustVersion {
        /// Old version.
        from: u16,
        /// New version.
        to: u16,
    },
}

/// A message handed to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// When (caller's clock, nanoseconds).
    pub at: u64,
    /// The group.
    pub group: Group,
    /// The view it was delivered in.
    pub view: ViewNo,
    /// Its position in the group's total order.
    pub seq: u64,
    /// Who multicast it.
    pub sender: Node,
    /// The sender's incarnation when it multicast it.
    pub sender_incarnation: u64,
    /// The sender's sequence number for it.
    pub sender_seq: u64,
    /// Digest of the payload.
    pub digest: Digest,
    /// The delivery mode of the receiver's membership in the group.
    pub mode: Mode,
}

/// When a member hands an ordered message over (mirror of the Engine's
/// `DeliveryMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// Once its position is known and every earlier one was delivered.
    #[default]
    Agreed,
    /// Additionally only once every member of the view holds it: whoever
    /// delivers it, every member that survives the view delivers it too.
    Safe,
}

/// A Paxos ballot (mirror of the Engine's `Ballot`): ordered by round, then
/// by leader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ballot {
    /// The round.
    pub round: u32,
    /// The proposer.
    pub leader: Node,
}

/// The value of an epoch change: the first view of the new epoch, and a
/// digest of the whole proposal (view, cut, sender progress, incarnations),
/// so two proposals that differ anywhere differ here.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EpochValue {
    /// The epoch's first view.
    pub view: ViewNo,
    /// Its members, in order.
    pub members: Vec<Node>,
    /// The members' incarnations, aligned with `members`.
    pub incarnations: Vec<u64>,
    /// Digest of the whole proposal.
    pub digest: Digest,
}

/// An acceptor stored a vote (Paxos phase 2b) for an epoch of a group: the
/// state it persisted before answering `Accepted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// When it was persisted.
    pub at: u64,
    /// The acceptor (any of its incarnations: the vote is durable).
    pub node: Node,
    /// The group.
    pub group: Group,
    /// The epoch being decided.
    pub epoch: u32,
    /// The ballot it accepted at.
    pub ballot: Ballot,
    /// What it accepted.
    pub value: EpochValue,
}

/// An acceptor stored a promise (Paxos phase 1b) for an epoch of a group:
/// the ballot it promised, persisted before it answered `Promise`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promise {
    /// When it was persisted.
    pub at: u64,
    /// The acceptor.
    pub node: Node,
    /// The group.
    pub group: Group,
    /// The epoch being decided.
    pub epoch: u32,
    /// The ballot promised.
    pub ballot: Ballot,
}

/// A node learned that an epoch of a group was decided (it stored the
/// decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// When it was stored.
    pub at: u64,
    /// Who learned it.
    pub member: Member,
    /// The group.
    pub group: Group,
    /// The epoch.
    pub epoch: u32,
    /// The decided value.
    pub value: EpochValue,
}

/// A view handed to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewInstalled {
    /// When (caller's clock, nanoseconds).
    pub at: u64,
    /// The group.
    pub group: Group,
    /// The new view's id.
    pub view: ViewNo,
    /// Ordered members; `members[0]` coordinates.
    pub members: Vec<Node>,
    /// The group's active protocol version in this view.
    pub protocol: u16,
    /// Why it changed.
    pub reason: Reason,
    /// Its position in the group's total order.
    pub position: u64,
}

/// The ordered outcome of an adjust-version request as one member reached
/// it (mirror of the Engine's `VersionEvent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustOutcome {
    /// When (caller's clock, nanoseconds).
    pub at: u64,
    /// The group.
    pub group: Group,
    /// The request's position in the group's total order.
    pub position: u64,
    /// The view in force after the position.
    pub view: ViewNo,
    /// Who asked.
    pub requester: Node,
    /// The requester's request number.
    pub request: u64,
    /// What happened.
    pub result: AdjustResult,
}

/// What an ordered adjust-version request did (mirror of the Engine's
/// `Result<(from, to), VersionError>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AdjustResult {
    /// The group runs `to` from this position on (`from == to`: it already
    /// did, and nothing changed).
    Switched {
        /// The version before.
        from: u16,
        /// The version after.
        to: u16,
    },
    /// Refused: a configured node was not active.
    NodeNotActive {
        /// The node.
        node: Node,
    },
    /// Refused: the group was partitioned.
    Partitioned {
        /// The configured nodes missing from the view.
        missing: Vec<Node>,
    },
    /// Refused: a node cannot run the target.
    NotCapable {
        /// The node.
        node: Node,
        /// Its lowest supported version.
        min: u16,
        /// Its highest supported version.
        max: u16,
    },
}

/// One thing a node handed its application, in the order it handed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An application message.
    Delivery(Delivered),
    /// A new view.
    View(ViewInstalled),
    /// The node lost the primary component of `group` and stopped delivering.
    Partitioned {
        /// When.
        at: u64,
        /// The group.
        group: Group,
    },
    /// An adjust-version request reached its position.
    Adjust(AdjustOutcome),
}

impl Event {
    /// The group the event belongs to.
    pub fn group(&self) -> Group {
        match self {
            Event::Delivery(d) => d.group,
            Event::View(v) => v.group,
            Event::Partitioned { group, .. } => *group,
            Event::Adjust(a) => a.group,
        }
    }

    /// When the event was handed to the application.
    pub fn at(&self) -> u64 {
        match self {
            Event::Delivery(d) => d.at,
            Event::View(v) => v.at,
            Event::Partitioned { at, .. } => *at,
            Event::Adjust(a) => a.at,
        }
    }
}

/// Everything one node incarnation handed its application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLog {
    /// The node.
    pub node: Node,
    /// Its incarnation.
    pub incarnation: u64,
    /// `true` when this incarnation was ended by a crash (or is otherwise not
    /// running at the end of the run); `false` for the incarnation that is up at
    /// the end.
    pub crashed: bool,
    /// Events in the order they were handed over.
    pub events: Vec<Event>,
}

impl NodeLog {
    /// This log's member identity.
    pub fn member(&self) -> Member {
        Member {
            node: self.node,
            incarnation: self.incarnation,
        }
    }
}

/// A multicast the application handed over and the Engine accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// When.
    pub at: u64,
    /// The sender.
    pub node: Node,
    /// The sender's incarnation.
    pub incarnation: u64,
    /// The group.
    pub group: Group,
    /// The sender sequence number the Engine returned for it.
    pub sender_seq: u64,
    /// Digest of the payload.
    pub digest: Digest,
}

/// All logs of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logs {
    /// One entry per node incarnation.
    pub nodes: Vec<NodeLog>,
    /// Every accepted multicast, in the order the applications handed them over.
    pub sent: Vec<Sent>,
    /// For runs that end with a heal and a quiet period: per group, the nodes
    /// that must be members of its final view (up at the end, and wanting to be
    /// members). `None` when the run did not end quiescent; [`liveness`] then
    /// only checks what follows from the logs themselves.
    pub expected_final: Option<BTreeMap<Group, BTreeSet<Node>>>,
    /// The configured nodes (the Engine's `Config::nodes`): majorities and
    /// adjust-version's preconditions are counted over them.
    pub configured: Vec<Node>,
    /// The protocol versions each incarnation supports, `(min, max)`.
    pub ranges: BTreeMap<Member, (u16, u16)>,
    /// Every promise any acceptor stored (not counting the promise implied
    /// by an accept), in the order they were stored.
    pub promises: Vec<Promise>,
    /// Every vote any acceptor stored, in the order they were stored.
    pub votes: Vec<Vote>,
    /// Every decision any node stored, in the order they were stored.
    pub decisions: Vec<Decision>,
}

/// Which invariant a [`Violation`] broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// See [`total_order`].
    TotalOrder,
    /// See [`no_duplication`].
    NoDuplication,
    /// See [`no_creation`].
    NoCreation,
    /// See [`fifo`].
    Fifo,
    /// See [`virtual_synchrony`].
    VirtualSynchrony,
    /// See [`view_agreement`].
    ViewAgreement,
    /// See [`primary_component`].
    PrimaryComponent,
    /// See [`liveness`].
    Liveness,
    /// See [`version_switch`].
    VersionSwitch,
    /// See [`adjust_outcome`].
    AdjustOutcome,
    /// See [`epoch_decision`].
    EpochDecision,
    /// See [`safe_delivery`].
    SafeDelivery,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Invariant::TotalOrder => "total-order",
            Invariant::NoDuplication => "no-duplication",
            Invariant::NoCreation => "no-creation",
            Invariant::Fifo => "fifo",
            Invariant::VirtualSynchrony => "virtual-synchrony",
            Invariant::ViewAgreement => "view-agreement",
            Invariant::PrimaryComponent => "primary-component",
            Invariant::Liveness => "liveness",
            Invariant::VersionSwitch => "version-switch",
            Invariant::AdjustOutcome => "adjust-outcome",
            Invariant::EpochDecision => "epoch-decision",
            Invariant::SafeDelivery => "safe-delivery",
        };
        f.write_str(name)
    }
}

/// A broken invariant: which one, where, and what exactly was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant.
    pub invariant: Invariant,
    /// The node incarnation whose log shows it, when one does.
    pub member: Option<Member>,
    /// The group.
    pub group: Option<Group>,
    /// The view, when one is involved.
    pub view: Option<ViewNo>,
    /// What was seen, for a human.
    pub detail: String,
}

impl Violation {
    pub(crate) fn new(invariant: Invariant, detail: impl Into<String>) -> Self {
        Violation {
            invariant,
            member: None,
            group: None,
            view: None,
            detail: detail.into(),
        }
    }

    pub(crate) fn member(mut self, member: Member) -> Self {
        self.member = Some(member);
        self
    }

    pub(crate) fn group(mut self, group: Group) -> Self {
        self.group = Some(group);
        self
    }

    pub(crate) fn view(mut self, view: ViewNo) -> Self {
        self.view = Some(view);
        self
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} violated", self.invariant)?;
        if let Some(m) = self.member {
            write!(f, " at {m}")?;
        }
        if let Some(g) = self.group {
            write!(f, " group {g:#x}")?;
        }
        if let Some(v) = self.view {
            write!(f, " view {v}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

impl std::error::Error for Violation {}

/// Runs every checker (the table above; the ones whose violations explain
/// others run first); returns the first violation.
pub fn check_all(logs: &Logs) -> Result<(), Violation> {
    no_creation::check(logs)?;
    no_duplication::check(logs)?;
    epoch_decision::check(logs)?;
    view_agreement::check(logs)?;
    primary_component::check(logs)?;
    total_order::check(logs)?;
    fifo::check(logs)?;
    virtual_synchrony::check(logs)?;
    safe_delivery::check(logs)?;
    version_switch::check(logs)?;
    adjust_outcome::check(logs)?;
    liveness::check(logs)?;
    Ok(())
}

/// One node incarnation's history in one group, cut into stretches of
/// continuous membership. Shared by several checkers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stint {
    /// Views installed in this stint, in order, each with the deliveries
    /// made in it.
    pub views: Vec<(ViewInstalled, Vec<Delivered>)>,
    /// How the stint ended: `Some(true)` when it ended by `Partitioned` or by a
    /// view that excludes the node (it stopped being a member); `None` when it
    /// is still open at the end of the log.
    pub ended: Option<bool>,
    /// Digests this incarnation delivered in its earlier stints of the group.
    ///
    /// The one place a member may skip a position: in Agreed mode a member
    /// cut off in a minority can deliver, in its old view and beyond the
    /// primary's cut, messages its old sequencer ordered before anyone noticed
    /// the partition. The primary orders them again later (their senders
    /// re-send them), and a member that already delivered one does not hand
    /// it over twice (no duplication) when it meets it again after rejoining.
    /// Only digests from an earlier stint qualify: within a stint nothing may
    /// be skipped.
    pub earlier: BTreeSet<Digest>,
}

/// Splits one node's log for one group into stints. Deliveries outside any
/// view (before the first view, or after the node stopped being a member) are
/// returned separately so [`primary_component`] can report them.
pub(crate) fn stints(log: &NodeLog, group: Group) -> (Vec<Stint>, Vec<Delivered>) {
    let mut out: Vec<Stint> = Vec::new();
    let mut stray = Vec::new();
    let mut open = false;
    let mut delivered: BTreeSet<Digest> = BTreeSet::new();
    for e in log.events.iter().filter(|e| e.group() == group) {
        match e {
            Event::View(v) => {
                if v.members.contains(&log.node) {
                    if !open {
                        out.push(Stint {
                            earlier: delivered.clone(),
                            ..Stint::default()
                        });
                        open = true;
                    }
                    if let Some(s) = out.last_mut() {
                        s.views.push((v.clone(), Vec::new()));
                    }
                } else if open {
                    // The view that removes us closes the stint; it is kept so
                    // virtual synchrony sees the transition out of the last view.
                    if let Some(s) = out.last_mut() {
                        s.views.push((v.clone(), Vec::new()));
                        s.ended = Some(true);
                    }
                    open = false;
                }
            }
            Event::Partitioned { .. } => {
                if open && let Some(s) = out.last_mut() {
                    s.ended = Some(true);
                }
                open = false;
            }
            Event::Adjust(_) => {}
            Event::Delivery(d) => {
                if open && let Some((_, ds)) = out.last_mut().and_then(|s| s.views.last_mut()) {
                    ds.push(d.clone());
                    delivered.insert(d.digest);
                } else {
                    stray.push(d.clone());
                }
            }
        }
    }
    (out, stray)
}

/// All groups mentioned anywhere in the logs.
pub(crate) fn groups(logs: &Logs) -> BTreeSet<Group> {
    let mut g: BTreeSet<Group> = logs
        .nodes
        .iter()
        .flat_map(|l| l.events.iter().map(Event::group))
        .collect();
    g.extend(logs.sent.iter().map(|s| s.group));
    if let Some(exp) = &logs.expected_final {
        g.extend(exp.keys().copied());
    }
    g
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Small builders for hand-made logs.
    use super::*;

    pub const G: Group = 0x99;

    pub fn view(at: u64, view: ViewNo, members: &[Node], reason: Reason) -> Event {
        Event::View(ViewInstalled {
            at,
            group: G,
            view,
            members: members.to_vec(),
            protocol: 1,
            reason,
            // View 1 starts the group at position 0 and carries seqs 1..=3 in
            // `healthy`; later views follow it.
            position: if view == 1 { 0 } else { view + 1 },
        })
    }

    pub fn deliver(at: u64, view: ViewNo, seq: u64, sender: Node, sender_seq: u64) -> Event {
        Event::Delivery(Delivered {
            at,
            group: G,
            view,
            seq,
            sender,
            sender_incarnation: 0,
            sender_seq,
            digest: digest(sender, 0, sender_seq),
            mode: Mode::Agreed,
        })
    }

    pub fn digest(sender: Node, incarnation: u64, sender_seq: u64) -> Digest {
        (u64::from(sender) << 48) | (incarnation << 32) | sender_seq
    }

    pub fn sent(at: u64, node: Node, sender_seq: u64) -> Sent {
        Sent {
            at,
            node,
            incarnation: 0,
            group: G,
            sender_seq,
            digest: digest(node, 0, sender_seq),
        }
    }

    pub fn log(node: Node, events: Vec<Event>) -> NodeLog {
        NodeLog {
            node,
            incarnation: 0,
            crashed: false,
            events,
        }
    }

    /// Three nodes, one view, sender 1 multicasts 1..=3, everyone delivers.
    pub fn healthy() -> Logs {
        let mut nodes = Vec::new();
        for n in 1..=3 {
            nodes.push(log(
                n,
                vec![
                    view(10, 1, &[1, 2, 3], Reason::Join(3)),
                    deliver(100, 1, 1, 1, 1),
                    deliver(101, 1, 2, 2, 1),
                    deliver(102, 1, 3, 1, 2),
                ],
            ));
        }
        Logs {
            nodes,
            sent: vec![sent(50, 1, 1), sent(51, 2, 1), sent(52, 1, 2)],
            expected_final: Some([(G, [1, 2, 3].into_iter().collect())].into_iter().collect()),
            configured: vec![1, 2, 3],
            ..Logs::default()
        }
    }

    #[test]
    fn healthy_logs_pass_every_checker() {
        assert_eq!(check_all(&healthy()), Ok(()));
    }
}
