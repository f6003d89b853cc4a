//! The typed messages Engines exchange. [`crate::wire`] turns them into bytes
//! and back; the Engine itself only sees these values, so the simulator can
//! route them in memory or through the codec.

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::{GroupId, NodeId, ProtocolVersion, VersionRange, View};
use crate::version::VersionChange;

/// One message between two Engines.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Message<P> {
    /// The sender's incarnation: a higher one means the sender restarted and
    /// its previous life failed.
    pub incarnation: u64,
    /// What it says.
    pub body: Body<P>,
}

/// A paxos ballot: `(round, leader)`, ordered lexicographically, so ballots of
/// different leaders never tie.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Archive,
    Serialize,
    Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct Ballot {
    /// Grows with every retry.
    pub round: u32,
    /// The proposer.
    pub leader: u32,
}

/// One entry of the total order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub enum OrderEntry {
    /// `count` consecutive messages of one sender, taking `count` consecutive
    /// positions.
    Data {
        /// The sender.
        sender: NodeId,
        /// The sender's incarnation.
        incarnation: u64,
        /// The first sender sequence number of the run.
        first_seq: u64,
        /// How many.
        count: u32,
    },
    /// A node joins at this position (fast path).
    Join {
        /// Who.
        node: NodeId,
        /// Its incarnation.
        incarnation: u64,
        /// Whether it is a member that had been cut off (reported as
        /// [`crate::Reason::Merged`]).
        rejoin: bool,
        /// The first of its sender sequences to order from this position
        /// on: the larger of what the group already ordered of it and the
        /// first message it still holds (what it released earlier cannot be
        /// sent again, see `JoinRequest::next_seq`).
        first_seq: u64,
    },
    /// A member leaves at this position (fast path). If it coordinated, the next
    /// member takes the sequencer role from the next position on.
    Leave {
        /// Who.
        node: NodeId,
    },
    /// Adjust-version (see [`crate::version`]): the group switches its active
    /// version at this position, or the sequencer's check rejected it.
    Version(VersionChange),
}

impl OrderEntry {
    /// How many positions the entry takes.
    pub fn len(&self) -> u64 {
        match self {
            OrderEntry::Data { count, .. } => u64::from(*count),
            _ => 1,
        }
    }
    /// Whether the entry takes no position (a zero-count run, never sent).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where ordering of one sender stands: its next sender sequence number to
/// order. Carried across coordinator changes so FIFO order and deduplication
/// survive them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct SenderNext {
    /// The sender.
    pub node: NodeId,
    /// Its incarnation.
    pub incarnation: u64,
    /// Next sender sequence number to order.
    pub next: u64,
}

/// The value a flush agrees on: the next epoch's first view and the cut of
/// the old epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct Proposal {
    /// The new view (`id` is the first view of the new epoch).
    pub view: View,
    /// Every member of `view` delivers exactly the old epoch's positions up to
    /// and including `cut`, then installs `view`.
    pub cut: u64,
    /// The view in force at `cut` (whose members not in `view` failed).
    pub old_members: Vec<NodeId>,
    /// Per sender, the next sender sequence to order in the new epoch.
    pub next: Vec<SenderNext>,
    /// Members' incarnations, aligned with `view.members`.
    pub incarnations: Vec<u64>,
}

/// What a member of the old epoch reports to a flush leader.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct MemberState {
    /// Its current view.
    pub view: View,
    /// Highest position up to which it holds every order entry and payload.
    pub ready: u64,
    /// Per sender, the highest sender sequence it delivered (its
    /// `delivered_hi`, earlier views and stints included): the new epoch
    /// does not order again what every member of the new view delivered
    /// (nobody would deliver its position).
    pub delivered: Vec<SenderNext>,
}

/// Message bodies.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum Body<P> {
    /// Liveness only (any message counts as liveness).
    Heartbeat,
    /// A heartbeat that also advertises the sender's supported protocol
    /// versions (what the Engine sends; see [`crate::version`]).
    Versions {
        /// The sender's range.
        range: VersionRange,
    },
    /// Ask the sequencer to switch the group to `to` (adjust-version). It
    /// checks again and orders the outcome.
    AdjustRequest {
        /// The group.
        group: GroupId,
        /// The requester's request number.
        request: u64,
        /// The version asked for.
        to: ProtocolVersion,
    },
    /// Several application messages of one sender with consecutive sender
    /// sequence numbers from `first_seq` (protocol version 2,
    /// `Engine::multicast_batch`). Each payload is ordered and delivered as
    /// its own message.
    DataBatch {
        /// The group.
        group: GroupId,
        /// The epoch of the transmitter's view.
        epoch: u32,
        /// Who multicast them.
        sender: NodeId,
        /// The sender's incarnation.
        sender_incarnation: u64,
        /// Sender sequence number of `payloads[0]`.
        first_seq: u64,
        /// Piggybacked cumulative ack of the transmitter.
        ack: u64,
        /// The payloads, in sender order.
        payloads: Vec<P>,
    },
    /// An application message, from its sender (or a retransmitting holder).
    Data {
        /// The group.
        group: GroupId,
        /// The epoch of the transmitter's view (interprets `ack`).
        epoch: u32,
        /// Who multicast it.
        sender: NodeId,
        /// The sender's incarnation.
        sender_incarnation: u64,
        /// The sender's sequence number.
        sender_seq: u64,
        /// Piggybacked cumulative ack of the transmitter (see `Ack`).
        ack: u64,
        /// The bytes.
        payload: P,
    },
    /// Order entries from the sequencer for consecutive positions.
    Order {
        /// The group.
        group: GroupId,
        /// The epoch they belong to.
        epoch: u32,
        /// Position of the first entry.
        first: u64,
        /// The entries.
        entries: Vec<OrderEntry>,
        /// The stable point: every member holds every position up to it.
        stable: u64,
    },
    /// Cumulative acknowledgement to the sequencer: the transmitter holds every
    /// order entry and payload up to `ready`.
    Ack {
        /// The group.
        group: GroupId,
        /// The epoch.
        epoch: u32,
        /// Highest contiguous position held.
        ready: u64,
    },
    /// Ask for a retransmission.
    Nack {
        /// The group.
        group: GroupId,
        /// The epoch.
        epoch: u32,
        /// Order entries and payloads at positions `from..=to`.
        positions: Option<(u64, u64)>,
        /// Unordered payloads of one sender: `(sender, incarnation, from, to)`.
        sender_seqs: Option<(NodeId, u64, u64, u64)>,
    },
    /// Ask to join (sent to every configured node until answered).
    JoinRequest {
        /// The group.
        group: GroupId,
        /// The versions the joiner supports.
        range: VersionRange,
        /// The joiner had been a member before it was cut off.
        rejoin: bool,
        /// The joiner's own sender progress, to resume its FIFO stream: the
        /// oldest own message it still holds (all below were released), or
        /// its last sender sequence plus one if it holds none.
        next_seq: u64,
        /// Per sender, the highest sender sequence the joiner delivered: the
        /// sequencer does not order again what every member of the new view
        /// delivered already (nobody would deliver its position).
        delivered: Vec<SenderNext>,
    },
    /// The coordinator ordered the joiner's Join: here is where to start.
    Welcome {
        /// The view that the Join installed.
        view: Box<View>,
        /// The position of the Join entry.
        position: u64,
        /// Stable point known to the coordinator.
        stable: u64,
        /// Per sender, the next sender sequence to order.
        next: Vec<SenderNext>,
        /// Incarnations of `view.members`, aligned.
        incarnations: Vec<u64>,
        /// The `rejoin` flag of the ordered Join entry. The joiner reports
        /// the view with the reason every member derives from that entry
        /// (`Merged` or `Join(joiner)`), not from its own phase: the ordered
        /// request may be an older one sent before the joiner's phase changed.
        rejoin: bool,
    },
    /// The group's active version is outside the joiner's range.
    JoinRefused {
        /// The group.
        group: GroupId,
        /// Its active version.
        active: ProtocolVersion,
    },
    /// Reply of a node that is not a member to a JoinRequest: what it knows.
    NoGroup {
        /// The group.
        group: GroupId,
        /// The latest decided value it knows, if any: an orphan restart from
        /// it continues at its cut with its sender progress (a view alone
        /// would restart the positions and every sender's stream at zero).
        known: Option<Box<Proposal>>,
    },
    /// A member asks to leave once its messages up to `last_seq` are ordered.
    LeaveRequest {
        /// The group.
        group: GroupId,
        /// Its last sender sequence number.
        last_seq: u64,
    },
    /// Paxos phase 1a for epoch `epoch` of `group`.
    Prepare {
        /// The group.
        group: GroupId,
        /// The epoch being decided.
        epoch: u32,
        /// The ballot.
        ballot: Ballot,
    },
    /// Paxos phase 1b.
    Promise {
        /// The group.
        group: GroupId,
        /// The epoch being decided.
        epoch: u32,
        /// The ballot promised.
        ballot: Ballot,
        /// The highest-ballot proposal this acceptor accepted for the epoch.
        accepted: Option<Box<(Ballot, Proposal)>>,
        /// If the acceptor is a member of the previous epoch: its state.
        state: Option<Box<MemberState>>,
    },
    /// Refusal: a higher ballot was promised, or the epoch is already decided.
    Reject {
        /// The group.
        group: GroupId,
        /// The epoch.
        epoch: u32,
        /// The ballot already promised.
        promised: Ballot,
    },
    /// Paxos phase 2a.
    Accept {
        /// The group.
        group: GroupId,
        /// The epoch being decided.
        epoch: u32,
        /// The ballot.
        ballot: Ballot,
        /// The value.
        proposal: Box<Proposal>,
    },
    /// Paxos phase 2b.
    Accepted {
        /// The group.
        group: GroupId,
        /// The epoch being decided.
        epoch: u32,
        /// The ballot accepted.
        ballot: Ballot,
    },
    /// The epoch is decided (sent to everyone; also the answer to anything
    /// about an epoch already decided).
    Decided {
        /// The group.
        group: GroupId,
        /// The epoch.
        epoch: u32,
        /// The decided value.
        proposal: Box<Proposal>,
    },
    /// The sequencer of `epoch` asks every acceptor for its ordering lease
    /// (sent every `failure_timeout / 4`).
    Lease {
        /// The group.
        group: GroupId,
        /// The sequencer's epoch.
        epoch: u32,
        /// The sequencer's clock when it sent the request: the lease runs
        /// from there.
        sent: u64,
    },
    /// An acceptor grants the lease: it promises no later epoch of the group
    /// until the lease ran out on its own clock.
    LeaseGrant {
        /// The group.
        group: GroupId,
        /// The epoch of the request.
        epoch: u32,
        /// The request's `sent`, echoed.
        sent: u64,
    },
}

impl<P> Message<P> {
    /// The same message with the payload (if any) mapped.
    pub fn map_payload<Q>(self, mut f: impl FnMut(P) -> Q) -> Message<Q> {
        let body = match self.body {
            Body::Data {
                group,
                epoch,
                sender,
                sender_incarnation,
                sender_seq,
                ack,
                payload,
            } => Body::Data {
                group,
                epoch,
                sender,
                sender_incarnation,
                sender_seq,
                ack,
                payload: f(payload),
            },
            Body::Heartbeat => Body::Heartbeat,
            Body::Versions { range } => Body::Versions { range },
            Body::AdjustRequest { group, request, to } => {
                Body::AdjustRequest { group, request, to }
            }
            Body::DataBatch {
                group,
                epoch,
                sender,
                sender_incarnation,
                first_seq,
                ack,
                payloads,
            } => Body::DataBatch {
                group,
                epoch,
                sender,
                sender_incarnation,
                first_seq,
                ack,
                payloads: payloads.into_iter().map(&mut f).collect(),
            },
            Body::Order {
                group,
                epoch,
                first,
                entries,
                stable,
            } => Body::Order {
                group,
                epoch,
                first,
                entries,
                stable,
            },
            Body::Ack {
                group,
                epoch,
                ready,
            } => Body::Ack {
                group,
                epoch,
                ready,
            },
            Body::Nack {
                group,
                epoch,
                positions,
                sender_seqs,
            } => Body::Nack {
                group,
                epoch,
                positions,
                sender_seqs,
            },
            Body::JoinRequest {
                group,
                range,
                rejoin,
                next_seq,
                delivered,
            } => Body::JoinRequest {
                group,
                range,
                rejoin,
                next_seq,
                delivered,
            },
            Body::Welcome {
                view,
                position,
                stable,
                next,
                incarnations,
                rejoin,
            } => Body::Welcome {
                view,
                position,
                stable,
                next,
                incarnations,
                rejoin,
            },
            Body::JoinRefused { group, active } => Body::JoinRefused { group, active },
            Body::NoGroup { group, known } => Body::NoGroup { group, known },
            Body::LeaveRequest { group, last_seq } => Body::LeaveRequest { group, last_seq },
            Body::Prepare {
                group,
                epoch,
                ballot,
            } => Body::Prepare {
                group,
                epoch,
                ballot,
            },
            Body::Promise {
                group,
                epoch,
                ballot,
                accepted,
                state,
            } => Body::Promise {
                group,
                epoch,
                ballot,
                accepted,
                state,
            },
            Body::Reject {
                group,
                epoch,
                promised,
            } => Body::Reject {
                group,
                epoch,
                promised,
            },
            Body::Accept {
                group,
                epoch,
                ballot,
                proposal,
            } => Body::Accept {
                group,
                epoch,
                ballot,
                proposal,
            },
            Body::Accepted {
                group,
                epoch,
                ballot,
            } => Body::Accepted {
                group,
                epoch,
                ballot,
            },
            Body::Decided {
                group,
                epoch,
                proposal,
            } => Body::Decided {
                group,
                epoch,
                proposal,
            },
            Body::Lease { group, epoch, sent } => Body::Lease { group, epoch, sent },
            Body::LeaseGrant { group, epoch, sent } => Body::LeaseGrant { group, epoch, sent },
        };
        Message {
            incarnation: self.incarnation,
            body,
        }
    }

    /// The group the message is about, if any.
    pub fn group(&self) -> Option<GroupId> {
        match &self.body {
            Body::Heartbeat | Body::Versions { .. } => None,
            Body::Welcome { view, .. } => Some(view.group),
            Body::Data { group, .. }
            | Body::Order { group, .. }
            | Body::AdjustRequest { group, .. }
            | Body::DataBatch { group, .. }
            | Body::Ack { group, .. }
            | Body::Nack { group, .. }
            | Body::JoinRequest { group, .. }
            | Body::JoinRefused { group, .. }
            | Body::NoGroup { group, .. }
            | Body::LeaveRequest { group, .. }
            | Body::Prepare { group, .. }
            | Body::Promise { group, .. }
            | Body::Reject { group, .. }
            | Body::Accept { group, .. }
            | Body::Accepted { group, .. }
            | Body::Decided { group, .. }
            | Body::Lease { group, .. }
            | Body::LeaseGrant { group, .. } => Some(*group),
        }
    }
}
