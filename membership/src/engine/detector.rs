//! The failure detector: one heartbeat per peer per interval (any traffic
//! counts), and the members of a view this node believes failed.

use super::Engine;
use crate::group::Group;
use crate::types::{NodeId, Payload, Time};

#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub(super) node: NodeId,
    pub(super) inc: u64,
    pub(super) last_heard: Time,
    pub(super) suspected: bool,
}

impl<P: Payload> Engine<P> {
    pub(super) fn suspected(&self, node: NodeId) -> bool {
        node != self.ctx.me
            && self
                .peers
                .iter()
                .find(|p| p.node == node)
                .is_none_or(|p| p.suspected)
    }

    pub(super) fn peer_inc(&self, node: NodeId) -> u64 {
        if node == self.ctx.me {
            return self.ctx.inc;
        }
        self.peers
            .iter()
            .find(|p| p.node == node)
            .map_or(0, |p| p.inc)
    }

    /// Members of the view this node believes failed (suspected or restarted).
    /// Right after an admission only restarts count (see `Group::grace_until`).
    pub(super) fn faulty(&self, g: &Group<P>) -> Vec<NodeId> {
        let grace = self.now < g.grace_until;
        g.view
            .members
            .iter()
            .zip(g.incs.iter())
            .filter(|(m, inc)| {
                (!grace && self.suspected(**m))
                    || self.peer_inc(**m) > **inc
                    || g.coord_gone == Some((g.view.id, **m, **inc))
            })
            .map(|(m, _)| *m)
            .collect()
    }
}
