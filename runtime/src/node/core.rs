//! The node's engine room, shard-local: the membership Engine, the peers'
//! connections, the Engine's timer, the durable state, and what each group
//! has for the application.
//!
//! Every input follows one path: take `now` from the clock, hand the event to
//! the Engine, then [`Core::drain`] carries out its commands in order.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

use concord_membership::{
    Command, DeliveryMode, Engine, GroupId, Message, NodeId, ProtocolVersion, Reason, Time, View,
};
use concord_transport::{CloseReason, ConnId, Event, PeerInfo, SendError, SendOutcome};

use super::clock;
use super::codec::{self, Bytes};
use super::error::{AdjustError, NodeError};
use super::payload::PayloadPool;
use super::persist::StateStore;
use super::{Adjusted, Delivery, GroupEvent, NodeStats};
use crate::shard::ShardContext;
use crate::timer::Timer;

/// One configured peer.
#[derive(Debug)]
pub(crate) struct Peer {
    /// The connection we dial (this node has the lower id), kept across
    /// reconnects by the transport.
    pub dial: Option<ConnId>,
    /// The connection in use once its handshake completed.
    pub open: Option<ConnId>,
    /// Where it listens (what we dial, if we dial it).
    pub addr: std::net::SocketAddr,
    /// The highest incarnation its handshakes have carried (0: none yet).
    /// A connection from a lower one is a previous life of the peer.
    pub incarnation: u64,
    /// Engine messages the transport back-pressured, in order. They are
    /// encoded again when they go out: a held message shares its payload
    /// and order entries, so holding one copies and allocates nothing.
    pub backlog: VecDeque<Message<Bytes>>,
}

/// Where this node stands in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Membership {
    Joining,
    Member,
    Left,
}

/// What one group keeps for its application.
#[derive(Debug)]
pub(crate) struct Slot {
    pub name: String,
    pub mode: DeliveryMode,
    pub state: Membership,
    pub refused: Option<ProtocolVersion>,
    pub events: VecDeque<GroupEvent>,
    /// The task waiting for an event.
    pub waker: Option<Waker>,
    /// The task waiting for a join or a leave to complete.
    pub state_waker: Option<Waker>,
    /// Tasks waiting for room to multicast.
    pub writable: Vec<Waker>,
    /// The application asked to leave.
    pub leaving: bool,
}

/// An adjust-version request this node made, until its caller takes the
/// outcome.
#[derive(Debug)]
pub(crate) struct AdjustWait {
    pub group: GroupId,
    pub outcome: Option<Result<Adjusted, AdjustError>>,
    pub waker: Option<Waker>,
}

impl AdjustWait {
    fn settle(&mut self, outcome: Result<Adjusted, AdjustError>) {
        if self.outcome.is_none() {
            self.outcome = Some(outcome);
        }
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

impl Slot {
    pub fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        if let Some(w) = self.state_waker.take() {
            w.wake();
        }
    }
}

pub(crate) struct Core {
    pub ctx: ShardContext,
    pub me: NodeId,
    pub incarnation: u64,
    pub engine: Engine<Bytes>,
    pub store: StateStore,
    pub peers: BTreeMap<NodeId, Peer>,
    pub conns: HashMap<ConnId, NodeId>,
    /// The Engine's timer and the time it is armed for (its deadline is
    /// `None` once it fired).
    pub wake: Option<(Time, Timer)>,
    pub groups: BTreeMap<GroupId, Slot>,
    pub encoder: codec::Encoder,
    pub decoder: codec::Decoder,
    pub stats: NodeStats,
    pub failed: Option<NodeError>,
    pub weak: Weak<RefCell<Core>>,
    pub peer_backlog: usize,
    /// Receive buffers per connection (`DriverConfig::recv_buf_count`).
    pub recv_bufs: u32,
    /// Tasks waiting for every connection to close (shutdown).
    pub closing: Option<Waker>,
    /// Events a group may hold before the node stops taking transport
    /// events (`NodeConfig::event_queue`).
    pub event_bound: usize,
    /// The pump stopped taking events because a group's queue is full.
    pub paused: bool,
    /// Wakes the pump.
    pub pump_waker: Rc<RefCell<Option<Waker>>>,
    /// This incarnation's adjust-version requests, by request number.
    pub adjusts: BTreeMap<u64, AdjustWait>,
    /// The buffers applications write their multicasts into (and received
    /// payloads copied under receive pressure go into).
    pub payloads: PayloadPool,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("me", &self.me)
            .field("incarnation", &self.incarnation)
            .field("groups", &self.groups.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// Whether some group holds as many unread events as it may: the pump
    /// then leaves the transport's events where they are (their frames hold
    /// their receive buffers, the transport stops reading, and the senders
    /// back-pressure), until the application reads.
    pub fn over_bound(&self) -> bool {
        self.groups
            .values()
            .any(|s| s.events.len() >= self.event_bound)
    }

    /// An event was read: resume a paused pump once there is room.
    pub fn event_read(&mut self) {
        if self.paused && !self.over_bound() {
            self.paused = false;
            if let Some(w) = self.pump_waker.borrow_mut().take() {
                w.wake();
            }
            self.wake_writable();
        }
    }

    pub fn check(&self) -> Result<(), NodeError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Carries out the Engine's commands, in order, until it has none.
    pub fn drain(&mut self) {
        while self.failed.is_none() {
            if let Some(ev) = self.engine.poll_version_event() {
                tracing::debug!(?ev, "adjust-version outcome");
                if (ev.requester, ev.requester_incarnation) == (self.me, self.incarnation)
                    && let Some(w) = self.adjusts.get_mut(&ev.request)
                {
                    let group = ev.group;
                    let position = ev.position;
                    w.settle(match ev.outcome {
                        Ok((from, to)) => Ok(Adjusted {
                            group,
                            position,
                            from,
                            to,
                        }),
                        Err(error) => Err(AdjustError::Rejected {
                            group,
                            position,
                            error,
                        }),
                    });
                }
                continue;
            }
            let Some(cmd) = self.engine.poll_command() else {
                return;
            };
            match cmd {
                Command::Send { to, msg } => self.send(to, msg),
                Command::Deliver(d) => {
                    self.stats.delivered += 1;
                    if let Some(slot) = self.groups.get_mut(&d.group) {
                        slot.events.push_back(GroupEvent::Delivery(Delivery {
                            sender: d.sender,
                            sender_incarnation: d.sender_incarnation,
                            sender_seq: d.sender_seq,
                            seq: d.seq,
                            view: d.view,
                            payload: d.payload,
                        }));
                        slot.wake();
                    }
                }
                Command::ViewChange {
                    view,
                    reason,
                    position,
                } => self.on_view(view, reason, position),
                Command::Partitioned { group } => {
                    self.interrupt_adjusts(group);
                    if let Some(slot) = self.groups.get_mut(&group) {
                        slot.events.push_back(GroupEvent::Partitioned);
                        if slot.leaving {
                            // A leave that ended in a partition: the Engine
                            // forgot the group and does not rejoin.
                            slot.state = Membership::Left;
                        }
                        slot.wake();
                    }
                }
                Command::JoinRefused { group, active } => {
                    if let Some(slot) = self.groups.get_mut(&group) {
                        slot.refused = Some(active);
                        slot.state = Membership::Left;
                        slot.wake();
                    }
                }
                Command::WakeAt(t) => self.arm(t),
                Command::Persist(state) => {
                    if let Err(e) = self.store.write(self.incarnation, Some(&state)) {
                        tracing::error!(%e, "durable state write failed; the node stops");
                        self.fail(NodeError::Persist(e.to_string()));
                        return;
                    }
                    self.stats.persists += 1;
                }
            }
        }
    }

    fn on_view(&mut self, view: View, reason: Reason, position: u64) {
        let me = self.me;
        if !view.contains(me) {
            // The Engine drops the requests of a group it is no longer a
            // member of: their outcome will not reach this node.
            self.interrupt_adjusts(view.group);
        }
        let Some(slot) = self.groups.get_mut(&view.group) else {
            return;
        };
        if reason == Reason::Partitioned {
            // Reported as `GroupEvent::Partitioned` by the command after it.
            return;
        }
        let inside = view.contains(me);
        match (slot.state, inside) {
            (Membership::Joining, true) => slot.state = Membership::Member,
            // Only our own leave ends the membership for the application; a
            // view without us otherwise means the Engine rejoins by itself.
            (Membership::Member, false) if slot.leaving => slot.state = Membership::Left,
            _ => {}
        }
        if let Reason::AdjustVersion { from, to } = reason {
            slot.events.push_back(GroupEvent::ViewChange {
                view,
                reason: reason.clone(),
                position,
            });
            slot.events
                .push_back(GroupEvent::VersionAdjusted { from, to });
        } else {
            slot.events.push_back(GroupEvent::ViewChange {
                view,
                reason,
                position,
            });
        }
        slot.wake();
    }

    /// Settles every adjust-version request of `group` still waiting as
    /// [`AdjustError::Interrupted`].
    fn interrupt_adjusts(&mut self, group: GroupId) {
        for w in self.adjusts.values_mut().filter(|w| w.group == group) {
            w.settle(Err(AdjustError::Interrupted { group }));
        }
    }

    /// Stops the node: nothing more is sent, every waiting task learns why.
    pub fn fail(&mut self, e: NodeError) {
        for w in self.adjusts.values_mut() {
            w.settle(Err(AdjustError::Node(e.clone())));
        }
        self.failed = Some(e);
        if let Some((_, h)) = self.wake.take() {
            h.cancel();
        }
        for slot in self.groups.values_mut() {
            slot.wake();
            for w in slot.writable.drain(..) {
                w.wake();
            }
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        let dials: Vec<ConnId> = self.peers.values().filter_map(|p| p.dial).collect();
        if let Ok(mut d) = self.ctx.driver() {
            for c in conns.into_iter().chain(dials) {
                let _ = d.close(c);
            }
        }
        if let Some(w) = self.closing.take() {
            w.wake();
        }
    }

    /// `WakeAt(t)`: one runtime timer, at the earliest time asked for. The
    /// timer is made once and armed again for every new deadline (the
    /// Engine asks for one after every tick), so waking up allocates
    /// nothing.
    fn arm(&mut self, t: Time) {
        if let Some((at, h)) = &self.wake
            && *at <= t
            && h.deadline().is_some()
        {
            return;
        }
        let now = clock::now();
        let deadline = Instant::now() + Duration::from_nanos(t.0.saturating_sub(now.0));
        if let Some((at, h)) = &mut self.wake {
            *at = t;
            h.arm(deadline);
            return;
        }
        let weak = self.weak.clone();
        let h = self.ctx.timer(move || {
            if let Some(core) = weak.upgrade() {
                core.borrow_mut().on_wake();
            }
        });
        h.arm(deadline);
        self.wake = Some((t, h));
    }

    fn on_wake(&mut self) {
        if self.failed.is_some() {
            return;
        }
        self.engine.tick(clock::now());
        self.drain();
        self.wake_writable();
    }

    /// Sends one Engine message to `to`, queueing it behind earlier frames
    /// the transport back-pressured.
    fn send(&mut self, to: NodeId, msg: Message<Bytes>) {
        let Some(peer) = self.peers.get_mut(&to) else {
            self.stats.dropped_unknown_peer += 1;
            return;
        };
        let Some(conn) = peer.open else {
            // No connection: the peer is down or not yet connected. TCP
            // would have lost it too; the Engine retransmits what matters.
            self.stats.dropped_unconnected += 1;
            return;
        };
        self.stats.send_commands += 1;
        if !peer.backlog.is_empty() {
            peer.backlog.push_back(msg);
            self.stats.backlogged += 1;
            return;
        }
        let frame = match self.encoder.frame(&msg) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(%e, ?to, "cannot encode an Engine message");
                self.stats.encode_errors += 1;
                return;
            }
        };
        let Ok(mut driver) = self.ctx.driver() else {
            return;
        };
        match driver.send(conn, frame) {
            Ok(SendOutcome::Queued) => self.stats.frames_sent += 1,
            Ok(SendOutcome::BackPressured) => {
                peer.backlog.push_back(msg);
                self.stats.backlogged += 1;
            }
            Err(SendError::FrameTooLarge { len, max }) => {
                tracing::error!(
                    len,
                    max,
                    ?to,
                    "Engine message exceeds the transport's frame limit"
                );
                self.stats.encode_errors += 1;
            }
            Err(e) => {
                tracing::debug!(%e, ?to, "send refused");
                self.stats.dropped_broken += 1;
            }
        }
    }

    /// Sends what the transport had back-pressured, in order, until it
    /// back-pressures again.
    fn flush_backlog(&mut self, to: NodeId) {
        let Some(peer) = self.peers.get_mut(&to) else {
            return;
        };
        let Some(conn) = peer.open else {
            return;
        };
        let Ok(mut driver) = self.ctx.driver() else {
            return;
        };
        while let Some(msg) = peer.backlog.front() {
            let frame = match self.encoder.frame(msg) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(%e, ?to, "cannot encode an Engine message");
                    self.stats.encode_errors += 1;
                    peer.backlog.pop_front();
                    continue;
                }
            };
            match driver.send(conn, frame) {
                Ok(SendOutcome::Queued) => {
                    self.stats.frames_sent += 1;
                    peer.backlog.pop_front();
                }
                Ok(SendOutcome::BackPressured) => return,
                Err(e) => {
                    tracing::debug!(%e, ?to, "backlog send refused");
                    self.stats.dropped_broken += peer.backlog.len() as u64;
                    peer.backlog.clear();
                    return;
                }
            }
        }
    }

    /// Whether the peers of `group` can take more: no peer's backlog is at
    /// its bound.
    pub fn transport_has_room(&self) -> bool {
        self.peers
            .values()
            .all(|p| p.backlog.len() < self.peer_backlog)
    }

    pub fn wake_writable(&mut self) {
        for slot in self.groups.values_mut() {
            for w in slot.writable.drain(..) {
                w.wake();
            }
        }
    }

    /// One transport event.
    pub fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Connected { conn, peer } => self.on_connected(conn, peer),
            Event::Frame { conn, frame } => {
                let Some(&from) = self.conns.get(&conn) else {
                    self.stats.stray_frames += 1;
                    return;
                };
                if frame.was_reassembled() {
                    self.stats.reassembled_frames += 1;
                }
                let copy = self.recv_short(conn).then_some(&self.payloads);
                match self
                    .decoder
                    .decode(&frame, copy, &mut self.stats.pressure_copies)
                {
                    Ok(msg) => {
                        drop(frame);
                        self.stats.frames_received += 1;
                        if self.failed.is_some() {
                            return;
                        }
                        self.engine.handle_message(clock::now(), from, msg);
                        self.decoder.handled();
                        self.drain();
                        self.wake_writable();
                    }
                    Err(e) => {
                        tracing::warn!(%e, ?from, %conn, "undecodable frame; closing the connection");
                        self.stats.decode_errors += 1;
                        drop(frame);
                        if let Ok(mut d) = self.ctx.driver() {
                            let _ = d.close(conn);
                        }
                    }
                }
            }
            Event::Disconnected { conn, reason } => self.on_disconnected(conn, &reason),
            Event::HandshakeFailed { conn, addr, reason } => {
                tracing::debug!(%conn, %addr, %reason, "handshake failed");
                self.stats.handshake_failures += 1;
            }
            Event::Writable { conn } => {
                if let Some(&peer) = self.conns.get(&conn) {
                    self.flush_backlog(peer);
                }
                self.wake_writable();
            }
            Event::PoolWritable => {
                let peers: Vec<NodeId> = self.conns.values().copied().collect();
                for peer in peers {
                    self.flush_backlog(peer);
                }
                self.wake_writable();
            }
            Event::RecvPressure {
                conn,
                held_buffers,
                held_bytes,
            } => {
                // Views the node makes never hold the last two buffers
                // (`recv_short`). Frames the pump has not taken yet do (a
                // slow reader stops the pump): reading resumes by itself
                // once the pump takes and handles them.
                tracing::warn!(%conn, held_buffers, held_bytes, "received frames fill the receive buffers; reading paused");
                self.stats.recv_paused += 1;
            }
            Event::RecvResumed { conn } => {
                tracing::debug!(%conn, "reading resumed");
            }
        }
    }

    /// Whether the payloads of `conn`'s next frame must be copied out of
    /// its receive buffer: frames already hold all but two of its buffers
    /// (the one being parsed and one for the kernel). The held payloads are
    /// released only once stable, and stability needs this peer's acks,
    /// which arrive on this same connection: if its last buffers were held
    /// too, the transport would stop reading it and the acks that would
    /// free them would never be read. Copying from here on keeps at least
    /// one buffer cycling, so the connection never pauses on the Engine's
    /// account; once the held payloads become stable, views resume.
    fn recv_short(&self, conn: ConnId) -> bool {
        let Ok(d) = self.ctx.driver() else {
            return false;
        };
        d.recv_held(conn)
            .is_some_and(|h| h.buffers.saturating_add(2) >= self.recv_bufs)
    }

    fn on_connected(&mut self, conn: ConnId, info: PeerInfo) {
        let Some(node) = codec::node_from_wire(info.node_id) else {
            self.refuse(conn, "a node id outside the configured set");
            return;
        };
        let Some(peer) = self.peers.get_mut(&node) else {
            self.refuse(conn, "a node id outside the configured set");
            return;
        };
        let dialed = peer.dial == Some(conn);
        // The lower id dials: a connection from a lower id is accepted, one
        // we dialed must reach the node we meant.
        let expected = if node < self.me { !dialed } else { dialed };
        if !expected {
            tracing::warn!(%conn, ?node, addr = %info.addr, "connection breaks the lower-id-dials rule or reached the wrong node; closing it");
            self.refuse(conn, "the wrong direction or node");
            return;
        }
        if info.incarnation < peer.incarnation {
            // A previous life of the peer (a process that should be gone,
            // or a stale handshake): the newer one's connection stays.
            tracing::warn!(%conn, ?node, incarnation = info.incarnation, seen = peer.incarnation, "connection from an older incarnation; closing it");
            let redial = dialed.then_some(peer.addr);
            self.refuse(conn, "an older incarnation of the peer");
            // Closing our dial ends its reconnects: dial the peer again.
            if let Some(addr) = redial {
                let dial = self
                    .ctx
                    .driver()
                    .ok()
                    .and_then(|mut d| d.connect(addr).ok());
                if let Some(peer) = self.peers.get_mut(&node) {
                    peer.dial = dial;
                }
            }
            return;
        }
        peer.incarnation = info.incarnation;
        if let Some(old) = peer.open.replace(conn)
            && old != conn
        {
            // The peer restarted (same or newer incarnation) and dialed
            // again before we saw the old connection fail.
            self.conns.remove(&old);
            if let Ok(mut d) = self.ctx.driver() {
                let _ = d.close(old);
            }
        }
        self.stats.dropped_broken += peer.backlog.len() as u64;
        peer.backlog.clear();
        self.conns.insert(conn, node);
        self.stats.connects += 1;
        tracing::debug!(%conn, ?node, "peer connected");
    }

    fn refuse(&mut self, conn: ConnId, why: &'static str) {
        tracing::warn!(%conn, why, "refusing connection");
        self.stats.refused_conns += 1;
        if let Ok(mut d) = self.ctx.driver() {
            let _ = d.close(conn);
        }
    }

    fn on_disconnected(&mut self, conn: ConnId, reason: &CloseReason) {
        if let Some(node) = self.conns.remove(&conn) {
            tracing::debug!(%conn, ?node, %reason, "peer disconnected");
            if let Some(peer) = self.peers.get_mut(&node)
                && peer.open == Some(conn)
            {
                peer.open = None;
                self.stats.dropped_broken += peer.backlog.len() as u64;
                peer.backlog.clear();
            }
        }
        if self.conns.is_empty()
            && let Some(w) = self.closing.take()
        {
            w.wake();
        }
    }
}
