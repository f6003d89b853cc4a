//! Named scenarios, each showing one property of the Engine, driven by a
//! small deterministic in-test network (fixed latency, optional loss,
//! reordering and partitions; no randomness beyond a fixed-seed xorshift).

use std::collections::BTreeMap;
use std::rc::Rc;

use concord_membership::{
    Ballot, Body, Command, Config, DeliveryMode, DurableState, Engine, GroupId, Message, Multicast,
    NodeId, Proposal, ProtocolVersion, Reason, Stats, Time, View, ViewId,
};

type P = Rc<[u8]>;
/// A rule for lost messages: (sender, target, message).
type LoseFn = fn(NodeId, NodeId, &Body<P>) -> bool;

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
    /// Messages to these nodes are dropped (one-way cut).
    deaf: Vec<bool>,
    /// Links cut in both directions, on top of `side`.
    cut: Vec<(u32, u32)>,
    /// Copies of the messages sent that match `keep` (sender, target, message).
    keep: Option<fn(NodeId, &Body<P>) -> bool>,
    kept: Vec<(NodeId, NodeId, Message<P>)>,
    /// Messages sent that match `lose` (sender, target, message) are lost.
    lose: Option<LoseFn>,
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
            queue: BTreeMap::new(),
            counter: 0,
            latency: MS / 10,
            side: vec![0; n as usize],
            jitter: 0,
            loss_every: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            logs: vec![Vec::new(); n as usize],
            mode,
            deaf: vec![false; n as usize],
            cut: Vec::new(),
            keep: None,
            kept: Vec::new(),
            lose: None,
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
                    if self.keep.is_some_and(|keep| keep(to, &msg.body)) {
                        self.kept.push((from, to, msg.clone()));
                    }
                    let extra = if self.jitter > 0 {
                        self.rand() % self.jitter
                    } else {
                        0
                    };
                    if self.loss_every > 0 && self.rand().is_multiple_of(self.loss_every) {
                        continue;
                    }
                    if self.lose.is_some_and(|lose| lose(from, to, &msg.body)) {
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
                // No scenario here restarts a node: the acceptor-amnesia test
                // below keeps its own "disk".
                Command::JoinRefused { .. } | Command::WakeAt(_) | Command::Persist(_) => {}
            }
        }
    }

    /// Advance time by `ms` milliseconds in 0.1 ms steps.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms * MS;
        while self.now < end {
            self.step();
        }
    }

    /// Advance time by 0.1 ms until `done` holds (at most `ms` milliseconds);
    /// whether it holds.
    fn run_until(&mut self, ms: u64, done: impl Fn(&mut Net) -> bool) -> bool {
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
    fn step(&mut self) {
        self.now += MS / 10;
        while let Some((&(t, c), _)) = self.queue.iter().next() {
            if t > self.now {
                break;
            }
            let (from, to, msg) = self.queue.remove(&(t, c)).unwrap();
            let (f, d) = ((from.0 - 1) as usize, (to.0 - 1) as usize);
            let link_cut = self
                .cut
                .iter()
                .any(|&(a, b)| (a, b) == (from.0, to.0) || (b, a) == (from.0, to.0));
            if self.side[f] != self.side[d] || self.deaf[d] || link_cut {
                continue;
            }
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

fn position_of(views: &[(View, Reason, u64)], reason: &Reason) -> Option<u64> {
    views
        .iter()
        .find(|(_, r, _)| r == reason)
        .map(|(_, _, p)| *p)
}

fn assert_no_flush_no_timeout(net: &mut Net, nodes: &[u32]) {
    for n in nodes {
        let s = net.stats(*n);
        assert_eq!(s.flushes, 0, "node {n} ran a flush: {s:?}");
        assert_eq!(s.timeouts_fired, 0, "node {n} fired a timeout: {s:?}");
    }
}

/// Same deliveries with the same positions.
fn assert_same(net: &Net, a: u32, b: u32) {
    assert_eq!(
        net.deliveries(a),
        net.deliveries(b),
        "nodes {a} and {b} differ"
    );
}

#[test]
fn graceful_leave_causes_no_flush_and_no_timeout() {
    let mut net = Net::new(3, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1, 2, 3]);
    for i in 0..10u8 {
        net.send(1 + u32::from(i % 3), g, &[i]);
    }
    let now = Time(net.now);
    net.engine(3).leave(now, g).unwrap();
    net.drain(2);
    for i in 10..20u8 {
        net.send(1 + u32::from(i % 2), g, &[i]);
    }
    net.run(50);
    assert!(!net.engine(3).is_member(g));
    assert_eq!(
        net.engine(1).view(g).unwrap().members,
        vec![NodeId(1), NodeId(2)]
    );
    let leave = Reason::Leave(NodeId(3));
    let p1 = position_of(&net.views(1), &leave).expect("node 1 saw the leave");
    assert_eq!(Some(p1), position_of(&net.views(2), &leave));
    assert_eq!(Some(p1), position_of(&net.views(3), &leave));
    // Node 3 delivered exactly the prefix before its Leave; 1 and 2 all 20.
    assert_same(&net, 1, 2);
    assert_eq!(net.deliveries(1).len(), 20);
    let before: Vec<_> = net
        .deliveries(1)
        .into_iter()
        .filter(|(s, _)| *s < p1)
        .collect();
    assert_eq!(net.deliveries(3), before);
    assert_no_flush_no_timeout(&mut net, &[1, 2, 3]);
}

#[test]
fn join_causes_no_flush_and_no_timeout() {
    let mut net = Net::new(3, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1, 2]);
    for i in 0..10u8 {
        net.send(1 + u32::from(i % 2), g, &[i]);
    }
    net.join(3, g);
    for i in 10..20u8 {
        net.send(1 + u32::from(i % 2), g, &[i]);
        net.run(1);
    }
    net.run(50);
    for i in 20..30u8 {
        net.send(1 + u32::from(i % 3), g, &[i]);
    }
    net.run(50);
    let join = Reason::Join(NodeId(3));
    let p = position_of(&net.views(1), &join).expect("node 1 saw the join");
    assert_eq!(Some(p), position_of(&net.views(2), &join));
    assert_eq!(Some(p), position_of(&net.views(3), &join));
    assert_same(&net, 1, 2);
    assert_eq!(net.deliveries(1).len(), 30);
    // The joiner delivers exactly what was ordered after its Join.
    let after: Vec<_> = net
        .deliveries(1)
        .into_iter()
        .filter(|(s, _)| *s > p)
        .collect();
    assert_eq!(net.deliveries(3), after);
    assert!(!after.is_empty());
    assert_no_flush_no_timeout(&mut net, &[1, 2, 3]);
}

#[test]
fn coordinator_crash_is_survived() {
    let mut net = Net::new(3, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1, 2, 3]);
    assert_eq!(
        net.engine(2).view(g).unwrap().coordinator(),
        Some(NodeId(1))
    );
    for i in 0..10u8 {
        net.send(1 + u32::from(i % 3), g, &[i]);
    }
    net.run(5);
    net.crash(1);
    for i in 10..20u8 {
        net.send(2 + u32::from(i % 2), g, &[i]);
    }
    net.run(300);
    let failed = Reason::Failed(vec![NodeId(1)]);
    let p2 = position_of(&net.views(2), &failed).expect("node 2 installed a view without 1");
    assert_eq!(Some(p2), position_of(&net.views(3), &failed));
    let view = net.engine(2).view(g).unwrap().clone();
    assert_eq!(view.members, vec![NodeId(2), NodeId(3)]);
    assert_eq!(view.coordinator(), Some(NodeId(2)));
    assert_same(&net, 2, 3);
    // Everything the survivors multicast is delivered, and the group goes on.
    let payloads: Vec<Vec<u8>> = net.deliveries(2).into_iter().map(|(_, p)| p).collect();
    for i in 10..20u8 {
        assert!(payloads.contains(&vec![i]), "message {i} lost");
    }
    net.send(3, g, b"after");
    net.run(20);
    assert_same(&net, 2, 3);
    assert_eq!(net.deliveries(3).last().unwrap().1, b"after".to_vec());
    assert!(net.stats(2).flushes >= 1);
}

#[test]
fn leaving_coordinator_hands_over_sequencer() {
    let mut net = Net::new(3, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1, 2, 3]);
    for i in 0..10u8 {
        net.send(1 + u32::from(i % 3), g, &[i]);
    }
    let now = Time(net.now);
    net.engine(1).leave(now, g).unwrap();
    net.drain(0);
    for i in 10..30u8 {
        net.send(2 + u32::from(i % 2), g, &[i]);
        net.run(1);
    }
    net.run(50);
    let view = net.engine(2).view(g).unwrap().clone();
    assert_eq!(view.members, vec![NodeId(2), NodeId(3)]);
    assert_eq!(view.coordinator(), Some(NodeId(2)));
    assert_same(&net, 2, 3);
    assert_eq!(net.deliveries(2).len(), 30);
    let leave = Reason::Leave(NodeId(1));
    let p = position_of(&net.views(2), &leave).unwrap();
    assert_eq!(Some(p), position_of(&net.views(1), &leave));
    assert_no_flush_no_timeout(&mut net, &[1, 2, 3]);
}

#[test]
fn minority_partition_stops_delivering_and_reports_it() {
    let mut net = Net::new(3, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1, 2, 3]);
    net.send(1, g, b"before");
    net.run(10);
    net.side = vec![0, 0, 1];
    net.run(5);
    let before_3 = net.deliveries(3).len();
    for i in 0..10u8 {
        net.send(1 + u32::from(i % 2), g, &[i]);
    }
    net.run(300);
    assert!(
        net.logs[2].contains(&Ev::Partitioned),
        "node 3 did not report"
    );
    assert!(!net.engine(3).is_member(g));
    let now = Time(net.now);
    assert!(matches!(
        net.engine(3).multicast(now, g, b"x".as_slice().into()),
        Err(concord_membership::MulticastError::Partitioned { .. })
    ));
    // Nothing multicast in the majority after the cut reached node 3.
    assert_eq!(net.deliveries(3).len(), before_3);
    let failed = Reason::Failed(vec![NodeId(3)]);
    assert!(position_of(&net.views(1), &failed).is_some());
    assert_eq!(net.deliveries(1).len(), 11);
    assert_same(&net, 1, 2);
}

#[test]
fn heal_then_minority_rejoins_primary() {
    let mut net = Net::new(3, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1, 2, 3]);
    net.side = vec![0, 0, 1];
    net.run(200);
    assert!(!net.engine(3).is_member(g));
    net.send(1, g, b"during");
    net.run(10);
    net.side = vec![0, 0, 0];
    net.run(300);
    assert!(net.engine(3).is_member(g), "node 3 did not rejoin");
    let p = position_of(&net.views(1), &Reason::Merged).expect("primary ordered the merge");
    assert_eq!(Some(p), position_of(&net.views(3), &Reason::Merged));
    net.send(3, g, b"back");
    net.run(20);
    let last = |n: u32| net.deliveries(n).last().cloned();
    assert_eq!(last(1), last(3));
    assert_eq!(last(2), last(3));
    assert_eq!(last(3).unwrap().1, b"back".to_vec());
    // Nothing from the primary's partition period is delivered at node 3.
    assert!(!net.deliveries(3).iter().any(|(_, p)| p == b"during"));
}

#[test]
fn back_pressure_returns_payload_when_window_full() {
    let mut net = Net::new(3, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1, 2, 3]);
    // No time passes: nothing becomes stable, the window (64) fills.
    for i in 0..64u32 {
        assert!(matches!(
            net.send(2, g, &i.to_le_bytes()),
            Multicast::Sent { .. }
        ));
    }
    let now = Time(net.now);
    match net
        .engine(2)
        .multicast(now, g, b"overflow".as_slice().into())
        .unwrap()
    {
        Multicast::BackPressured(p) => assert_eq!(&*p, b"overflow"),
        other => panic!("expected BackPressured, got {other:?}"),
    }
    assert_eq!(net.stats(2).back_pressured, 1);
    net.run(30);
    assert!(matches!(net.send(2, g, b"later"), Multicast::Sent { .. }));
    net.run(30);
    assert_eq!(net.deliveries(1).len(), 65);
    assert_same(&net, 1, 3);
}

#[test]
fn safe_delivery_waits_for_every_member() {
    for mode in [DeliveryMode::Agreed, DeliveryMode::Safe] {
        let mut net = Net::new(3, mode);
        let g = group();
        net.form(g, &[1, 2, 3]);
        net.deaf[2] = true;
        net.send(1, g, b"m");
        net.run(5);
        let got = net.deliveries(1).len();
        match mode {
            // Agreed: the order is known, so 1 delivers without 3.
            DeliveryMode::Agreed => assert_eq!(got, 1),
            // Safe: node 3 does not hold it, so nobody delivers yet.
            DeliveryMode::Safe => {
                assert_eq!(got, 0);
                assert_eq!(net.deliveries(2).len(), 0);
            }
        }
        net.deaf[2] = false;
        net.run(30);
        for n in 1..=3 {
            assert_eq!(net.deliveries(n).len(), 1, "node {n} in {mode:?}");
        }
        assert_eq!(net.stats(1).flushes, 0);
    }
}

#[test]
fn fifo_per_sender_under_reordering() {
    let mut net = Net::new(3, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1, 2, 3]);
    net.jitter = 3 * MS;
    net.loss_every = 10;
    for i in 0..60u32 {
        let sender = 1 + i % 3;
        loop {
            match net.send(sender, g, &[sender as u8, (i / 3) as u8]) {
                Multicast::Sent { .. } => break,
                Multicast::BackPressured(_) => net.run(1),
            }
        }
        net.run(1);
    }
    net.loss_every = 0;
    net.run(400);
    for n in 1..=3 {
        let d = net.deliveries(n);
        assert_eq!(d.len(), 60, "node {n} delivered {}", d.len());
        for s in 1..=3u8 {
            let from_s: Vec<u8> = d
                .iter()
                .filter(|(_, p)| p[0] == s)
                .map(|(_, p)| p[1])
                .collect();
            assert_eq!(
                from_s,
                (0..20).collect::<Vec<u8>>(),
                "FIFO of sender {s} at node {n}"
            );
        }
    }
    assert_same(&net, 1, 2);
    assert_same(&net, 1, 3);
}

/// Runs `engine` dry: the last persisted state (the "disk") and the messages
/// it sent, in order, with a check that every Promise/Accepted was preceded
/// by a Persist that already covers it.
fn drain_with_disk(
    engine: &mut Engine<P>,
    disk: &mut Option<DurableState>,
) -> Vec<(NodeId, Body<P>)> {
    let mut sent = Vec::new();
    while let Some(cmd) = engine.poll_command() {
        match cmd {
            Command::Persist(s) => *disk = Some(s),
            Command::Send { to, msg } => {
                if let Body::Promise { epoch, ballot, .. } | Body::Accepted { epoch, ballot, .. } =
                    &msg.body
                {
                    let d = disk.as_ref().expect("a vote went out before any Persist");
                    let inst = d.groups[0]
                        .instances
                        .iter()
                        .find(|i| i.epoch == *epoch)
                        .expect("the vote's instance is on disk");
                    assert!(
                        inst.promised >= *ballot,
                        "vote sent before it was persisted"
                    );
                }
                sent.push((to, msg.body));
            }
            _ => {}
        }
    }
    sent
}

/// Paxos acceptors must not forget: a node that promised ballot b, or
/// accepted a value, and then crashed and restarted (recovered from its
/// persisted state) refuses lower ballots and reports the accepted value to
/// the next proposer. Without this two values could be decided for one epoch
/// (sim seed 122: two different creations of one group).
#[test]
fn restarted_acceptor_remembers_promises_and_accepted_values() {
    let nodes: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let g = group();
    let mut disk = None;
    let mut e: Engine<P> = Engine::new(config(NodeId(3), &nodes, 1), Time(0)).unwrap();
    let _ = drain_with_disk(&mut e, &mut disk);
    let b5 = Ballot {
        round: 5,
        leader: 1,
    };
    let msg = |incarnation, body| Message { incarnation, body };
    e.handle_message(
        Time(1),
        NodeId(1),
        msg(
            1,
            Body::Prepare {
                group: g,
                epoch: 1,
                ballot: b5,
            },
        ),
    );
    let out = drain_with_disk(&mut e, &mut disk);
    assert!(
        out.iter().any(|(to, b)| *to == NodeId(1)
            && matches!(b, Body::Promise { ballot, .. } if *ballot == b5))
    );
    let value = Proposal {
        view: View {
            group: g,
            id: ViewId::first_of(1),
            members: vec![NodeId(1)],
            protocol: ProtocolVersion(1),
        },
        cut: 0,
        old_members: Vec::new(),
        next: Vec::new(),
        incarnations: vec![1],
    };
    e.handle_message(
        Time(2),
        NodeId(1),
        msg(
            1,
            Body::Accept {
                group: g,
                epoch: 1,
                ballot: b5,
                proposal: Box::new(value.clone()),
            },
        ),
    );
    let out = drain_with_disk(&mut e, &mut disk);
    assert!(out.iter().any(|(_, b)| matches!(b, Body::Accepted { .. })));

    // Crash and restart from the disk.
    drop(e);
    let state = disk.clone().expect("the votes were persisted");
    assert!(
        Engine::<P>::recover(config(NodeId(3), &nodes, 1), Time(3), state.clone()).is_err(),
        "a recovering node must run a higher incarnation"
    );
    let bytes = state.encode().unwrap();
    let state = DurableState::decode(&bytes).unwrap();
    let mut e: Engine<P> = Engine::recover(config(NodeId(3), &nodes, 2), Time(3), state).unwrap();
    let _ = drain_with_disk(&mut e, &mut disk);

    // A competing proposer with a lower ballot is refused...
    let b3 = Ballot {
        round: 3,
        leader: 2,
    };
    e.handle_message(
        Time(4),
        NodeId(2),
        msg(
            1,
            Body::Prepare {
                group: g,
                epoch: 1,
                ballot: b3,
            },
        ),
    );
    let out = drain_with_disk(&mut e, &mut disk);
    assert!(
        out.iter()
            .any(|(_, b)| matches!(b, Body::Reject { promised, .. } if *promised == b5)),
        "{out:?}"
    );
    // ...and a higher one learns the value accepted before the crash.
    let b9 = Ballot {
        round: 9,
        leader: 2,
    };
    e.handle_message(
        Time(5),
        NodeId(2),
        msg(
            1,
            Body::Prepare {
                group: g,
                epoch: 1,
                ballot: b9,
            },
        ),
    );
    let out = drain_with_disk(&mut e, &mut disk);
    assert!(
        out.iter().any(|(_, b)| matches!(
            b,
            Body::Promise { accepted: Some(a), .. } if a.0 == b5 && a.1 == value
        )),
        "{out:?}"
    );
}

/// No majority anywhere (a three-way split): every member reports
/// Partitioned and, after the heal, one of them restarts the group as an
/// orphan while the others merge. The restarted epoch continues the
/// restarter's own history (no position is used twice), and every member's
/// FIFO stream resumes where it can: messages a member delivered and
/// released before the split cannot be sent again, so the sequencer orders
/// it from the first one it still holds (`JoinRequest::next_seq`) instead of
/// waiting for ever for a sequence number the group's older record names
/// (sim seeds 15, 19, 62).
#[test]
fn orphan_restart_resumes_every_members_stream() {
    let mut net = Net::new(3, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1, 2, 3]);
    for i in 0..12u8 {
        net.send(1 + u32::from(i % 3), g, &[i]);
        net.run(1);
    }
    net.run(50);
    assert_eq!(net.deliveries(1).len(), 12);
    assert_same(&net, 1, 2);
    assert_same(&net, 1, 3);
    let last_before = net.deliveries(1).last().unwrap().0;
    net.side = vec![0, 1, 2];
    net.run(200);
    for n in 1..=3 {
        assert!(net.logs[(n - 1) as usize].contains(&Ev::Partitioned));
        assert!(!net.engine(n).is_member(g));
    }
    net.side = vec![0, 0, 0];
    net.run(600);
    let view = net
        .engine(1)
        .view(g)
        .expect("node 1 is a member again")
        .clone();
    assert_eq!(view.members.len(), 3, "{view:?}");
    for n in 2..=3 {
        assert_eq!(net.engine(n).view(g), Some(&view));
    }
    // The restart continued the history: its view starts at or after the
    // last position delivered before the split.
    let restart = net
        .views(view.members[0].0)
        .into_iter()
        .find(|(v, r, _)| *r == Reason::Join(view.members[0]) && v.members.len() == 1)
        .expect("one node restarted the group");
    assert!(
        restart.2 >= last_before,
        "the restart reused positions: it starts after {} but {last_before} was delivered",
        restart.2
    );
    // Every member's stream goes on: new messages of each are delivered by all.
    for n in 1..=3u32 {
        assert!(matches!(
            net.send(n, g, &[100 + n as u8]),
            Multicast::Sent { .. }
        ));
    }
    net.run(100);
    for n in 1..=3u32 {
        let got: Vec<u8> = net
            .deliveries(n)
            .iter()
            .filter(|(_, p)| p[0] >= 100)
            .map(|(_, p)| p[0])
            .collect();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, vec![101, 102, 103], "node {n} delivered {got:?}");
    }
    assert_same_tail(&net, 3);
}

/// A sole member leaves and later joins again with the same incarnation: the
/// group restarts as an orphan from its last decided epoch, whose record of
/// the member's stream is older than the messages it delivered since. Its
/// sender sequence continues (no reuse), and the sequencer orders it from
/// there instead of waiting for a number it will never send again (sim seed
/// 62: back-pressure for ever).
#[test]
fn rejoin_after_leave_continues_the_stream_past_the_decided_record() {
    let mut net = Net::new(3, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1]);
    for i in 0..5u8 {
        net.send(1, g, &[i]);
    }
    net.run(20);
    assert_eq!(net.deliveries(1).len(), 5);
    let now = Time(net.now);
    net.engine(1).leave(now, g).unwrap();
    net.drain(0);
    net.run(20);
    assert!(!net.engine(1).is_member(g));
    net.join(1, g);
    net.run(200);
    assert!(net.engine(1).is_member(g), "node 1 did not get back in");
    assert!(matches!(
        net.send(1, g, b"again"),
        Multicast::Sent { sender_seq: 6 }
    ));
    net.run(20);
    assert_eq!(net.deliveries(1).last().unwrap().1, b"again".to_vec());
    net.join(2, g);
    net.run(50);
    assert!(net.engine(2).is_member(g));
    net.send(1, g, b"more");
    net.send(2, g, b"hello");
    net.run(50);
    for n in [1, 2] {
        let tail: Vec<Vec<u8>> = net
            .deliveries(n)
            .iter()
            .rev()
            .take(2)
            .map(|d| d.1.clone())
            .collect();
        assert!(
            tail.contains(&b"more".to_vec()) && tail.contains(&b"hello".to_vec()),
            "node {n}: {tail:?}"
        );
    }
}

/// A member multicasts while its sequencer is unreachable, is cut off, and
/// after the heal finds the group empty (the other side flushed it out and
/// then left): it restarts the group alone. Its own messages that nobody
/// ordered are ordered by its own retransmission tick, and it delivers them
/// without waiting for a peer's ack that a sole member never gets (sim seed
/// 65: back-pressure for ever).
#[test]
fn sole_restarter_orders_and_delivers_its_held_messages() {
    let mut net = Net::new(3, DeliveryMode::Safe);
    let g = group();
    net.form(g, &[2, 1]);
    net.side = vec![1, 0, 0];
    for i in 0..2u8 {
        assert!(matches!(net.send(1, g, &[i]), Multicast::Sent { .. }));
    }
    net.run(200);
    assert!(net.logs[0].contains(&Ev::Partitioned));
    assert!(net.engine(2).is_member(g));
    let now = Time(net.now);
    net.engine(2).leave(now, g).unwrap();
    net.drain(1);
    net.run(50);
    assert!(!net.engine(2).is_member(g));
    net.side = vec![0, 0, 0];
    net.run(300);
    let view = net
        .engine(1)
        .view(g)
        .expect("node 1 restarted the group")
        .clone();
    assert_eq!(view.members, vec![NodeId(1)]);
    let mine: Vec<Vec<u8>> = net.deliveries(1).into_iter().map(|d| d.1).collect();
    assert_eq!(mine, vec![vec![0], vec![1]], "node 1 delivered {mine:?}");
}

/// A member's record of a sender can be far behind the sender's stream (here
/// the group was restarted from its creation record after the only member
/// left, having multicast more than the receive ring's range). When that
/// sender joins again its stream resumes at the Join's `first_seq`; the
/// payloads below it will never be ordered, so receivers move their ring
/// there instead of refusing the sender's new messages as out of range for
/// ever (sim seeds 1399 and 346).
#[test]
fn a_stream_resumed_far_ahead_is_accepted_by_every_member() {
    let mut net = Net::new(3, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1]);
    for chunk in 0..8u8 {
        for i in 0..50u8 {
            assert!(matches!(
                net.send(1, g, &[chunk, i]),
                Multicast::Sent { .. }
            ));
        }
        net.run(2);
    }
    net.run(20);
    assert_eq!(net.deliveries(1).len(), 400);
    let now = Time(net.now);
    net.engine(1).leave(now, g).unwrap();
    net.drain(0);
    net.run(20);
    net.join(2, g);
    net.run(200);
    assert!(
        net.engine(2).is_member(g),
        "node 2 did not restart the group"
    );
    // A stale copy of one of node 1's old messages arrives late at node 2
    // (the simulator's delay spikes do this): node 2 now holds a ring for
    // node 1's stream starting where its record of it stands, at 1.
    let now = Time(net.now);
    let stale = Message {
        incarnation: 0,
        body: Body::Data {
            group: g,
            epoch: 1,
            sender: NodeId(1),
            sender_incarnation: 0,
            sender_seq: 5,
            ack: 0,
            payload: P::from(&[0u8, 4][..]),
        },
    };
    net.engine(2).handle_message(now, NodeId(1), stale);
    net.drain(1);
    net.join(1, g);
    net.run(100);
    assert!(net.engine(1).is_member(g), "node 1 did not get back in");
    assert!(matches!(
        net.send(1, g, b"resumed"),
        Multicast::Sent { sender_seq: 401 }
    ));
    net.run(100);
    for n in [1, 2] {
        assert_eq!(
            net.deliveries(n).last().map(|d| d.1.clone()),
            Some(b"resumed".to_vec()),
            "node {n}"
        );
    }
}

/// The last `k` deliveries of every node are the same (positions and payloads).
fn assert_same_tail(net: &Net, k: usize) {
    let tail = |n: u32| {
        let d = net.deliveries(n);
        d[d.len().saturating_sub(k)..].to_vec()
    };
    assert_eq!(tail(1), tail(2));
    assert_eq!(tail(1), tail(3));
}

fn partitioned_count(net: &Net, node: u32) -> usize {
    net.logs[(node - 1) as usize]
        .iter()
        .filter(|e| **e == Ev::Partitioned)
        .count()
}

/// Simulator seeds 218 and 456: a sequencer cut off alone orders its own
/// Leave. It must not install the view without itself, which the primary
/// never installs (the primary flushes it out instead): a view change waits
/// until every member holds the entry, in Agreed mode too. Cut off, it
/// reports Partitioned and, as the application asked to leave, does not
/// rejoin after the heal.
#[test]
fn a_cut_off_leaving_sequencer_installs_no_view_of_its_own() {
    let mut net = Net::new(3, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1, 2, 3]);
    for i in 0..6u8 {
        net.send(1 + u32::from(i % 3), g, &[i]);
    }
    net.run(10);
    net.side = vec![1, 0, 0];
    let now = Time(net.now);
    net.engine(1).leave(now, g).unwrap();
    net.drain(0);
    net.run(300);
    assert_eq!(
        position_of(&net.views(1), &Reason::Leave(NodeId(1))),
        None,
        "the cut-off leaver installed its Leave view: {:?}",
        net.views(1)
    );
    assert_eq!(partitioned_count(&net, 1), 1);
    assert!(!net.engine(1).is_member(g));
    let failed = Reason::Failed(vec![NodeId(1)]);
    let p2 = position_of(&net.views(2), &failed).expect("the primary flushed node 1 out");
    assert_eq!(Some(p2), position_of(&net.views(3), &failed));
    // After the heal the leaver stays out: it asked to leave.
    net.side = vec![0, 0, 0];
    net.run(200);
    assert!(!net.engine(1).is_member(g));
    assert_eq!(position_of(&net.views(1), &Reason::Merged), None);
    assert_eq!(
        net.engine(2).view(g).unwrap().members,
        vec![NodeId(2), NodeId(3)]
    );
    // And it can join again when it wants to.
    net.join(1, g);
    net.run(50);
    assert!(net.engine(1).is_member(g));
    let join = Reason::Join(NodeId(1));
    let last_join = |views: Vec<(View, Reason, u64)>| {
        views
            .into_iter()
            .rev()
            .find(|(_, r, _)| *r == join)
            .map(|(_, _, p)| p)
    };
    let p = last_join(net.views(2)).expect("the primary admitted node 1");
    assert_eq!(Some(p), last_join(net.views(1)));
    assert!(p > p2);
}

/// Simulator seeds 24, 31, 63: a Safe-mode leaver waits for its Leave entry
/// to become stable, but it is no longer a target of the order records. The
/// coordinator tells it when it installs the Leave (and any member answers
/// a retried LeaveRequest), so the leave completes in both modes, for a
/// member and for the coordinator, without a flush or a timeout. A join
/// while the leave is in progress is refused.
#[test]
fn a_graceful_leave_completes_in_both_modes_for_member_and_coordinator() {
    for mode in [DeliveryMode::Agreed, DeliveryMode::Safe] {
        for leaver in [3u32, 1] {
            let mut net = Net::new(3, mode);
            let g = group();
            net.form(g, &[1, 2, 3]);
            for i in 0..10u8 {
                net.send(1 + u32::from(i % 3), g, &[i]);
            }
            let now = Time(net.now);
            net.engine(leaver).leave(now, g).unwrap();
            assert!(matches!(
                net.engine(leaver).join(now, g, mode),
                Err(concord_membership::JoinError::InProgress { .. })
            ));
            net.drain((leaver - 1) as usize);
            net.run(50);
            let what = format!("{mode:?}, node {leaver} leaving");
            assert!(!net.engine(leaver).is_member(g), "{what}: still a member");
            let leave = Reason::Leave(NodeId(leaver));
            let stay: Vec<u32> = [1u32, 2, 3].into_iter().filter(|n| *n != leaver).collect();
            let p = position_of(&net.views(stay[0]), &leave).expect("the leave was installed");
            assert_eq!(Some(p), position_of(&net.views(stay[1]), &leave), "{what}");
            assert_eq!(Some(p), position_of(&net.views(leaver), &leave), "{what}");
            assert_same(&net, stay[0], stay[1]);
            assert_eq!(net.deliveries(stay[0]).len(), 10, "{what}");
            let before: Vec<_> = net
                .deliveries(stay[0])
                .into_iter()
                .filter(|(s, _)| *s < p)
                .collect();
            assert_eq!(net.deliveries(leaver), before, "{what}");
            assert_no_flush_no_timeout(&mut net, &[1, 2, 3]);
            // The group goes on, and the leaver can come back.
            net.send(stay[1], g, b"after");
            net.join(leaver, g);
            net.run(50);
            assert!(net.engine(leaver).is_member(g), "{what}: did not rejoin");
            assert_eq!(net.deliveries(stay[0]).len(), 11, "{what}");
            assert_no_flush_no_timeout(&mut net, &[1, 2, 3]);
        }
    }
}

/// Simulator seeds 4, 124, 192: a node admitted again after a partition
/// still suspects the peers it could not hear while it was cut off. Those
/// suspicions are older than its admission and must not make it report
/// Partitioned (or start a flush) right after its Merged view.
#[test]
fn a_merged_member_ignores_suspicions_from_before_its_readmission() {
    let mut net = Net::new(5, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1, 2, 3, 4, 5]);
    net.side = vec![0, 0, 0, 0, 1];
    net.run(200);
    assert!(!net.engine(5).is_member(g));
    assert_eq!(partitioned_count(&net, 5), 1);
    // Heal, but node 5 hears only the coordinator for a few milliseconds.
    net.side = vec![0; 5];
    net.cut = vec![(5, 2), (5, 3), (5, 4)];
    let mut waited = 0;
    while !net.engine(5).is_member(g) {
        net.run(1);
        waited += 1;
        assert!(waited < 200, "node 5 was not admitted again");
    }
    net.run(3);
    net.cut.clear();
    net.run(200);
    assert_eq!(partitioned_count(&net, 5), 1, "{:?}", net.views(5));
    assert!(net.engine(5).is_member(g));
    let p = position_of(&net.views(1), &Reason::Merged).expect("the primary merged node 5");
    assert_eq!(Some(p), position_of(&net.views(5), &Reason::Merged));
    net.send(5, g, b"back");
    net.run(20);
    for n in 1..=5 {
        assert_eq!(net.deliveries(n).last().unwrap().1, b"back".to_vec());
    }
}

/// A node that saw itself partitioned while the others still count it as a
/// member (it could not hear them; they heard it) asks to join again. The
/// coordinator removes it and admits it again, ordered back to back. Before,
/// it ignored a join request from a member: the node stayed out for ever,
/// and in Safe mode the stable point waited for its acks for ever.
#[test]
fn a_member_that_saw_itself_partitioned_is_removed_and_admitted_again() {
    let mut net = Net::new(5, DeliveryMode::Safe);
    let g = group();
    net.form(g, &[1, 2, 3, 4, 5]);
    net.deaf[4] = true;
    net.run(60);
    assert_eq!(partitioned_count(&net, 5), 1);
    assert!(!net.engine(5).is_member(g));
    assert_eq!(net.engine(1).view(g).unwrap().members.len(), 5);
    net.send(2, g, b"while 5 is out");
    net.run(60);
    net.deaf[4] = false;
    net.run(100);
    assert!(net.engine(5).is_member(g), "node 5 was not admitted again");
    for n in 1..=4 {
        assert!(
            net.deliveries(n)
                .iter()
                .any(|d| d.1 == b"while 5 is out".to_vec()),
            "node {n}"
        );
    }
    let views1 = net.views(1);
    let left = position_of(&views1, &Reason::Leave(NodeId(5))).expect("node 5 removed");
    let merged = position_of(&views1, &Reason::Merged).expect("node 5 admitted again");
    assert_eq!(merged, left + 1);
    assert_eq!(Some(merged), position_of(&net.views(5), &Reason::Merged));
    assert_eq!(net.stats(1).flushes, 0);
    net.send(5, g, b"back");
    net.run(30);
    for n in 1..=5 {
        assert_eq!(net.deliveries(n).last().unwrap().1, b"back".to_vec());
    }
}

/// Simulator seed 184: a leaver that misses a message ordered before its
/// Leave fetches it by NACK. The stable point (and so every member's
/// release of entries and payloads) waits for the leaver up to its own
/// Leave; before, the leaver stopped counting when its Leave was ordered,
/// everyone released the message, and the leaver waited for it for ever.
#[test]
fn a_leaver_still_gets_what_was_ordered_before_its_leave() {
    for mode in [DeliveryMode::Agreed, DeliveryMode::Safe] {
        let mut net = Net::new(3, mode);
        let g = group();
        net.form(g, &[1, 2, 3]);
        net.deaf[2] = true;
        net.send(1, g, b"missed");
        let now = Time(net.now);
        net.engine(3).leave(now, g).unwrap();
        net.drain(2);
        net.run(5);
        net.deaf[2] = false;
        net.run(50);
        assert!(
            !net.engine(3).is_member(g),
            "{mode:?}: node 3 still leaving"
        );
        assert_eq!(net.deliveries(3), net.deliveries(1), "{mode:?}");
        assert_eq!(net.deliveries(3).len(), 1, "{mode:?}");
        let leave = Reason::Leave(NodeId(3));
        let p = position_of(&net.views(1), &leave).expect("the leave was installed");
        assert_eq!(Some(p), position_of(&net.views(3), &leave), "{mode:?}");
        assert_no_flush_no_timeout(&mut net, &[1, 2, 3]);
    }
}

/// Simulator seed 970: a leaving coordinator's last order record (its own
/// Leave) is lost on the way to one member. Until its Leave is stable it
/// keeps sending the empty order record that says where the order ends, so
/// that member NACKs the Leave, acks it, and everyone installs it.
#[test]
fn a_leaving_coordinator_whose_last_record_is_lost_still_completes() {
    for mode in [DeliveryMode::Agreed, DeliveryMode::Safe] {
        let mut net = Net::new(3, mode);
        let g = group();
        net.form(g, &[1, 2, 3]);
        net.send(2, g, b"before");
        net.run(5);
        net.deaf[2] = true;
        let now = Time(net.now);
        net.engine(1).leave(now, g).unwrap();
        net.drain(0);
        net.run(3);
        net.deaf[2] = false;
        net.run(50);
        assert!(
            !net.engine(1).is_member(g),
            "{mode:?}: node 1 still leaving"
        );
        let leave = Reason::Leave(NodeId(1));
        let p = position_of(&net.views(2), &leave).expect("node 2 installed the leave");
        assert_eq!(Some(p), position_of(&net.views(3), &leave), "{mode:?}");
        assert_eq!(Some(p), position_of(&net.views(1), &leave), "{mode:?}");
        net.send(3, g, b"after");
        net.run(20);
        assert_same(&net, 2, 3);
        assert_eq!(net.deliveries(2).last().unwrap().1, b"after".to_vec());
        assert_no_flush_no_timeout(&mut net, &[1, 2, 3]);
    }
}

/// A member multicasts just after it is cut off (the primary never gets the
/// message), reports Partitioned, and while it is still trying to rejoin the
/// application leaves the group; after the heal it joins again with the same
/// incarnation. The accepted message is not lost: the new join sends it
/// again, every member delivers it once, before the sender's later messages
/// (sim upgrade-family seeds 348, 619, 838, 1459: "never delivered nX's
/// message").
#[test]
fn a_message_sent_before_a_leave_while_cut_off_is_delivered_after_the_next_join() {
    for mode in [DeliveryMode::Agreed, DeliveryMode::Safe] {
        let mut net = Net::new(3, mode);
        let g = group();
        net.form(g, &[1, 2, 3]);
        net.side = vec![0, 0, 1];
        assert!(matches!(net.send(3, g, b"cut off"), Multicast::Sent { .. }));
        net.run(300);
        assert!(net.logs[2].contains(&Ev::Partitioned), "{mode:?}");
        assert!(!net.engine(3).is_member(g));
        let now = Time(net.now);
        net.engine(3).leave(now, g).unwrap();
        net.drain(2);
        net.side = vec![0, 0, 0];
        net.run(50);
        net.join(3, g);
        net.run(300);
        assert!(
            net.engine(3).is_member(g),
            "{mode:?}: node 3 did not get back in"
        );
        net.send(3, g, b"after");
        net.run(50);
        for n in [1, 2, 3] {
            let mine: Vec<Vec<u8>> = net
                .deliveries(n)
                .into_iter()
                .map(|d| d.1)
                .filter(|p| p == b"cut off" || p == b"after")
                .collect();
            assert_eq!(
                mine,
                vec![b"cut off".to_vec(), b"after".to_vec()],
                "{mode:?}: node {n}"
            );
        }
    }
}

/// The ids of the views a node installed, without its `Partitioned` reports
/// (they carry the last view's id again).
fn installed_ids(net: &Net, node: u32) -> Vec<ViewId> {
    net.views(node)
        .into_iter()
        .filter(|(_, r, _)| *r != Reason::Partitioned)
        .map(|(v, _, _)| v.id)
        .collect()
}

/// Simulator seeds 15259, 52238, 58800, 67634, 85094, 90655 (base) and
/// 7256, 21971, 42393 (upgrade): a member installs a decided epoch, then
/// sees itself partitioned (so it is joining again), and only then gets a
/// delayed copy of that same decision. It must not install the view again
/// (nor go back to it after a later fast-path view): a (re)joiner installs a
/// decision only for a view above the last one it installed.
#[test]
fn a_delayed_copy_of_an_installed_decision_is_not_installed_again() {
    for join_after_flush in [false, true] {
        let what = format!("a join after the flush: {join_after_flush}");
        let mut net = Net::new(5, DeliveryMode::Agreed);
        let g = group();
        net.form(g, &[1, 2, 3, 4, 5]);
        net.crash(5);
        // Keep a copy of the flush decision on its way to node 4.
        net.keep =
            Some(|to, body| to == NodeId(4) && matches!(body, Body::Decided { epoch: 2, .. }));
        net.run(200);
        let copy = net.kept.first().cloned();
        let (from, _, decided) = copy.expect("the flush decision went to node 4");
        let flushed = net.engine(4).view(g).unwrap();
        assert_eq!(flushed.id, ViewId::first_of(2), "{what}");
        if join_after_flush {
            let nodes: Vec<NodeId> = (1..=5).map(NodeId).collect();
            net.engines[4] =
                Some(Engine::new(config(NodeId(5), &nodes, 1), Time(net.now)).unwrap());
            net.join(5, g);
            net.run(50);
            assert!(net.engine(5).is_member(g), "{what}");
        }
        net.side = vec![0, 0, 0, 1, 0];
        net.run(100);
        assert_eq!(partitioned_count(&net, 4), 1, "{what}");
        assert!(!net.engine(4).is_member(g), "{what}");
        let before = installed_ids(&net, 4);
        let now = Time(net.now);
        net.engine(4).handle_message(now, from, decided);
        net.drain(3);
        assert_eq!(
            installed_ids(&net, 4),
            before,
            "{what}: installed the stale decision"
        );
        assert!(!net.engine(4).is_member(g), "{what}");
        // After the heal node 4 merges, and its views only go up.
        net.side = vec![0; 5];
        net.run(200);
        assert!(net.engine(4).is_member(g), "{what}");
        let ids = installed_ids(&net, 4);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{what}: {ids:?}");
        let merged = position_of(&net.views(4), &Reason::Merged).expect("node 4 merged");
        assert_eq!(
            Some(merged),
            position_of(&net.views(1), &Reason::Merged),
            "{what}"
        );
    }
}

/// No majority anywhere (4 nodes split 2 | 2): node 1, the sequencer, and
/// node 2 deliver node 2's message in their old view (Agreed), which no
/// primary ever orders. Node 1 then leaves while it is rejoining and joins
/// again with the same incarnation, and node 2 (which still holds its
/// message) merges last. Whoever restarts the group, node 1 must not deliver
/// the message a second time: what it delivered of every sender survives the
/// leave (sim seeds 8651, 12010 and 11 more). If node 1 restarts the group
/// itself, it continues after what it delivered, as a rejoining member does,
/// not from the older decided cut (which reused positions and ordered the
/// message again, where every member skipped it: seeds 2669, 12781, 29029,
/// 38554).
#[test]
fn a_member_that_leaves_while_rejoining_and_joins_again_delivers_nothing_twice() {
    for node_1_restarts in [true, false] {
        let mut net = Net::new(4, DeliveryMode::Agreed);
        let g = group();
        net.form(g, &[1, 2, 3, 4]);
        net.send(3, g, b"before");
        net.run(20);
        net.side = vec![0, 0, 1, 1];
        net.run(1);
        assert!(matches!(
            net.send(2, g, b"minority"),
            Multicast::Sent { .. }
        ));
        net.run(10);
        for n in [1, 2] {
            assert!(
                net.deliveries(n).iter().any(|d| d.1 == b"minority"),
                "node {n} did not deliver in its old view"
            );
        }
        let last_1 = net.deliveries(1).last().unwrap().0;
        net.run(300);
        for n in 1..=4 {
            assert!(
                net.logs[(n - 1) as usize].contains(&Ev::Partitioned),
                "node {n}"
            );
        }
        // Node 1 abandons its rejoin; so do 3 and 4 if node 1 is to restart.
        let leavers: &[u32] = if node_1_restarts { &[1, 3, 4] } else { &[1] };
        for &n in leavers {
            let now = Time(net.now);
            net.engine(n).leave(now, g).unwrap();
            net.drain((n - 1) as usize);
        }
        if node_1_restarts {
            net.join(1, g);
        }
        net.side = vec![0, 1, 0, 0];
        net.run(300);
        if node_1_restarts {
            let restart = net
                .views(1)
                .into_iter()
                .find(|(v, r, _)| *r == Reason::Join(NodeId(1)) && v.id.epoch() > 1)
                .expect("node 1 restarted the group");
            assert!(
                restart.2 >= last_1,
                "the restart starts after {} although node 1 delivered up to {last_1}",
                restart.2
            );
        } else {
            assert!(net.engine(3).is_member(g) && net.engine(4).is_member(g));
            net.join(1, g);
            net.run(100);
        }
        assert!(net.engine(1).is_member(g), "node 1 did not get back in");
        net.side = vec![0, 0, 0, 0];
        net.run(300);
        assert!(net.engine(2).is_member(g), "node 2 did not merge");
        net.send(2, g, b"after");
        net.run(50);
        for n in [1, 2] {
            let got: Vec<Vec<u8>> = net
                .deliveries(n)
                .into_iter()
                .map(|d| d.1)
                .filter(|p| p == b"minority" || p == b"after")
                .collect();
            assert_eq!(
                got,
                vec![b"minority".to_vec(), b"after".to_vec()],
                "node {n}, node 1 restarts: {node_1_restarts}"
            );
        }
    }
}

/// The deliveries `node` made after its last view change, and that view's
/// position.
fn since_last_view(net: &Net, node: u32) -> (u64, Vec<(u64, Vec<u8>)>) {
    let log = &net.logs[(node - 1) as usize];
    let at = log
        .iter()
        .rposition(|e| matches!(e, Ev::View { .. }))
        .expect("a view");
    let Ev::View { position, .. } = &log[at] else {
        unreachable!()
    };
    let after = log[at + 1..]
        .iter()
        .filter_map(|e| match e {
            Ev::Deliver { seq, payload, .. } => Some((*seq, payload.clone())),
            _ => None,
        })
        .collect();
    (*position, after)
}

/// Two members cut off together (the sequencer n1 and n2, a minority of 5)
/// deliver n2's message the primary never orders; the primary (n3) flushes
/// them out and then leaves. After the heal n1 restarts the group from the
/// decided value it hears of in the `NoGroup` replies (its cut and sender
/// progress, not only its view: positions go on from the cut, sim seed
/// 4420), and n2 merges. n2 re-sends its message, but both members of the
/// new view delivered it already, so the sequencer (alone in its view) does
/// not order it again: a position nobody delivers would be a hole in the
/// total order (sim seeds 1869, 17106).
#[test]
fn a_message_both_cut_off_members_delivered_is_not_ordered_again_at_their_merge() {
    let mut net = Net::new(5, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1, 2, 3]);
    for i in 0..3u8 {
        net.send(1 + u32::from(i), g, &[i]);
    }
    net.run(20);
    net.side = vec![0, 0, 1, 1, 1];
    assert!(matches!(
        net.send(2, g, b"minority"),
        Multicast::Sent { .. }
    ));
    net.run(200);
    for n in [1, 2] {
        assert!(net.logs[(n - 1) as usize].contains(&Ev::Partitioned));
        let got: Vec<Vec<u8>> = net.deliveries(n).into_iter().map(|d| d.1).collect();
        assert!(got.contains(&b"minority".to_vec()), "node {n}: {got:?}");
    }
    assert_eq!(net.engine(3).view(g).unwrap().members, vec![NodeId(3)]);
    let primary_last = net.deliveries(3).last().unwrap().0;
    let now = Time(net.now);
    net.engine(3).leave(now, g).unwrap();
    net.drain(2);
    net.run(50);
    assert!(!net.engine(3).is_member(g));
    // n1 first: it restarts the group alone.
    net.side = vec![1, 0, 1, 1, 1];
    net.run(300);
    let view = net
        .engine(1)
        .view(g)
        .expect("n1 restarted the group")
        .clone();
    assert_eq!(view.members, vec![NodeId(1)]);
    let (restart_at, _) = since_last_view(&net, 1);
    assert!(
        restart_at >= primary_last,
        "the restart went back to position {restart_at}; the primary had reached {primary_last}"
    );
    net.side = vec![1, 1, 1, 1, 1];
    net.run(300);
    assert!(net.engine(2).is_member(g), "n2 did not merge");
    assert!(matches!(net.send(2, g, b"after"), Multicast::Sent { .. }));
    net.run(50);
    for n in [1, 2] {
        let (at, after) = since_last_view(&net, n);
        let seqs: Vec<u64> = after.iter().map(|d| d.0).collect();
        assert_eq!(
            seqs,
            vec![at + 1],
            "node {n}: {after:?} after position {at}"
        );
        assert_eq!(after[0].1, b"after".to_vec());
        let minority = net
            .deliveries(n)
            .into_iter()
            .filter(|d| d.1 == b"minority")
            .count();
        assert_eq!(minority, 1, "node {n}");
    }
}

/// Members 1 and 2, cut off together, deliver node 2's message in their
/// old view (Agreed); the primary (node 3 alone) never ordered it. Returns
/// once they have reported Partitioned.
fn deliver_beyond_the_primary_cut(net: &mut Net, g: GroupId) {
    net.form(g, &[1, 2, 3]);
    net.run(20);
    net.side = vec![0, 0, 1, 1, 1];
    assert!(matches!(
        net.send(2, g, b"minority"),
        Multicast::Sent { .. }
    ));
    net.run(200);
    for n in [1, 2] {
        assert!(net.logs[(n - 1) as usize].contains(&Ev::Partitioned));
        let got: Vec<Vec<u8>> = net.deliveries(n).into_iter().map(|d| d.1).collect();
        assert!(got.contains(&b"minority".to_vec()), "node {n}: {got:?}");
    }
    assert_eq!(net.engine(3).view(g).unwrap().members, vec![NodeId(3)]);
}

/// Node `n` delivered exactly one message since its last view, `after`, at
/// the position right after the view's, and `minority` once in all.
fn assert_no_hole_after_last_view(net: &Net, n: u32) {
    let (at, after) = since_last_view(net, n);
    let seqs: Vec<u64> = after.iter().map(|d| d.0).collect();
    assert_eq!(
        seqs,
        vec![at + 1],
        "node {n}: {after:?} after position {at}"
    );
    assert_eq!(after[0].1, b"after".to_vec());
    let minority = net
        .deliveries(n)
        .into_iter()
        .filter(|d| d.1 == b"minority")
        .count();
    assert_eq!(minority, 1, "node {n}");
}

/// Base total-order seeds 51542, 59692, 66912 ("skipped seq N, which nobody
/// delivered"): nodes 1 and 2 delivered node 2's message beyond the
/// primary's cut; the primary's sole member, node 3, admits both again and
/// (rightly: it lacks the message) orders node 2's stream from it. Node 3
/// crashes before it has the re-sent copy, and the flush to `[1, 2]`
/// ordered it again where both skip it as a duplicate. Now each promise
/// carries the member's delivered marks, and the new epoch resumes every
/// stream after what every member of the new view delivered.
#[test]
fn a_flush_does_not_order_again_what_every_member_of_the_new_view_delivered() {
    let mut net = Net::new(5, DeliveryMode::Agreed);
    let g = group();
    deliver_beyond_the_primary_cut(&mut net, g);
    net.side = vec![1, 0, 1, 1, 1];
    assert!(
        net.run_until(300, |n| n.engine(1).is_member(g)),
        "n1 did not merge"
    );
    net.run(10);
    net.side = vec![1, 1, 1, 1, 1];
    assert!(
        net.run_until(300, |n| n.engine(2).is_member(g)),
        "n2 did not merge"
    );
    // Node 2 re-sends its message now; node 3 never gets it.
    net.crash(3);
    net.run(300);
    for n in [1, 2] {
        let view = net.engine(n).view(g).expect("a member").clone();
        assert_eq!(view.members, vec![NodeId(1), NodeId(2)], "node {n}");
    }
    assert!(matches!(net.send(2, g, b"after"), Multicast::Sent { .. }));
    net.run(50);
    for n in [1, 2] {
        assert_no_hole_after_last_view(&net, n);
    }
}

/// Base total-order seed 36636: as above, but node 3, the sequencer that
/// admitted node 2 and still lacked its message, leaves before ordering the
/// re-sent copy. Node 2 takes the sequencer role over alone, and ordered its
/// own message again where it skips it. A sequencer alone in its view after
/// a Leave does not order again what it delivered itself.
#[test]
fn a_sequencer_left_alone_does_not_order_again_what_it_delivered() {
    let mut net = Net::new(5, DeliveryMode::Agreed);
    let g = group();
    deliver_beyond_the_primary_cut(&mut net, g);
    // Node 1 stays cut off; node 2 merges.
    net.side = vec![0, 1, 1, 1, 1];
    assert!(
        net.run_until(300, |n| n.engine(2).is_member(g)),
        "n2 did not merge"
    );
    // Node 2 re-sends its message now; node 3 leaves before it arrives.
    let now = Time(net.now);
    net.engine(3).leave(now, g).unwrap();
    net.drain(2);
    net.run(100);
    assert!(!net.engine(3).is_member(g));
    assert_eq!(net.engine(2).view(g).unwrap().members, vec![NodeId(2)]);
    assert!(matches!(net.send(2, g, b"after"), Multicast::Sent { .. }));
    net.run(50);
    assert_no_hole_after_last_view(&net, 2);
}

/// Upgrade-family seeds 3021, 3133, 3539, 4104, 4945, 7211: the coordinator
/// sees itself partitioned (it cannot hear the others; they hear it) and
/// asks to join again, while the others still count it as their member and
/// sequencer. Only the sequencer admits joiners, so before, nobody admitted
/// it, nobody sequenced, and the group stood still for ever. Now a member
/// whose coordinator asks to join, and whose order records stopped for a
/// failure timeout, counts it as failed: the others flush it out and admit
/// it again.
#[test]
fn a_coordinator_that_saw_itself_partitioned_is_flushed_out_and_admitted_again() {
    for mode in [DeliveryMode::Agreed, DeliveryMode::Safe] {
        let mut net = Net::new(5, mode);
        let g = group();
        net.form(g, &[1, 2, 3, 4, 5]);
        net.deaf[0] = true;
        net.run(60);
        assert_eq!(partitioned_count(&net, 1), 1, "{mode:?}");
        assert!(!net.engine(1).is_member(g), "{mode:?}");
        net.deaf[0] = false;
        net.run(200);
        assert!(
            net.engine(1).is_member(g),
            "{mode:?}: node 1 was not admitted again"
        );
        let failed = Reason::Failed(vec![NodeId(1)]);
        let out = position_of(&net.views(2), &failed).expect("node 1 flushed out");
        let merged = position_of(&net.views(2), &Reason::Merged).expect("node 1 merged");
        assert!(merged > out, "{mode:?}");
        for n in 3..=5 {
            assert_eq!(
                Some(out),
                position_of(&net.views(n), &failed),
                "{mode:?}: node {n}"
            );
        }
        assert_eq!(
            Some(merged),
            position_of(&net.views(1), &Reason::Merged),
            "{mode:?}"
        );
        net.send(2, g, b"after");
        net.send(1, g, b"back");
        net.run(50);
        for n in 1..=5 {
            let got: Vec<Vec<u8>> = net.deliveries(n).into_iter().map(|d| d.1).collect();
            assert!(
                got.ends_with(&[b"after".to_vec(), b"back".to_vec()]),
                "{mode:?}: node {n}"
            );
        }
    }
}

/// Upgrade-family seed 5666: a node restarts (a new incarnation) and joins
/// again while a Welcome for its previous incarnation is still on its way.
/// That Welcome admits the old incarnation, not the new one (the members
/// count the old one): installing it gave the new incarnation a view and
/// position the group never gave it, and a later flush in that group never
/// ended. A joiner installs only a Welcome that names its own incarnation.
#[test]
fn a_welcome_for_an_earlier_incarnation_is_not_installed() {
    let nodes: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let mut net = Net::new(3, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1, 2, 3]);
    net.crash(3);
    net.run(100);
    net.engines[2] = Some(Engine::new(config(NodeId(3), &nodes, 1), Time(net.now)).unwrap());
    net.keep = Some(|to, body| to == NodeId(3) && matches!(body, Body::Welcome { .. }));
    net.join(3, g);
    net.run(50);
    assert!(net.engine(3).is_member(g), "node 3#1 was not admitted");
    let (from, _, welcome) = net
        .kept
        .first()
        .cloned()
        .expect("a Welcome went to node 3#1");
    net.keep = None;
    // Node 3 restarts again and joins; the old Welcome arrives late.
    net.crash(3);
    net.engines[2] = Some(Engine::new(config(NodeId(3), &nodes, 2), Time(net.now)).unwrap());
    let seen = net.logs[2].len();
    net.join(3, g);
    let now = Time(net.now);
    net.engine(3).handle_message(now, from, welcome);
    net.drain(2);
    assert!(
        !net.engine(3).is_member(g),
        "node 3#2 installed the Welcome of 3#1: {:?}",
        &net.logs[2][seen..]
    );
    // It is admitted in its own right, at the position every member reports.
    net.run(200);
    assert!(net.engine(3).is_member(g), "node 3#2 was not admitted");
    let join = Reason::Join(NodeId(3));
    let last_join = |views: Vec<(View, Reason, u64)>| {
        views
            .into_iter()
            .rev()
            .find(|(_, r, _)| *r == join)
            .map(|(v, _, p)| (v.id, p))
    };
    let at1 = last_join(net.views(1)).expect("node 1 admitted node 3");
    assert_eq!(Some(at1), last_join(net.views(3)));
    assert_eq!(Some(at1), last_join(net.views(2)));
}

/// Simulator seeds 7481, 10848, 25643 and more: a coordinator leaves while
/// the only other member of its view is gone (crashed here). Its Leave is
/// never stable, so it flushes; no member of the view at the cut (after its
/// own Leave) answers, and the flush must still decide, with no member, so
/// that the leave ends and a restarted node can restart the group. Before,
/// the leader dropped the flush and started it again every tick for ever: it
/// believed it was a member for ever, and the restarted node was never
/// admitted (it asked the leaver, which orders nothing more).
#[test]
fn a_leaving_coordinator_whose_last_peer_is_gone_ends_its_leave() {
    let nodes: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let mut net = Net::new(3, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1, 2]);
    for i in 0..6u8 {
        net.send(1 + u32::from(i % 2), g, &[i]);
    }
    net.run(10);
    assert_eq!(net.deliveries(1).len(), 6);
    net.crash(2);
    let now = Time(net.now);
    net.engine(1).leave(now, g).unwrap();
    net.drain(0);
    net.run(300);
    assert!(
        !net.engine(1).is_member(g),
        "the leaver still believes it is a member: {:?}",
        net.views(1)
    );
    assert_eq!(
        position_of(&net.views(1), &Reason::Leave(NodeId(1))),
        None,
        "the leaver installed a Leave view nobody else installed"
    );
    assert_eq!(partitioned_count(&net, 1), 1);
    // The restarted node restarts the group, after the history node 1 ran.
    net.engines[1] = Some(Engine::new(config(NodeId(2), &nodes, 1), Time(net.now)).unwrap());
    net.join(2, g);
    net.run(300);
    assert!(net.engine(2).is_member(g), "node 2#1 was not admitted");
    assert!(!net.engine(1).is_member(g));
    let v2 = net.views(2);
    let (view, _, at) = v2.last().unwrap();
    assert_eq!(view.members, vec![NodeId(2)]);
    assert!(
        *at > 6,
        "the restart reused positions: view {view:?} at {at}"
    );
    net.send(2, g, b"after");
    net.run(20);
    assert_eq!(net.deliveries(2).last().unwrap().1, b"after".to_vec());
}

/// Simulator seeds 35193, 62350: a sequencer cut off alone delivers its own
/// messages in its old view; the primary flushes it out and then loses its
/// last member, so after the heal the cut-off node restarts the group as an
/// orphan, after the last decided cut. The restarted group never orders the
/// messages the restarter already delivered beyond that cut (it would skip
/// them), so they must leave its send window. Before, they stayed in it for
/// ever, and with a full window every multicast was back-pressured.
#[test]
fn an_orphan_restarter_frees_the_window_of_what_it_delivered_beyond_the_cut() {
    let nodes: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let mut net = Net::new(3, DeliveryMode::Agreed);
    // Node 1's window holds exactly what it sends while cut off.
    let mut c1 = config(NodeId(1), &nodes, 0);
    c1.window = 4;
    net.engines[0] = Some(Engine::new(c1, Time(0)).unwrap());
    let g = group();
    net.form(g, &[1, 2]);
    for i in 0..4u8 {
        net.send(1 + u32::from(i % 2), g, &[i]);
    }
    net.run(10);
    net.side = vec![1, 0, 0];
    for i in 10..14u8 {
        assert!(matches!(net.send(1, g, &[i]), Multicast::Sent { .. }));
        net.run(1);
    }
    // Node 1 delivered its own messages, which node 2 never got.
    assert_eq!(net.deliveries(1).len(), 8);
    net.run(200);
    assert_eq!(partitioned_count(&net, 1), 1);
    let failed = Reason::Failed(vec![NodeId(1)]);
    let cut = position_of(&net.views(2), &failed).expect("the primary flushed node 1 out");
    net.crash(2);
    net.side = vec![0, 0, 0];
    net.run(300);
    assert!(
        net.engine(1).is_member(g),
        "node 1 did not restart the group"
    );
    let (view, _, at) = net.views(1).last().cloned().unwrap();
    assert_eq!(view.members, vec![NodeId(1)]);
    assert_eq!(at, cut, "the restart did not start after the decided cut");
    // Its window is free again: each multicast goes out and is delivered.
    for i in 0..8u8 {
        let r = net.send(1, g, &[100, i]);
        assert!(
            matches!(r, Multicast::Sent { .. }),
            "message {i} after the restart was refused: {r:?}"
        );
        net.run(1);
    }
    net.run(20);
    let after: Vec<Vec<u8>> = net
        .deliveries(1)
        .into_iter()
        .skip(8)
        .map(|(_, p)| p)
        .collect();
    let want: Vec<Vec<u8>> = (0..8).map(|i| vec![100, i]).collect();
    assert_eq!(after, want);
}

/// A sole member (its own sequencer) that one acceptor cannot hear goes on
/// hearing a majority, so it never notices that node 3 suspects it. Node 3
/// joins, sees the only member "gone" and restarts the group as an orphan.
/// The sequencer orders only under a lease that a majority of acceptors
/// granted, and an acceptor that granted it promises no later epoch before
/// it ran out: so the old sequencer stops ordering before the restart is
/// decided, and no second history goes on beside the restarted one (sim
/// seeds 816, 36652: a joiner was welcomed by both, or a sole member went on
/// delivering in a history the primary had replaced). After the heal its
/// messages held meanwhile are delivered in the restarted group.
#[test]
fn a_cut_off_sole_sequencer_stops_ordering_before_the_primary_restarts_the_group() {
    let mut net = Net::new(3, DeliveryMode::Agreed);
    let g = group();
    net.form(g, &[1]);
    assert!(matches!(net.send(1, g, &[0]), Multicast::Sent { .. }));
    net.run(10);
    assert_eq!(net.deliveries(1).len(), 1);
    // Node 3 stops hearing node 1 (and node 1 node 3); node 1 still hears
    // node 2, so it keeps a majority and stays a member.
    net.cut = vec![(1, 3)];
    net.run(40);
    net.join(3, g);
    // Multicasts accepted by node 1 (it refuses them once it knows it was
    // replaced and rejoins).
    let try_send = |net: &mut Net, b: u8| {
        let now = Time(net.now);
        let ok = matches!(
            net.engine(1).multicast(now, g, [b].as_slice().into()),
            Ok(Multicast::Sent { .. })
        );
        net.drain(0);
        ok
    };
    let mut sent = 0u8;
    let mut accepted = Vec::new();
    let mut restarted = false;
    for _ in 0..200 {
        sent += 1;
        assert!(try_send(&mut net, sent), "node 1 refused a multicast");
        accepted.push(sent);
        net.run(1);
        if net.engine(3).is_member(g) {
            restarted = true;
            break;
        }
    }
    assert!(restarted, "node 3 never restarted the group");
    let epoch_of = |v: u64| v >> 32;
    let restart_epoch = epoch_of(net.engine(3).view(g).unwrap().id.0);
    let old_history = |net: &Net| {
        net.logs[0]
            .iter()
            .filter(|e| matches!(e, Ev::Deliver { view, .. } if epoch_of(*view) < restart_epoch))
            .count()
    };
    let before = old_history(&net);
    for _ in 0..10 {
        sent += 1;
        if try_send(&mut net, sent) {
            accepted.push(sent);
        }
        net.run(1);
    }
    assert_eq!(
        old_history(&net),
        before,
        "node 1 went on delivering in the history node 3's restart replaced"
    );
    net.cut.clear();
    net.run(600);
    let view = net.engine(3).view(g).expect("node 3 is a member").clone();
    assert!(view.members.contains(&NodeId(1)), "{view:?}");
    assert_eq!(net.engine(1).view(g), Some(&view));
    // What node 1 delivered in the old history is lost with it (a sole
    // member released it); everything else it accepted reaches node 3.
    let old: Vec<u8> = net.logs[0]
        .iter()
        .filter_map(|e| match e {
            Ev::Deliver { view, payload, .. } if epoch_of(*view) < restart_epoch => {
                Some(payload[0])
            }
            _ => None,
        })
        .collect();
    let at3: Vec<u8> = net.deliveries(3).iter().map(|(_, p)| p[0]).collect();
    assert!(accepted.len() > old.len(), "{accepted:?} {old:?}");
    for m in accepted.into_iter().filter(|m| !old.contains(m)) {
        assert!(
            at3.contains(&m),
            "node 3 never delivered node 1's message {m}: {at3:?}"
        );
    }
}

/// Simulator seed 87671: a node gives its join up (`leave` while joining)
/// after the sequencer has already ordered its Join. The group counts it as
/// a member, but it holds nothing of the group and never acks, so the stable
/// point stood still for ever (Safe mode delivered nothing more, no view
/// change was installed). Now the Welcome it gets is answered with a
/// LeaveRequest, and the Leave of a joiner that never acknowledged its
/// Welcome does not wait for its ack.
#[test]
fn a_joiner_that_gave_up_after_its_join_was_ordered_is_removed_again() {
    let mut net = Net::new(3, DeliveryMode::Safe);
    let g = group();
    net.form(g, &[1, 2]);
    net.join(3, g);
    let now = Time(net.now);
    net.engine(3).leave(now, g).unwrap();
    net.drain(2);
    net.run(100);
    assert!(!net.engine(3).is_member(g));
    assert!(
        position_of(&net.views(1), &Reason::Join(NodeId(3))).is_some(),
        "the sequencer never ordered the Join (the scenario did not happen)"
    );
    assert_eq!(
        net.engine(1).view(g).unwrap().members,
        vec![NodeId(1), NodeId(2)],
        "node 3 is still counted as a member"
    );
    net.send(2, g, b"after");
    net.run(50);
    assert_eq!(
        net.deliveries(1).last().map(|(_, p)| p.clone()),
        Some(b"after".to_vec())
    );
    assert_same(&net, 1, 2);
    // It can join again when it wants to.
    net.join(3, g);
    net.run(100);
    assert!(net.engine(3).is_member(g), "node 3 was not admitted again");
}

/// A member's silence is counted from its admission. Node 3 was a member
/// (its acks were heard), left, restarted and joined again; a copy of its
/// JoinRequest that is still on its way when it is welcomed, and arrives
/// after it acknowledged, is a stale copy. Before, the sequencer measured
/// the silence from the last ack of node 3's previous membership, so it
/// removed the just-welcomed member and admitted it again, and the
/// positions that member had not fetched yet became stable without it: a
/// later flush waited for them for ever (upgrade seeds 9715, 28714).
#[test]
fn a_stale_join_request_of_a_just_welcomed_member_does_not_remove_it() {
    let mut net = Net::new(3, DeliveryMode::Safe);
    let g = group();
    let nodes: Vec<NodeId> = (1..=3).map(NodeId).collect();
    net.form(g, &[1, 2, 3]);
    net.send(3, g, b"before");
    net.run(30);
    let now = Time(net.now);
    net.engine(3).leave(now, g).unwrap();
    net.drain(2);
    net.run(100);
    assert!(!net.engine(3).is_member(g), "node 3 did not leave");
    net.engines[2] = Some(Engine::new(config(NodeId(3), &nodes, 1), Time(net.now)).unwrap());
    net.keep = Some(|to, body| to == NodeId(1) && matches!(body, Body::JoinRequest { .. }));
    // Node 3#1's Ack messages are lost for a while (fewer than a failure
    // timeout): it acknowledges its Welcome with its first message, and the
    // old copy of its request arrives then.
    net.lose = Some(|from, to, body| {
        from == NodeId(3) && to == NodeId(1) && matches!(body, Body::Ack { .. })
    });
    net.join(3, g);
    assert!(
        net.run_until(100, |n| n.engine(3).is_member(g)),
        "node 3#1 was not admitted"
    );
    let (from, _, request) = net
        .kept
        .first()
        .cloned()
        .expect("a JoinRequest went to node 1");
    net.keep = None;
    net.send(3, g, b"first");
    net.run(2);
    let leave = Reason::Leave(NodeId(3));
    let leaves = |net: &Net| net.views(1).iter().filter(|(_, r, _)| *r == leave).count();
    let before = leaves(&net);
    let views_before = net.views(1).len();
    let now = Time(net.now);
    net.engine(1).handle_message(now, from, request);
    net.drain(0);
    net.run(5);
    net.lose = None;
    net.run(100);
    assert_eq!(
        leaves(&net),
        before,
        "the stale request removed node 3 again: {:?}",
        &net.views(1)[views_before..]
    );
    assert!(net.engine(3).is_member(g));
    net.send(2, g, b"after");
    net.run(50);
    assert_eq!(
        net.deliveries(3).last().map(|(_, p)| p.clone()),
        Some(b"after".to_vec())
    );
    assert_same(&net, 1, 2);
}
