//! Ordering-path throughput of the Engine with no I/O: three engines in one
//! thread, 64-byte payloads, batching on, messages routed between them in
//! memory. The figure is messages ordered and delivered at every member per
//! second (criterion's `elem/s`; one element = one multicast delivered by all
//! three members).

use std::collections::VecDeque;
use std::hint::black_box;
use std::rc::Rc;

use concord_membership::{
    Command, Config, DeliveryMode, Engine, GroupId, Message, Multicast, NodeId, Time,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

type P = Rc<[u8]>;

struct Cluster {
    engines: Vec<Engine<P>>,
    wire: VecDeque<(usize, NodeId, Message<P>)>,
    delivered: Vec<u64>,
    group: GroupId,
    payload: P,
}

impl Cluster {
    fn new() -> Cluster {
        let nodes: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let engines = nodes
            .iter()
            .map(|n| {
                let mut c = Config::new(*n, nodes.clone());
                c.window = 4096;
                c.batch = 256;
                // Time does not pass in the bench: nothing times out.
                c.heartbeat_interval = 1_000_000_000;
                c.failure_timeout = 60_000_000_000;
                Engine::new(c, Time(0)).unwrap()
            })
            .collect();
        let mut cluster = Cluster {
            engines,
            wire: VecDeque::with_capacity(1 << 16),
            delivered: vec![0; 3],
            group: GroupId::from_name("bench"),
            payload: vec![0xab; 64].into(),
        };
        // Form the group: node 1 creates it, then 2 and 3 join.
        for i in 0..3 {
            cluster.engines[i]
                .join(Time(0), cluster.group, DeliveryMode::Agreed)
                .unwrap();
            for step in 1..=4u64 {
                for e in &mut cluster.engines {
                    e.tick(Time(step * 1_000_000_000));
                }
                cluster.route();
            }
        }
        for e in &cluster.engines {
            assert!(e.is_member(cluster.group), "group did not form");
        }
        cluster
    }

    fn drain(&mut self, i: usize) {
        while let Some(cmd) = self.engines[i].poll_command() {
            match cmd {
                Command::Send { to, msg } => {
                    self.wire
                        .push_back(((to.0 - 1) as usize, NodeId(i as u32 + 1), msg))
                }
                Command::Deliver(d) => {
                    black_box(&d.payload);
                    self.delivered[i] += 1;
                }
                _ => {}
            }
        }
    }

    fn route(&mut self) {
        loop {
            for i in 0..3 {
                self.drain(i);
            }
            if self.wire.is_empty() {
                return;
            }
            while let Some((to, from, msg)) = self.wire.pop_front() {
                self.engines[to].handle_message(Time(4_000_000_000), from, msg);
            }
        }
    }

    /// Multicast `n` messages round-robin from the three members and route
    /// until every member delivered all of them.
    fn round(&mut self, n: u64) {
        let target: Vec<u64> = self.delivered.iter().map(|d| d + n).collect();
        let mut sent = 0;
        while sent < n {
            let i = (sent % 3) as usize;
            match self.engines[i].multicast(Time(4_000_000_000), self.group, self.payload.clone()) {
                Ok(Multicast::Sent { .. }) => sent += 1,
                Ok(Multicast::BackPressured(_)) => self.route(),
                Err(e) => panic!("multicast failed: {e}"),
            }
            // Let a batch build up between drains, as a busy node would.
            if sent % 64 == 0 {
                self.route();
            }
        }
        while self.delivered.iter().zip(&target).any(|(d, t)| d < t) {
            let before = self.delivered.clone();
            self.route();
            if self.delivered == before {
                for e in &mut self.engines {
                    e.tick(Time(4_000_000_000));
                }
                self.route();
            }
        }
    }
}

fn ordering(c: &mut Criterion) {
    const N: u64 = 10_000;
    let mut cluster = Cluster::new();
    cluster.round(N); // warm up: buffers and rings reach steady size
    let mut g = c.benchmark_group("engine_order");
    g.throughput(Throughput::Elements(N));
    g.bench_function("3_members_64B_batched", |b| b.iter(|| cluster.round(N)));
    g.finish();
}

criterion_group!(benches, ordering);
criterion_main!(benches);
