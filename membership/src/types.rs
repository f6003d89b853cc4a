//! Identifiers, configuration and the values the Engine hands its caller.

use rkyv::{Archive, Deserialize, Serialize};

/// A node of the configured set. A node hosts at most one member of each group.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Archive, Serialize, Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct NodeId(pub u32);

/// A named process group.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Archive, Serialize, Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct GroupId(pub u64);

impl GroupId {
    /// A stable id for a group name: FNV-1a 64 over the UTF-8 bytes, so every
    /// node (and every build) maps a name to the same id without coordination.
    pub fn from_name(name: &str) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in name.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        GroupId(hash)
    }
}

/// Nanoseconds on the caller's clock. The Engine never reads a clock: every
/// event carries `now`, which makes a run reproducible from its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(pub u64);

impl Time {
    /// `self + nanos`, saturating.
    pub fn plus(self, nanos: u64) -> Time {
        Time(self.0.saturating_add(nanos))
    }
}

/// A view id: `epoch << 32 | change`.
///
/// The epoch changes only through a flush (an agreed decision among a majority
/// of the configured nodes); `change` counts the fast-path changes (join,
/// leave, adjust-version) ordered inside the epoch. Ids grow along a group's
/// history, and two views with the same id have the same members.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Archive, Serialize, Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct ViewId(pub u64);

impl ViewId {
    /// The first view of epoch `epoch`.
    pub fn first_of(epoch: u32) -> Self {
        ViewId(u64::from(epoch) << 32)
    }
    /// The epoch (flush generation) of this view.
    pub fn epoch(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// The fast-path change count within the epoch.
    pub fn change(self) -> u32 {
        self.0 as u32
    }
    /// The id of the view after one more fast-path change.
    pub fn next_change(self) -> Self {
        ViewId(self.0.wrapping_add(1))
    }
}

/// Positions in a group's total order (`Delivery::seq`, the position a
/// `ViewChange` reports): an **era** in the high [`ERA_BITS`](position::ERA_BITS) bits and a
/// counter in the low [`COUNTER_BITS`](position::COUNTER_BITS) bits.
///
/// A group is created at position 0 (era 0). A flush continues the order in
/// the era of the epoch it replaces; only an orphan restart (every member of
/// the last decided view gone) starts a new era, at [`next_era_base`](position::next_era_base) of the
/// last decided cut, so it never hands out a position any earlier history
/// assigned. Positions therefore grow along every member's history, and
/// the era names the restarted history a position belongs to. A sequencer
/// assigns no position at or past its era's end ([`era_end`](position::era_end)); see
/// DESIGN.md 4.4 for what that means in time.
pub mod position {
    /// Bits of the counter within an era: 2^52 positions last 28.5 years at
    /// 5 M positions per second.
    pub const COUNTER_BITS: u32 = 52;
    /// Bits of the era: 4096 histories (the creation and 4095 orphan
    /// restarts) per group.
    pub const ERA_BITS: u32 = 64 - COUNTER_BITS;
    /// The last era.
    pub const MAX_ERA: u64 = (1 << ERA_BITS) - 1;
    const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;

    /// The era of position `p`.
    #[inline]
    pub const fn era(p: u64) -> u64 {
        p >> COUNTER_BITS
    }

    /// The counter of position `p` within its era.
    #[inline]
    pub const fn counter(p: u64) -> u64 {
        p & COUNTER_MASK
    }

    /// The first position of `era` (where a restarted history stands: its
    /// first view is installed there, its first message follows).
    #[inline]
    pub const fn era_base(era: u64) -> u64 {
        era << COUNTER_BITS
    }

    /// The first position after the era of `p` that its history may not
    /// assign: the next era's base. In the last era it is `u64::MAX`, which
    /// is never assigned, so a position plus one never overflows.
    #[inline]
    pub const fn era_end(p: u64) -> u64 {
        match next_era_base(p) {
            Some(base) => base,
            None => u64::MAX,
        }
    }

    /// Where an orphan restart after a history at `p` starts: the base of
    /// the next era, or `None` when `p` is in the last era.
    #[inline]
    pub const fn next_era_base(p: u64) -> Option<u64> {
        if era(p) == MAX_ERA {
            None
        } else {
            Some(era_base(era(p) + 1))
        }
    }
}

/// A group protocol version.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Archive, Serialize, Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct ProtocolVersion(pub u16);

/// The protocol versions a node can run, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct VersionRange {
    /// Lowest supported version.
    pub min: ProtocolVersion,
    /// Highest supported version.
    pub max: ProtocolVersion,
}

impl VersionRange {
    /// Whether `v` lies in the range.
    pub fn contains(&self, v: ProtocolVersion) -> bool {
        self.min <= v && v <= self.max
    }
}

/// One view of a group: who is in it, in order. `members[0]` coordinates
/// (it is the sequencer).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub struct View {
    /// The group.
    pub group: GroupId,
    /// The view id.
    pub id: ViewId,
    /// Ordered members; the first coordinates.
    pub members: Vec<NodeId>,
    /// The group's active protocol version in this view.
    pub protocol: ProtocolVersion,
}

impl View {
    /// The coordinator (sequencer) of this view.
    pub fn coordinator(&self) -> Option<NodeId> {
        self.members.first().copied()
    }
    /// Whether `node` is a member.
    pub fn contains(&self, node: NodeId) -> bool {
        self.members.contains(&node)
    }
}

/// When a member may hand an ordered message to its application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryMode {
    /// As soon as its position in the total order is known and every earlier
    /// position was delivered.
    Agreed,
    /// Additionally only once every member of the view holds it (it is
    /// stable), so it survives any crash of a minority.
    Safe,
}

/// Why a view changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug))]
pub enum Reason {
    /// The node joined (ordered fast path).
    Join(NodeId),
    /// The node left gracefully (ordered fast path).
    Leave(NodeId),
    /// These members were removed by a flush (crash, restart, or cut off).
    Failed(Vec<NodeId>),
    /// This member lost the primary component: it stops delivering and will
    /// rejoin as a new member. The view it carries is the last one it had.
    Partitioned,
    /// A member that had been cut off rejoined the primary component (ordered
    /// fast path, like `Join`; `view.members` says who).
    Merged,
    /// The group's active protocol version changed at this position
    /// (adjust-version, see [`crate::version`]).
    AdjustVersion {
        /// The version before.
        from: ProtocolVersion,
        /// The version after.
        to: ProtocolVersion,
    },
}

/// Engine configuration. Durations are nanoseconds.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node.
    pub node: NodeId,
    /// Distinguishes a restarted node from its previous life: must grow with
    /// every restart of `node` (a persisted counter, or a boot timestamp).
    pub incarnation: u64,
    /// The configured node set (includes `node`). The primary component is the
    /// one holding a strict majority of these.
    pub nodes: Vec<NodeId>,
    /// Protocol versions this node supports.
    pub protocol: VersionRange,
    /// One heartbeat per peer per interval (any traffic also counts).
    pub heartbeat_interval: u64,
    /// A peer not heard from for this long is suspected to have failed.
    pub failure_timeout: u64,
    /// Most unstable messages one sender may have outstanding per group; past
    /// it `multicast` returns `Multicast::BackPressured`.
    pub window: usize,
    /// Most order entries per order record message.
    pub batch: usize,
    /// Clock drift margin of the sequencer lease: an acceptor that granted a
    /// lease keeps refusing to promise a later epoch for this long after the
    /// lease (`failure_timeout / 2` from the request) ran out on its clock.
    pub lease_drift: u64,
}

impl Config {
    /// A configuration with defaults suited to a LAN: 10 ms heartbeats, 100 ms
    /// failure timeout, window 1024, batch 256, 1 ms lease drift margin, every protocol version this
    /// build implements (cap `protocol.max` to run as an older release).
    pub fn new(node: NodeId, nodes: Vec<NodeId>) -> Self {
        Config {
            node,
            incarnation: 0,
            nodes,
            protocol: VersionRange {
                min: crate::version::OLDEST,
                max: crate::version::CURRENT,
            },
            heartbeat_interval: 10_000_000,
            failure_timeout: 100_000_000,
            window: 1024,
            batch: 256,
            lease_drift: 1_000_000,
        }
    }
}

/// An application payload. The real node uses a refcounted pooled receive
/// buffer; the simulator `Rc<[u8]>`. Cloning must be cheap (a refcount): the
/// Engine clones a payload once per destination and once per delivery.
pub trait Payload: Clone + AsRef<[u8]> {}

impl<T: Clone + AsRef<[u8]>> Payload for T {}

/// An application message handed to the application, in the total order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<P> {
    /// The group.
    pub group: GroupId,
    /// The view it is delivered in.
    pub view: ViewId,
    /// Its position in the group's total order: unique and growing along
    /// this member's whole history of the group (across views, epochs and
    /// rejoins), contiguous within a view less positions taken by
    /// membership entries, with a jump only at an orphan restart, to the
    /// next era ([`position`]).
    pub seq: u64,
    /// Who multicast it.
    pub sender: NodeId,
    /// The sender's incarnation when it multicast it.
    pub sender_incarnation: u64,
    /// The sender's per-group sequence number (from 1, per incarnation).
    pub sender_seq: u64,
    /// The bytes.
    pub payload: P,
}

/// Outcome of [`crate::Engine::multicast`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Multicast<P> {
    /// Accepted; it will be delivered with this sender sequence number.
    Sent {
        /// The sender sequence number assigned.
        sender_seq: u64,
    },
    /// The sender's window is full (or the group is between views): nothing
    /// was sent, and here is the payload back. Retry after deliveries.
    BackPressured(P),
}

/// Counters, for tests and operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Flushes this node started as leader.
    pub flushes: u64,
    /// Flush-installed views (epoch changes) this node installed.
    pub flush_installs: u64,
    /// Views installed (any reason).
    pub view_changes: u64,
    /// Failure timeouts that fired (a peer became suspected).
    pub timeouts_fired: u64,
    /// Messages (data or order records) sent again because of a NACK.
    pub retransmissions: u64,
    /// NACKs sent.
    pub nacks_sent: u64,
    /// Application messages delivered.
    pub delivered: u64,
    /// Order entries assigned while coordinator.
    pub ordered: u64,
    /// Messages dropped as duplicates.
    pub duplicates: u64,
    /// Messages dropped as stale (old view or incarnation).
    pub stale: u64,
    /// Times this node lost the primary component for a group.
    pub partitions: u64,
    /// Multicasts refused with `BackPressured`.
    pub back_pressured: u64,
    /// Prepares this acceptor left unanswered because a sequencer lease it
    /// granted (or may have granted before a restart) had not run out.
    pub lease_held_prepares: u64,
    /// Orderings refused because the sequencer's era has no position left
    /// ([`position::era_end`]): it orders nothing more in this history.
    pub era_full: u64,
    /// Orphan restarts refused because the last decided cut is in the last
    /// era ([`position::MAX_ERA`]): the group cannot be restarted.
    pub eras_exhausted: u64,
    /// `NotMember` answers sent: a member of a group this node holds no
    /// state for sent it an order record or an ack.
    pub not_member_sent: u64,
    /// `NotMember` answers that made this node count a member as failed.
    pub not_member_received: u64,
}

#[cfg(test)]
mod tests {
    use super::position::*;

    #[test]
    fn eras_split_positions_and_the_last_one_ends_below_max() {
        let p = era_base(3) + 17;
        assert_eq!((era(p), counter(p)), (3, 17));
        assert_eq!(next_era_base(p), Some(era_base(4)));
        assert_eq!(era_end(p), era_base(4));
        assert_eq!(era_end(0), 1 << COUNTER_BITS);
        let last = era_base(MAX_ERA) + 5;
        assert_eq!(next_era_base(last), None);
        assert_eq!(era_end(last), u64::MAX);
        assert_eq!(era(u64::MAX), MAX_ERA);
    }
}
