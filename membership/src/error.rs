//! One error type per [`crate::Engine`] operation.
//!
//! Each type lists only what its operation can return, so a caller's
//! `match` covers exactly the refusals it can meet:
//!
//! | operation | error |
//! |---|---|
//! | [`Engine::new`](crate::Engine::new), [`recover`](crate::Engine::recover) | [`ConfigError`] |
//! | [`Engine::join`](crate::Engine::join) | [`JoinError`] |
//! | [`Engine::leave`](crate::Engine::leave) | [`LeaveError`] |
//! | [`Engine::multicast`](crate::Engine::multicast) | [`MulticastError`] |
//! | [`Engine::multicast_batch`](crate::Engine::multicast_batch) | [`BatchError`] |
//! | [`Engine::adjust_version`](crate::Engine::adjust_version) | [`AdjustError`] |
//!
//! Hot-path outcomes (a full window) are values
//! ([`crate::Multicast::BackPressured`]), not errors. The refusals of the
//! version model itself are [`VersionError`]s, wrapped by the two
//! operations that can meet them.

use crate::types::{GroupId, NodeId};
use crate::version::VersionError;

/// Why [`crate::Engine::new`] or [`crate::Engine::recover`] refused the
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `Config::node` is not in `Config::nodes`.
    #[error("node {node:?} is not in the configured node set")]
    NotConfigured {
        /// The node.
        node: NodeId,
    },
    /// The configuration is unusable: timers out of order
    /// (`0 < heartbeat_interval < failure_timeout` does not hold), a zero
    /// window or batch, a protocol range with `min > max`, or one outside
    /// what this build implements (`version::OLDEST..=version::CURRENT`).
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// [`crate::Engine::recover`] only: `Config::incarnation` is not higher
    /// than the incarnation that wrote the persisted state: every life of a
    /// node runs a higher incarnation than the one before.
    #[error(
        "invalid configuration: a recovering node needs a higher incarnation than \
         the one that persisted ({incarnation} <= {persisted})"
    )]
    StaleIncarnation {
        /// `Config::incarnation`.
        incarnation: u64,
        /// The incarnation recorded in the [`crate::DurableState`].
        persisted: u64,
    },
}

/// Why [`crate::Engine::join`] refused. A join the group itself refuses
/// (its version is outside this node's range) is reported later, as
/// [`crate::Command::JoinRefused`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// A join, rejoin or leave of the group is already under way (joining
    /// again is fine once it ended; joining a group this node is a member
    /// of and not leaving is `Ok`).
    #[error("a join or leave of group {group:?} is already in progress")]
    InProgress {
        /// The group.
        group: GroupId,
    },
}

/// Why [`crate::Engine::leave`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaveError {
    /// This node neither is a member of the group nor is joining it.
    #[error("node is not a member of group {group:?}")]
    NotMember {
        /// The group.
        group: GroupId,
    },
    /// A leave of the group is already under way.
    #[error("a join or leave of group {group:?} is already in progress")]
    InProgress {
        /// The group.
        group: GroupId,
    },
}

/// Why [`crate::Engine::multicast`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MulticastError {
    /// This node is not (or not yet) a member of the group.
    #[error("node is not a member of group {group:?}")]
    NotMember {
        /// The group.
        group: GroupId,
    },
    /// This member lost the primary component; it rejoins after the heal.
    #[error("group {group:?} is partitioned from the primary component")]
    Partitioned {
        /// The group.
        group: GroupId,
    },
    /// This member is leaving the group.
    #[error("a join or leave of group {group:?} is already in progress")]
    InProgress {
        /// The group.
        group: GroupId,
    },
}

/// Why [`crate::Engine::multicast_batch`] refused: as
/// [`MulticastError`], or a refusal of the version-gated function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// This node is not (or not yet) a member of the group.
    #[error("node is not a member of group {group:?}")]
    NotMember {
        /// The group.
        group: GroupId,
    },
    /// This member lost the primary component; it rejoins after the heal.
    #[error("group {group:?} is partitioned from the primary component")]
    Partitioned {
        /// The group.
        group: GroupId,
    },
    /// This member is leaving the group.
    #[error("a join or leave of group {group:?} is already in progress")]
    InProgress {
        /// The group.
        group: GroupId,
    },
    /// The group runs a version without batches
    /// ([`VersionError::VersionTooLow`]), or the batch is empty
    /// ([`VersionError::EmptyBatch`]) or too large
    /// ([`VersionError::BatchTooLarge`]).
    #[error(transparent)]
    Version(#[from] VersionError),
}

/// Why [`crate::Engine::adjust_version`] refused, before sending anything.
/// A refusal by the sequencer comes later, ordered, in a
/// [`crate::VersionEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdjustError {
    /// This node is not a member of a group in the scope: the named group of
    /// [`crate::Scope::Group`] is unknown here, or only being joined.
    #[error("node is not a member of group {group:?}")]
    NotMember {
        /// The group.
        group: GroupId,
    },
    /// The check of [`crate::version`] failed, naming the culprit: a
    /// configured node not active ([`VersionError::NodeNotActive`]), a view
    /// lacking configured nodes or this node cut off from the primary
    /// ([`VersionError::Partitioned`]), or a node that cannot run the target
    /// ([`VersionError::NotCapable`]).
    #[error(transparent)]
    Version(#[from] VersionError),
}
