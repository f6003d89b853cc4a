//! Heap allocations per delivered message in the membership Engine, counted
//! at every member of a 3-node group in steady state.
//!
//! Three Engines run in this thread and pass their messages in memory, as
//! `membership/benches/order.rs` does; time advances with every routing pass,
//! so heartbeats, leases, acks and the order heartbeat run as on a real node.
//! Every call into an Engine is wrapped in a diff of this thread's allocation
//! counter ([`concord_runtime::alloc::thread_allocs`]) and charged to that
//! member; what the harness does between calls (its preallocated wire queue)
//! is counted apart and must be 0 too. After a warm-up (rings, queues and
//! pools reach their steady size) a window of 20,000 messages is counted,
//! and each member must show 0 allocations for it, in every workload:
//!
//! - `alone`: one multicast, then the cluster is drained until quiet: every
//!   order record carries a single message;
//! - `batched`: 64 multicasts between drains, round-robin from the members
//!   (the order bench's pattern): records carry many;
//! - `safe` and `safe_batched`: the same with `DeliveryMode::Safe`, where
//!   delivery also waits for the stable point;
//! - `multicast_batch`: `Engine::multicast_batch` of 20 payloads, drained
//!   after each call. The vector the application hands over is its own
//!   allocation (one per batch), counted and printed apart.
//!
//! The deliveries are checked too (count, and one order at every member), so
//! a workload that stops delivering cannot pass by allocating nothing.

use std::collections::VecDeque;
use std::sync::Arc;

use concord_membership::{
    Command, Config, DeliveryMode, Engine, GroupId, Message, Multicast, NodeId, Time,
};
use concord_runtime::alloc::{self, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

type P = Arc<[u8]>;

/// Virtual time per routing pass.
const STEP: u64 = 50_000;
/// Messages per run; a run ends when every member delivered them all.
const RUN: u64 = 5_000;
/// Runs of warm-up, and counted. The end of a run (the group drains, then
/// the next burst starts) is part of the steady state: it is in both.
const WARM_UP_RUNS: u64 = 4;
const COUNTED_RUNS: u64 = 4;

struct Cluster {
    engines: Vec<Engine<P>>,
    wake: Vec<Time>,
    wire: VecDeque<(usize, NodeId, Message<P>)>,
    now: Time,
    group: GroupId,
    payload: P,
    /// Allocations made inside each member's Engine calls.
    allocs: [u64; 3],
    /// Allocations of the application's batch vectors.
    app_allocs: u64,
    /// Deliveries per member.
    delivered: [u64; 3],
    /// Per member, a running hash of the delivered `(sender, sender_seq)`
    /// sequence: equal at every member when the order is one.
    order_hash: [u64; 3],
}

impl Cluster {
    fn new(mode: DeliveryMode) -> Cluster {
        let nodes: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let engines: Vec<Engine<P>> = nodes
            .iter()
            .map(|n| Engine::new(Config::new(*n, nodes.clone()), Time(0)).unwrap())
            .collect();
        let mut c = Cluster {
            wake: vec![Time(0); engines.len()],
            engines,
            wire: VecDeque::with_capacity(1 << 16),
            now: Time(0),
            group: GroupId::from_name("alloc"),
            payload: vec![0xab; 64].into(),
            allocs: [0; 3],
            app_allocs: 0,
            delivered: [0; 3],
            order_hash: [0; 3],
        };
        for i in 0..3 {
            let (now, group) = (c.now, c.group);
            c.engines[i].join(now, group, mode).unwrap();
            for _ in 0..20_000 {
                c.route();
                if c.engines[i].is_member(group) {
                    break;
                }
            }
        }
        for (i, e) in c.engines.iter().enumerate() {
            assert!(e.is_member(c.group), "member {i} did not join");
            assert_eq!(e.view(c.group).unwrap().members.len(), 3);
        }
        c
    }

    /// Run `f` on member `i`, charging its allocations to that member.
    fn call<R>(&mut self, i: usize, f: impl FnOnce(&mut Engine<P>) -> R) -> R {
        let before = alloc::thread_allocs();
        let r = f(&mut self.engines[i]);
        self.allocs[i] += alloc::thread_allocs() - before;
        r
    }

    fn drain(&mut self, i: usize) {
        loop {
            let Some(cmd) = self.call(i, Engine::poll_command) else {
                return;
            };
            match cmd {
                Command::Send { to, msg } => {
                    self.wire
                        .push_back(((to.0 - 1) as usize, NodeId(i as u32 + 1), msg));
                }
                Command::Deliver(d) => {
                    self.delivered[i] += 1;
                    let h = &mut self.order_hash[i];
                    *h = (*h ^ (u64::from(d.sender.0) << 48 ^ d.sender_seq))
                        .wrapping_mul(0x0000_0100_0000_01b3);
                }
                Command::WakeAt(t) => self.wake[i] = t,
                // Group formation only (nothing in this test restarts).
                Command::ViewChange { .. } | Command::Persist(_) => {}
                other => panic!("member {i}: unexpected command {other:?}"),
            }
            // A command dropped here drops inside the harness: charge it to
            // the harness, whose allocation count is checked apart.
        }
    }

    /// One routing pass: time advances one step, due ticks run, every
    /// member is drained, every message on the wire is handed over (and the
    /// answers drained), until the wire is empty.
    fn route(&mut self) {
        self.now = self.now.plus(STEP);
        for i in 0..3 {
            if self.now >= self.wake[i] {
                let now = self.now;
                self.call(i, |e| e.tick(now));
            }
        }
        loop {
            for i in 0..3 {
                self.drain(i);
            }
            if self.wire.is_empty() {
                return;
            }
            while let Some((to, from, msg)) = self.wire.pop_front() {
                let now = self.now;
                self.call(to, |e| e.handle_message(now, from, msg));
            }
        }
    }

    /// Multicast `n` messages round-robin from the members, draining after
    /// every `every` of them, then route until every member delivered them.
    fn run(&mut self, n: u64, every: u64, batch: u64) {
        let target: [u64; 3] = std::array::from_fn(|i| self.delivered[i] + n);
        let mut sent = 0;
        while sent < n {
            let i = (sent / batch % 3) as usize;
            let (now, group, payload) = (self.now, self.group, self.payload.clone());
            if batch == 1 {
                match self.call(i, |e| e.multicast(now, group, payload)) {
                    Ok(Multicast::Sent { .. }) => sent += 1,
                    Ok(Multicast::BackPressured(_)) => self.route(),
                    Err(e) => panic!("multicast failed: {e}"),
                }
            } else {
                // The application's own vector (one per batch): counted
                // apart, it is not the Engine's.
                let before = alloc::thread_allocs();
                let payloads = vec![payload; batch as usize];
                self.app_allocs += alloc::thread_allocs() - before;
                match self.call(i, |e| e.multicast_batch(now, group, payloads)) {
                    Ok(Multicast::Sent { .. }) => sent += batch,
                    Ok(Multicast::BackPressured(_)) => self.route(),
                    Err(e) => panic!("multicast_batch failed: {e}"),
                }
            }
            if sent % every == 0 {
                self.route();
            }
        }
        let mut passes = 0;
        while (0..3).any(|i| self.delivered[i] < target[i]) {
            self.route();
            passes += 1;
            assert!(
                passes < 100_000,
                "not delivered: {:?} of {target:?}",
                self.delivered
            );
        }
    }
}

/// Warm up, count a window, and return each member's allocations per
/// delivered message in it.
fn measure(name: &str, mode: DeliveryMode, every: u64, batch: u64) -> [f64; 3] {
    assert!(
        alloc::is_installed(),
        "the counting allocator is not installed"
    );
    let mut c = Cluster::new(mode);
    for _ in 0..WARM_UP_RUNS {
        c.run(RUN, every, batch);
    }
    let (allocs, delivered) = (c.allocs, c.delivered);
    let harness_before = alloc::thread_allocs();
    let engines_before: u64 = c.allocs.iter().sum();
    let app_before = c.app_allocs;
    for _ in 0..COUNTED_RUNS {
        c.run(RUN, every, batch);
    }
    let engines: u64 = c.allocs.iter().sum::<u64>() - engines_before;
    let app = c.app_allocs - app_before;
    let harness = alloc::thread_allocs() - harness_before - engines - app;
    let per: [f64; 3] = std::array::from_fn(|i| {
        (c.allocs[i] - allocs[i]) as f64 / (c.delivered[i] - delivered[i]) as f64
    });
    println!(
        "engine allocations per delivered message, {name}: member 1 {:.4}, member 2 {:.4}, \
         member 3 {:.4} ({:?} allocations over {:?} deliveries; harness {harness}, \
         application {app})",
        per[0],
        per[1],
        per[2],
        std::array::from_fn::<u64, 3, _>(|i| c.allocs[i] - allocs[i]),
        std::array::from_fn::<u64, 3, _>(|i| c.delivered[i] - delivered[i]),
    );
    assert!(
        c.order_hash.iter().all(|h| *h == c.order_hash[0]),
        "{name}: members delivered different orders"
    );
    assert_eq!(harness, 0, "{name}: the harness itself allocated");
    per
}

fn assert_zero(name: &str, per: [f64; 3]) {
    assert!(
        per.iter().all(|p| *p == 0.0),
        "{name}: the Engine allocates in steady state: {per:?} per delivered message"
    );
}

#[test]
fn alone_allocates_nothing_per_message() {
    assert_zero("alone", measure("alone", DeliveryMode::Agreed, 1, 1));
}

#[test]
fn batched_allocates_nothing_per_message() {
    assert_zero("batched", measure("batched", DeliveryMode::Agreed, 64, 1));
}

#[test]
fn safe_allocates_nothing_per_message() {
    assert_zero("safe", measure("safe", DeliveryMode::Safe, 1, 1));
}

#[test]
fn safe_batched_allocates_nothing_per_message() {
    assert_zero(
        "safe_batched",
        measure("safe_batched", DeliveryMode::Safe, 64, 1),
    );
}

#[test]
fn multicast_batch_allocates_nothing_per_message() {
    let per = measure("multicast_batch", DeliveryMode::Agreed, 20, 20);
    assert_zero("multicast_batch", per);
}
