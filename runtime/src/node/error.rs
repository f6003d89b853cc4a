//! The node's errors: one type per operation, with fields a caller can match.

use std::net::SocketAddr;
use std::path::PathBuf;

use concord_membership::{GroupId, NodeId, ProtocolVersion, VersionError, VersionRange};

/// Why a [`NodeConfig`](super::NodeConfig) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `node` is not in the configured node set.
    #[error("node {node:?} is not in the configured node set")]
    NotConfigured {
        /// The node.
        node: NodeId,
    },
    /// Another configured node has this node's listen address.
    #[error("node {node:?} is configured at {addr}, this node's listen address")]
    AddressInUse {
        /// The other node.
        node: NodeId,
        /// The address.
        addr: SocketAddr,
    },
    /// The protocol range is empty or outside what this build runs.
    #[error("protocol range [{}, {}] is not within this build's {supported:?}", min.0, max.0)]
    Protocol {
        /// Configured minimum.
        min: ProtocolVersion,
        /// Configured maximum.
        max: ProtocolVersion,
        /// What this build runs.
        supported: VersionRange,
    },
    /// A field is out of range.
    #[error("invalid configuration: {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why the durable state could not be read or written. Every variant names
/// the file: a node never starts afresh over a state file it cannot read,
/// because its acceptor promises live there.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An I/O operation on the data directory or the state file failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state file exists but is shorter than its header says.
    #[error("state file {} is truncated: {len} bytes, need {need}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
        /// The length its header promises (or the header's own length).
        need: usize,
    },
    /// The state file is damaged: a wrong magic, version or checksum, or an
    /// archive that fails validation.
    #[error("state file {} is corrupt: {what}; restore it from a backup or, if this node's votes may be lost, remove the node from the cluster", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// Why [`Node::start`](super::Node::start) failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The durable state could not be recovered.
    #[error(transparent)]
    State(#[from] StateError),
    /// The Engine refused the configuration.
    #[error("membership engine refused the configuration: {0}")]
    Engine(#[from] concord_membership::ConfigError),
    /// Not called on a runtime shard, or the shard's reactor is not a
    /// transport driver, or a node already runs on this shard.
    #[error("runtime: {0}")]
    Runtime(#[from] crate::Error),
    /// Listening or connecting failed.
    #[error("transport: {0}")]
    Transport(#[from] concord_transport::SetupError),
    /// The shard's driver was built for another node or cluster.
    #[error(
        "the shard's transport driver is configured as node {driver_node} of cluster {driver_cluster}, not as this node"
    )]
    DriverMismatch {
        /// The driver's node id.
        driver_node: u64,
        /// The driver's cluster id.
        driver_cluster: u64,
    },
    /// A node already runs on this shard (one node per shard).
    #[error("a node already runs on this shard")]
    AlreadyRunning,
    /// The data directory belongs to a node with another shard count (see
    /// [`ShardPlan`](super::ShardPlan)).
    #[error("shard layout {}: {what}", path.display())]
    Layout {
        /// The layout file.
        path: std::path::PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// Why a node stopped working: the node refuses every call from then on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// Writing the durable state failed: nothing after that write may be
    /// carried out (a promise sent without it could break Paxos safety), so
    /// the node stopped.
    #[error("durable state write failed, node stopped: {0}")]
    Persist(String),
    /// The node was shut down.
    #[error("the node was shut down")]
    Shutdown,
}

/// Why [`Node::join`](super::Node::join) failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JoinError {
    /// A join or leave of the group is already under way, or this node is
    /// already a member through another [`Group`](super::Group) handle.
    #[error("a join or leave of group {group:?} is already in progress")]
    InProgress {
        /// The group.
        group: GroupId,
    },
    /// The group runs a version outside this node's range.
    #[error("group {group:?} runs protocol version {} which this node does not", active.0)]
    Refused {
        /// The group.
        group: GroupId,
        /// Its active version.
        active: ProtocolVersion,
    },
    /// The group lives on another shard of this node (see
    /// [`shard_of`](super::shard_of)): join it there.
    #[error("group {group:?} lives on shard {shard}, not on this one")]
    WrongShard {
        /// The group.
        group: GroupId,
        /// The shard that runs it.
        shard: usize,
    },
    /// The node stopped.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Why [`Group::multicast`](super::Group::multicast) refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MulticastError {
    /// The group was left, or this member is leaving.
    #[error("not a member of group {group:?} (left, or leaving)")]
    NotMember {
        /// The group.
        group: GroupId,
    },
    /// This member lost the primary component; it rejoins by itself after
    /// the heal. Retry after the next [`GroupEvent::ViewChange`](super::GroupEvent).
    #[error("group {group:?} is partitioned from the primary component")]
    Partitioned {
        /// The group.
        group: GroupId,
    },
    /// The node stopped.
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl MulticastError {
    /// Whether a later retry can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, MulticastError::Partitioned { .. })
    }
}

/// Why [`Group::adjust_version`](super::Group::adjust_version) (or one
/// group of [`Node::adjust_version`](super::Node::adjust_version)) did not
/// switch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdjustError {
    /// Refused by this node's own check before anything was asked, naming
    /// the culprit (a node not active, a view lacking configured nodes or
    /// this node cut off, a node that cannot run the target), or this node
    /// is not a member of the group.
    #[error(transparent)]
    Refused(#[from] concord_membership::AdjustError),
    /// Ordered and refused there by the sequencer's check (a crash, join or
    /// partition raced with the request): every member of the group saw
    /// the same refusal at the same position, and nothing changed.
    #[error("refused at position {position} of group {group:?}: {error}")]
    Rejected {
        /// The group.
        group: GroupId,
        /// Where the refusal was ordered.
        position: u64,
        /// Why, naming the culprit.
        error: VersionError,
    },
    /// This node left the group, was removed from its view or lost the
    /// primary component before the outcome reached it: the outcome is
    /// unknown here. The view this node installs when it is back says which
    /// version the group runs.
    #[error("group {group:?}: this node lost the group before the outcome was ordered")]
    Interrupted {
        /// The group.
        group: GroupId,
    },
    /// The node stopped.
    #[error(transparent)]
    Node(#[from] NodeError),
}
