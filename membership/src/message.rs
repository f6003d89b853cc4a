//! The typed messages Engines exchange. [`crate::wire`] turns them into bytes
//! and back; the Engine itself only sees these values, so the simulator can
//! route them in memory or through the codec.

use std::sync::Arc;

use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Deserialize, DeserializeUnsized, Place, Serialize};

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
    /// `count` positions that hold nothing: nobody delivers them. The
    /// sequencer orders one right before the Join of a member that delivered
    /// positions up to there in an older view of this era (cut off with its
    /// sequencer beyond a flush's cut), so that it is handed no position it
    /// already passed.
    Skip {
        /// How many positions.
        count: u32,
    },
}

impl OrderEntry {
    /// How many positions the entry takes.
    pub fn len(&self) -> u64 {
        match self {
            OrderEntry::Data { count, .. } | OrderEntry::Skip { count } => u64::from(*count),
            _ => 1,
        }
    }
    /// Whether the entry takes no position (a zero-count run, never sent).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A list shared by every message that carries it: the entries of one
/// order record ([`OrderEntries`]), or the payloads of one `DataBatch`. The
/// Engine builds it once and the message to every target refers to it (a
/// reference count, not a copy). It takes the lists it sends from a pool
/// and refills one once every message that referred to it was dropped, so
/// sending allocates nothing in steady state. Empty, it holds no allocation.
///
/// On the wire it is a plain `Vec<T>` archive: the format is the same as
/// before lists were shared.
pub struct Shared<T>(Option<Arc<Vec<T>>>);

/// The entries of one order record, shared by every target.
pub type OrderEntries = Shared<OrderEntry>;

impl<T> Shared<T> {
    /// An empty list.
    pub const fn new() -> Self {
        Shared(None)
    }

    /// The items, in order.
    pub fn as_slice(&self) -> &[T] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl<T> Default for Shared<T> {
    fn default() -> Self {
        Shared(None)
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T> From<Vec<T>> for Shared<T> {
    fn from(v: Vec<T>) -> Self {
        if v.is_empty() {
            Shared(None)
        } else {
            Shared(Some(Arc::new(v)))
        }
    }
}

impl<T> FromIterator<T> for Shared<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Shared::from(iter.into_iter().collect::<Vec<T>>())
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<T: PartialEq> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Eq> Eq for Shared<T> {}

impl<T: Archive> Archive for Shared<T> {
    type Archived = ArchivedVec<T::Archived>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_slice(self.as_slice(), resolver, out);
    }
}

impl<T, S> Serialize<S> for Shared<T>
where
    T: Serialize<S>,
    S: Fallible + Allocator + Writer + ?Sized,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        ArchivedVec::<T::Archived>::serialize_from_slice(self.as_slice(), serializer)
    }
}

impl<T, D> Deserialize<Shared<T>, D> for ArchivedVec<T::Archived>
where
    T: Archive,
    [T::Archived]: DeserializeUnsized<[T], D>,
    D: Fallible + ?Sized,
    D::Error: Source,
{
    fn deserialize(&self, deserializer: &mut D) -> Result<Shared<T>, D::Error> {
        let v: Vec<T> = Deserialize::<Vec<T>, D>::deserialize(self, deserializer)?;
        Ok(Shared::from(v))
    }
}

/// Lists lent to messages, recycled: the Engine's for the messages it sends,
/// a decoder's for the messages it decodes ([`crate::wire::Decoder`]). A
/// list whose last message was dropped (the caller encoded it, or the peer
/// handled it) is refilled for the next one. The search starts at the
/// first list every time, so a caller that drops its messages promptly
/// gets the same one or two back, still in cache. At most [`SharedPool::KEEP`]
/// are kept; while more are out at once (a caller that holds many
/// messages) the extra ones are allocated and freed as plain shared
/// vectors.
#[derive(Debug)]
pub struct SharedPool<T> {
    records: Vec<Arc<Vec<T>>>,
}

impl<T> Default for SharedPool<T> {
    fn default() -> Self {
        SharedPool {
            records: Vec::new(),
        }
    }
}

impl<T> SharedPool<T> {
    /// Lists kept for reuse.
    pub const KEEP: usize = 16;

    /// Share `items` as one list, leaving in `items` an empty vector (the
    /// storage the reused list had, so a caller that refills it does not
    /// allocate either).
    pub fn share(&mut self, items: &mut Vec<T>) -> Shared<T> {
        if items.is_empty() {
            return Shared::new();
        }
        for record in &mut self.records {
            if let Some(v) = Arc::get_mut(record) {
                std::mem::swap(v, items);
                items.clear();
                return Shared(Some(Arc::clone(record)));
            }
        }
        let record = Arc::new(std::mem::take(items));
        if self.records.len() < Self::KEEP {
            self.records.push(Arc::clone(&record));
        }
        Shared(Some(record))
    }

    /// Drops the items of every list no message refers to any more, keeping
    /// its storage: a list otherwise keeps its last items until it is
    /// refilled, which matters when they hold something (a received payload
    /// holds its receive buffer).
    pub fn release(&mut self) {
        for record in &mut self.records {
            if let Some(v) = Arc::get_mut(record) {
                v.clear();
            }
        }
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
        /// The payloads, in sender order (shared by every target).
        payloads: Shared<P>,
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
        /// The entries (shared by every target of the record).
        entries: OrderEntries,
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
        /// The highest position of the group this incarnation delivered
        /// (0 if none): the sequencer orders its Join above it.
        position: u64,
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
    /// Reply of a node that holds no state for `group` to a member's order
    /// record or ack of epoch `epoch` (and that knows no later decision):
    /// it is no member, so a view that lists this incarnation counts it as
    /// failed and a flush removes it.
    NotMember {
        /// The group.
        group: GroupId,
        /// The epoch of the message it answers.
        epoch: u32,
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
    pub fn map_payload<Q>(self, mut f: impl FnMut(P) -> Q) -> Message<Q>
    where
        P: Clone,
    {
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
                payloads: payloads.iter().cloned().map(&mut f).collect(),
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
                position,
            } => Body::JoinRequest {
                group,
                range,
                rejoin,
                next_seq,
                delivered,
                position,
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
            Body::NotMember { group, epoch } => Body::NotMember { group, epoch },
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
            | Body::NotMember { group, .. }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn data(first_seq: u64) -> OrderEntry {
        OrderEntry::Data {
            sender: NodeId(2),
            incarnation: 7,
            first_seq,
            count: 3,
        }
    }

    fn record_of(e: &OrderEntries) -> &Arc<Vec<OrderEntry>> {
        e.0.as_ref().expect("a non-empty record")
    }

    #[test]
    fn archive_is_a_plain_vec_of_entries() {
        let v = vec![data(1), OrderEntry::Leave { node: NodeId(3) }, data(9)];
        let shared = OrderEntries::from(v.clone());
        let a = rkyv::to_bytes::<rkyv::rancor::Error>(&shared).unwrap();
        let b = rkyv::to_bytes::<rkyv::rancor::Error>(&v).unwrap();
        assert_eq!(a.as_slice(), b.as_slice());
        let back = rkyv::from_bytes::<OrderEntries, rkyv::rancor::Error>(&b).unwrap();
        assert_eq!(back.as_slice(), v.as_slice());
        let empty = rkyv::to_bytes::<rkyv::rancor::Error>(&Vec::<OrderEntry>::new()).unwrap();
        let back = rkyv::from_bytes::<OrderEntries, rkyv::rancor::Error>(&empty).unwrap();
        assert!(back.0.is_none(), "an empty record holds no allocation");
        assert_eq!(back, OrderEntries::new());
    }

    #[test]
    fn a_record_is_refilled_once_every_message_dropped_it() {
        let mut pool = SharedPool::default();
        let mut pending = vec![data(1)];
        let first = pool.share(&mut pending);
        assert!(pending.is_empty());
        let copies = [first.clone(), first.clone()];
        pending.push(data(4));
        // Still referred to: the next record is another one.
        let second = pool.share(&mut pending);
        assert!(!Arc::ptr_eq(record_of(&first), record_of(&second)));
        assert_eq!(first.as_slice(), &[data(1)]);
        assert_eq!(second.as_slice(), &[data(4)]);
        let first_ptr = Arc::as_ptr(record_of(&first));
        drop(copies);
        drop(first);
        pending.push(data(7));
        let third = pool.share(&mut pending);
        assert_eq!(Arc::as_ptr(record_of(&third)), first_ptr, "reused");
        assert_eq!(third.as_slice(), &[data(7)]);
        // The record's old storage came back as the new pending vector.
        assert!(pending.is_empty() && pending.capacity() > 0);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_records() {
        let mut pool = SharedPool::default();
        let mut out = Vec::new();
        for i in 0..SharedPool::<OrderEntry>::KEEP as u64 * 2 {
            let mut pending = vec![data(i)];
            out.push(pool.share(&mut pending));
        }
        assert_eq!(pool.records.len(), SharedPool::<OrderEntry>::KEEP);
        for (i, r) in out.iter().enumerate() {
            assert_eq!(r.as_slice(), &[data(i as u64)], "records never alias");
        }
        assert_eq!(pool.share(&mut Vec::new()), OrderEntries::new());
    }
}
