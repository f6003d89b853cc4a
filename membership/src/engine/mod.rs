//! The Engine: events in, commands out.
//!
//! One Engine per node. It owns the node-level failure detector (one
//! heartbeat per peer per interval, any traffic counts), the acceptor state
//! of every group (all configured nodes vote on epoch changes, members or
//! not), the proposers of flushes it leads, and one [`Group`] per group this
//! node is a member of (or is joining).
//!
//! One file per protocol role, each an `impl Engine` block over the state
//! it owns where the borrows allow it:
//!
//! - `mod.rs`: the [`Engine`] and its [`Command`]s, constructors, getters,
//!   `multicast`, `tick`, `handle_message`, and `dispatch` (one line per
//!   message kind);
//! - `detector.rs`: the failure detector (peers, heartbeats, suspicion);
//! - `acceptor.rs`: the Paxos acceptor of every group (Prepare, Accept) and
//!   what it persists;
//! - `proposer.rs`: the epoch change this node leads (flush, creation,
//!   orphan restart) and the install of a decided epoch;
//! - `join.rs`: join rounds, the admission of a joiner, the Welcome, rejoin;
//! - `leave.rs`: leave, the end of a membership, what a left group keeps;
//! - `member.rs`: a member's duties per drain and per tick, data and order
//!   records, acks and NACKs, and what waits on newly ready data;
//! - `lease.rs`: the sequencer lease;
//! - `adjust.rs`: adjust-version and the version-gated functions.

use std::collections::{BTreeMap, VecDeque};

mod acceptor;
mod adjust;
mod detector;
mod join;
mod lease;
mod leave;
mod member;
mod proposer;

use acceptor::Acceptor;
use detector::Detector;
use join::Joiner;
use leave::Left;
use proposer::{Kind, Proposer, Stage};

use crate::durable::{DurableState, GroupAcceptor, Instance};
use crate::error::{ConfigError, MulticastError};
use crate::group::{Group, Phase};
use crate::message::{Body, Message, OrderEntry, SharedPool};
use crate::types::{
    Config, Delivery, GroupId, Multicast, NodeId, Payload, ProtocolVersion, Reason, Stats, Time,
    View,
};
use crate::vecmap::VecMap;

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
    /// Write this acceptor state to stable storage (replacing the previous
    /// one) before carrying out any later command: the commands after it
    /// (a promise, an accept) are only correct if a restart cannot forget
    /// it. Hand the last state written to [`Engine::recover`] at restart.
    /// Rare: only epoch changes (flushes, group creation) change it.
    Persist(DurableState),
}

/// Output side shared by the Engine and its groups.
#[derive(Debug)]
pub(crate) struct Ctx<P> {
    pub me: NodeId,
    /// The Engine's clock (the latest `now` it was given).
    pub now: Time,
    pub inc: u64,
    pub batch: usize,
    pub commands: VecDeque<Command<P>>,
    pub loopback: VecDeque<Body<P>>,
    /// The order records lent to `Body::Order` messages, recycled.
    pub records: SharedPool<OrderEntry>,
    /// The payload lists lent to `Body::DataBatch` messages, recycled.
    pub batches: SharedPool<P>,
    /// Scratch for building a record (a retransmission) before sharing it.
    pub scratch_entries: Vec<OrderEntry>,
    pub stats: Stats,
    pub versions: crate::version::Versions,
}

impl<P> Ctx<P> {
    pub fn send(&mut self, to: NodeId, body: Body<P>) {
        if to == self.me {
            self.loopback.push_back(body);
        } else {
            self.commands.push_back(Command::Send {
                to,
                msg: Message {
                    incarnation: self.inc,
                    body,
                },
            });
        }
    }
}

/// The membership and total-order protocol of one node: a deterministic
/// state machine that reads no clock and does no I/O. The caller hands it
/// events and carries out the [`Command`]s it returns.
///
/// # Methods
///
/// - **Constructors:** [`Engine::new`] (a node's first start) and
///   [`Engine::recover`] (a restart: the last [`Command::Persist`] state and
///   a higher `Config::incarnation`). Both refuse with a [`ConfigError`].
/// - **Getters:** [`Engine::node`], [`Engine::stats`], [`Engine::view`],
///   [`Engine::is_member`], [`Engine::has_groups`],
///   [`Engine::durable_state`].
/// - **Inputs:** [`Engine::handle_message`] (a message from a peer),
///   [`Engine::tick`] (time passed), and the application's calls
///   [`Engine::join`], [`Engine::leave`], [`Engine::multicast`],
///   [`Engine::multicast_batch`], [`Engine::adjust_version`] and
///   [`Engine::shutdown`]. A call returns at once; what it starts completes
///   through later commands (a join with a [`Command::ViewChange`] that
///   includes this node). Each call refuses with an error type of its own
///   ([`crate::JoinError`], [`crate::LeaveError`], [`crate::MulticastError`],
///   [`crate::BatchError`], [`crate::AdjustError`]); a full sender window is
///   an outcome, [`Multicast::BackPressured`], not an error.
/// - **Outputs:** [`Engine::poll_command`] (send, deliver, report a view
///   change or a partition, persist, wake up) and
///   [`Engine::poll_version_event`] (the ordered outcome of each
///   adjust-version request, at every member).
///
/// # Driving it
///
/// 1. After construction and after every input, drain
///    [`Engine::poll_command`] until it returns `None`, carrying out the
///    commands in order. When the queue runs dry the Engine first sends what
///    it batched (order records, acknowledgements), so a drain stopped early
///    holds them back. Write a [`Command::Persist`] to stable storage before
///    carrying out any command after it.
/// 2. Call [`Engine::tick`] once the time of the latest [`Command::WakeAt`]
///    is reached; each tick asks for the next (at most half a heartbeat
///    interval later, and the first comes from the constructor).
/// 3. Hand every message a peer sent to this node to
///    [`Engine::handle_message`] (messages to itself never leave the Engine).
/// 4. Drain [`Engine::poll_version_event`] whenever convenient, if the
///    application uses adjust-version.
///
/// Every input takes `now`: nanoseconds (the unit of every duration in
/// [`Config`]) on one monotonic clock of the caller's, the same for every
/// call to this Engine. A `now` earlier than one given before is taken as
/// the latest given: the Engine's time never goes back. Nodes' clocks need
/// not agree, but the sequencer lease assumes their rates differ by less
/// than `Config::lease_drift` over a lease.
#[derive(Debug)]
pub struct Engine<P: Payload> {
    cfg: Config,
    majority: usize,
    now: Time,
    ctx: Ctx<P>,
    detector: Detector,
    groups: VecMap<GroupId, Group<P>>,
    acceptors: BTreeMap<GroupId, Acceptor>,
    proposers: VecMap<GroupId, Proposer>,
    joiners: BTreeMap<GroupId, Joiner>,
    left: Left<P>,
    /// This Engine promises no epoch above 1 before then: it may have granted
    /// leases in an earlier life and forgotten them (a lease and its drift
    /// margin from the start).
    promise_after: Time,
    /// Scratch for the group ids a tick visits.
    scratch_ids: Vec<GroupId>,
    /// `(group, peer, when)` of the answers sent to members of groups this
    /// node holds no state for (`Engine::answer_not_member`): one per peer
    /// and group per heartbeat interval, however many records it sends.
    not_member_sent: Vec<(GroupId, NodeId, Time)>,
}

impl<P: Payload> Engine<P> {
    /// A node's first start, with no persisted state. A restart must use
    /// [`Engine::recover`] with the last [`Command::Persist`] state (and a
    /// higher incarnation), or the node may break Paxos safety.
    pub fn new(config: Config, now: Time) -> Result<Self, ConfigError> {
        Self::build(config, now)
    }

    /// A restart: a fresh Engine (it has forgotten its groups, and must run a
    /// higher `config.incarnation` than the one that wrote `state`) that
    /// remembers its acceptor promises, accepted values and decided epochs.
    pub fn recover(config: Config, now: Time, state: DurableState) -> Result<Self, ConfigError> {
        if config.incarnation <= state.incarnation {
            return Err(ConfigError::StaleIncarnation {
                incarnation: config.incarnation,
                persisted: state.incarnation,
            });
        }
        let mut engine = Self::build(config, now)?;
        for ga in state.groups {
            let slots = ga
                .instances
                .into_iter()
                .map(|i| (i.epoch, (i.promised, i.accepted)))
                .collect();
            engine.acceptors.insert(
                ga.group,
                Acceptor {
                    decided: ga.decided,
                    slots,
                    ..Acceptor::default()
                },
            );
        }
        Ok(engine)
    }

    /// The acceptor state to persist (also what the last
    /// [`Command::Persist`] carried).
    pub fn durable_state(&self) -> DurableState {
        DurableState {
            incarnation: self.ctx.inc,
            groups: self
                .acceptors
                .iter()
                .filter(|(_, a)| a.decided.is_some() || !a.slots.is_empty())
                .map(|(gid, a)| GroupAcceptor {
                    group: *gid,
                    decided: a.decided.clone(),
                    instances: a
                        .slots
                        .iter()
                        .map(|(e, (promised, accepted))| Instance {
                            epoch: *e,
                            promised: *promised,
                            accepted: accepted.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn build(config: Config, now: Time) -> Result<Self, ConfigError> {
        if !config.nodes.contains(&config.node) {
            return Err(ConfigError::NotConfigured { node: config.node });
        }
        if config.heartbeat_interval == 0 || config.failure_timeout <= config.heartbeat_interval {
            return Err(ConfigError::InvalidConfig {
                reason: "need 0 < heartbeat_interval < failure_timeout",
            });
        }
        if config.window == 0 || config.batch == 0 {
            return Err(ConfigError::InvalidConfig {
                reason: "window and batch must be at least 1",
            });
        }
        if config.protocol.min > config.protocol.max {
            return Err(ConfigError::InvalidConfig {
                reason: "protocol range min > max",
            });
        }
        crate::version::validate_config(&config.protocol)?;
        let mut nodes = config.nodes.clone();
        nodes.sort();
        nodes.dedup();
        let detector = Detector::new(&nodes, config.node, now);
        let majority = nodes.len() / 2 + 1;
        let mut cfg = config;
        cfg.nodes = nodes;
        let mut commands = VecDeque::new();
        // The caller learns when to call `tick` only from `WakeAt`: ask for
        // the first one right away.
        commands.push_back(Command::WakeAt(now));
        Ok(Engine {
            majority,
            now,
            promise_after: now.plus(cfg.failure_timeout / 2 + cfg.lease_drift),
            ctx: Ctx {
                me: cfg.node,
                now,
                inc: cfg.incarnation,
                batch: cfg.batch,
                commands,
                loopback: VecDeque::new(),
                records: SharedPool::default(),
                batches: SharedPool::default(),
                scratch_entries: Vec::new(),
                stats: Stats::default(),
                versions: crate::version::Versions::new(&cfg.nodes),
            },
            cfg,
            detector,
            groups: VecMap::new(),
            acceptors: BTreeMap::new(),
            proposers: VecMap::new(),
            joiners: BTreeMap::new(),
            left: Left::new(),
            scratch_ids: Vec::new(),
            not_member_sent: Vec::new(),
        })
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.cfg.node
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.ctx.stats
    }

    /// The current view of `group`, if this node is a member.
    pub fn view(&self, group: GroupId) -> Option<&View> {
        self.groups
            .get(&group)
            .filter(|g| g.is_member())
            .map(|g| &g.view)
    }

    /// Whether this node is currently a member of `group`.
    pub fn is_member(&self, group: GroupId) -> bool {
        self.groups.get(&group).is_some_and(|g| g.is_member())
    }

    /// The next command, if any. When the queue runs dry the Engine first
    /// sends what it batched (order records, acknowledgements): everything
    /// that happened between two drains shares one order record.
    #[inline]
    pub fn poll_command(&mut self) -> Option<Command<P>> {
        if self.ctx.commands.is_empty() {
            self.flush_batches();
            // Debug builds (every `cargo test`, the simulator's default run)
            // check each group's ordering invariants once per drain, i.e.
            // after every input; release builds carry no cost.
            #[cfg(debug_assertions)]
            if self.ctx.commands.is_empty() {
                crate::group::validate_all(self.groups.iter_mut().map(|(_, g)| &*g));
            }
        }
        self.ctx.commands.pop_front()
    }

    /// Multicast `payload` to `group`. A full window is an outcome, not an
    /// error: [`Multicast::BackPressured`] hands the payload back.
    pub fn multicast(
        &mut self,
        now: Time,
        group: GroupId,
        payload: P,
    ) -> Result<Multicast<P>, MulticastError> {
        self.now = self.now.max(now);
        self.ctx.now = self.now;
        let me = self.ctx.me;
        let inc = self.ctx.inc;
        let Some(g) = self.groups.get_mut(&group) else {
            return Err(MulticastError::NotMember { group });
        };
        match g.phase {
            Phase::Joining { rejoin: true, .. } => {
                return Err(MulticastError::Partitioned { group });
            }
            Phase::Joining { .. } => return Err(MulticastError::NotMember { group }),
            Phase::Member => {}
        }
        if g.leaving.is_some() {
            return Err(MulticastError::InProgress { group });
        }
        if g.own_unstable(me, inc) >= self.cfg.window {
            self.ctx.stats.back_pressured += 1;
            return Ok(Multicast::BackPressured(payload));
        }
        g.my_seq += 1;
        let seq = g.my_seq;
        let epoch = g.epoch();
        let ack = g.ack_point();
        for m in &g.view.members {
            if *m != me {
                self.ctx.commands.push_back(Command::Send {
                    to: *m,
                    msg: Message {
                        incarnation: inc,
                        body: Body::Data {
                            group,
                            epoch,
                            sender: me,
                            sender_incarnation: inc,
                            sender_seq: seq,
                            ack,
                            payload: payload.clone(),
                        },
                    },
                });
            }
        }
        g.last_ack_sent = g.last_ack_sent.max(ack);
        let _ = g.store_payload(me, inc, seq, payload, u64::MAX);
        if g.is_sequencer() {
            g.order_sender(&mut self.ctx, me, inc);
            self.after_change(group);
        }
        self.drain_loopback();
        Ok(Multicast::Sent { sender_seq: seq })
    }

    /// Time passed: heartbeats, failure detection, retransmission, retries.
    pub fn tick(&mut self, now: Time) {
        self.now = self.now.max(now);
        self.ctx.now = self.now;
        let now = self.now;
        let hb = self.cfg.heartbeat_interval;
        self.detector.tick(&mut self.ctx, &self.cfg, now);
        let reachable = self.detector.reachable();
        // The ids are copied first (a group's tick may add or remove
        // groups), into a vector the Engine keeps: a tick allocates nothing.
        let mut ids = std::mem::take(&mut self.scratch_ids);
        ids.clear();
        ids.extend(self.groups.keys().copied());
        for &gid in &ids {
            if reachable < self.majority
                && self.groups.get(&gid).is_some_and(|g| now >= g.grace_until)
            {
                self.go_partitioned(gid);
            }
            self.tick_group(gid);
        }
        ids.clear();
        ids.extend(self.proposers.keys().copied());
        for &gid in &ids {
            self.tick_proposer(gid);
        }
        self.scratch_ids = ids;
        self.version_tick();
        self.drain_loopback();
        self.ctx.commands.push_back(Command::WakeAt(
            now.plus(hb / 2).min(self.detector.next_heartbeat),
        ));
    }

    /// A message from peer `from`.
    pub fn handle_message(&mut self, now: Time, from: NodeId, msg: Message<P>) {
        self.now = self.now.max(now);
        self.ctx.now = self.now;
        if from == self.ctx.me {
            return;
        }
        if !self.detector.heard(from, msg.incarnation, self.now) {
            self.ctx.stats.stale += 1;
            return;
        }
        self.dispatch(from, msg.incarnation, msg.body);
        self.drain_loopback();
    }

    pub(super) fn drain_loopback(&mut self) {
        let mut guard = 0;
        while let Some(body) = self.ctx.loopback.pop_front() {
            let (me, inc) = (self.ctx.me, self.ctx.inc);
            self.dispatch(me, inc, body);
            guard += 1;
            if guard > 100_000 {
                break;
            }
        }
    }

    fn dispatch(&mut self, from: NodeId, from_inc: u64, body: Body<P>) {
        match body {
            Body::Heartbeat => {}
            Body::Versions { range } => self.ctx.versions.record(from, from_inc, range),
            Body::AdjustRequest { group, request, to } => {
                self.on_adjust_request(from, from_inc, group, request, to);
            }
            Body::DataBatch {
                group,
                epoch,
                sender,
                sender_incarnation,
                first_seq,
                ack,
                payloads,
            } => self.on_data_batch(
                from,
                (group, epoch, sender, sender_incarnation),
                first_seq,
                ack,
                payloads,
            ),
            Body::Data {
                group,
                epoch,
                sender,
                sender_incarnation,
                sender_seq,
                ack,
                payload,
            } => self.on_data(
                from,
                group,
                epoch,
                sender,
                sender_incarnation,
                sender_seq,
                ack,
                payload,
            ),
            Body::Order {
                group,
                epoch,
                first,
                entries,
                stable,
            } => self.on_order(from, group, epoch, first, entries.as_slice(), stable),
            Body::Ack {
                group,
                epoch,
                ready,
            } => self.on_ack(from, group, epoch, ready),
            Body::Nack {
                group,
                epoch: _,
                positions,
                sender_seqs,
            } => self.on_nack(from, group, positions, sender_seqs),
            Body::JoinRequest {
                group,
                range,
                rejoin,
                next_seq,
                delivered,
                position,
            } => self.on_join_request(
                from,
                from_inc,
                group,
                range,
                rejoin,
                (next_seq, delivered, position),
            ),
            Body::Welcome {
                view,
                position,
                stable,
                next,
                incarnations,
                rejoin,
            } => self.on_welcome(from, *view, position, stable, next, incarnations, rejoin),
            Body::JoinRefused { group, active } => self.on_join_refused(group, active),
            Body::NoGroup { group, known } => self.on_no_group(from, group, known),
            Body::LeaveRequest { group, last_seq } => self.on_leave_request(from, group, last_seq),
            Body::NotMember { group, epoch } => self.on_not_member(from, from_inc, group, epoch),
            Body::Prepare {
                group,
                epoch,
                ballot,
            } => self.on_prepare(from, group, epoch, ballot),
            Body::Promise {
                group,
                epoch,
                ballot,
                accepted,
                state,
            } => self.on_promise(from, group, epoch, ballot, accepted, state),
            Body::Reject {
                group,
                epoch,
                promised,
            } => self.on_reject(group, epoch, promised),
            Body::Accept {
                group,
                epoch,
                ballot,
                proposal,
            } => self.on_accept(from, group, epoch, ballot, *proposal),
            Body::Accepted {
                group,
                epoch,
                ballot,
            } => self.on_accepted(from, group, epoch, ballot),
            Body::Decided {
                group,
                epoch,
                proposal,
            } => self.on_decided(from, group, epoch, *proposal),
            Body::Lease { group, epoch, sent } => self.on_lease(from, group, epoch, sent),
            Body::LeaseGrant { group, epoch, sent } => {
                self.on_lease_grant(from, group, epoch, sent);
            }
        }
    }
}
