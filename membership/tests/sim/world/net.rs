//! The network between the Engines: which nodes reach each other (the
//! components that partitions and heals set), the link model (latency,
//! loss, duplication, reordering and long delays, drawn from the world's
//! generator in a fixed order), and the wire codec option (messages
//! encoded on send and decoded on arrival).

use std::rc::Rc;

use concord_membership::{Body, Message, NodeId, wire};

use super::{Bytes, Ev, World};
use crate::sim::scenario::MS;

/// A message on the wire: typed, or as bytes when the scenario routes
/// messages through the codec.
#[derive(Debug)]
pub(super) enum Flight {
    Typed(Box<Message<Bytes>>),
    Encoded(Vec<u8>),
}

/// Which nodes reach each other, and whether the chaos phase is on.
#[derive(Debug)]
pub(super) struct Network {
    /// Component of each node; messages cross only within a component.
    component: Vec<u8>,
    /// False after the final heal: no loss, duplication, reordering or delay.
    chaos: bool,
}

impl Network {
    /// One component, chaos on.
    pub(super) fn new(nodes: usize) -> Network {
        Network {
            component: vec![0; nodes],
            chaos: true,
        }
    }

    /// Whether a message from `from` reaches `to` now: both in one
    /// component (a node always reaches itself).
    pub(super) fn connected(&self, from: usize, to: usize) -> bool {
        from == to || self.component[from] == self.component[to]
    }

    /// Cuts the nodes of `side` (bit `i` is node `i`) from the rest.
    pub(super) fn partition(&mut self, side: u64) {
        for (i, c) in self.component.iter_mut().enumerate() {
            *c = u8::from(side & (1 << i) != 0);
        }
    }

    /// Removes every cut.
    pub(super) fn heal(&mut self) {
        self.component.iter_mut().for_each(|c| *c = 0);
    }

    /// Ends the chaos phase: from now on the links lose, duplicate, reorder
    /// and delay nothing.
    pub(super) fn calm(&mut self) {
        self.chaos = false;
    }

    /// Whether the chaos phase acts on a message from `from` to `to` (never
    /// on a node's message to itself).
    fn chaotic(&self, from: usize, to: usize) -> bool {
        from != to && self.chaos
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

    /// Whether the link loses a message from `from` to `to`.
    fn link_loses(&mut self, from: usize, to: usize) -> bool {
        self.net.chaotic(from, to) && self.rng.chance(self.sc.net.loss)
    }

    /// Whether the link duplicates a message from `from` to `to`.
    fn link_duplicates(&mut self, from: usize, to: usize) -> bool {
        self.net.chaotic(from, to) && self.rng.chance(self.sc.net.dup)
    }

    /// The latency of one copy of `msg` from `from` to `to`: the base
    /// latency, then (chaos) the slow path of an adjust request, a
    /// reordering and a long delay.
    fn link_latency(&mut self, from: usize, to: usize, msg: &Message<Bytes>) -> u64 {
        let net = &self.sc.net;
        let mut latency = if from == to {
            net.lat_min
        } else {
            self.rng.range(net.lat_min, net.lat_max)
        };
        if self.net.chaotic(from, to) {
            if matches!(msg.body, Body::AdjustRequest { .. }) {
                latency += self.sc.adjust_delay;
            }
            if self.rng.chance(net.reorder) {
                latency += self.rng.range(0, net.reorder_max);
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
    }
}

/// The message with payloads shown by their length, for the trace.
fn describe(m: &Message<Bytes>) -> String {
    match &m.body {
        Body::Heartbeat => format!("Heartbeat(inc {})", m.incarnation),
        _ => format!("{:?}", m.clone().map_payload(|p| p.len())),
    }
}
