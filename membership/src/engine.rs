//! The Engine: events in, commands out.

use std::collections::VecDeque;

use crate::error::Error;
use crate::message::Message;
use crate::types::{
    Config, Delivery, DeliveryMode, GroupId, Multicast, NodeId, Payload, ProtocolVersion, Reason,
    Stats, Time, View,
};

/// What the Engine asks its caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<P> {
    /// Send `msg` to node `to`.
    Send {
        /// Destination.
        to: NodeId,
        /// The message.
        msg: Message<P>,
    },
    /// Hand an application message to the application.
    Deliver(Delivery<P>),
    /// A new view, in the total order (after every delivery of the old view).
    ViewChange {
        /// The view now in force.
        view: View,
        /// Why.
        reason: Reason,
        /// Its position in the group's total order (the position of the
        /// Join/Leave entry, or the cut of a flush).
        position: u64,
    },
    /// This member lost the primary component of `group` and stopped
    /// delivering; it rejoins by itself after the heal.
    Partitioned {
        /// The group.
        group: GroupId,
    },
    /// A join was refused: the group runs a version outside this node's range.
    JoinRefused {
        /// The group.
        group: GroupId,
        /// Its active version.
        active: ProtocolVersion,
    },
    /// Call [`Engine::tick`] at (or after) this time.
    WakeAt(Time),
}

/// The membership and total-order protocol of one node.
#[derive(Debug)]
pub struct Engine<P: Payload> {
    config: Config,
    commands: VecDeque<Command<P>>,
    stats: Stats,
}

impl<P: Payload> Engine<P> {
    /// A fresh Engine (a restart is a fresh Engine with a higher incarnation).
    pub fn new(config: Config, _now: Time) -> Result<Self, Error> {
        if !config.nodes.contains(&config.node) {
            return Err(Error::NotConfigured { node: config.node });
        }
        Ok(Engine {
            config,
            commands: VecDeque::new(),
            stats: Stats::default(),
        })
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.config.node
    }

    /// A message from peer `from`.
    pub fn handle_message(&mut self, _now: Time, _from: NodeId, _msg: Message<P>) {}

    /// Time passed.
    pub fn tick(&mut self, _now: Time) {}

    /// Join `group` (creating it if it exists nowhere).
    pub fn join(&mut self, _now: Time, _group: GroupId, _mode: DeliveryMode) -> Result<(), Error> {
        Ok(())
    }

    /// Leave `group` gracefully.
    pub fn leave(&mut self, _now: Time, group: GroupId) -> Result<(), Error> {
        Err(Error::NotMember { group })
    }

    /// Multicast `payload` to `group`.
    pub fn multicast(
        &mut self,
        _now: Time,
        group: GroupId,
        _payload: P,
    ) -> Result<Multicast<P>, Error> {
        Err(Error::NotMember { group })
    }

    /// The next command, if any.
    pub fn poll_command(&mut self) -> Option<Command<P>> {
        self.commands.pop_front()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The current view of `group`, if this node is a member.
    pub fn view(&self, _group: GroupId) -> Option<&View> {
        None
    }
}
