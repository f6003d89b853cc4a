//! The network between the Engines: which nodes reach each other (the
//! components that partitions and heals set), the link model (latency,
//! loss, duplication, reordering and long delays, drawn from the world's
//! generator in a fixed order), and the wire codec option (messages
//! encoded on send and decoded on arrival).

use std::rc::Rc;

use concord_membership::{Body, Message, NodeId, wire};

use super::{Bytes, Ev, World};
use crate::sim::scenario::{MS, Net};

/// A message on the wire: typed, or as bytes when the scenario routes
/// messages through the codec.
#[derive(Debug)]
pub(super) enum Flight {
    Typed(Box<Message<Bytes>>),
    Encoded(Vec<u8>),
}

/// Which links carry messages, and which phase the link model is in.
#[derive(Debug)]
pub(super) struct Network {
    /// `cut[from][to]`: what `from` sends `to` is lost. Directed, so a cut
    /// can be one way, and per link, so it need not be transitive.
    cut: Vec<Vec<bool>>,
    /// False after the final heal: the links misbehave as `Scenario::heal_net`
    /// says, not `Scenario::net`.
    chaos: bool,
}

impl Network {
    /// Every link up, chaos on.
    pub(super) fn new(nodes: usize) -> Network {
        Network {
            cut: vec![vec![false; nodes]; nodes],
            chaos: true,
        }
    }

    /// Whether a message from `from` reaches `to` now (a node always
    /// reaches itself).
    pub(super) fn connected(&self, from: usize, to: usize) -> bool {
        from == to || !self.cut[from][to]
    }

    /// Cuts the nodes of `side` (bit `i` is node `i`) from the rest, both
    /// ways; the partition replaces every earlier cut.
    pub(super) fn partition(&mut self, side: u64) {
        self.heal();
        self.cut_one_way(side);
        let others = !side & ((1u64 << self.cut.len()) - 1);
        self.cut_one_way(others);
    }

    /// Cuts what the nodes of `side` send to the others.
    pub(super) fn cut_one_way(&mut self, side: u64) {
        let n = self.cut.len();
        let inside = |i: usize| side & (1 << i) != 0;
        for from in (0..n).filter(|&i| inside(i)) {
            for to in (0..n).filter(|&i| !inside(i)) {
                self.cut[from][to] = true;
            }
        }
    }

    /// Cuts (`down`) or restores the link between `a` and `b`, both ways.
    pub(super) fn set_link(&mut self, a: usize, b: usize, down: bool) {
        self.cut[a][b] = down;
        self.cut[b][a] = down;
    }

    /// Removes every cut.
    pub(super) fn heal(&mut self) {
        self.cut.iter_mut().flatten().for_each(|c| *c = false);
    }

    /// Ends the chaos phase: from now on the links misbehave only as the
    /// liveness phase's network says.
    pub(super) fn calm(&mut self) {
        self.chaos = false;
    }

    /// Whether the chaos phase's network acts (else the liveness phase's).
    fn chaos(&self) -> bool {
        self.chaos
    }
}

impl World {
    /// The Engine on `from` sends `msg` to `to`: cut, lost, or in flight
    /// (once, or twice when duplicated) until its arrival.
    pub(super) fn send(&mut self, from: usize, to: NodeId, msg: Message<Bytes>) {
        self.cov.messages += 1;
        let Some(to) = (to.0 as usize)
            .checked_sub(1)
            .filter(|t| *t < self.slots.len())
        else {
            self.fail_world(
                "no-creation",
                format!("n{} sent to unconfigured {to:?}", from + 1),
            );
            return;
        };
        let now = self.now;
        if let Err(detail) = self.lease.sent(from, &msg, self.slots.len(), now) {
            self.fail_world("lease", detail);
        }
        let key = [11, from as u64, to as u64];
        if !self.net.connected(from, to) {
            self.trace.note(self.now, &key, || {
                format!("n{} -> n{} cut: {}", from + 1, to + 1, kind(&msg))
            });
            return;
        }
        if self.link_loses(from, to) {
            self.cov.lost += 1;
            self.trace.note(self.now, &key, || {
                format!("n{} -> n{} LOST: {}", from + 1, to + 1, kind(&msg))
            });
            return;
        }
        let copies = if self.link_duplicates(from, to) {
            self.cov.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let latency = self.link_latency(from, to, &msg);
            let Some(flight) = self.flight(&msg) else {
                return;
            };
            let at = self.now + latency;
            self.trace
                .note(self.now, &[12, from as u64, to as u64, at], || {
                    format!(
                        "n{} -> n{} {} arrives {:.3}ms",
                        from + 1,
                        to + 1,
                        describe(&msg),
                        at as f64 / MS as f64
                    )
                });
            self.schedule(at, Ev::Arrive { from, to, flight });
        }
    }

    /// A message in flight reaches `to` (unless a partition cut it on the
    /// way) and its Engine handles it.
    pub(super) fn arrive(&mut self, from: usize, to: usize, flight: Flight) {
        if !self.net.connected(from, to) {
            self.trace
                .note(self.now, &[13, from as u64, to as u64], || {
                    format!("n{} -> n{} cut in flight", from + 1, to + 1)
                });
            return;
        }
        if self.paused(to) {
            self.hold_message(from, to, flight);
            return;
        }
        let msg = match flight {
            Flight::Typed(m) => *m,
            Flight::Encoded(bytes) => match wire::decode(&bytes) {
                Ok(m) => m.map_payload(Rc::from),
                Err(e) => {
                    self.fail_world("wire", format!("decode of an encoded frame failed: {e}"));
                    return;
                }
            },
        };
        if self.flush_trap_arrival(to, &msg) {
            return;
        }
        let from_id = self.slots[from].id;
        let now = self.clock(to);
        let Some(engine) = self.slots[to].engine.as_mut() else {
            return;
        };
        engine.handle_message(now, from_id, msg);
        self.settle(to);
    }

    // The link model. Each function draws from the world's generator only
    // when the chaos phase acts on the link, in the order `send` calls them:
    // loss, duplication, then per copy its latency.

    /// The link model of the phase the network is in.
    fn link_net(&self) -> &Net {
        if self.net.chaos() {
            &self.sc.net
        } else {
            &self.sc.heal_net
        }
    }

    /// Whether the link loses a message from `from` to `to` (never a
    /// node's message to itself).
    fn link_loses(&mut self, from: usize, to: usize) -> bool {
        let p = self.link_net().loss;
        let lost = from != to && self.rng.chance(p);
        if lost && !self.net.chaos() {
            self.cov.lost_after_heal += 1;
        }
        lost
    }

    /// Whether the link duplicates a message from `from` to `to`.
    fn link_duplicates(&mut self, from: usize, to: usize) -> bool {
        let p = self.link_net().dup;
        let dup = from != to && self.rng.chance(p);
        if dup && !self.net.chaos() {
            self.cov.duplicated_after_heal += 1;
        }
        dup
    }

    /// The latency of one copy of `msg` from `from` to `to`: the base
    /// latency, then (chaos) the slow path of an adjust request, a
    /// reordering and a long delay.
    fn link_latency(&mut self, from: usize, to: usize, msg: &Message<Bytes>) -> u64 {
        let net = self.link_net().clone();
        let mut latency = if from == to {
            net.lat_min
        } else {
            self.rng.range(net.lat_min, net.lat_max)
        };
        if from != to {
            if self.net.chaos() && matches!(msg.body, Body::AdjustRequest { .. }) {
                latency += self.sc.adjust_delay;
            }
            if self.rng.chance(net.reorder) {
                latency += self.rng.range(0, net.reorder_max);
                if !self.net.chaos() {
                    self.cov.reordered_after_heal += 1;
                }
            }
            if self.rng.chance(net.delay) {
                latency += self.rng.range(0, net.delay_max);
            }
        }
        latency
    }

    /// One copy of `msg` as it travels: encoded when the scenario routes
    /// messages through the codec (`None`: the encoding failed, the world
    /// failed with it).
    fn flight(&mut self, msg: &Message<Bytes>) -> Option<Flight> {
        if self.sc.wire {
            let mut buf = Vec::new();
            if let Err(e) = wire::encode(msg, &mut buf) {
                self.fail_world("wire", format!("encode failed: {e} for {}", kind(msg)));
                return None;
            }
            Some(Flight::Encoded(buf))
        } else {
            Some(Flight::Typed(Box::new(msg.clone())))
        }
    }
}

/// The message's type, for the trace.
fn kind<P>(m: &Message<P>) -> &'static str {
    match &m.body {
        Body::Heartbeat => "Heartbeat",
        Body::Versions { .. } => "Versions",
        Body::AdjustRequest { .. } => "AdjustRequest",
        Body::DataBatch { .. } => "DataBatch",
        Body::Data { .. } => "Data",
        Body::Order { .. } => "Order",
        Body::Ack { .. } => "Ack",
        Body::Nack { .. } => "Nack",
        Body::JoinRequest { .. } => "JoinRequest",
        Body::Welcome { .. } => "Welcome",
        Body::JoinRefused { .. } => "JoinRefused",
        Body::NoGroup { .. } => "NoGroup",
        Body::LeaveRequest { .. } => "LeaveRequest",
        Body::Prepare { .. } => "Prepare",
        Body::Promise { .. } => "Promise",
        Body::Reject { .. } => "Reject",
        Body::Accept { .. } => "Accept",
        Body::Accepted { .. } => "Accepted",
        Body::Decided { .. } => "Decided",
        Body::Lease { .. } => "Lease",
        Body::LeaseGrant { .. } => "LeaseGrant",
        Body::NotMember { .. } => "NotMember",
    }
}

/// The message with payloads shown by their length, for the trace.
fn describe(m: &Message<Bytes>) -> String {
    match &m.body {
        Body::Heartbeat => format!("Heartbeat(inc {})", m.incarnation),
        _ => format!("{:?}", m.clone().map_payload(|p| p.len())),
    }
}
