//! Named scenarios, each showing one property of the Engine, driven by a
//! small deterministic in-test network (fixed latency, optional loss,
//! reordering and partitions; no randomness beyond a fixed-seed xorshift).

use std::collections::BTreeMap;
use std::rc::Rc;

use concord_membership::{
    Command, Config, DeliveryMode, Engine, GroupId, Message, Multicast, NodeId, Reason, Stats,
    Time, View,
};

type P = Rc<[u8]>;

const MS: u64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Deliver {
        view: u64,
        seq: u64,
        sender: u32,
        sender_seq: u64,
        payload: Vec<u8>,
    },
    View {
        view: View,
        reason: Reason,
        position: u64,
    },
    Partitioned,
}

struct Net {
    now: u64,
    engines: Vec<Option<Engine<P>>>,
    incarnation: Vec<u64>,
    queue: BTreeMap<(u64, u64), (NodeId, NodeId, Message<P>)>,
    counter: u64,
    latency: u64,
    /// side[i]: nodes on different sides cannot talk.
    side: Vec<u8>,
    /// Deliver later messages first within this window (reordering).
    jitter: u64,
    loss_every: u64,
    rng: u64,
    logs: Vec<Vec<Ev>>,
    mode: DeliveryMode,
}

impl Net {
    fn new(n: u32, mode: DeliveryMode) -> Net {
        let nodes: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let engines = nodes
            .iter()
            .map(|id| Some(Engine::new(config(*id, &nodes, 0), Time(0)).unwrap()))
            .collect();
        Net {
            now: 0,
            engines,
            incarnation: vec![0; n as usize],
            queue: BTreeMap::new(),
            counter: 0,
            latency: MS / 10,
            side: vec![0; n as usize],
            jitter: 0,
            loss_every: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            logs: vec![Vec::new(); n as usize],
            mode,
        }
    }

    fn engine(&mut self, node: u32) -> &mut Engine<P> {
        self.engines[(node - 1) as usize].as_mut().unwrap()
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn drain(&mut self, i: usize) {
        loop {
            let Some(e) = self.engines[i].as_mut() else {
                return;
            };
            let Some(cmd) = e.poll_command() else { return };
            let from = NodeId(i as u32 + 1);
            match cmd {
                Command::Send { to, msg } => {
                    let extra = if self.jitter > 0 {
                        self.rand() % self.jitter
                    } else {
                        0
                    };
                    if self.loss_every > 0 && self.rand() % self.loss_every == 0 {
                        continue;
                    }
                    self.counter += 1;
                    self.queue.insert(
                        (self.now + self.latency + extra, self.counter),
                        (from, to, msg),
                    );
                }
                Command::Deliver(d) => self.logs[i].push(Ev::Deliver {
                    view: d.view.0,
                    seq: d.seq,
                    sender: d.sender.0,
                    sender_seq: d.sender_seq,
                    payload: d.payload.to_vec(),
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
                Command::JoinRefused { .. } | Command::WakeAt(_) => {}
            }
        }
    }

    /// Advance time by `ms` milliseconds in 0.1 ms steps.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms * MS;
        while self.now < end {
            self.now += MS / 10;
            while let Some((&(t, c), _)) = self.queue.iter().next() {
                if t > self.now {
                    break;
                }
                let (from, to, msg) = self.queue.remove(&(t, c)).unwrap();
                let (f, d) = ((from.0 - 1) as usize, (to.0 - 1) as usize);
                if self.side[f] != self.side[d] {
                    continue;
                }
                if let Some(e) = self.engines[d].as_mut() {
                    e.handle_message(Time(self.now), from, msg);
                }
                self.drain(d);
            }
            if self.now % MS == 0 {
                for i in 0..self.engines.len() {
                    if let Some(e) = self.engines[i].as_mut() {
                        e.tick(Time(self.now));
                    }
                    self.drain(i);
                }
            }
        }
    }

    fn join(&mut self, node: u32, group: GroupId) {
        let now = Time(self.now);
        let mode = self.mode;
        self.engine(node).join(now, group, mode).unwrap();
        self.drain((node - 1) as usize);
    }

    fn send(&mut self, node: u32, group: GroupId, bytes: &[u8]) -> Multicast<P> {
        let now = Time(self.now);
        let r = self
            .engine(node)
            .multicast(now, group, bytes.into())
            .unwrap();
        self.drain((node - 1) as usize);
        r
    }

    fn crash(&mut self, node: u32) {
        self.engines[(node - 1) as usize] = None;
    }

    fn deliveries(&self, node: u32) -> Vec<(u64, Vec<u8>)> {
        self.logs[(node - 1) as usize]
            .iter()
            .filter_map(|e| match e {
                Ev::Deliver { seq, payload, .. } => Some((*seq, payload.clone())),
                _ => None,
            })
            .collect()
    }

    fn views(&self, node: u32) -> Vec<(View, Reason, u64)> {
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

    fn stats(&mut self, node: u32) -> Stats {
        self.engine(node).stats().clone()
    }

    /// Bring up a group with every node in `nodes`, joining one after another.
    fn form(&mut self, group: GroupId, nodes: &[u32]) {
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

fn config(node: NodeId, nodes: &[NodeId], incarnation: u64) -> Config {
    let mut c = Config::new(node, nodes.to_vec());
    c.incarnation = incarnation;
    c.heartbeat_interval = 2 * MS;
    c.failure_timeout = 20 * MS;
    c.window = 64;
    c.batch = 16;
    c
}

fn group() -> GroupId {
    GroupId::from_name("scenario")
}

#[test]
fn three_members_deliver_the_same_sequence() {
    let mut net = Net::new(3, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1, 2, 3]);
    for i in 0..30u8 {
        net.send(1 + u32::from(i % 3), g, &[i]);
    }
    net.run(50);
    let d1 = net.deliveries(1);
    assert_eq!(d1.len(), 30);
    assert_eq!(d1, net.deliveries(2));
    assert_eq!(d1, net.deliveries(3));
}
