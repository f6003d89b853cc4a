//! The node: the membership Engine driven over the transport on a shard, and
//! the API a service embeds (join a group, multicast, read its events).
//!
//! # The model
//!
//! One [`Node`] per process runs on one shard of a [`Runtime`]
//! whose reactor is the transport's driver ([`runtime`] builds one). The node
//! owns the shard's driver and the one membership
//! [`Engine`] of the process, and everything
//! happens on that shard's thread: a frame is decoded and handed to the
//! Engine inside the duty loop, the Engine's `WakeAt` is a runtime timer, and
//! the Engine's commands are carried out at once, in order. The application's
//! tasks run on the same shard, so a delivery reaches them without crossing a
//! thread.
//!
//! - **Connections.** One TCP connection per pair of nodes: the node with the
//!   lower id dials, the other accepts. A connection that breaks the rule, or
//!   a handshake from a node outside the configuration, is closed. The
//!   handshake carries node id, cluster id and protocol range; a restarted
//!   peer's new connection replaces its old one.
//! - **Time.** Every Engine call gets a fresh `now` from `CLOCK_BOOTTIME`
//!   ([`clock`]).
//! - **Durable state.** `Command::Persist` is written to
//!   `<data_dir>/node.state` (temporary file, fsync, rename, fsync of the
//!   directory) before any later command; a restart recovers it and runs a
//!   new, persisted incarnation ([`persist`]).
//! - **Back-pressure.** A frame the transport back-pressures waits in its
//!   peer's backlog, in order, and goes out on `Writable`; nothing is lost
//!   while the connection lives. A full backlog, or a full sender window,
//!   makes [`Group::multicast`] answer [`Multicast::BackPressured`];
//!   [`Group::writable`] waits for room.
//! - **Codec.** [`codec`] is the one module that decides the payload type and
//!   how messages become bytes.
//!
//! Group names map to [`GroupId`]s with [`GroupId::from_name`] (FNV-1a 64 of
//! the UTF-8 name), so every node and every build agree without coordination.
//!
//! # Example
//!
//! ```no_run
//! use concord_membership::{DeliveryMode, NodeId};
//! use concord_runtime::node::{self, GroupEvent, Multicast, Node, NodeConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut cfg = NodeConfig::new(NodeId(1), 7, "127.0.0.1:7101".parse()?, "/var/lib/prices/1".into());
//! cfg.add_node(NodeId(2), "127.0.0.1:7102".parse()?);
//! cfg.add_node(NodeId(3), "127.0.0.1:7103".parse()?);
//! let rt = node::runtime(&cfg).build()?;
//! let done = rt.spawn_on(0, move || async move {
//!     let node = Node::start(cfg)?;
//!     let prices = node.join("prices", DeliveryMode::Agreed).await?;
//!     prices.send(&b"EURUSD 1.0841"[..]).await?; // waits for room if back-pressured
//!     if let Multicast::BackPressured(_) = prices.multicast(&b"EURUSD 1.0842"[..])? {
//!         prices.writable().await; // and try again
//!     }
//!     while let Some(event) = prices.next().await {
//!         if let GroupEvent::Delivery(d) = event {
//!             println!("{:?} #{}: {:?}", d.sender, d.seq, &d.payload[..]);
//!             break;
//!         }
//!     }
//!     node.shutdown().await?; // ordered leave of every group
//!     Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! })?;
//! done.join()?.map_err(|e| e.to_string())?;
//! rt.shutdown()?;
//! # Ok(())
//! # }
//! ```

mod adjust;
pub mod clock;
pub mod codec;
mod config;
mod core;
mod error;
mod payload;
pub mod persist;
mod shards;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use concord_membership::{
    DeliveryMode, DurableState, Engine, ProtocolVersion, Reason, View, ViewId,
};
use concord_transport::Driver;

pub use self::adjust::Adjusted;
pub use self::codec::Bytes;
pub use self::config::NodeConfig;
pub use self::error::{
    AdjustError, ConfigError, JoinError, MulticastError, NodeError, StartError, StateError,
};
pub use self::payload::PayloadBuf;
pub use self::shards::{LAYOUT_FILE, Shard, ShardPlan, domain_id, shard_of};
pub use concord_membership::{GroupId, NodeId};

use self::core::{Core, Membership, Peer, Slot};
use self::persist::StateStore;
use crate::driver::DriverReactor;
use crate::runtime::{Builder, Runtime};
use crate::shard::ShardContext;

/// A runtime builder for one node: one shard whose reactor is a transport
/// driver configured from `config` (its node id, cluster and protocol range
/// go into the handshake), not pinned (several node processes may share a
/// host's cores). Adjust it (idle strategy, pinning) and `build` it.
pub fn runtime(config: &NodeConfig) -> Builder {
    let dc = config.driver_config();
    Runtime::builder()
        .shards(1)
        .pin(false)
        .reactor(move |_| Driver::new(dc.clone()).map(DriverReactor::new))
}

/// An application message, in the group's total order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Who multicast it.
    pub sender: NodeId,
    /// The sender's incarnation when it multicast it.
    pub sender_incarnation: u64,
    /// The sender's sequence number for it (from 1, per incarnation).
    pub sender_seq: u64,
    /// Its position in the group's total order.
    pub seq: u64,
    /// The view it is delivered in.
    pub view: ViewId,
    /// The bytes: shared with the node, never copied on the way here.
    pub payload: Bytes,
}

/// Something that happened in a group, in the group's total order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// An application message.
    Delivery(Delivery),
    /// A new view, after every delivery of the old one.
    ViewChange {
        /// The view now in force.
        view: View,
        /// Why it changed.
        reason: Reason,
        /// Its position in the total order.
        position: u64,
    },
    /// The group switched protocol version at this point (right after the
    /// `ViewChange` whose reason is `AdjustVersion`).
    VersionAdjusted {
        /// The version before.
        from: ProtocolVersion,
        /// The version after.
        to: ProtocolVersion,
    },
    /// This member lost the primary component and stopped delivering; it
    /// rejoins by itself after the heal (a `ViewChange` with reason
    /// `Merged` follows).
    Partitioned,
}

/// Outcome of [`Group::multicast`]: back-pressure is a value, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a BackPressured payload was not sent"]
pub enum Multicast {
    /// Accepted: it will be delivered with this sender sequence number.
    Accepted {
        /// The sender sequence number.
        sender_seq: u64,
    },
    /// No room (the sender window is full, a peer's connection is
    /// back-pressured, or a group's application has `NodeConfig::event_queue`
    /// events unread): nothing was sent; here is the payload back. Await
    /// [`Group::writable`] and offer it again.
    BackPressured(Bytes),
}

/// Counters of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Application messages delivered.
    pub delivered: u64,
    /// Engine messages to a peer with an open connection: each is handed to
    /// the transport (`frames_sent`), waits in the backlog
    /// (`backlog_frames`), or is counted in `dropped_broken` (its
    /// connection broke) or `encode_errors`.
    pub send_commands: u64,
    /// Engine messages handed to the transport.
    pub frames_sent: u64,
    /// Engine messages sent as the bytes already serialized for the
    /// previous member (a multicast's `Data` is encoded once).
    pub encodes_reused: u64,
    /// Frames waiting in back-pressured peers' backlogs now.
    pub backlog_frames: u64,
    /// Engine messages received and decoded.
    pub frames_received: u64,
    /// Received frames that straddled two receive buffers, so the
    /// transport copied them whole into a reassembly buffer: the only
    /// received payloads that were copied (every other one is a view of
    /// the receive buffer it arrived in).
    pub reassembled_frames: u64,
    /// Received payloads copied out of their receive buffer because the
    /// Engine's held payloads filled all but two of that connection's
    /// buffers (see `DESIGN.md` 8.2, "Receive buffers").
    pub pressure_copies: u64,
    /// Messages queued behind a back-pressured connection.
    pub backlogged: u64,
    /// Messages not sent because their peer had no open connection.
    pub dropped_unconnected: u64,
    /// Messages lost with a connection that broke while they were queued
    /// (TCP would have lost them too; the Engine retransmits).
    pub dropped_broken: u64,
    /// Messages to a node outside the configuration (never expected).
    pub dropped_unknown_peer: u64,
    /// Messages that could not be encoded (never expected).
    pub encode_errors: u64,
    /// Frames that failed to decode (the connection was closed).
    pub decode_errors: u64,
    /// Frames on a connection not mapped to a peer.
    pub stray_frames: u64,
    /// Handshakes that failed.
    pub handshake_failures: u64,
    /// Connections refused (wrong node, wrong direction).
    pub refused_conns: u64,
    /// Times a connection stopped reading because received frames the node
    /// holds filled its receive buffers (the transport's `RecvPressure`).
    pub recv_paused: u64,
    /// Peer connections established.
    pub connects: u64,
    /// Durable state writes.
    pub persists: u64,
    /// Multicasts answered `BackPressured`.
    pub back_pressured: u64,
    /// Times the node stopped taking transport events because a group's
    /// application had `NodeConfig::event_queue` events unread.
    pub reader_stalls: u64,
}

thread_local! {
    static RUNNING: Cell<bool> = const { Cell::new(false) };
}

/// A running node. `!Send`: it lives on its shard.
#[derive(Debug)]
pub struct Node {
    core: Rc<RefCell<Core>>,
    stop: Rc<Cell<bool>>,
    pump_waker: Rc<RefCell<Option<std::task::Waker>>>,
    shutdown_timeout: Duration,
    shard: Shard,
}

impl Node {
    /// Starts the node on the current shard: validates `config`, recovers
    /// (or creates) the durable state and persists the new incarnation,
    /// listens, dials the peers with higher ids, and starts the Engine.
    ///
    /// Must run on a shard whose reactor is a [`DriverReactor`] configured
    /// for this node (see [`runtime`]); one node per shard.
    pub fn start(config: NodeConfig) -> Result<Node, StartError> {
        config.validate()?;
        let ctx = ShardContext::current()?;
        let recv_bufs;
        {
            let d = ctx.driver()?;
            let dc = d.config();
            recv_bufs = u32::from(dc.recv_buf_count);
            if dc.node_id != u64::from(config.node.0) || dc.cluster_id != config.cluster {
                return Err(StartError::DriverMismatch {
                    driver_node: dc.node_id,
                    driver_cluster: dc.cluster_id,
                });
            }
        }
        if RUNNING.with(Cell::get) {
            return Err(StartError::AlreadyRunning);
        }
        shards::check_start(&config)?;
        let (store, recovered) = StateStore::open(&config.data_dir)?;
        let incarnation = recovered.as_ref().map_or(1, |r| r.next_incarnation());
        let durable = recovered.as_ref().and_then(|r| r.durable.clone());
        // The new incarnation is durable before the Engine sends anything
        // under it: a crash right after start must not reuse it.
        store.write(incarnation, durable.as_ref())?;
        let now = clock::now();
        let ecfg = config.engine_config(incarnation);
        let engine = match recovered {
            Some(r) => {
                let state = r.durable.unwrap_or(DurableState {
                    incarnation: r.incarnation,
                    groups: Vec::new(),
                });
                Engine::recover(ecfg, now, state)?
            }
            None => Engine::new(ecfg, now)?,
        };
        let mut peers = BTreeMap::new();
        {
            let mut d = ctx.driver()?;
            // The handshakes carry the incarnation just persisted, which
            // only the state file could tell: set before anything dials.
            d.set_incarnation(incarnation);
            d.listen(config.listen)?;
            for (&node, &addr) in &config.nodes {
                if node == config.node {
                    continue;
                }
                let dial = if node > config.node {
                    Some(d.connect(addr)?)
                } else {
                    None
                };
                peers.insert(
                    node,
                    Peer {
                        dial,
                        open: None,
                        addr,
                        incarnation: 0,
                        backlog: VecDeque::new(),
                    },
                );
            }
        }
        tracing::info!(node = ?config.node, incarnation, listen = %config.listen, "node started");
        let pump_waker = Rc::new(RefCell::new(None));
        let core = Rc::new_cyclic(|weak| {
            RefCell::new(Core {
                ctx: ctx.clone(),
                me: config.node,
                incarnation,
                engine,
                store,
                peers,
                conns: Default::default(),
                wake: None,
                groups: BTreeMap::new(),
                encoder: codec::Encoder::default(),
                decoder: codec::Decoder::default(),
                stats: NodeStats::default(),
                failed: None,
                weak: weak.clone(),
                peer_backlog: config.peer_backlog,
                recv_bufs,
                closing: None,
                event_bound: config.event_queue,
                paused: false,
                pump_waker: Rc::clone(&pump_waker),
                adjusts: BTreeMap::new(),
                payloads: {
                    let (keep, budget) = config.payload_pool();
                    let pool = payload::PayloadPool::new(keep, budget);
                    pool.prefill(config.window, config.payload_hint);
                    pool
                },
            })
        });
        RUNNING.with(|r| r.set(true));
        core.borrow_mut().drain();
        let stop = Rc::new(Cell::new(false));
        let pump = pump(
            ctx.clone(),
            Rc::downgrade(&core),
            Rc::clone(&stop),
            Rc::clone(&pump_waker),
        );
        // Detached: it ends when the node stops.
        drop(ctx.spawn_local(pump)?);
        Ok(Node {
            core,
            stop,
            pump_waker,
            shutdown_timeout: config.shutdown_timeout,
            shard: config.shard,
        })
    }

    /// Which shard of its node this is (`0 of 1` unless started from a
    /// [`ShardPlan`]).
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// Whether the group named `name` lives on this shard (only such groups
    /// can be joined here).
    pub fn owns(&self, name: &str) -> bool {
        self.shard.owns(GroupId::from_name(name))
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.core.borrow().me
    }

    /// This life's incarnation (persisted; higher than every earlier one).
    pub fn incarnation(&self) -> u64 {
        self.core.borrow().incarnation
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        let c = self.core.borrow();
        let mut s = c.stats.clone();
        s.backlog_frames = c.peers.values().map(|p| p.backlog.len() as u64).sum();
        s.encodes_reused = c.encoder.reused;
        s
    }

    /// The Engine's counters.
    pub fn engine_stats(&self) -> concord_membership::Stats {
        self.core.borrow().engine.stats().clone()
    }

    /// Joins the group `name` (its id is [`GroupId::from_name`]) and waits
    /// until this node is a member: the first [`GroupEvent`] of the group
    /// is the view that admitted it.
    ///
    /// ```no_run
    /// # use concord_membership::{DeliveryMode, NodeId};
    /// # use concord_runtime::node::{self, GroupEvent, Multicast, Node, NodeConfig};
    /// # async fn demo(node: Node) -> Result<(), Box<dyn std::error::Error>> {
    /// let orders = node.join("orders", DeliveryMode::Safe).await?;
    /// assert_eq!(orders.id(), concord_membership::GroupId::from_name("orders"));
    /// if let Some(GroupEvent::ViewChange { view, .. }) = orders.next().await {
    ///     assert!(view.members.contains(&node.id()));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn join(&self, name: &str, mode: DeliveryMode) -> Result<Group, JoinError> {
        let id = GroupId::from_name(name);
        if !self.shard.owns(id) {
            return Err(JoinError::WrongShard {
                group: id,
                shard: shard_of(id, self.shard.count),
            });
        }
        {
            let mut c = self.core.borrow_mut();
            c.check()?;
            if c.groups
                .get(&id)
                .is_some_and(|s| s.state != Membership::Left)
            {
                return Err(JoinError::InProgress { group: id });
            }
            c.engine
                .join(clock::now(), id, mode)
                .map_err(|_| JoinError::InProgress { group: id })?;
            c.groups.insert(
                id,
                Slot {
                    name: name.to_owned(),
                    mode,
                    state: Membership::Joining,
                    refused: None,
                    events: VecDeque::new(),
                    waker: None,
                    state_waker: None,
                    writable: Vec::new(),
                    leaving: false,
                },
            );
            c.drain();
        }
        poll_fn(|cx| {
            let mut c = self.core.borrow_mut();
            if let Err(e) = c.check() {
                return Poll::Ready(Err(e.into()));
            }
            let slot = c.groups.get_mut(&id).expect("inserted above");
            match slot.state {
                Membership::Member => Poll::Ready(Ok(())),
                Membership::Left => Poll::Ready(Err(JoinError::Refused {
                    group: id,
                    active: slot.refused.unwrap_or(ProtocolVersion(0)),
                })),
                Membership::Joining => {
                    slot.state_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await?;
        Ok(Group {
            core: Rc::clone(&self.core),
            id,
        })
    }

    /// Leaves every group with an ordered leave, waits (at most
    /// `NodeConfig::shutdown_timeout`) until the leaves are delivered, then
    /// closes every connection gracefully and stops.
    ///
    /// ```no_run
    /// # use concord_membership::{DeliveryMode, NodeId};
    /// # use concord_runtime::node::{self, GroupEvent, Multicast, Node, NodeConfig};
    /// # async fn demo(node: Node) -> Result<(), Box<dyn std::error::Error>> {
    /// let _orders = node.join("orders", DeliveryMode::Agreed).await?;
    /// node.shutdown().await?; // orders sees Leave(this node) at every member
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let ctx = {
            let mut c = self.core.borrow_mut();
            c.check()?;
            // The leaves must complete even if nobody reads the events.
            c.event_bound = usize::MAX;
            c.event_read();
            let gids = c.engine.shutdown(clock::now());
            for g in gids {
                if let Some(s) = c.groups.get_mut(&g) {
                    s.leaving = true;
                }
            }
            c.drain();
            c.ctx.clone()
        };
        let deadline = Instant::now() + self.shutdown_timeout;
        // Cold path: a bounded poll for the leaves to complete.
        while Instant::now() < deadline {
            {
                let c = self.core.borrow();
                if c.failed.is_some() || !c.engine.has_groups() {
                    break;
                }
            }
            ctx.sleep(Duration::from_millis(1)).await;
        }
        let clean = !self.core.borrow().engine.has_groups();
        {
            let mut c = self.core.borrow_mut();
            if let Some((_, h)) = c.wake.take() {
                h.cancel();
            }
            let conns: Vec<_> = c.conns.keys().copied().collect();
            let dials: Vec<_> = c.peers.values().filter_map(|p| p.dial).collect();
            if let Ok(mut d) = ctx.driver() {
                for conn in dials.into_iter().chain(conns) {
                    let _ = d.close(conn);
                }
            }
        }
        while Instant::now() < deadline {
            if self.core.borrow().conns.is_empty() {
                break;
            }
            ctx.sleep(Duration::from_millis(1)).await;
        }
        {
            let mut c = self.core.borrow_mut();
            c.failed = Some(NodeError::Shutdown);
            for s in c.groups.values_mut() {
                s.state = Membership::Left;
                s.wake();
            }
        }
        self.stop_pump();
        if clean {
            Ok(())
        } else {
            tracing::warn!("shutdown timed out before every leave was delivered");
            Ok(())
        }
    }

    fn stop_pump(&self) {
        self.stop.set(true);
        if let Some(w) = self.pump_waker.borrow_mut().take() {
            w.wake();
        }
    }
}

impl Drop for Node {
    /// Without [`Node::shutdown`], dropping the node stops it abruptly: its
    /// peers see it fail (a crash, for the membership).
    fn drop(&mut self) {
        self.stop_pump();
        if let Ok(mut c) = self.core.try_borrow_mut() {
            if let Some((_, h)) = c.wake.take() {
                h.cancel();
            }
            if c.failed.is_none() {
                c.failed = Some(NodeError::Shutdown);
            }
        }
        RUNNING.with(|r| r.set(false));
    }
}

/// The task that hands transport events to the node, until it stops.
async fn pump(
    ctx: ShardContext,
    core: std::rc::Weak<RefCell<Core>>,
    stop: Rc<Cell<bool>>,
    waker: Rc<RefCell<Option<std::task::Waker>>>,
) {
    let mut next = ctx.driver_event();
    loop {
        let ev = poll_fn(|cx| {
            if stop.get() {
                return Poll::Ready(None);
            }
            *waker.borrow_mut() = Some(cx.waker().clone());
            if let Some(c) = core.upgrade() {
                let mut c = c.borrow_mut();
                if c.over_bound() {
                    if !c.paused {
                        c.paused = true;
                        c.stats.reader_stalls += 1;
                    }
                    return Poll::Pending;
                }
            }
            Pin::new(&mut next).poll(cx).map(Some)
        })
        .await;
        let Some(Ok(ev)) = ev else {
            return;
        };
        let Some(core) = core.upgrade() else {
            return;
        };
        let mut c = core.borrow_mut();
        c.on_event(ev);
        // Take what else the last poll queued before yielding (bounded).
        for _ in 0..256 {
            if c.over_bound() {
                break;
            }
            let ev = match ctx.reactor::<DriverReactor>() {
                Ok(mut r) => r.try_event(),
                Err(_) => None,
            };
            let Some(ev) = ev else { break };
            c.on_event(ev);
        }
    }
}

/// This node's membership of one group. `!Send`: it lives on the node's
/// shard. Dropping it does not leave the group; [`Group::leave`] or
/// [`Node::shutdown`] does.
#[derive(Debug)]
pub struct Group {
    core: Rc<RefCell<Core>>,
    id: GroupId,
}

impl Group {
    /// The group's id.
    pub fn id(&self) -> GroupId {
        self.id
    }

    /// The group's name.
    pub fn name(&self) -> String {
        self.core
            .borrow()
            .groups
            .get(&self.id)
            .map(|s| s.name.clone())
            .unwrap_or_default()
    }

    /// The delivery mode it was joined with.
    pub fn mode(&self) -> Option<DeliveryMode> {
        self.core.borrow().groups.get(&self.id).map(|s| s.mode)
    }

    /// The current view, while a member.
    pub fn view(&self) -> Option<View> {
        self.core.borrow().engine.view(self.id).cloned()
    }

    /// An empty payload buffer from the node's pool: write the payload into
    /// it once and [`multicast`](Group::multicast) it (no copy). It returns
    /// to the pool when the last member's copy of the message and its
    /// deliveries are dropped, so a multicast written this way allocates
    /// nothing in steady state (see [`PayloadBuf`]).
    pub fn payload_buf(&self) -> PayloadBuf {
        self.core.borrow().payloads.take()
    }

    /// Multicasts `payload` to the group: it will be delivered to every
    /// member (this one included) in the group's total order. Returns at
    /// once; a full window or transport is [`Multicast::BackPressured`].
    ///
    /// ```no_run
    /// # use concord_membership::{DeliveryMode, NodeId};
    /// # use concord_runtime::node::{self, GroupEvent, Multicast, Node, NodeConfig};
    /// # async fn demo(node: Node) -> Result<(), Box<dyn std::error::Error>> {
    /// let prices = node.join("prices", DeliveryMode::Agreed).await?;
    /// let mut quote = node::Bytes::copy_from(b"EURUSD 1.0841");
    /// loop {
    ///     match prices.multicast(quote)? {
    ///         Multicast::Accepted { sender_seq } => break println!("sent #{sender_seq}"),
    ///         Multicast::BackPressured(back) => {
    ///             quote = back; // nothing was sent: wait for room, offer it again
    ///             prices.writable().await;
    ///         }
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn multicast(&self, payload: impl Into<Bytes>) -> Result<Multicast, MulticastError> {
        let payload = payload.into();
        let mut c = self.core.borrow_mut();
        c.check()?;
        let group = self.id;
        match c.groups.get(&group) {
            Some(s) if s.state == Membership::Member && !s.leaving => {}
            _ => return Err(MulticastError::NotMember { group }),
        }
        if !c.transport_has_room() || c.over_bound() {
            c.stats.back_pressured += 1;
            return Ok(Multicast::BackPressured(payload));
        }
        use concord_membership::MulticastError as E;
        match c.engine.multicast(clock::now(), group, payload) {
            Ok(concord_membership::Multicast::Sent { sender_seq }) => {
                c.drain();
                Ok(Multicast::Accepted { sender_seq })
            }
            Ok(concord_membership::Multicast::BackPressured(p)) => {
                c.stats.back_pressured += 1;
                Ok(Multicast::BackPressured(p))
            }
            Err(E::Partitioned { .. }) => Err(MulticastError::Partitioned { group }),
            Err(E::NotMember { .. } | E::InProgress { .. }) => {
                Err(MulticastError::NotMember { group })
            }
        }
    }

    /// Multicasts `payload`, waiting for room while back-pressured. Returns
    /// its sender sequence number. Read the group's events in another task
    /// meanwhile: an application that stops reading (past
    /// `NodeConfig::event_queue`) stops the node taking the frames that free
    /// room, so a task that only reads after `send` returns can wait forever.
    pub async fn send(&self, payload: impl Into<Bytes>) -> Result<u64, MulticastError> {
        let mut payload = payload.into();
        loop {
            match self.multicast(payload)? {
                Multicast::Accepted { sender_seq } => return Ok(sender_seq),
                Multicast::BackPressured(p) => {
                    payload = p;
                    self.writable().await;
                }
            }
        }
    }

    /// Completes when room to multicast may have come back (an
    /// acknowledgement, a delivery, a connection that drained): offer the
    /// payload again.
    pub fn writable(&self) -> impl Future<Output = ()> + '_ {
        let mut registered = false;
        poll_fn(move |cx| {
            if registered {
                return Poll::Ready(());
            }
            let mut c = self.core.borrow_mut();
            if c.failed.is_some() {
                return Poll::Ready(());
            }
            match c.groups.get_mut(&self.id) {
                Some(s) if s.state != Membership::Left => {
                    s.writable.push(cx.waker().clone());
                    registered = true;
                    Poll::Pending
                }
                _ => Poll::Ready(()),
            }
        })
    }

    /// The next event without waiting.
    pub fn try_next(&self) -> Option<GroupEvent> {
        let mut c = self.core.borrow_mut();
        let ev = c
            .groups
            .get_mut(&self.id)
            .and_then(|s| s.events.pop_front());
        if ev.is_some() {
            c.event_read();
        }
        ev
    }

    /// Events waiting to be read.
    pub fn pending_events(&self) -> usize {
        self.core
            .borrow()
            .groups
            .get(&self.id)
            .map_or(0, |s| s.events.len())
    }

    /// The next event of the group; `None` once this node left it (or the
    /// node stopped) and every earlier event was read. One task reads a
    /// group's events (a second reader would take the first one's wake-up).
    ///
    /// ```no_run
    /// # use concord_membership::{DeliveryMode, NodeId};
    /// # use concord_runtime::node::{self, GroupEvent, Multicast, Node, NodeConfig};
    /// # async fn demo(node: Node) -> Result<(), Box<dyn std::error::Error>> {
    /// let prices = node.join("prices", DeliveryMode::Agreed).await?;
    /// while let Some(event) = prices.next().await {
    ///     match event {
    ///         // `payload` is the received bytes, shared, not copied.
    ///         GroupEvent::Delivery(d) => println!("{:?} #{}: {} bytes", d.sender, d.seq, d.payload.len()),
    ///         GroupEvent::ViewChange { view, reason, .. } => println!("{:?} ({reason:?})", view.members),
    ///         GroupEvent::VersionAdjusted { from, to } => println!("protocol {from:?} -> {to:?}"),
    ///         GroupEvent::Partitioned => println!("cut off; rejoining by itself"),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn next(&self) -> Option<GroupEvent> {
        poll_fn(|cx| {
            let mut c = self.core.borrow_mut();
            let failed = c.failed.is_some();
            let Some(s) = c.groups.get_mut(&self.id) else {
                return Poll::Ready(None);
            };
            if let Some(ev) = s.events.pop_front() {
                c.event_read();
                return Poll::Ready(Some(ev));
            }
            if s.state == Membership::Left || failed {
                return Poll::Ready(None);
            }
            s.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Leaves the group with an ordered leave (after this member's own
    /// messages) and waits until the view without this node is installed.
    /// The events up to that view stay readable with [`Group::next`].
    ///
    /// ```no_run
    /// # use concord_membership::{DeliveryMode, NodeId};
    /// # use concord_runtime::node::{self, GroupEvent, Multicast, Node, NodeConfig};
    /// # async fn demo(node: Node) -> Result<(), Box<dyn std::error::Error>> {
    /// let audit = node.join("audit", DeliveryMode::Safe).await?;
    /// audit.leave().await?;
    /// while let Some(event) = audit.next().await {
    ///     // the events up to and including the view without this node
    ///     # let _ = event;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn leave(&self) -> Result<(), NodeError> {
        {
            let mut c = self.core.borrow_mut();
            c.check()?;
            let now = clock::now();
            let group = self.id;
            let Some(s) = c.groups.get_mut(&group) else {
                return Ok(());
            };
            if s.state == Membership::Left || s.leaving {
                return Ok(());
            }
            s.leaving = true;
            if c.engine.leave(now, group).is_err() {
                return Ok(());
            }
            c.drain();
        }
        poll_fn(|cx| {
            let mut c = self.core.borrow_mut();
            if let Err(e) = c.check() {
                return Poll::Ready(Err(e));
            }
            let Some(s) = c.groups.get_mut(&self.id) else {
                return Poll::Ready(Ok(()));
            };
            if s.state == Membership::Left {
                return Poll::Ready(Ok(()));
            }
            s.state_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}
