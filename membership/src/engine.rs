//! The Engine: events in, commands out.
//!
//! One Engine per node. It owns the node-level failure detector (one
//! heartbeat per peer per interval, any traffic counts), the acceptor state
//! of every group (all configured nodes vote on epoch changes, members or
//! not), the proposers of flushes it leads, and one [`Group`] per group this
//! node is a member of (or is joining).

use std::collections::{BTreeMap, VecDeque};

// Adjust-version and the version-gated functions (see `crate::version`).
mod adjust;

use crate::durable::{DurableState, GroupAcceptor, Instance};
use crate::error::Error;
use crate::group::{
    Group, PendingInstall, Phase, SenderBuf, Slot, WelcomeInfo, delivered_of, next_of,
};
use crate::message::{Ballot, Body, MemberState, Message, OrderEntry, Proposal, SenderNext};
use crate::types::{
    Config, Delivery, DeliveryMode, GroupId, Multicast, NodeId, Payload, ProtocolVersion, Reason,
    Stats, Time, VersionRange, View, ViewId,
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

#[derive(Debug, Clone)]
struct Peer {
    node: NodeId,
    inc: u64,
    last_heard: Time,
    suspected: bool,
}

/// Acceptor state of one group (paxos, one instance per epoch).
#[derive(Debug, Default)]
struct Acceptor {
    decided: Option<(u32, Proposal)>,
    slots: BTreeMap<u32, (Ballot, Option<(Ballot, Proposal)>)>,
    /// The sequencer lease granted last: `(epoch, holder, until)`. Until
    /// then this acceptor promises no epoch above `epoch` to anyone but the
    /// holder (not durable: a restarted acceptor waits out a whole lease,
    /// see `Engine::promise_after`).
    lease: Option<(u32, NodeId, Time)>,
    /// Highest epoch of a (non-query) Prepare seen, promised or held back:
    /// no lease is granted for an epoch below it.
    prepared_hi: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A member replaces the previous epoch (crash, partition, stall).
    Flush,
    /// A joiner creates a group nobody knows.
    Create,
    /// A joiner restarts a group whose members are all gone.
    Orphan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Prepare,
    Fetch { cut: u64, best: NodeId },
    Accept,
    Backoff { until: Time },
}

/// A promise received: who, what it had accepted, its member state.
type PromiseFrom = (NodeId, Option<(Ballot, Proposal)>, Option<MemberState>);

#[derive(Debug)]
struct Proposer {
    epoch: u32,
    ballot: Ballot,
    kind: Kind,
    stage: Stage,
    started: Time,
    promises: Vec<PromiseFrom>,
    accepts: Vec<NodeId>,
    proposal: Option<Proposal>,
    /// Fallback for orphan recovery: the last decided value known.
    known: Option<Proposal>,
}

#[derive(Debug, Default)]
struct Joiner {
    no_group: Vec<NodeId>,
    known: Option<(u32, Proposal)>,
    rounds: u32,
    /// A promise showed a live member (which flushes the group and then
    /// admits us): no restart proposal before then, or our higher ballots
    /// would preempt its flush round after round.
    no_restart_until: Time,
}

/// What [`Engine::forget_group`] keeps of a left group: the own messages the
/// primary may not have ordered, what this incarnation delivered of every
/// sender's stream, and where its delivery stood (last view, position, and
/// each sender's next sequence there).
#[derive(Debug)]
struct LeftOwn<P> {
    buf: Option<SenderBuf<P>>,
    delivered: Vec<SenderNext>,
    view: View,
    position: u64,
    next: Vec<SenderNext>,
}

/// The membership and total-order protocol of one node.
#[derive(Debug)]
pub struct Engine<P: Payload> {
    cfg: Config,
    majority: usize,
    now: Time,
    ctx: Ctx<P>,
    peers: Vec<Peer>,
    groups: VecMap<GroupId, Group<P>>,
    acceptors: BTreeMap<GroupId, Acceptor>,
    proposers: VecMap<GroupId, Proposer>,
    joiners: BTreeMap<GroupId, Joiner>,
    /// Own last sender sequence of groups this node left: a later join with
    /// the same incarnation continues the FIFO stream instead of reusing
    /// sequence numbers peers already delivered.
    left_seqs: BTreeMap<GroupId, u64>,
    /// Own messages of groups this node left before the primary ordered
    /// them (a leave while cut off or rejoining), and what it delivered of
    /// each sender's stream: a later join with the same incarnation sends
    /// them again, so an accepted message is not lost by leaving and
    /// rejoining, and skips messages it delivered before it left that their
    /// senders send again (no duplication holds per incarnation, across a
    /// leave).
    left_own: BTreeMap<GroupId, LeftOwn<P>>,
    /// Groups this node left as their sequencer: `(epoch, position)` of its
    /// own Leave. A member that missed the stable point of that Leave keeps
    /// acking its old coordinator; the answer lets it install the Leave.
    farewells: BTreeMap<GroupId, (u32, u64)>,
    next_heartbeat: Time,
    /// This Engine promises no epoch above 1 before then: it may have granted
    /// leases in an earlier life and forgotten them (a lease and its drift
    /// margin from the start).
    promise_after: Time,
}

impl<P: Payload> Engine<P> {
    /// A node's first start, with no persisted state. A restart must use
    /// [`Engine::recover`] with the last [`Command::Persist`] state (and a
    /// higher incarnation), or the node may break Paxos safety.
    pub fn new(config: Config, now: Time) -> Result<Self, Error> {
        Self::build(config, now)
    }

    /// A restart: a fresh Engine (it has forgotten its groups, and must run a
    /// higher `config.incarnation` than the one that wrote `state`) that
    /// remembers its acceptor promises, accepted values and decided epochs.
    pub fn recover(config: Config, now: Time, state: DurableState) -> Result<Self, Error> {
        if config.incarnation <= state.incarnation {
            return Err(Error::InvalidConfig {
                reason: "a recovering node needs a higher incarnation than the one that persisted",
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

    /// Queue the acceptor state for stable storage, ahead of whatever
    /// depends on it.
    fn persist(&mut self) {
        let state = self.durable_state();
        self.ctx.commands.push_back(Command::Persist(state));
    }

    fn build(config: Config, now: Time) -> Result<Self, Error> {
        if !config.nodes.contains(&config.node) {
            return Err(Error::NotConfigured { node: config.node });
        }
        if config.heartbeat_interval == 0 || config.failure_timeout <= config.heartbeat_interval {
            return Err(Error::InvalidConfig {
                reason: "need 0 < heartbeat_interval < failure_timeout",
            });
        }
        if config.window == 0 || config.batch == 0 {
            return Err(Error::InvalidConfig {
                reason: "window and batch must be at least 1",
            });
        }
        if config.protocol.min > config.protocol.max {
            return Err(Error::InvalidConfig {
                reason: "protocol range min > max",
            });
        }
        crate::version::validate_config(&config.protocol)?;
        let mut nodes = config.nodes.clone();
        nodes.sort();
        nodes.dedup();
        let peers = nodes
            .iter()
            .filter(|n| **n != config.node)
            .map(|n| Peer {
                node: *n,
                inc: 0,
                last_heard: now,
                suspected: false,
            })
            .collect();
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
                stats: Stats::default(),
                versions: crate::version::Versions::new(&cfg.nodes),
            },
            cfg,
            peers,
            groups: VecMap::new(),
            acceptors: BTreeMap::new(),
            proposers: VecMap::new(),
            joiners: BTreeMap::new(),
            left_seqs: BTreeMap::new(),
            left_own: BTreeMap::new(),
            farewells: BTreeMap::new(),
            next_heartbeat: now,
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
        }
        self.ctx.commands.pop_front()
    }

    fn flush_batches(&mut self) {
        let ack_every = (self.cfg.batch as u64 / 8).max(1);
        let now = self.now;
        // Runs on every drain: no allocation here.
        for (gid, g) in self.groups.iter_mut() {
            if !g.is_member() {
                continue;
            }
            if g.seq.is_some() {
                g.publish(&mut self.ctx);
            }
            if let Some(c) = g.coordinator()
                && c != self.ctx.me
                && (g.ready >= g.last_ack_sent + ack_every
                    || (g.ready > g.last_ack_sent && g.awaits_stable_view_change()))
            {
                g.last_ack_sent = g.ready;
                let (epoch, ready) = (g.epoch(), g.ready);
                g.ack_to(&mut self.ctx, c, *gid, epoch, ready, now);
            }
        }
        self.drain_loopback();
    }

    // ------------------------------------------------------------------
    // Application calls
    // ------------------------------------------------------------------

    /// Join `group` (creating it if no configured node knows it). Completes
    /// asynchronously with a [`Command::ViewChange`] that includes this node.
    pub fn join(&mut self, now: Time, group: GroupId, mode: DeliveryMode) -> Result<(), Error> {
        self.now = self.now.max(now);
        self.ctx.now = self.now;
        if let Some(g) = self.groups.get(&group) {
            return if g.is_member() && g.leaving.is_none() {
                Ok(())
            } else {
                Err(Error::InProgress { group })
            };
        }
        let view = View {
            group,
            id: ViewId(0),
            members: Vec::new(),
            protocol: self.cfg.protocol.max,
        };
        let mut g = Group::new(group, mode, view, self.now);
        g.my_seq = self.left_seqs.remove(&group).unwrap_or(0);
        if let Some(left) = self.left_own.remove(&group) {
            // Continue from where this incarnation's delivery stood, as a
            // rejoin does: an orphan restart by us then starts after what we
            // delivered, not from an older decided cut (which would order
            // again messages we delivered, at positions we already used).
            g.view = left.view;
            g.reset_order(left.position, left.next);
            g.senders.extend(left.buf);
            g.delivered_hi.extend(left.delivered);
        }
        self.groups.insert(group, g);
        self.joiners.insert(group, Joiner::default());
        self.join_round(group);
        self.drain_loopback();
        Ok(())
    }

    /// Leave `group` gracefully: an ordered Leave after this member's own
    /// messages; no flush, no timeout.
    pub fn leave(&mut self, now: Time, group: GroupId) -> Result<(), Error> {
        self.now = self.now.max(now);
        self.ctx.now = self.now;
        let Some(g) = self.groups.get_mut(&group) else {
            return Err(Error::NotMember { group });
        };
        if !g.is_member() {
            // Abandon a join in progress.
            self.forget_group(group);
            self.joiners.remove(&group);
            return Ok(());
        }
        if g.leaving.is_some() {
            return Err(Error::InProgress { group });
        }
        g.leaving = Some(self.now);
        let last_seq = g.my_seq;
        if let Some(c) = g.coordinator() {
            self.ctx.send(c, Body::LeaveRequest { group, last_seq });
        }
        self.drain_loopback();
        Ok(())
    }

    /// Multicast `payload` to `group`. A full window is an outcome, not an
    /// error: [`Multicast::BackPressured`] hands the payload back.
    pub fn multicast(
        &mut self,
        now: Time,
        group: GroupId,
        payload: P,
    ) -> Result<Multicast<P>, Error> {
        self.now = self.now.max(now);
        self.ctx.now = self.now;
        let me = self.ctx.me;
        let inc = self.ctx.inc;
        let Some(g) = self.groups.get_mut(&group) else {
            return Err(Error::NotMember { group });
        };
        match g.phase {
            Phase::Joining { rejoin: true, .. } => return Err(Error::Partitioned { group }),
            Phase::Joining { .. } => return Err(Error::NotMember { group }),
            Phase::Member => {}
        }
        if g.leaving.is_some() {
            return Err(Error::InProgress { group });
        }
        if g.own_unstable(me, inc) >= self.cfg.window {
            self.ctx.stats.back_pressured += 1;
            return Ok(Multicast::BackPressured(payload));
        }
        g.my_seq += 1;
        let seq = g.my_seq;
        let epoch = g.epoch();
        let ack = g.ready;
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

    // ------------------------------------------------------------------
    // Time
    // ------------------------------------------------------------------

    /// Time passed: heartbeats, failure detection, retransmission, retries.
    pub fn tick(&mut self, now: Time) {
        self.now = self.now.max(now);
        self.ctx.now = self.now;
        let now = self.now;
        let hb = self.cfg.heartbeat_interval;
        if now >= self.next_heartbeat {
            self.next_heartbeat = now.plus(hb);
            for p in &self.peers {
                self.ctx.commands.push_back(Command::Send {
                    to: p.node,
                    msg: Message {
                        incarnation: self.ctx.inc,
                        body: Body::Versions {
                            range: self.cfg.protocol,
                        },
                    },
                });
            }
        }
        for p in &mut self.peers {
            let dead = now.0.saturating_sub(p.last_heard.0) > self.cfg.failure_timeout;
            if dead && !p.suspected {
                self.ctx.stats.timeouts_fired += 1;
            }
            p.suspected = dead;
        }
        let reachable = 1 + self.peers.iter().filter(|p| !p.suspected).count();
        let ids: Vec<GroupId> = self.groups.keys().copied().collect();
        for gid in ids {
            if reachable < self.majority
                && self.groups.get(&gid).is_some_and(|g| now >= g.grace_until)
            {
                self.go_partitioned(gid);
            }
            self.tick_group(gid);
        }
        let pids: Vec<GroupId> = self.proposers.keys().copied().collect();
        for gid in pids {
            self.tick_proposer(gid);
        }
        self.version_tick();
        self.drain_loopback();
        self.ctx
            .commands
            .push_back(Command::WakeAt(now.plus(hb / 2).min(self.next_heartbeat)));
    }

    fn suspected(&self, node: NodeId) -> bool {
        node != self.ctx.me
            && self
                .peers
                .iter()
                .find(|p| p.node == node)
                .is_none_or(|p| p.suspected)
    }

    fn peer_inc(&self, node: NodeId) -> u64 {
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
    fn faulty(&self, g: &Group<P>) -> Vec<NodeId> {
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

    fn tick_group(&mut self, gid: GroupId) {
        let now = self.now;
        let hb = self.cfg.heartbeat_interval;
        let ft = self.cfg.failure_timeout;
        let me = self.ctx.me;
        let Some(g) = self.groups.get(&gid) else {
            return;
        };
        if let Phase::Joining { last_request, .. } = g.phase {
            if now.0.saturating_sub(last_request.0) >= 2 * hb {
                self.join_round(gid);
            }
            return;
        }
        // Failure handling: the first member not believed failed leads the
        // flush; the others wait their rank in failure timeouts first.
        let faulty = self.faulty(g);
        let frozen_long = g
            .frozen_since
            .is_some_and(|t| now.0.saturating_sub(t.0) > 2 * ft);
        // A sequencer refused its lease for a failure timeout (acceptors
        // promised a later epoch to a flush or restart that never ended)
        // decides the next epoch itself.
        let unleased = g.cap == u64::MAX
            && g.seq.as_ref().is_some_and(|s| {
                !s.retired
                    && s.lease_next != Time(0)
                    && !s.leased(now)
                    && now.0.saturating_sub(s.lease_since.max(s.lease_until).0) > ft
            });
        let need = !faulty.is_empty() || frozen_long || unleased;
        let alive: Vec<NodeId> = g
            .view
            .members
            .iter()
            .copied()
            .filter(|m| !faulty.contains(m))
            .collect();
        let rank = alive.iter().position(|m| *m == me).unwrap_or(0) as u64;
        let epoch = g.epoch();
        let since = g.suspect_since;
        if need {
            let since = since.unwrap_or(now);
            if let Some(g) = self.groups.get_mut(&gid) {
                g.suspect_since = Some(since);
            }
            let due = since.plus(rank * ft);
            let running = self.proposers.get(&gid).is_some_and(|p| p.epoch > epoch);
            if now >= due && !running {
                self.start_proposer(gid, epoch + 1, Kind::Flush, None);
            }
        } else if let Some(g) = self.groups.get_mut(&gid) {
            g.suspect_since = None;
        }
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let coord = g.coordinator();
        let epoch = g.epoch();
        // Cumulative ack refresh (lost acks, idle groups).
        if let Some(c) = coord
            && c != me
            && (g.ready > g.last_ack_sent || now.0.saturating_sub(g.last_ack_time.0) >= hb)
        {
            g.last_ack_sent = g.ready;
            let ready = g.ready;
            g.ack_to(&mut self.ctx, c, gid, epoch, ready, now);
        }
        // Gap: something known is missing and nothing moved since last tick.
        let target_of = |g: &Group<P>, round: usize| -> Option<NodeId> {
            let others: Vec<NodeId> = g
                .view
                .members
                .iter()
                .copied()
                .filter(|m| *m != me)
                .collect();
            if others.is_empty() {
                return None;
            }
            if round == 0
                && let Some(c) = g.coordinator()
                && c != me
            {
                return Some(c);
            }
            Some(others[round % others.len()])
        };
        let want = match (&g.pending_install, &g.pending_accept) {
            (Some(pi), _) => pi.proposal.cut,
            (None, Some(pa)) => pa.3,
            _ => g.hi_seen,
        };
        if g.ready < want && g.ready == g.ready_at_check {
            let target = match (&g.pending_install, &g.pending_accept) {
                (_, Some(pa)) if g.nack_round % 2 == 0 => Some(pa.2),
                _ => target_of(g, g.nack_round),
            };
            if let Some(t) = target {
                let to = want.min(g.ready + self.cfg.batch as u64 * 4);
                self.ctx.stats.nacks_sent += 1;
                self.ctx.send(
                    t,
                    Body::Nack {
                        group: gid,
                        epoch,
                        positions: Some((g.ready + 1, to)),
                        sender_seqs: None,
                    },
                );
                g.nack_round += 1;
                g.last_nack = now;
            }
        } else if g.ready != g.ready_at_check {
            g.nack_round = 0;
        }
        g.ready_at_check = g.ready;
        // Own messages that the sequencer does not seem to have.
        let mut ordered_own = false;
        if g.my_ordered < g.my_seq
            && g.my_ordered == g.my_ordered_at_check
            && g.cap == u64::MAX
            && let Some(c) = coord
        {
            {
                if c == me {
                    let inc = self.ctx.inc;
                    g.order_sender(&mut self.ctx, me, inc);
                    // Deliver (and, alone in the view, make stable) what
                    // was just ordered: no peer's ack may come to do it.
                    ordered_own = true;
                } else {
                    g.resend_own(&mut self.ctx, &[c], self.cfg.batch);
                }
            }
        }
        g.my_ordered_at_check = g.my_ordered;
        // Leave retry: to every member (ourselves included, should we
        // coordinate a new epoch now), because the coordinator may have
        // ordered the Leave already (then any member that installed it
        // answers with the stable point the leaver waits for), or may have
        // left itself.
        if let Some(t) = g.leaving
            && now.0.saturating_sub(t.0) >= 2 * hb
        {
            g.leaving = Some(now);
            let last_seq = g.my_seq;
            for m in g.view.members.clone() {
                self.ctx.send(
                    m,
                    Body::LeaveRequest {
                        group: gid,
                        last_seq,
                    },
                );
            }
        }
        // Sequencer duties: gap NACKs to senders, periodic order heartbeat.
        if g.is_sequencer() && g.cap == u64::MAX {
            let mut nacks = Vec::new();
            if let Some(seq) = g.seq.as_ref() {
                for (m, inc) in seq.view.members.iter().zip(seq.incs.iter()) {
                    if *m == me {
                        continue;
                    }
                    let n = next_of(&seq.next, *m, *inc);
                    let held_beyond = g
                        .senders
                        .iter()
                        .find(|b| b.node == *m && b.inc == *inc)
                        .map(|b| b.base + b.msgs.len() as u64)
                        .unwrap_or(0);
                    let leave_last = seq
                        .leaves
                        .iter()
                        .find(|(l, _)| l == m)
                        .map(|(_, last)| *last)
                        .unwrap_or(0);
                    let hi = held_beyond.saturating_sub(1).max(leave_last);
                    if hi >= n && g.payload(*m, *inc, n).is_none() {
                        nacks.push((*m, *inc, n, hi));
                    }
                }
            }
            for (m, inc, from, to) in nacks {
                self.ctx.stats.nacks_sent += 1;
                self.ctx.send(
                    m,
                    Body::Nack {
                        group: gid,
                        epoch,
                        positions: None,
                        sender_seqs: Some((m, inc, from, to)),
                    },
                );
            }
        }
        // An empty order record tells members where the order ends (a lost
        // last record is noticed) and carries the stable point. A retired
        // sequencer (it ordered its own Leave) keeps doing it until its Leave
        // is stable and it goes.
        if g.seq.is_some() && g.cap == u64::MAX {
            // Re-send welcomes not yet acknowledged (once their Join is
            // stable), as a retired sequencer too: its Leave becomes stable
            // only with the joiner's acks. (Before, a joiner that abandoned
            // its join after the Join was ordered, and joined again, was
            // never welcomed: the group stood still, seed 22103.)
            let stable = g.stable;
            let welcomes: Vec<(NodeId, WelcomeInfo)> = g
                .seq
                .as_ref()
                .map(|s| s.welcomes.clone())
                .unwrap_or_default();
            for (n, w) in welcomes.into_iter().filter(|(_, w)| w.position <= stable) {
                self.ctx.send(
                    n,
                    Body::Welcome {
                        view: Box::new(w.view),
                        position: w.position,
                        stable,
                        next: w.next,
                        incarnations: w.incs,
                        rejoin: w.rejoin,
                    },
                );
            }
            g.publish(&mut self.ctx);
            if let Some(seq) = g.seq.as_ref() {
                let first = seq.next_pos;
                let stable = seq.stable;
                // Leavers still fetching up to their Leave need it too.
                let mut targets: Vec<NodeId> = seq.view.members.clone();
                targets.extend(seq.departing.iter().map(|(n, _)| *n));
                for t in targets {
                    if t != me {
                        self.ctx.send(
                            t,
                            Body::Order {
                                group: gid,
                                epoch,
                                first,
                                entries: Vec::new(),
                                stable,
                            },
                        );
                    }
                }
            }
        }
        if ordered_own {
            self.after_change(gid);
        }
        if self
            .groups
            .get(&gid)
            .is_some_and(|g| g.is_member() && g.cap == u64::MAX)
        {
            self.request_lease(gid);
        }
    }

    // ------------------------------------------------------------------
    // Messages
    // ------------------------------------------------------------------

    /// A message from peer `from`.
    pub fn handle_message(&mut self, now: Time, from: NodeId, msg: Message<P>) {
        self.now = self.now.max(now);
        self.ctx.now = self.now;
        if from == self.ctx.me {
            return;
        }
        let Some(peer) = self.peers.iter_mut().find(|p| p.node == from) else {
            self.ctx.stats.stale += 1;
            return;
        };
        if msg.incarnation < peer.inc {
            // From a previous life of a restarted node.
            self.ctx.stats.stale += 1;
            return;
        }
        peer.inc = msg.incarnation;
        peer.last_heard = self.now;
        peer.suspected = false;
        self.dispatch(from, msg.incarnation, msg.body);
        self.drain_loopback();
    }

    fn drain_loopback(&mut self) {
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
            } => self.on_order(from, group, epoch, first, &entries, stable),
            Body::Ack {
                group,
                epoch,
                ready,
            } => {
                let now = self.now;
                if let Some(g) = self.groups.get_mut(&group)
                    && g.is_member()
                {
                    if epoch < g.epoch() {
                        // A member of an epoch we replaced: it missed the
                        // decision (it may have been excluded from it).
                        self.tell_decided(from, group, epoch);
                    } else if g.epoch() == epoch
                        && let Some(seq) = g.seq.as_mut()
                    {
                        match seq.acked_at.iter_mut().find(|(n, _)| *n == from) {
                            Some(a) => a.1 = now,
                            None => seq.acked_at.push((from, now)),
                        }
                        g.on_ack(from, ready);
                        self.after_change(group);
                    }
                } else if let Some(&(e, pos)) = self.farewells.get(&group)
                    && e == epoch
                {
                    // We left as this member's coordinator: it still waits
                    // for the stable point of our Leave.
                    self.ctx.send(
                        from,
                        Body::Order {
                            group,
                            epoch,
                            first: pos + 1,
                            entries: Vec::new(),
                            stable: pos,
                        },
                    );
                }
            }
            Body::Nack {
                group,
                epoch: _,
                positions,
                sender_seqs,
            } => {
                if let Some(g) = self.groups.get(&group)
                    && g.is_member()
                {
                    if let Some((a, b)) = positions {
                        g.retransmit_positions(&mut self.ctx, from, a, b);
                    }
                    if let Some((s, inc, a, b)) = sender_seqs {
                        g.retransmit_seqs(&mut self.ctx, from, s, inc, a, b);
                    }
                }
            }
            Body::JoinRequest {
                group,
                range,
                rejoin,
                next_seq,
                delivered,
            } => self.on_join_request(from, from_inc, group, range, rejoin, (next_seq, delivered)),
            Body::Welcome {
                view,
                position,
                stable,
                next,
                incarnations,
                rejoin,
            } => self.on_welcome(from, *view, position, stable, next, incarnations, rejoin),
            Body::JoinRefused { group, active } => {
                if self.groups.get(&group).is_some_and(|g| !g.is_member()) {
                    // Keep what a later join with this incarnation needs
                    // (own stream, what was delivered), as for a leave.
                    self.forget_group(group);
                    self.joiners.remove(&group);
                    self.ctx
                        .commands
                        .push_back(Command::JoinRefused { group, active });
                }
            }
            Body::NoGroup { group, known } => {
                if let Some(j) = self.joiners.get_mut(&group) {
                    if !j.no_group.contains(&from) {
                        j.no_group.push(from);
                    }
                    if let Some(p) = known
                        && j.known.as_ref().is_none_or(|(e, _)| *e < p.view.id.epoch())
                    {
                        j.known = Some((p.view.id.epoch(), *p));
                    }
                }
            }
            Body::LeaveRequest { group, last_seq } => {
                if let Some(g) = self.groups.get(&group)
                    && g.is_member()
                    && !g.view.contains(from)
                {
                    // Its Leave is installed here, so it is stable: the
                    // leaver only waits to learn that.
                    let body = Body::Order {
                        group,
                        epoch: g.epoch(),
                        first: g.delivered + 1,
                        entries: Vec::new(),
                        stable: g.stable,
                    };
                    self.ctx.send(from, body);
                } else if let Some(g) = self.groups.get_mut(&group)
                    && g.is_member()
                    && let Some(seq) = g.seq.as_mut()
                    && !seq.retired
                {
                    if seq.view.contains(from) && !seq.leaves.iter().any(|(n, _)| *n == from) {
                        seq.leaves.push((from, last_seq));
                    }
                    g.order_leaves(&mut self.ctx);
                    self.after_change(group);
                }
            }
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
            } => {
                if let Some(p) = self.proposers.get_mut(&group)
                    && p.epoch == epoch
                    && p.ballot == ballot
                    && p.stage == Stage::Prepare
                    && !p.promises.iter().any(|(n, _, _)| *n == from)
                {
                    p.promises
                        .push((from, accepted.map(|a| *a), state.map(|s| *s)));
                    self.try_phase1(group, false);
                }
            }
            Body::Reject {
                group,
                epoch,
                promised,
            } => {
                let hb = self.cfg.heartbeat_interval;
                let rank = u64::from(self.ctx.me.0 % 8);
                if let Some(p) = self.proposers.get_mut(&group)
                    && p.epoch == epoch
                    && promised > p.ballot
                {
                    p.ballot = Ballot {
                        round: promised.round + 1,
                        leader: self.ctx.me.0,
                    };
                    p.stage = Stage::Backoff {
                        until: self.now.plus(hb * (1 + rank)),
                    };
                }
            }
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

    /// The lease a sequencer holds once a strict majority granted it.
    fn lease_len(&self) -> u64 {
        self.cfg.failure_timeout / 2
    }

    /// Sequencer: ask every acceptor for the ordering lease of its epoch when
    /// the next request is due (every `failure_timeout / 4`).
    #[cold]
    #[inline(never)]
    fn request_lease(&mut self, gid: GroupId) {
        let now = self.now;
        let period = (self.cfg.failure_timeout / 4).max(1);
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let epoch = g.epoch();
        let Some(seq) = g.seq.as_mut() else { return };
        if seq.retired || now < seq.lease_next {
            return;
        }
        if seq.lease_next == Time(0) {
            seq.lease_since = now;
        }
        seq.lease_next = now.plus(period);
        seq.lease_sent = now;
        seq.lease_grants.clear();
        for n in self.cfg.nodes.clone() {
            self.ctx.send(
                n,
                Body::Lease {
                    group: gid,
                    epoch,
                    sent: now.0,
                },
            );
        }
    }

    /// Acceptor: grant the lease of `epoch` unless a later epoch of the group
    /// was decided, promised or prepared here.
    fn on_lease(&mut self, from: NodeId, gid: GroupId, epoch: u32, sent: u64) {
        let until = self.now.plus(self.lease_len() + self.cfg.lease_drift);
        let acc = self.acceptors.entry(gid).or_default();
        if acc.decided.as_ref().is_some_and(|(e, _)| *e > epoch) {
            // Its epoch was replaced: it installs the decision or rejoins.
            self.tell_decided(from, gid, epoch);
            return;
        }
        if acc.prepared_hi > epoch || acc.slots.range(epoch + 1..).next().is_some() {
            return;
        }
        acc.lease = match acc.lease {
            // Keep the strictest of two live grants (a handover inside the
            // epoch): the earliest epoch, the latest end.
            Some((e, _, u)) if u > self.now => Some((e.min(epoch), from, u.max(until))),
            _ => Some((epoch, from, until)),
        };
        self.ctx.send(
            from,
            Body::LeaseGrant {
                group: gid,
                epoch,
                sent,
            },
        );
    }

    /// Sequencer: a grant for the current request. With a strict majority
    /// the lease runs until `sent` plus the lease length; a sequencer that
    /// had none orders what waited.
    fn on_lease_grant(&mut self, from: NodeId, gid: GroupId, epoch: u32, sent: u64) {
        let now = self.now;
        let len = self.lease_len();
        let majority = self.majority;
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if !g.is_member() || g.epoch() != epoch {
            return;
        }
        let Some(seq) = g.seq.as_mut() else { return };
        if seq.lease_sent != Time(sent) || seq.lease_grants.contains(&from) {
            return;
        }
        seq.lease_grants.push(from);
        if seq.lease_grants.len() < majority {
            return;
        }
        let had = seq.leased(now);
        seq.lease_until = seq.lease_until.max(Time(sent).plus(len));
        if had || !seq.leased(now) {
            return;
        }
        let senders: Vec<(NodeId, u64)> = seq
            .view
            .members
            .iter()
            .copied()
            .zip(seq.incs.iter().copied())
            .collect();
        for (m, i) in senders {
            g.order_sender(&mut self.ctx, m, i);
        }
        g.order_leaves(&mut self.ctx);
        self.after_change(gid);
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn on_data(
        &mut self,
        from: NodeId,
        group: GroupId,
        epoch: u32,
        sender: NodeId,
        sinc: u64,
        sseq: u64,
        ack: u64,
        payload: P,
    ) {
        let limit = (self.cfg.window as u64) * 4 + (self.cfg.batch as u64) * 4;
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        if !g.is_member() {
            return;
        }
        let new = g.store_payload(sender, sinc, sseq, payload, limit);
        if g.seq.is_some() && epoch == g.epoch() {
            g.on_ack(from, ack);
        }
        if !new {
            self.ctx.stats.duplicates += 1;
            // A sender re-sends what it sees unordered: a sequencer that
            // took over holds the payloads already and must order them now.
            if g.is_sequencer() {
                g.order_sender(&mut self.ctx, sender, sinc);
                self.after_change(group);
            }
            return;
        }
        if g.is_sequencer() {
            g.order_sender(&mut self.ctx, sender, sinc);
        }
        self.after_change(group);
    }

    fn on_order(
        &mut self,
        from: NodeId,
        group: GroupId,
        epoch: u32,
        first: u64,
        entries: &[OrderEntry],
        stable: u64,
    ) {
        let me = self.ctx.me;
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        if !g.is_member() {
            return;
        }
        if epoch < g.epoch() {
            self.ctx.stats.stale += 1;
            // A sequencer of an epoch we replaced still orders: tell it.
            self.tell_decided(from, group, epoch);
            return;
        }
        if epoch > g.epoch() {
            // We missed a decision: ask for it (a round-0 prepare is answered
            // with `Decided` by anyone who knows it).
            let ask = g.epoch() + 1;
            self.ctx.send(
                from,
                Body::Prepare {
                    group,
                    epoch: ask,
                    ballot: Ballot::default(),
                },
            );
            return;
        }
        if entries.is_empty() {
            g.hi_seen = g.hi_seen.max(first.saturating_sub(1));
        } else {
            g.insert_entries(me, first, entries);
        }
        if g.coordinator() == Some(from) {
            g.coord_heard = Some((from, self.now));
        }
        if g.coordinator() == Some(from) || g.view.contains(from) {
            // Only the coordinator publishes a stable point; a retransmitting
            // member echoes one it learned from it.
            g.stable = g.stable.max(stable.min(g.hi_seen));
        }
        self.after_change(group);
    }

    /// Deliver and check what waits on data after a change to `gid`.
    fn after_change(&mut self, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if !g.is_member() {
            return;
        }
        let ready = g.ready;
        g.advance_ready();
        if g.seq.is_some() && (g.ready != ready || g.view.members.len() == 1) {
            let me = self.ctx.me;
            g.on_ack(me, g.ready);
        }
        // `ready` is up to date (the ack changes nothing it depends on).
        if g.deliver_ready(&mut self.ctx) {
            self.removed(gid);
            return;
        }
        if let Some((epoch, ballot, leader, cut)) = g.pending_accept
            && g.ready >= cut
        {
            g.pending_accept = None;
            self.ctx.send(
                leader,
                Body::Accepted {
                    group: gid,
                    epoch,
                    ballot,
                },
            );
        }
        let g = if g
            .seq
            .as_ref()
            .is_some_and(|s| s.welcomes.iter().any(|(_, w)| !w.sent))
        {
            self.send_due_welcomes(gid);
            let Some(g) = self.groups.get_mut(&gid) else {
                return;
            };
            g
        } else {
            g
        };
        if let Some(pi) = g.pending_install.as_ref()
            && g.ready >= pi.proposal.cut
        {
            let pi = pi.clone();
            self.install(gid, pi.epoch, pi.proposal);
            return;
        }
        let first_lease = g
            .seq
            .as_ref()
            .is_some_and(|s| s.lease_next == Time(0) && !s.retired);
        if let Some(p) = self.proposers.get(&gid)
            && let Stage::Fetch { cut, .. } = p.stage
            && g.ready >= cut
        {
            self.build_and_accept(gid);
        }
        if first_lease {
            // A new sequencer asks for its lease at once, not at its next tick.
            self.request_lease(gid);
        }
    }

    /// A Leave of this member was delivered. If the application asked to
    /// leave, the group is over for it. Otherwise the primary removed it
    /// (it asked to be re-admitted while the primary still counted it as a
    /// member, from a request that may have been stale): it joins again.
    fn removed(&mut self, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if g.leaving.is_none() {
            self.start_rejoin(gid);
            return;
        }
        if g.seq.is_some() {
            self.farewells.insert(gid, (g.epoch(), g.delivered));
        }
        self.forget_group(gid);
    }

    /// Drop `gid`'s state after a leave, keeping what a later join with the
    /// same incarnation needs: the last own sender sequence, the own
    /// messages the primary may not have ordered, and what this node
    /// delivered of every sender's stream. A leave that ends without its
    /// Leave ordered (cut off, or while rejoining) leaves messages this node
    /// delivered in a minority that the primary never ordered; their senders
    /// send them again, and the next join must not deliver them twice.
    fn forget_group(&mut self, gid: GroupId) {
        let (me, inc) = (self.ctx.me, self.ctx.inc);
        let Some(mut g) = self.groups.remove(&gid) else {
            return;
        };
        self.left_seqs.insert(gid, g.my_seq);
        let buf = g
            .senders
            .iter()
            .position(|b| b.node == me && b.inc == inc)
            .map(|i| g.senders.swap_remove(i))
            .filter(|b| b.msgs.iter().any(Option::is_some));
        let delivered = std::mem::take(&mut g.delivered_hi);
        self.left_own.insert(
            gid,
            LeftOwn {
                buf,
                delivered,
                view: g.view,
                position: g.delivered,
                next: g.next,
            },
        );
    }

    /// `to` still acts in epoch `their_epoch` of `gid`: send it the latest
    /// decision we know, so it installs the next epoch or, excluded from
    /// it (or too far behind), reports Partitioned and rejoins.
    fn tell_decided(&mut self, to: NodeId, gid: GroupId, their_epoch: u32) {
        if let Some((de, dp)) = self.acceptors.get(&gid).and_then(|a| a.decided.as_ref())
            && *de > their_epoch
        {
            let body = Body::Decided {
                group: gid,
                epoch: *de,
                proposal: Box::new(dp.clone()),
            };
            self.ctx.send(to, body);
        }
    }

    /// Sequencer: send the Welcomes whose Join is now stable.
    fn send_due_welcomes(&mut self, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let stable = g.stable;
        let Some(seq) = g.seq.as_mut() else { return };
        for (n, w) in seq.welcomes.iter_mut() {
            if !w.sent && w.position <= stable {
                w.sent = true;
                self.ctx.send(
                    *n,
                    Body::Welcome {
                        view: Box::new(w.view.clone()),
                        position: w.position,
                        stable,
                        next: w.next.clone(),
                        incarnations: w.incs.clone(),
                        rejoin: w.rejoin,
                    },
                );
            }
        }
    }

    // ------------------------------------------------------------------
    // Join
    // ------------------------------------------------------------------

    fn join_round(&mut self, gid: GroupId) {
        let me = self.ctx.me;
        let now = self.now;
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let Phase::Joining { rejoin, .. } = g.phase else {
            return;
        };
        g.phase = Phase::Joining {
            rejoin,
            last_request: now,
        };
        // Where our FIFO stream can resume: the sequencer orders us from the
        // larger of this and what the group already ordered of us.
        let next_seq = g.own_first(me, self.ctx.inc);
        let delivered = g.delivered_hi.clone();
        let range = self.cfg.protocol;
        // Decide from the previous round's answers whether to create (or
        // restart) the group.
        let reachable = 1 + self.peers.iter().filter(|p| !p.suspected).count();
        if let Some(j) = self.joiners.get_mut(&gid) {
            j.rounds += 1;
            let answered: Vec<NodeId> = std::mem::take(&mut j.no_group);
            let known = j.known.clone();
            let known_local = self.acceptors.get(&gid).and_then(|a| a.decided.clone());
            if !self.proposers.contains_key(&gid)
                && 1 + answered.len() >= self.majority
                && now >= j.no_restart_until
            {
                // The latest decided value we know of, if any.
                let latest: Option<(u32, Proposal)> = match (known, known_local) {
                    (None, None) => None,
                    (Some((e, p)), Some((le, lp))) => Some(if le >= e { (le, lp) } else { (e, p) }),
                    (Some(k), None) | (None, Some(k)) => Some(k),
                };
                match latest {
                    None => self.start_proposer(gid, 1, Kind::Create, None),
                    Some((epoch, prop)) => {
                        // Every member of the last decided view either said it
                        // is not a member any more, or is unreachable: nobody
                        // is left to admit us, so restart the group. (A live
                        // member shows up in the promises and we back off.)
                        let all_gone = prop
                            .view
                            .members
                            .iter()
                            .all(|m| *m == me || answered.contains(m) || self.suspected(*m));
                        if all_gone && reachable >= self.majority {
                            self.start_proposer(gid, epoch + 1, Kind::Orphan, Some(prop));
                        }
                    }
                }
            }
        }
        for p in &self.peers {
            self.ctx.commands.push_back(Command::Send {
                to: p.node,
                msg: Message {
                    incarnation: self.ctx.inc,
                    body: Body::JoinRequest {
                        group: gid,
                        range,
                        rejoin,
                        next_seq,
                        delivered: delivered.clone(),
                    },
                },
            });
        }
    }

    fn on_join_request(
        &mut self,
        from: NodeId,
        from_inc: u64,
        gid: GroupId,
        range: VersionRange,
        rejoin: bool,
        (next_seq, delivered): (u64, Vec<SenderNext>),
    ) {
        let me = self.ctx.me;
        let Some(g) = self.groups.get_mut(&gid) else {
            let known = self
                .acceptors
                .get(&gid)
                .and_then(|a| a.decided.as_ref().map(|(_, p)| Box::new(p.clone())));
            self.ctx.send(from, Body::NoGroup { group: gid, known });
            return;
        };
        if !g.is_member() {
            let known = self
                .acceptors
                .get(&gid)
                .and_then(|a| a.decided.as_ref().map(|(_, p)| Box::new(p.clone())));
            self.ctx.send(from, Body::NoGroup { group: gid, known });
            return;
        }
        if !g.is_sequencer() {
            // Our coordinator asks to join: it left the group on its side (it
            // saw itself partitioned) while we still count it, and nobody
            // sequences for us any more. A stale copy of an old request is
            // told apart by the coordinator's order records, which go on
            // every tick while it sequences. After a failure timeout without
            // them it counts as failed here, and a flush removes it.
            let coordinator = g.coordinator() == Some(from) && g.incs.first() == Some(&from_inc);
            if coordinator {
                let now = self.now;
                let heard = match g.coord_heard {
                    Some((n, t)) if n == from => t,
                    _ => {
                        g.coord_heard = Some((from, now));
                        now
                    }
                };
                if now.0.saturating_sub(heard.0) > self.cfg.failure_timeout {
                    g.coord_gone = Some((g.view.id, from, from_inc));
                }
            }
            // A retired sequencer (its own Leave ordered, not yet stable)
            // admits nobody, and nobody else sequences: a member that left
            // on its side (it saw itself partitioned) and asks to join again
            // never acks that Leave, which would stay unstable for ever.
            // After a failure timeout without its acks it counts as failed
            // here, and a flush removes it (its successor admits it again).
            let now = self.now;
            if let Some(seq) = g.seq.as_mut()
                && let Some(i) = g.view.members.iter().position(|m| *m == from)
                && g.incs.get(i) == Some(&from_inc)
            {
                let heard = match seq.acked_at.iter().find(|(n, _)| *n == from) {
                    Some((_, t)) => *t,
                    None => {
                        seq.acked_at.push((from, now));
                        now
                    }
                };
                if now.0.saturating_sub(heard.0) > self.cfg.failure_timeout {
                    g.coord_gone = Some((g.view.id, from, from_inc));
                }
            }
            return;
        }
        if g.cap != u64::MAX || g.leaving.is_some() {
            return;
        }
        self.ctx.versions.record(from, from_inc, range);
        // The version after everything ordered so far (an adjust-version
        // may be ordered but not yet delivered here).
        let active = g.seq.as_ref().map_or(g.view.protocol, |s| s.view.protocol);
        if !range.contains(active) {
            self.ctx
                .send(from, Body::JoinRefused { group: gid, active });
            return;
        }
        let now = self.now;
        let ft = self.cfg.failure_timeout;
        let stable = g.stable;
        let Some(seq) = g.seq.as_mut() else { return };
        let known_next = next_of(&seq.next, from, from_inc);
        if let Some(i) = seq.view.members.iter().position(|m| *m == from) {
            if seq.incs[i] != from_inc {
                // An older incarnation is still a member: the flush removes
                // it first, the joiner retries.
                return;
            }
            if let Some((_, w)) = seq.welcomes.iter().find(|(n, _)| *n == from) {
                if w.position <= stable {
                    let w = w.clone();
                    self.ctx.send(
                        from,
                        Body::Welcome {
                            view: Box::new(w.view),
                            position: w.position,
                            stable,
                            next: w.next,
                            incarnations: w.incs,
                            rejoin: w.rejoin,
                        },
                    );
                }
                return;
            }
            // A member of ours asks to join: it left the group on its side
            // (it saw itself partitioned, or gave up) while we still count
            // it. Its acks stop then; a request from an active member is a
            // stale copy, and its acks keep coming. After a failure timeout
            // of silence, remove it and admit it again, in one batch.
            if !seq.leased(now) {
                return;
            }
            let heard = match seq.acked_at.iter().find(|(n, _)| *n == from) {
                Some((_, t)) => *t,
                None => {
                    seq.acked_at.push((from, now));
                    now
                }
            };
            if now.0.saturating_sub(heard.0) <= ft {
                return;
            }
            seq.acked_at.retain(|(n, _)| *n != from);
            if g.order_control(&mut self.ctx, OrderEntry::Leave { node: from })
                .is_none()
            {
                return;
            }
        }
        // Resume the joiner's stream where both sides can: messages the group
        // ordered are not sent again (the joiner re-sends from the Welcome's
        // `next`), and messages the joiner released (delivered and stable in
        // a history this group lost, e.g. before an orphan restart) cannot be.
        //
        // What every member of the new view delivered already of the
        // joiner's stream is not ordered again: each would skip it as a
        // duplicate, so nobody would deliver its position (members cut off
        // together delivered it beyond the primary's cut, and the primary
        // that replaced them never ordered it). The sequencer knows what it
        // delivered itself, what the joiner and the members it admitted said
        // in their requests (anything they delivered since was ordered here,
        // so `known_next` covers it), and nothing of the others.
        if !g.seq.as_ref().is_some_and(|s| s.leased(now)) {
            // Not ordering now: the joiner asks again.
            return;
        }
        let hi = |v: &[SenderNext]| delivered_of(v, from, from_inc);
        let mut both = hi(&delivered).min(hi(&g.delivered_hi));
        if let Some(s) = g.seq.as_ref() {
            for m in s.view.members.iter().filter(|m| **m != me && **m != from) {
                both = both.min(
                    s.reported
                        .iter()
                        .find(|(n, _)| n == m)
                        .map_or(0, |(_, v)| hi(v)),
                );
            }
        }
        let both = both + 1;
        let first_seq = known_next.max(next_seq).max(both);
        let Some(position) = g.order_control(
            &mut self.ctx,
            OrderEntry::Join {
                node: from,
                incarnation: from_inc,
                rejoin,
                first_seq,
            },
        ) else {
            return;
        };
        let Some(seq) = g.seq.as_mut() else { return };
        seq.reported.retain(|(n, _)| *n != from);
        seq.reported.push((from, delivered));
        // The admitted member's silence counts from now on: an ack heard
        // from an earlier membership (an older incarnation, or before a
        // Leave) says nothing of this one. (Before, a stale copy of the
        // joiner's request, arriving after its Welcome, found the ack time
        // of its previous incarnation, so the just-welcomed member was
        // removed and admitted again; the positions it had not yet fetched
        // became stable without it, seed 9715.)
        seq.acked_at.retain(|(n, _)| *n != from);
        let w = WelcomeInfo {
            view: seq.view.clone(),
            position,
            next: seq.next.clone(),
            incs: seq.incs.clone(),
            rejoin,
            sent: false,
        };
        seq.welcomes.push((from, w));
        // The Welcome goes out once the Join is stable (`after_change`).
        self.after_change(gid);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_welcome(
        &mut self,
        from: NodeId,
        view: View,
        position: u64,
        _stable: u64,
        next: Vec<SenderNext>,
        incs: Vec<u64>,
        rejoin: bool,
    ) {
        let me = self.ctx.me;
        let gid = view.group;
        let Some(g) = self.groups.get_mut(&gid) else {
            // This incarnation was admitted, but gave the join up (or left)
            // before the Welcome came: it holds nothing of the group. Ask
            // the sequencer to order its Leave, or it stays in the view,
            // never acks, and the stable point never moves again (seed
            // 87671: the group stood still, nobody else was admitted).
            let inc = self.ctx.inc;
            if view
                .members
                .iter()
                .zip(&incs)
                .any(|(m, i)| *m == me && *i == inc)
            {
                self.ctx.send(
                    from,
                    Body::LeaveRequest {
                        group: gid,
                        last_seq: 0,
                    },
                );
            }
            return;
        };
        if !matches!(g.phase, Phase::Joining { .. }) {
            return;
        }
        // A delayed copy of a Welcome we already installed (the sequencer
        // re-sends it until acknowledged) arriving after we saw ourselves
        // partitioned: installing it would install the same view twice.
        if view.id <= g.view.id {
            return;
        }
        if !view.contains(me) || incs.len() != view.members.len() {
            return;
        }
        // A Welcome for an earlier life of this node (delayed past its
        // restart) admits that incarnation, not us: the others count the
        // old one as the member.
        let inc = self.ctx.inc;
        if !view
            .members
            .iter()
            .zip(&incs)
            .any(|(m, i)| *m == me && *i == inc)
        {
            return;
        }
        self.joiners.remove(&gid);
        self.proposers.remove(&gid);
        g.phase = Phase::Member;
        g.view = view.clone();
        g.incs = incs;
        g.reset_order(position, next);
        g.senders.retain(|b| b.node == me);
        g.my_ordered = next_of(&g.next, me, self.ctx.inc).saturating_sub(1);
        g.my_ordered_at_check = g.my_ordered;
        g.leaving = None;
        g.grace_until = self.now.plus(self.cfg.failure_timeout);
        self.ctx.stats.view_changes += 1;
        // The reason comes from the ordered entry (as at every other member),
        // not from our phase: the sequencer may have ordered an older request
        // of ours, sent before we saw ourselves partitioned (or the reverse).
        let reason = if rejoin {
            Reason::Merged
        } else {
            Reason::Join(me)
        };
        self.ctx.commands.push_back(Command::ViewChange {
            view: view.clone(),
            reason,
            position,
        });
        if let Some(c) = view.coordinator() {
            g.ack_to(&mut self.ctx, c, gid, view.id.epoch(), position, self.now);
        }
        g.resend_own(&mut self.ctx, &view.members, self.cfg.window);
        self.after_change(gid);
    }

    /// This member lost the primary component: stop, report, rejoin later.
    fn go_partitioned(&mut self, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if !g.is_member() {
            return;
        }
        self.ctx.stats.partitions += 1;
        self.ctx.commands.push_back(Command::ViewChange {
            view: g.view.clone(),
            reason: Reason::Partitioned,
            position: g.delivered,
        });
        self.ctx
            .commands
            .push_back(Command::Partitioned { group: gid });
        if g.leaving.is_some() {
            // The application asked to leave: the leave ends here (its Leave
            // may never be ordered, or be ordered without us hearing of it).
            // No rejoin.
            self.forget_group(gid);
            self.proposers.remove(&gid);
            self.joiners.remove(&gid);
            return;
        }
        self.start_rejoin(gid);
    }

    /// Stop being a member and ask to be admitted again (`Reason::Merged`),
    /// keeping our own messages the primary may not have ordered.
    fn start_rejoin(&mut self, gid: GroupId) {
        let me = self.ctx.me;
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        g.phase = Phase::Joining {
            rejoin: true,
            last_request: self.now,
        };
        let next = g.next.clone();
        let delivered = g.delivered;
        // Own messages delivered here but perhaps never ordered by the
        // primary must survive to be sent again after the rejoin.
        let own = g
            .senders
            .iter()
            .position(|b| b.node == me)
            .map(|i| g.senders.swap_remove(i));
        g.senders.clear();
        g.reset_order(delivered, next);
        g.senders.extend(own);
        g.leaving = None;
        self.proposers.remove(&gid);
        self.joiners.insert(gid, Joiner::default());
    }

    // ------------------------------------------------------------------
    // Epoch changes: single-decree paxos per epoch among all configured nodes
    // ------------------------------------------------------------------

    fn start_proposer(&mut self, gid: GroupId, epoch: u32, kind: Kind, known: Option<Proposal>) {
        let round = self
            .acceptors
            .get(&gid)
            .and_then(|a| a.slots.get(&epoch))
            .map_or(0, |(b, _)| b.round)
            + 1;
        let round = self
            .proposers
            .get(&gid)
            .map_or(round, |p| round.max(p.ballot.round + 1));
        if kind == Kind::Flush {
            self.ctx.stats.flushes += 1;
        }
        self.proposers.insert(
            gid,
            Proposer {
                epoch,
                ballot: Ballot {
                    round,
                    leader: self.ctx.me.0,
                },
                kind,
                stage: Stage::Prepare,
                started: self.now,
                promises: Vec::new(),
                accepts: Vec::new(),
                proposal: None,
                known,
            },
        );
        self.send_prepares(gid);
    }

    fn send_prepares(&mut self, gid: GroupId) {
        let Some(p) = self.proposers.get(&gid) else {
            return;
        };
        let (epoch, ballot) = (p.epoch, p.ballot);
        let answered: Vec<NodeId> = p.promises.iter().map(|(n, _, _)| *n).collect();
        for n in self.cfg.nodes.clone() {
            if !answered.contains(&n) {
                self.ctx.send(
                    n,
                    Body::Prepare {
                        group: gid,
                        epoch,
                        ballot,
                    },
                );
            }
        }
    }

    fn tick_proposer(&mut self, gid: GroupId) {
        let now = self.now;
        let ft = self.cfg.failure_timeout;
        let Some(p) = self.proposers.get_mut(&gid) else {
            return;
        };
        let age = now.0.saturating_sub(p.started.0);
        match p.stage {
            Stage::Backoff { until } => {
                if now >= until {
                    p.stage = Stage::Prepare;
                    p.started = now;
                    p.promises.clear();
                    p.accepts.clear();
                    p.proposal = None;
                    self.send_prepares(gid);
                }
            }
            Stage::Prepare => {
                if age >= ft {
                    if p.promises.len() >= self.majority {
                        self.try_phase1(gid, true);
                    } else {
                        self.retry(gid);
                    }
                } else {
                    self.send_prepares(gid);
                }
            }
            Stage::Fetch { cut, best } => {
                if age >= 2 * ft {
                    self.retry(gid);
                } else if let Some(g) = self.groups.get(&gid) {
                    let from = g.ready + 1;
                    let epoch = g.epoch();
                    self.ctx.stats.nacks_sent += 1;
                    self.ctx.send(
                        best,
                        Body::Nack {
                            group: gid,
                            epoch,
                            positions: Some((from, cut)),
                            sender_seqs: None,
                        },
                    );
                }
            }
            Stage::Accept => {
                if age >= 2 * ft {
                    self.retry(gid);
                } else {
                    let (epoch, ballot) = (p.epoch, p.ballot);
                    let accepted = p.accepts.clone();
                    if let Some(prop) = p.proposal.clone() {
                        for n in self.cfg.nodes.clone() {
                            if !accepted.contains(&n) {
                                self.ctx.send(
                                    n,
                                    Body::Accept {
                                        group: gid,
                                        epoch,
                                        ballot,
                                        proposal: Box::new(prop.clone()),
                                    },
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    fn retry(&mut self, gid: GroupId) {
        let hb = self.cfg.heartbeat_interval;
        let rank = u64::from(self.ctx.me.0 % 8);
        if let Some(p) = self.proposers.get_mut(&gid) {
            p.ballot.round += 1;
            p.stage = Stage::Backoff {
                until: self.now.plus(hb * (1 + rank)),
            };
            p.started = self.now;
        }
    }

    fn try_phase1(&mut self, gid: GroupId, force: bool) {
        let Some(p) = self.proposers.get(&gid) else {
            return;
        };
        if p.stage != Stage::Prepare || p.promises.len() < self.majority {
            return;
        }
        let all = self
            .cfg
            .nodes
            .iter()
            .filter(|n| !self.suspected(**n))
            .all(|n| p.promises.iter().any(|(m, _, _)| m == n));
        if !all && !force {
            return;
        }
        let epoch = p.epoch;
        // Paxos: adopt the highest-ballot value already accepted.
        let adopted = p
            .promises
            .iter()
            .filter_map(|(_, a, _)| a.clone())
            .max_by_key(|(b, _)| *b)
            .map(|(_, v)| v);
        if let Some(v) = adopted {
            self.send_accepts(gid, v);
            return;
        }
        let states: Vec<(NodeId, MemberState)> = p
            .promises
            .iter()
            .filter_map(|(n, _, s)| s.clone().map(|s| (*n, s)))
            .filter(|(_, s)| s.view.id.epoch() + 1 == epoch)
            .collect();
        match p.kind {
            Kind::Flush => {
                let Some((best, cut)) = states
                    .iter()
                    .map(|(n, s)| (*n, s.ready))
                    .max_by_key(|(n, r)| (*r, std::cmp::Reverse(*n)))
                else {
                    self.proposers.remove(&gid);
                    return;
                };
                let Some(g) = self.groups.get(&gid) else {
                    self.proposers.remove(&gid);
                    return;
                };
                if !g.is_member() || g.epoch() + 1 != epoch {
                    self.proposers.remove(&gid);
                    return;
                }
                if let Some(p) = self.proposers.get_mut(&gid) {
                    p.stage = Stage::Fetch { cut, best };
                    p.started = self.now;
                }
                if g.ready >= cut {
                    self.build_and_accept(gid);
                } else {
                    let (from, gepoch) = (g.ready + 1, g.epoch());
                    self.ctx.stats.nacks_sent += 1;
                    self.ctx.send(
                        best,
                        Body::Nack {
                            group: gid,
                            epoch: gepoch,
                            positions: Some((from, cut)),
                            sender_seqs: None,
                        },
                    );
                }
            }
            Kind::Create | Kind::Orphan => {
                let any_member = p.promises.iter().any(|(_, _, s)| s.is_some());
                if any_member {
                    // The group has live members: join it instead, and give
                    // them time to finish their own flush before trying
                    // again (before, joiners restarted every join round and
                    // their ballots preempted the members' flush for ever:
                    // seed 2507).
                    self.proposers.remove(&gid);
                    if let Some(j) = self.joiners.get_mut(&gid) {
                        j.no_restart_until = self.now.plus(2 * self.cfg.failure_timeout);
                    }
                    return;
                }
                let (mut cut, mut next, mut protocol) = match &p.known {
                    Some(k) => (k.cut, k.next.clone(), k.view.protocol),
                    None => (0, Vec::new(), self.creation_version()),
                };
                // A restarter that was itself a member of the epoch it
                // replaces continues from what it delivered there, not from
                // the older decided cut: the history it holds (and the
                // senders' progress in it) is not forgotten, so no position
                // is used twice and no message it delivered is ordered again.
                if p.kind == Kind::Orphan
                    && let Some(g) = self.groups.get(&gid)
                    && g.view.id.epoch() + 1 == epoch
                    && g.delivered >= cut
                {
                    cut = g.delivered;
                    next = g.next.clone();
                    protocol = g.view.protocol;
                }
                let proposal = Proposal {
                    view: View {
                        group: gid,
                        id: ViewId::first_of(epoch),
                        members: vec![self.ctx.me],
                        protocol,
                    },
                    cut,
                    old_members: Vec::new(),
                    next,
                    incarnations: vec![self.ctx.inc],
                };
                self.send_accepts(gid, proposal);
            }
        }
    }

    /// Flush leader holding everything up to the cut: compute the value.
    fn build_and_accept(&mut self, gid: GroupId) {
        let Some(p) = self.proposers.get(&gid) else {
            return;
        };
        let Stage::Fetch { cut, .. } = p.stage else {
            return;
        };
        let epoch = p.epoch;
        // Each member that promised, with what it reported it delivered.
        let responders: Vec<(NodeId, &[SenderNext])> = p
            .promises
            .iter()
            .filter_map(|(n, _, s)| {
                s.as_ref()
                    .filter(|s| s.view.id.epoch() + 1 == epoch)
                    .map(|s| (*n, s.delivered.as_slice()))
            })
            .collect();
        let Some(g) = self.groups.get(&gid) else {
            return;
        };
        // The view and sender progress in force at the cut.
        let mut members = g.view.members.clone();
        let mut incs = g.incs.clone();
        let mut next = g.next.clone();
        let mut protocol = g.view.protocol;
        let mut pos = g.delivered + 1;
        while pos <= cut {
            match g.slot(pos) {
                Some(Slot::Data { sender, inc, seq }) => {
                    crate::group::set_next(&mut next, sender, inc, seq + 1);
                }
                Some(Slot::Join {
                    node,
                    inc,
                    first_seq,
                    ..
                }) => {
                    if !members.contains(&node) {
                        members.push(node);
                        incs.push(inc);
                    }
                    crate::group::set_next(&mut next, node, inc, first_seq);
                }
                Some(Slot::Leave { node }) => {
                    if let Some(i) = members.iter().position(|m| *m == node) {
                        members.remove(i);
                        incs.remove(i);
                    }
                }
                Some(Slot::Version(change)) => {
                    if change.switches() {
                        protocol = change.to;
                    }
                }
                None => return,
            }
            pos += 1;
        }
        let mut new_members = Vec::new();
        let mut new_incs = Vec::new();
        for (m, inc) in members.iter().zip(incs.iter()) {
            if responders.iter().any(|(n, _)| n == m) && self.peer_inc(*m) == *inc {
                new_members.push(*m);
                new_incs.push(*inc);
            }
        }
        // No member of the view in force at the cut answered as a member:
        // the leader's own Leave is within the cut and the others are gone
        // (crashed, restarted, or cut off and rejoining). The epoch is still
        // decided, with no member: the leader is excluded like everyone and
        // its leave ends, and the next joiner restarts the group from this
        // decision as an orphan. (Before, the leader dropped the flush and,
        // still frozen, started it again every tick for ever: the leaver
        // believed it was a member for ever and nobody could rejoin, base
        // seeds 7481, 10848, 25643 and more.)
        //
        // A sender's messages that every member of the new view delivered
        // already (members cut off together delivered them beyond an
        // earlier primary's cut, and the member that still lacked them is
        // not in the new view) are not ordered again: each member would skip
        // them as duplicates, and nobody would deliver their positions. The
        // new epoch resumes such a stream after the lowest mark reported.
        let reports: Vec<&[SenderNext]> = new_members
            .iter()
            .filter_map(|m| responders.iter().find(|(n, _)| n == m).map(|(_, d)| *d))
            .collect();
        if let Some((first, rest)) = reports.split_first() {
            for s in first.iter() {
                let all = rest
                    .iter()
                    .map(|d| delivered_of(d, s.node, s.incarnation))
                    .fold(s.next, u64::min);
                if all >= next_of(&next, s.node, s.incarnation) {
                    crate::group::set_next(&mut next, s.node, s.incarnation, all + 1);
                }
            }
        }
        let proposal = Proposal {
            view: View {
                group: gid,
                id: ViewId::first_of(epoch),
                members: new_members,
                protocol,
            },
            cut,
            old_members: members,
            next,
            incarnations: new_incs,
        };
        self.send_accepts(gid, proposal);
    }

    fn send_accepts(&mut self, gid: GroupId, proposal: Proposal) {
        let Some(p) = self.proposers.get_mut(&gid) else {
            return;
        };
        p.stage = Stage::Accept;
        p.started = self.now;
        p.accepts.clear();
        p.proposal = Some(proposal.clone());
        let (epoch, ballot) = (p.epoch, p.ballot);
        for n in self.cfg.nodes.clone() {
            self.ctx.send(
                n,
                Body::Accept {
                    group: gid,
                    epoch,
                    ballot,
                    proposal: Box::new(proposal.clone()),
                },
            );
        }
    }

    fn on_prepare(&mut self, from: NodeId, gid: GroupId, epoch: u32, ballot: Ballot) {
        let now = self.now;
        let acc = self.acceptors.entry(gid).or_default();
        if let Some((de, dp)) = &acc.decided
            && *de >= epoch
        {
            let body = Body::Decided {
                group: gid,
                epoch: *de,
                proposal: Box::new(dp.clone()),
            };
            self.ctx.send(from, body);
            return;
        }
        if ballot == Ballot::default() {
            return;
        }
        acc.prepared_hi = acc.prepared_hi.max(epoch);
        // A lease granted for an earlier epoch holds the promise back until
        // it ran out (the holder's own flush excepted: it stopped ordering
        // when it started it). The proposer re-sends its Prepare every tick.
        let held = acc.lease.is_some_and(|(e, holder, until)| {
            e < epoch && now < until && ballot.leader != holder.0
        });
        if epoch > 1 && (held || now < self.promise_after) {
            self.ctx.stats.lease_held_prepares += 1;
            return;
        }
        let slot = acc.slots.entry(epoch).or_insert((Ballot::default(), None));
        if ballot < slot.0 {
            let promised = slot.0;
            self.ctx.send(
                from,
                Body::Reject {
                    group: gid,
                    epoch,
                    promised,
                },
            );
            return;
        }
        let changed = ballot > slot.0;
        slot.0 = ballot;
        let accepted = slot.1.clone();
        if changed {
            // The promise below must survive a crash of this node.
            self.persist();
        }
        let mut state = None;
        if let Some(g) = self.groups.get_mut(&gid)
            && g.is_member()
            && g.epoch() + 1 == epoch
        {
            // Freeze: deliver nothing beyond what we report, order nothing.
            g.advance_ready();
            g.cap = g.cap.min(g.ready);
            if g.frozen_since.is_none() {
                g.frozen_since = Some(now);
            }
            if let Some(seq) = g.seq.as_mut() {
                // Entries already ordered are in our own slots (and reported
                // through `ready`); stop ordering new ones.
                let _ = seq;
            }
            g.publish(&mut self.ctx);
            state = Some(MemberState {
                view: g.view.clone(),
                ready: g.ready,
                delivered: g.delivered_hi.clone(),
            });
        }
        self.ctx.send(
            from,
            Body::Promise {
                group: gid,
                epoch,
                ballot,
                accepted: accepted.map(Box::new),
                state: state.map(Box::new),
            },
        );
    }

    fn on_accept(
        &mut self,
        from: NodeId,
        gid: GroupId,
        epoch: u32,
        ballot: Ballot,
        proposal: Proposal,
    ) {
        let me = self.ctx.me;
        let now = self.now;
        let acc = self.acceptors.entry(gid).or_default();
        if let Some((de, dp)) = &acc.decided
            && *de >= epoch
        {
            let body = Body::Decided {
                group: gid,
                epoch: *de,
                proposal: Box::new(dp.clone()),
            };
            self.ctx.send(from, body);
            return;
        }
        let slot = acc.slots.entry(epoch).or_insert((Ballot::default(), None));
        if ballot < slot.0 {
            let promised = slot.0;
            self.ctx.send(
                from,
                Body::Reject {
                    group: gid,
                    epoch,
                    promised,
                },
            );
            return;
        }
        let changed = ballot > slot.0 || slot.1.as_ref().is_none_or(|(b, _)| *b != ballot);
        slot.0 = ballot;
        slot.1 = Some((ballot, proposal.clone()));
        if changed {
            // The Accepted below (now or once the data is in) counts towards
            // a decision: a restart must not forget it.
            self.persist();
        }
        if let Some(g) = self.groups.get_mut(&gid)
            && g.is_member()
            && g.epoch() + 1 == epoch
        {
            g.cap = g.cap.min(proposal.cut.max(g.delivered));
            if g.frozen_since.is_none() {
                g.frozen_since = Some(now);
            }
            if proposal.view.contains(me) && g.ready < proposal.cut {
                g.pending_accept = Some((epoch, ballot, from, proposal.cut));
                let (f, e) = (g.ready + 1, g.epoch());
                self.ctx.stats.nacks_sent += 1;
                self.ctx.send(
                    from,
                    Body::Nack {
                        group: gid,
                        epoch: e,
                        positions: Some((f, proposal.cut)),
                        sender_seqs: None,
                    },
                );
                return;
            }
        }
        self.ctx.send(
            from,
            Body::Accepted {
                group: gid,
                epoch,
                ballot,
            },
        );
    }

    fn on_accepted(&mut self, from: NodeId, gid: GroupId, epoch: u32, ballot: Ballot) {
        let Some(p) = self.proposers.get_mut(&gid) else {
            return;
        };
        if p.epoch != epoch || p.ballot != ballot || p.stage != Stage::Accept {
            return;
        }
        if !p.accepts.contains(&from) {
            p.accepts.push(from);
        }
        let Some(prop) = p.proposal.clone() else {
            return;
        };
        if p.accepts.len() < self.majority {
            return;
        }
        let accepts = p.accepts.clone();
        let p = &accepts;
        let members_ok = prop
            .view
            .members
            .iter()
            .all(|m| p.contains(m) || self.suspected(*m));
        if !members_ok {
            return;
        }
        self.proposers.remove(&gid);
        for n in self.cfg.nodes.clone() {
            self.ctx.send(
                n,
                Body::Decided {
                    group: gid,
                    epoch,
                    proposal: Box::new(prop.clone()),
                },
            );
        }
    }

    fn on_decided(&mut self, from: NodeId, gid: GroupId, epoch: u32, proposal: Proposal) {
        let me = self.ctx.me;
        let acc = self.acceptors.entry(gid).or_default();
        if acc.decided.as_ref().is_none_or(|(e, _)| *e < epoch) {
            acc.decided = Some((epoch, proposal.clone()));
            acc.slots.retain(|e, _| *e > epoch);
            self.persist();
        }
        if self.proposers.get(&gid).is_some_and(|p| p.epoch <= epoch) {
            self.proposers.remove(&gid);
        }
        let mine = proposal
            .view
            .members
            .iter()
            .zip(proposal.incarnations.iter())
            .any(|(m, i)| *m == me && *i == self.ctx.inc);
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        match g.phase {
            Phase::Joining { .. } => {
                if let Some(j) = self.joiners.get_mut(&gid) {
                    j.known = Some((epoch, proposal.clone()));
                }
                // A delayed copy of a decision we already installed (or one
                // older than a view we installed since) arriving after we saw
                // ourselves partitioned: installing it would install a view
                // again, or go back in the chain.
                if mine && proposal.view.id > g.view.id {
                    // We created (or restarted) the group.
                    self.joiners.remove(&gid);
                    g.phase = Phase::Member;
                    g.view = proposal.view.clone();
                    g.incs = proposal.incarnations.clone();
                    g.reset_order(proposal.cut, proposal.next.clone());
                    g.senders.retain(|b| b.node == me);
                    // A flush decided while we were (re)joining still lists
                    // us: install it like the other members (same reason,
                    // same stream record, its coordinator sequences).
                    let flush = !proposal.old_members.is_empty();
                    let inc = self.ctx.inc;
                    if flush {
                        g.my_ordered = next_of(&g.next, me, inc).saturating_sub(1);
                    } else {
                        // A restarted group's record of our stream may
                        // predate messages we delivered and released in an
                        // earlier life: continue from the oldest one we
                        // still hold.
                        let own_next = (delivered_of(&g.delivered_hi, me, inc) + 1)
                            .max(next_of(&g.next, me, inc))
                            .max(g.own_first(me, inc));
                        crate::group::set_next(&mut g.next, me, inc, own_next);
                        g.my_ordered = own_next - 1;
                        // Own messages below that point are never ordered
                        // here (we delivered them in the replaced history,
                        // where the primary never had them): drop them, or
                        // they fill the window for ever (seeds 35193, 62350).
                        g.release_own_below(me, inc, own_next);
                    }
                    g.my_ordered_at_check = g.my_ordered;
                    let coordinator = proposal.view.coordinator();
                    if coordinator == Some(me) {
                        g.take_over(proposal.cut);
                    }
                    self.ctx.stats.view_changes += 1;
                    self.ctx.stats.flush_installs += 1;
                    let reason = if flush {
                        Reason::Failed(
                            proposal
                                .old_members
                                .iter()
                                .copied()
                                .filter(|m| !proposal.view.members.contains(m))
                                .collect(),
                        )
                    } else {
                        Reason::Join(me)
                    };
                    let members = proposal.view.members.clone();
                    self.ctx.commands.push_back(Command::ViewChange {
                        view: proposal.view,
                        reason,
                        position: proposal.cut,
                    });
                    if flush {
                        g.resend_own(&mut self.ctx, &members, self.cfg.window);
                        if let Some(c) = coordinator
                            && c != me
                        {
                            let ready = g.ready;
                            g.ack_to(&mut self.ctx, c, gid, epoch, ready, self.now);
                        }
                    }
                    self.after_change(gid);
                }
            }
            Phase::Member => {
                if g.epoch() >= epoch {
                    return;
                }
                if g.epoch() + 1 == epoch && mine {
                    if g.ready >= proposal.cut {
                        self.install(gid, epoch, proposal);
                    } else if g.pending_install.is_none() {
                        let (f, e) = (g.ready + 1, g.epoch());
                        g.cap = g.cap.min(proposal.cut.max(g.delivered));
                        g.pending_install = Some(PendingInstall {
                            epoch,
                            proposal: proposal.clone(),
                        });
                        self.ctx.stats.nacks_sent += 1;
                        self.ctx.send(
                            from,
                            Body::Nack {
                                group: gid,
                                epoch: e,
                                positions: Some((f, proposal.cut)),
                                sender_seqs: None,
                            },
                        );
                    }
                } else {
                    // Excluded, or too far behind to catch up: start over.
                    self.go_partitioned(gid);
                }
            }
        }
    }

    /// Deliver the old epoch up to the cut, then install the new view.
    fn install(&mut self, gid: GroupId, epoch: u32, proposal: Proposal) {
        let me = self.ctx.me;
        let inc = self.ctx.inc;
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        g.pending_install = None;
        g.pending_accept = None;
        g.cap = proposal.cut;
        // Every member of the new view holds everything up to the cut.
        g.stable = g.stable.max(proposal.cut);
        if g.deliver(&mut self.ctx) {
            self.removed(gid);
            return;
        }
        let failed: Vec<NodeId> = proposal
            .old_members
            .iter()
            .copied()
            .filter(|m| !proposal.view.members.contains(m))
            .collect();
        g.view = proposal.view.clone();
        g.incs = proposal.incarnations.clone();
        g.reset_order(proposal.cut, proposal.next.clone());
        g.my_ordered = next_of(&g.next, me, inc).saturating_sub(1);
        g.my_ordered_at_check = g.my_ordered;
        g.senders
            .retain(|b| proposal.view.members.contains(&b.node) || b.node == me);
        self.ctx.stats.view_changes += 1;
        self.ctx.stats.flush_installs += 1;
        self.ctx.commands.push_back(Command::ViewChange {
            view: proposal.view.clone(),
            reason: Reason::Failed(failed),
            position: proposal.cut,
        });
        let _ = epoch;
        if g.coordinator() == Some(me) {
            g.take_over(proposal.cut);
            for (m, i) in proposal
                .view
                .members
                .iter()
                .zip(proposal.incarnations.iter())
            {
                g.order_sender(&mut self.ctx, *m, *i);
            }
        }
        // Messages of ours the old epoch did not order go again.
        let members = proposal.view.members.clone();
        g.resend_own(&mut self.ctx, &members, self.cfg.window);
        if let Some(c) = g.coordinator()
            && c != me
        {
            let ready = g.ready;
            g.ack_to(
                &mut self.ctx,
                c,
                gid,
                proposal.view.id.epoch(),
                ready,
                self.now,
            );
        }
        self.after_change(gid);
    }
}
