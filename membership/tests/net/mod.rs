//! A small deterministic in-test network for the membership scenarios and
//! the adjust-version tests: a time-ordered queue with a fixed latency of
//! one 0.1 ms step (optional jitter and loss from a fixed-seed xorshift),
//! partitions by side, one-way cuts (`deaf`), cut links, filters that keep a
//! copy of, lose or hold back chosen messages, per-node configurations
//! (version ranges, windows), crash and restart (fresh, or from the node's
//! persisted acceptor state) with incarnations, and a log per node of what
//! its Engine handed out. With [`Setup::through_wire`] every message is
//! encoded with the wire codec when sent and decoded when it arrives.
//!
//! Time advances in 0.1 ms steps; every node is ticked on each whole
//! millisecond. Messages due at one time arrive in the order they were sent.

use std::collections::BTreeMap;
use std::rc::Rc;

use concord_membership::{
    Body, Command, Config, DeliveryMode, DurableState, Engine, GroupId, Message, Multicast, NodeId,
    ProtocolVersion, Reason, Stats, Time, VersionEvent, VersionRange, View, wire,
};

/// The payload type of every Engine here.
pub type P = Rc<[u8]>;

/// A rule that picks messages: (sender, target, message).
pub type Filter = fn(NodeId, NodeId, &Body<P>) -> bool;

/// One millisecond.
pub const MS: u64 = 1_000_000;

/// One step of the network: 0.1 ms, the latency of a hop without jitter.
pub const STEP: u64 = MS / 10;

/// The configuration of `node` in a cluster of `nodes`: heartbeats every
/// 2 ms, a failure timeout of 20 ms, a window of 64, batches of 16, the
/// build's version range.
pub fn config(node: NodeId, nodes: &[NodeId], incarnation: u64) -> Config {
    let mut c = Config::new(node, nodes.to_vec());
    c.incarnation = incarnation;
    c.heartbeat_interval = 2 * MS;
    c.failure_timeout = 20 * MS;
    c.window = 64;
    c.batch = 16;
    c
}

/// What a node's Engine handed to its application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Deliver {
        view: u64,
        seq: u64,
        sender: u32,
        sender_seq: u64,
        payload: Vec<u8>,
        /// The network's time when it was delivered.
        at: u64,
    },
    View {
        view: View,
        reason: Reason,
        position: u64,
    },
    Partitioned,
    Refused {
        active: ProtocolVersion,
    },
}

/// A message on its way: as the Engine sent it, or its wire encoding.
#[derive(Debug, Clone)]
pub enum Packet {
    Msg(Message<P>),
    Wire(Vec<u8>),
}

impl Packet {
    fn into_message(self) -> Message<P> {
        match self {
            Packet::Msg(m) => m,
            Packet::Wire(bytes) => wire::decode(&bytes).unwrap().map_payload(Rc::from),
        }
    }
}

/// How a [`Net`] starts: `n` nodes, each with [`config`] (incarnation 0),
/// joining in Agreed mode, messages passed as they are.
#[derive(Debug)]
pub struct Setup {
    configs: Vec<Config>,
    mode: DeliveryMode,
    wire: bool,
}

impl Setup {
    pub fn new(n: u32) -> Setup {
        let nodes: Vec<NodeId> = (1..=n).map(NodeId).collect();
        Setup {
            configs: nodes.iter().map(|id| config(*id, &nodes, 0)).collect(),
            mode: DeliveryMode::Agreed,
            wire: false,
        }
    }

    /// The delivery mode every join asks for.
    pub fn mode(mut self, mode: DeliveryMode) -> Setup {
        self.mode = mode;
        self
    }

    /// Every node's window.
    pub fn window(mut self, window: usize) -> Setup {
        for c in &mut self.configs {
            c.window = window;
        }
        self
    }

    /// Node `i + 1` runs `ranges[i]`.
    pub fn ranges(mut self, ranges: &[VersionRange]) -> Setup {
        assert_eq!(ranges.len(), self.configs.len());
        for (c, r) in self.configs.iter_mut().zip(ranges) {
            c.protocol = *r;
        }
        self
    }

    /// Change one node's configuration.
    pub fn configure(mut self, node: u32, f: impl FnOnce(&mut Config)) -> Setup {
        f(&mut self.configs[(node - 1) as usize]);
        self
    }

    /// Encode every message with the wire codec when it is sent and decode
    /// it when it arrives.
    pub fn through_wire(mut self) -> Setup {
        self.wire = true;
        self
    }

    pub fn start(self) -> Net {
        let n = self.configs.len();
        let engines = self
            .configs
            .iter()
            .map(|c| Some(Engine::new(c.clone(), Time(0)).unwrap()))
            .collect();
        Net {
            now: 0,
            configs: self.configs,
            engines,
            incs: vec![0; n],
            disks: vec![None; n],
            queue: BTreeMap::new(),
            counter: 0,
            latency: STEP,
            side: vec![0; n],
            jitter: 0,
            loss_every: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            logs: vec![Vec::new(); n],
            events: vec![Vec::new(); n],
            mode: self.mode,
            wire: self.wire,
            deaf: vec![false; n],
            cut: Vec::new(),
            keep: None,
            kept: Vec::new(),
            lose: None,
            hold: None,
            held: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct Net {
    pub now: u64,
    /// Each node's configuration, as its next (re)start uses it.
    configs: Vec<Config>,
    pub engines: Vec<Option<Engine<P>>>,
    /// Each node's current incarnation.
    pub incs: Vec<u64>,
    /// The last acceptor state each node persisted.
    pub disks: Vec<Option<DurableState>>,
    queue: BTreeMap<(u64, u64), (NodeId, NodeId, Packet)>,
    counter: u64,
    latency: u64,
    /// side[i]: nodes on different sides cannot talk.
    pub side: Vec<u8>,
    /// Deliver later messages first within this window (reordering).
    pub jitter: u64,
    /// Lose a message when the xorshift draw is a multiple of this (0: never).
    pub loss_every: u64,
    rng: u64,
    pub logs: Vec<Vec<Ev>>,
    /// The adjust-version outcomes each node reported.
    pub events: Vec<Vec<VersionEvent>>,
    mode: DeliveryMode,
    wire: bool,
    /// Messages to these nodes are dropped (one-way cut).
    pub deaf: Vec<bool>,
    /// Links cut in both directions, on top of `side`.
    pub cut: Vec<(u32, u32)>,
    /// Copies of the messages sent that match `keep`.
    pub keep: Option<Filter>,
    pub kept: Vec<(NodeId, NodeId, Message<P>)>,
    /// Messages sent that match `lose` are lost.
    pub lose: Option<Filter>,
    /// Messages sent that match `hold` wait in `held` until
    /// [`Net::release_held`].
    pub hold: Option<Filter>,
    held: Vec<(NodeId, NodeId, Packet)>,
}

impl Net {
    pub fn engine(&mut self, node: u32) -> &mut Engine<P> {
        self.engines[(node - 1) as usize].as_mut().unwrap()
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Carry out every command node `i + 1`'s Engine has for the network.
    pub fn drain(&mut self, i: usize) {
        loop {
            let Some(e) = self.engines[i].as_mut() else {
                return;
            };
            while let Some(ev) = e.poll_version_event() {
                self.events[i].push(ev);
            }
            let Some(cmd) = e.poll_command() else { return };
            let from = NodeId(i as u32 + 1);
            match cmd {
                Command::Send { to, msg } => self.transmit(from, to, msg),
                Command::Deliver(d) => self.logs[i].push(Ev::Deliver {
                    view: d.view.0,
                    seq: d.seq,
                    sender: d.sender.0,
                    sender_seq: d.sender_seq,
                    payload: d.payload.to_vec(),
                    at: self.now,
                }),
                Command::ViewChange {
                    view,
                    reason,
                    position,
                } => self.logs[i].push(Ev::View {
                    view,
                    reason,
                    position,
                }),
                Command::Partitioned { .. } => self.logs[i].push(Ev::Partitioned),
                Command::JoinRefused { active, .. } => self.logs[i].push(Ev::Refused { active }),
                Command::Persist(state) => self.disks[i] = Some(state),
                Command::WakeAt(_) => {}
            }
        }
    }

    /// Put one sent message on its way: a copy kept, the jitter and loss
    /// draws (in this order, each only when enabled), the loss rule, the
    /// encoding, the hold rule.
    fn transmit(&mut self, from: NodeId, to: NodeId, msg: Message<P>) {
        if self.keep.is_some_and(|keep| keep(from, to, &msg.body)) {
            self.kept.push((from, to, msg.clone()));
        }
        let extra = if self.jitter > 0 {
            self.rand() % self.jitter
        } else {
            0
        };
        if self.loss_every > 0 && self.rand().is_multiple_of(self.loss_every) {
            return;
        }
        if self.lose.is_some_and(|lose| lose(from, to, &msg.body)) {
            return;
        }
        let held = self.hold.is_some_and(|hold| hold(from, to, &msg.body));
        let packet = if self.wire {
            let mut bytes = Vec::new();
            wire::encode(&msg, &mut bytes).unwrap();
            Packet::Wire(bytes)
        } else {
            Packet::Msg(msg)
        };
        if held {
            self.held.push((from, to, packet));
            return;
        }
        self.enqueue(self.now + self.latency + extra, from, to, packet);
    }

    fn enqueue(&mut self, at: u64, from: NodeId, to: NodeId, packet: Packet) {
        self.counter += 1;
        self.queue.insert((at, self.counter), (from, to, packet));
    }

    /// Send what `hold` held back, one step from now, in the order it was
    /// sent; hold nothing more.
    pub fn release_held(&mut self) {
        self.hold = None;
        for (from, to, packet) in std::mem::take(&mut self.held) {
            self.enqueue(self.now + self.latency, from, to, packet);
        }
    }

    /// Advance time by `ms` milliseconds in 0.1 ms steps.
    pub fn run(&mut self, ms: u64) {
        let end = self.now + ms * MS;
        while self.now < end {
            self.step();
        }
    }

    /// Advance time by 0.1 ms until `done` holds (at most `ms` milliseconds);
    /// whether it holds.
    pub fn run_until(&mut self, ms: u64, done: impl Fn(&mut Net) -> bool) -> bool {
        let end = self.now + ms * MS;
        while self.now < end {
            self.step();
            if done(self) {
                return true;
            }
        }
        false
    }

    /// One 0.1 ms step: deliver what is due, tick every node on each ms.
    pub fn step(&mut self) {
        self.now += STEP;
        while let Some((&(t, c), _)) = self.queue.iter().next() {
            if t > self.now {
                break;
            }
            let (from, to, packet) = self.queue.remove(&(t, c)).unwrap();
            let (f, d) = ((from.0 - 1) as usize, (to.0 - 1) as usize);
            let link_cut = self
                .cut
                .iter()
                .any(|&(a, b)| (a, b) == (from.0, to.0) || (b, a) == (from.0, to.0));
            if self.side[f] != self.side[d] || self.deaf[d] || link_cut {
                continue;
            }
            let msg = packet.into_message();
            if let Some(e) = self.engines[d].as_mut() {
                e.handle_message(Time(self.now), from, msg);
            }
            self.drain(d);
        }
        if self.now.is_multiple_of(MS) {
            for i in 0..self.engines.len() {
                if let Some(e) = self.engines[i].as_mut() {
                    e.tick(Time(self.now));
                }
                self.drain(i);
            }
        }
    }

    pub fn join(&mut self, node: u32, group: GroupId) {
        let now = Time(self.now);
        let mode = self.mode;
        self.engine(node).join(now, group, mode).unwrap();
        self.drain((node - 1) as usize);
    }

    pub fn send(&mut self, node: u32, group: GroupId, bytes: &[u8]) -> Multicast<P> {
        let now = Time(self.now);
        let r = self
            .engine(node)
            .multicast(now, group, bytes.into())
            .unwrap();
        self.drain((node - 1) as usize);
        r
    }

    pub fn crash(&mut self, node: u32) {
        self.engines[(node - 1) as usize] = None;
    }

    /// Start `node` again, in place of whatever runs there, with its next
    /// incarnation and a fresh Engine: it remembers nothing.
    pub fn restart(&mut self, node: u32) {
        self.start_again(node, false);
    }

    /// Start `node` again as a new release: its next incarnation, range
    /// `range` from now on, and the acceptor state it persisted last.
    pub fn recover(&mut self, node: u32, range: VersionRange) {
        self.configs[(node - 1) as usize].protocol = range;
        self.start_again(node, true);
    }

    fn start_again(&mut self, node: u32, from_disk: bool) {
        let i = (node - 1) as usize;
        self.incs[i] += 1;
        let mut cfg = self.configs[i].clone();
        cfg.incarnation = self.incs[i];
        let now = Time(self.now);
        let e = match self.disks[i].clone() {
            Some(d) if from_disk => Engine::recover(cfg, now, d).unwrap(),
            _ => Engine::new(cfg, now).unwrap(),
        };
        self.engines[i] = Some(e);
        self.drain(i);
    }

    pub fn deliveries(&self, node: u32) -> Vec<(u64, Vec<u8>)> {
        self.logs[(node - 1) as usize]
            .iter()
            .filter_map(|e| match e {
                Ev::Deliver { seq, payload, .. } => Some((*seq, payload.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn views(&self, node: u32) -> Vec<(View, Reason, u64)> {
        self.logs[(node - 1) as usize]
            .iter()
            .filter_map(|e| match e {
                Ev::View {
                    view,
                    reason,
                    position,
                } => Some((view.clone(), reason.clone(), *position)),
                _ => None,
            })
            .collect()
    }

    pub fn stats(&mut self, node: u32) -> Stats {
        self.engine(node).stats().clone()
    }

    /// Bring up a group with every node in `nodes`, joining one after another.
    pub fn form(&mut self, group: GroupId, nodes: &[u32]) {
        for n in nodes {
            self.join(*n, group);
            self.run(30);
        }
        for n in nodes {
            assert!(
                self.engine(*n).is_member(group),
                "node {n} did not become a member"
            );
        }
    }
}
