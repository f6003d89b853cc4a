//! The crate's one error type.

use crate::types::{GroupId, NodeId, ProtocolVersion, VersionRange};

/// What can go wrong when calling the [`crate::Engine`]. Hot-path outcomes
/// (a full window) are values ([`crate::Multicast::BackPressured`]), not errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// This node is not (or not yet) a member of the group.
    #[error("node is not a member of group {group:?}")]
    NotMember {
        /// The group.
        group: GroupId,
    },
    /// The group is unknown to this node.
    #[error("unknown group {group:?}")]
    UnknownGroup {
        /// The group.
        group: GroupId,
    },
    /// The node is not in the configured node set.
    #[error("node {node:?} is not in the configured node set")]
    NotConfigured {
        /// The node.
        node: NodeId,
    },
    /// This member lost the primary component; it rejoins after the heal.
    #[error("group {group:?} is partitioned from the primary component")]
    Partitioned {
        /// The group.
        group: GroupId,
    },
    /// A join or leave for the group is already under way.
    #[error("a join or leave of group {group:?} is already in progress")]
    InProgress {
        /// The group.
        group: GroupId,
    },
    /// The group's active protocol version is outside this node's range.
    #[error("group {group:?} runs version {active:?}, outside supported {supported:?}")]
    NotCapable {
        /// The group.
        group: GroupId,
        /// Its active version.
        active: ProtocolVersion,
        /// What this node supports.
        supported: VersionRange,
    },
    /// An adjust-version request or a version-gated function was refused
    /// (see [`crate::version`]); the inner error names the culprit.
    #[error(transparent)]
    Version(#[from] crate::version::VersionError),
    /// The configuration is unusable.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
}
