//! The failure detector: one heartbeat per peer per interval (any traffic
//! counts), and the members of a view this node believes failed.

use super::{Command, Ctx, Engine};
use crate::group::Group;
use crate::message::{Body, Message};
use crate::types::{Config, NodeId, Payload, Time};

/// What the detector knows of one configured peer.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub(super) node: NodeId,
    pub(super) inc: u64,
    pub(super) last_heard: Time,
    pub(super) suspected: bool,
}

/// The node-level failure detector: every configured peer (heard from
/// when, in which incarnation, suspected or not) and the next heartbeat.
#[derive(Debug)]
pub(super) struct Detector {
    pub(super) peers: Vec<Peer>,
    pub(super) next_heartbeat: Time,
}

impl Detector {
    /// Every node of `nodes` but `me`, heard from at `now`; the first
    /// heartbeat is due at once.
    pub(super) fn new(nodes: &[NodeId], me: NodeId, now: Time) -> Self {
        let peers = nodes
            .iter()
            .filter(|n| **n != me)
            .map(|n| Peer {
                node: *n,
                inc: 0,
                last_heard: now,
                suspected: false,
            })
            .collect();
        Detector {
            peers,
            next_heartbeat: now,
        }
    }

    /// The peer `node`, if it is configured.
    pub(super) fn peer(&self, node: NodeId) -> Option<&Peer> {
        self.peers.iter().find(|p| p.node == node)
    }

    /// How many configured nodes this one reaches, itself included.
    pub(super) fn reachable(&self) -> usize {
        1 + self.peers.iter().filter(|p| !p.suspected).count()
    }

    /// A message from incarnation `inc` of `from` arrived at `now`. False
    /// for a node that is not configured, or a previous life of a restarted
    /// one (the message is stale); otherwise `from` is alive in `inc`.
    pub(super) fn heard(&mut self, from: NodeId, inc: u64, now: Time) -> bool {
        let Some(peer) = self.peers.iter_mut().find(|p| p.node == from) else {
            return false;
        };
        if inc < peer.inc {
            // From a previous life of a restarted node.
            return false;
        }
        peer.inc = inc;
        peer.last_heard = now;
        peer.suspected = false;
        true
    }

    /// One heartbeat (this node's version range) to every peer once per
    /// interval; a peer not heard from for longer than a failure timeout is
    /// suspected.
    pub(super) fn tick<P>(&mut self, ctx: &mut Ctx<P>, cfg: &Config, now: Time) {
        if now >= self.next_heartbeat {
            self.next_heartbeat = now.plus(cfg.heartbeat_interval);
            for p in &self.peers {
                ctx.commands.push_back(Command::Send {
                    to: p.node,
                    msg: Message {
                        incarnation: ctx.inc,
                        body: Body::Versions {
                            range: cfg.protocol,
                        },
                    },
                });
            }
        }
        for p in &mut self.peers {
            let dead = now.0.saturating_sub(p.last_heard.0) > cfg.failure_timeout;
            if dead && !p.suspected {
                ctx.stats.timeouts_fired += 1;
            }
            p.suspected = dead;
        }
    }
}

impl<P: Payload> Engine<P> {
    /// Whether this node believes `node` failed (never itself; an
    /// unconfigured node always).
    pub(super) fn suspected(&self, node: NodeId) -> bool {
        node != self.ctx.me && self.detector.peer(node).is_none_or(|p| p.suspected)
    }

    /// The latest incarnation heard from `node` (0 if none).
    pub(super) fn peer_inc(&self, node: NodeId) -> u64 {
        if node == self.ctx.me {
            return self.ctx.inc;
        }
        self.detector.peer(node).map_or(0, |p| p.inc)
    }

    /// Members of the view this node believes failed (suspected or restarted).
    /// Right after an admission only restarts count (see `Group::grace_until`).
    /// An iterator, not a vector: the check runs on every tick.
    pub(super) fn faulty<'a>(
        &'a self,
        g: &'a Group<P>,
    ) -> impl Iterator<Item = NodeId> + Clone + 'a {
        let grace = self.now < g.grace_until;
        g.view
            .members
            .iter()
            .zip(g.incs.iter())
            .filter(move |(m, inc)| {
                (!grace && self.suspected(**m))
                    || self.peer_inc(**m) > **inc
                    || g.is_gone(**m, **inc)
            })
            .map(|(m, _)| *m)
    }
}
