//! Three nodes in one process, each on its own runtime (one shard, one
//! transport driver), over loopback: they join a group, every node
//! multicasts, and every node delivers the same sequence.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use concord_membership::{DeliveryMode, NodeId};
use concord_runtime::node::{self, GroupEvent, Node, NodeConfig, NodeStats};
use concord_runtime::transport::Driver;
use concord_runtime::{DriverReactor, Runtime};

fn free_ports(n: usize) -> Vec<SocketAddr> {
    // Hold every listener until all are chosen, so no port repeats.
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn configs(dir: &std::path::Path) -> Vec<NodeConfig> {
    let addrs = free_ports(3);
    (0..3)
        .map(|i| {
            let id = NodeId(i as u32 + 1);
            let mut c = NodeConfig::new(id, 42, addrs[i], dir.join(format!("n{}", i + 1)));
            for (j, a) in addrs.iter().enumerate() {
                c.add_node(NodeId(j as u32 + 1), *a);
            }
            // Twelve shard threads of four tests share 2 cores: at the
            // 100 ms default a descheduled node is suspected, and a member
            // cut off meanwhile rightly misses what was ordered without it,
            // which these tests (every node delivers everything) do not
            // allow for. The multi-process tests cover failures.
            c.heartbeat_interval = Duration::from_millis(50);
            c.failure_timeout = Duration::from_secs(3);
            c
        })
        .collect()
}

/// What one node saw: the delivered (sender, sender_seq) in order.
type Seen = Vec<(u32, u64, u64)>;

/// How a test node runs.
#[derive(Clone, Copy)]
struct Run {
    mode: DeliveryMode,
    per_node: u64,
    payload: usize,
    /// A transport with one 4 KiB staging chunk per connection, so that it
    /// back-pressures all the time.
    tiny_transport: bool,
    /// Four 4 KiB receive buffers per connection: far less than a peer's
    /// window of unstable payloads.
    tiny_recv: bool,
    /// `NodeConfig::event_queue`, and the node whose application reads
    /// its events slowly (one every 2 ms).
    slow_reader: Option<(usize, u32)>,
}

/// `finished` counts the nodes that delivered everything: a node leaves
/// only once all three have, so no peer's shutdown reaches a node that is
/// still reading (a slow reader) and makes it reconnect.
fn run_node(
    mut cfg: NodeConfig,
    run: Run,
    finished: Arc<AtomicUsize>,
) -> (Seen, u64, NodeStats, usize) {
    let Run {
        mode,
        per_node,
        payload,
        tiny_transport,
        tiny_recv,
        slow_reader,
    } = run;
    let slow = match slow_reader {
        Some((bound, node)) => {
            cfg.event_queue = bound;
            cfg.window = SLOW_WINDOW;
            cfg.batch = SLOW_BATCH;
            // A reader that holds its queue full for longer than the
            // failure timeout has, by design, stopped: its node takes no
            // heartbeats meanwhile and leaves the primary. Draining what
            // one frame can release (at most `most` below) takes this
            // reader 0.4 s on an idle machine, and several seconds when
            // the 9 tests of this file and other jobs share 2 cores.
            cfg.failure_timeout = Duration::from_secs(15);
            node == cfg.node.0
        }
        None => false,
    };
    let total = per_node * 3;
    let rt = if tiny_transport || tiny_recv {
        let mut dc = cfg.driver_config();
        if tiny_transport {
            dc.send_chunk_size = 4096;
            dc.send_chunks = 1;
            dc.send_queue_items = 2;
        }
        if tiny_recv {
            dc.recv_buf_size = 4096;
            dc.recv_buf_count = 4;
        }
        Runtime::builder()
            .shards(1)
            .pin(false)
            .reactor(move |_| Driver::new(dc.clone()).map(DriverReactor::new))
            .build()
            .expect("runtime")
    } else {
        node::runtime(&cfg).build().expect("runtime")
    };
    let h = rt
        .spawn_on(0, move || async move {
            let me = cfg.node;
            let node = Node::start(cfg).expect("start");
            let g = node.join("orders", mode).await.expect("join");
            let ctx = concord_runtime::ShardContext::current().unwrap();
            let mut seen = Seen::new();
            let mut sent = 0;
            let mut members = 0;
            let mut max_pending = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while (seen.len() as u64) < total {
                assert!(
                    std::time::Instant::now() < deadline,
                    "node {me:?} timed out: {} delivered, {} sent, {members} members, \
                     view {:?}, {} pending events\n{:?}\n{:?}",
                    seen.len(),
                    sent,
                    g.view(),
                    g.pending_events(),
                    node.stats(),
                    node.engine_stats()
                );
                max_pending = max_pending.max(g.pending_events());
                let mut budget = if slow { 1 } else { usize::MAX };
                while budget > 0
                    && let Some(ev) = g.try_next()
                {
                    budget -= 1;
                    match ev {
                        GroupEvent::Delivery(d) => {
                            assert_eq!(d.payload.len(), payload);
                            // The bytes the sender wrote, and a view of the
                            // receive buffer unless this node sent them.
                            assert_eq!(d.payload[..8], (d.sender_seq - 1).to_le_bytes());
                            assert_eq!(d.payload.is_received(), d.sender != me, "{d:?}");
                            seen.push((d.sender.0, d.sender_seq, d.seq));
                        }
                        GroupEvent::ViewChange { view, .. } => members = view.members.len(),
                        _ => {}
                    }
                }
                if slow {
                    ctx.sleep(Duration::from_millis(2)).await;
                }
                if members == 3 && sent < per_node {
                    let mut p = vec![0u8; payload];
                    p[..8].copy_from_slice(&sent.to_le_bytes());
                    // Not `send().await`: this task also reads the events,
                    // and a full event queue holds back what frees room.
                    match g.multicast(&p[..]) {
                        Ok(node::Multicast::Accepted { .. }) => sent += 1,
                        _ => ctx.sleep(Duration::from_micros(200)).await,
                    }
                } else {
                    ctx.sleep(Duration::from_micros(200)).await;
                }
            }
            let inc = node.incarnation();
            let stats = node.stats();
            finished.fetch_add(1, Ordering::AcqRel);
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while finished.load(Ordering::Acquire) < 3 && std::time::Instant::now() < deadline {
                ctx.sleep(Duration::from_millis(5)).await;
            }
            node.shutdown().await.expect("shutdown");
            (seen, inc, stats, max_pending)
        })
        .expect("spawn");
    let out = h.join().expect("node task");
    rt.shutdown().expect("runtime shutdown");
    out
}

fn three_nodes_agree(run: Run) -> Vec<(NodeStats, usize)> {
    let tmp = tempfile::tempdir().unwrap();
    let cfgs = configs(tmp.path());
    let finished = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = cfgs
        .into_iter()
        .map(|c| {
            let finished = Arc::clone(&finished);
            std::thread::spawn(move || run_node(c, run, finished))
        })
        .collect();
    let results: Vec<(Seen, u64, NodeStats, usize)> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    let total = run.per_node as usize * 3;
    for (seen, inc, stats, _) in &results {
        assert_eq!(*inc, 1, "a first start runs incarnation 1");
        assert_eq!(seen.len(), total);
        // One connection per peer pair: each node holds exactly two, and
        // none was refused (neither side dialed the wrong way).
        assert_eq!((stats.connects, stats.refused_conns), (2, 0), "{stats:?}");
        // Each multicast goes to two peers and is serialized once.
        assert!(stats.encodes_reused > 0, "{stats:?}");
    }
    // Every node delivered the same sequence, positions strictly increasing.
    assert_eq!(results[0].0, results[1].0);
    assert_eq!(results[0].0, results[2].0);
    for w in results[0].0.windows(2) {
        assert!(w[0].2 < w[1].2);
    }
    // Per sender, FIFO without gaps.
    for s in 1..=3 {
        let seqs: Vec<u64> = results[0]
            .0
            .iter()
            .filter(|x| x.0 == s)
            .map(|x| x.1)
            .collect();
        assert_eq!(seqs, (1..=run.per_node).collect::<Vec<_>>());
    }
    results.into_iter().map(|r| (r.2, r.3)).collect()
}

const STEADY: Run = Run {
    mode: DeliveryMode::Agreed,
    per_node: 200,
    payload: 16,
    tiny_transport: false,
    tiny_recv: false,
    slow_reader: None,
};

#[test]
fn three_nodes_deliver_the_same_agreed_sequence() {
    three_nodes_agree(STEADY);
}

#[test]
fn three_nodes_deliver_the_same_safe_sequence() {
    three_nodes_agree(Run {
        mode: DeliveryMode::Safe,
        ..STEADY
    });
}

/// The transport back-pressures most sends: the frames wait in their
/// peer's backlog and go out on `Writable`; nothing is lost.
#[test]
fn transport_back_pressure_loses_nothing() {
    let stats = three_nodes_agree(Run {
        payload: 1024,
        tiny_transport: true,
        ..STEADY
    });
    let backlogged: u64 = stats.iter().map(|s| s.0.backlogged).sum();
    assert!(
        backlogged > 0,
        "the transport never back-pressured: {stats:?}"
    );
    for (s, _) in &stats {
        assert_eq!(s.delivered, 600, "{s:?}");
        // Every message the Engine sent went to the transport or still
        // waits in a backlog; none vanished.
        assert_eq!(
            s.frames_sent + s.backlog_frames + s.dropped_broken + s.encode_errors,
            s.send_commands,
            "{s:?}"
        );
    }
}

/// Four 4 KiB receive buffers per connection against a window of 1024
/// unstable 1 KiB payloads per sender: the Engine's held payloads would
/// hold every buffer, and the acks that make them stable arrive on the
/// same connections. The node copies payloads out while a connection is
/// short of buffers, so no connection stays paused and nothing is lost.
#[test]
fn a_receive_ring_smaller_than_the_window_never_deadlocks() {
    let stats = three_nodes_agree(Run {
        payload: 1024,
        tiny_recv: true,
        ..STEADY
    });
    for (s, _) in &stats {
        assert_eq!(s.delivered, 600, "{s:?}");
        assert!(s.pressure_copies > 0, "{s:?}");
        // Copied payloads are counted, and only those: most stay views.
        assert!(s.pressure_copies < s.frames_received, "{s:?}");
    }
}

/// The sender window and order batch of the slow-reader runs: they bound
/// what one frame can release past the event queue's bound.
const SLOW_WINDOW: usize = 32;
const SLOW_BATCH: usize = 64;

/// An application that reads slowly: its group's queue stays near
/// `event_queue` (the node stops taking transport events while it is
/// full), and nothing is lost.
#[test]
fn a_slow_reader_bounds_its_queue_and_loses_nothing() {
    let bound = 32;
    let stats = three_nodes_agree(Run {
        per_node: 300,
        slow_reader: Some((bound, 2)),
        ..STEADY
    });
    let (slow, max_pending) = &stats[1];
    // Soft bound: one frame taken at the bound can release every ordered
    // position the node held back for a missing payload (each unstable, so
    // at most a window per sender) and one order record of new entries
    // (`batch`). Without the pause the queue grows to most of the 900.
    let most = bound + 3 * SLOW_WINDOW + SLOW_BATCH;
    assert!(
        *max_pending <= most,
        "queue grew to {max_pending} with a bound of {bound} (at most {most})"
    );
    assert!(slow.reader_stalls > 0, "{slow:?}");
}

fn single(dir: &std::path::Path) -> NodeConfig {
    let addr = free_ports(1)[0];
    NodeConfig::new(NodeId(1), 7, addr, dir.to_path_buf())
}

/// A state file that cannot be trusted stops the start, naming the file;
/// the node never starts afresh over it.
#[test]
fn a_corrupt_state_file_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = single(tmp.path());
    std::fs::write(tmp.path().join("node.state"), b"CNDS\x01\0\0\0garbage").unwrap();
    let rt = node::runtime(&cfg).build().unwrap();
    let err = rt
        .spawn_on(0, move || async move {
            Node::start(cfg).err().map(|e| e.to_string())
        })
        .unwrap()
        .join()
        .unwrap()
        .expect("start must fail");
    rt.shutdown().unwrap();
    assert!(err.contains("node.state"), "{err}");
    // Nothing replaced the damaged file.
    assert_eq!(
        std::fs::read(tmp.path().join("node.state")).unwrap(),
        b"CNDS\x01\0\0\0garbage"
    );
}

/// A restart recovers the incarnation and runs the next one.
#[test]
fn a_restart_runs_a_new_persisted_incarnation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut incs = Vec::new();
    for _ in 0..3 {
        let cfg = single(tmp.path());
        let rt = node::runtime(&cfg).build().unwrap();
        let inc = rt
            .spawn_on(0, move || async move {
                let node = Node::start(cfg).unwrap();
                let g = node.join("solo", DeliveryMode::Agreed).await.unwrap();
                assert!(g.view().is_some());
                let inc = node.incarnation();
                drop(node); // a crash, as far as the membership knows
                inc
            })
            .unwrap()
            .join()
            .unwrap();
        rt.shutdown().unwrap();
        incs.push(inc);
    }
    assert_eq!(incs, vec![1, 2, 3]);
}

/// A durable write that fails stops the node before anything after it is
/// carried out: the join (whose group creation persists) fails with the
/// persist error.
#[test]
fn a_failed_persist_stops_the_node() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = single(tmp.path());
    let dir = tmp.path().to_path_buf();
    let rt = node::runtime(&cfg).build().unwrap();
    let out = rt
        .spawn_on(0, move || async move {
            let node = Node::start(cfg).unwrap();
            // The temporary file's name is taken by a directory: the next
            // write cannot create it (even as root).
            std::fs::create_dir(dir.join("node.state.tmp")).unwrap();
            let r = node.join("solo", DeliveryMode::Agreed).await;
            (r.err().map(|e| e.to_string()), node.stats().persists)
        })
        .unwrap()
        .join()
        .unwrap();
    rt.shutdown().unwrap();
    let (err, persists) = out;
    let err = err.expect("the join must fail");
    assert!(err.contains("durable state write failed"), "{err}");
    assert_eq!(persists, 0);
}

/// A stand-in for node 1 with incarnation `inc`, dialing `to`.
fn fake_peer(cfg: &NodeConfig, inc: u64, to: SocketAddr) -> Driver {
    let mut dc = cfg.driver_config();
    dc.incarnation = inc;
    let mut d = Driver::new(dc).expect("driver");
    d.connect(to).expect("connect");
    d
}

/// Polls `d` until an event satisfies `want` (true) or `limit` passes
/// (false).
/// `Connected` events record the incarnation the other side announced.
fn wait_for(
    d: &mut Driver,
    seen_inc: &mut Option<u64>,
    limit: Duration,
    mut want: impl FnMut(&concord_runtime::transport::Event) -> bool,
) -> bool {
    use concord_runtime::transport::Event;
    let deadline = std::time::Instant::now() + limit;
    let mut hit = false;
    while !hit && std::time::Instant::now() < deadline {
        d.poll(&mut |_, ev| {
            if let Event::Connected { peer, .. } = &ev {
                *seen_inc = Some(peer.incarnation);
            }
            hit |= want(&ev);
        });
        d.park(Some(Duration::from_millis(2))).expect("park");
    }
    hit
}

/// The handshake carries the node's persisted incarnation, and the node
/// keeps the connection of a peer's newest life: one from an older
/// incarnation than it has seen is refused, a newer one replaces the old.
#[test]
fn an_older_incarnation_is_refused_and_a_newer_one_replaces_the_old() {
    use concord_runtime::transport::Event;
    let tmp = tempfile::tempdir().unwrap();
    let cfgs = configs(tmp.path());
    let (fake_cfg, mut cfg) = (cfgs[0].clone(), cfgs[1].clone());
    cfg.nodes.remove(&NodeId(3));
    let to = cfg.listen;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rt = node::runtime(&cfg).build().unwrap();
    let stop = Arc::clone(&done);
    let h = rt
        .spawn_on(0, move || async move {
            let ctx = concord_runtime::ShardContext::current().unwrap();
            let node = Node::start(cfg).expect("start");
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
                ctx.sleep(Duration::from_millis(5)).await;
            }
            let stats = node.stats();
            drop(node);
            stats
        })
        .unwrap();
    let connected = |ev: &Event| matches!(ev, Event::Connected { .. });
    let gone = |ev: &Event| matches!(ev, Event::Disconnected { .. });
    let (long, short) = (Duration::from_secs(20), Duration::from_millis(500));
    let mut inc = None;
    let mut f5 = fake_peer(&fake_cfg, 5, to);
    assert!(
        wait_for(&mut f5, &mut inc, long, connected),
        "incarnation 5 never connected"
    );
    assert_eq!(
        inc,
        Some(1),
        "the node's handshake carries its persisted incarnation"
    );
    // An older life of node 1: closed by the node, and the incarnation-5
    // connection stays.
    let mut f3 = fake_peer(&fake_cfg, 3, to);
    assert!(
        wait_for(&mut f3, &mut inc, long, gone),
        "incarnation 3 was not refused"
    );
    drop(f3);
    assert!(
        !wait_for(&mut f5, &mut inc, short, gone),
        "the refusal broke incarnation 5"
    );
    // A newer life replaces it.
    let mut f7 = fake_peer(&fake_cfg, 7, to);
    assert!(
        wait_for(&mut f7, &mut inc, long, connected),
        "incarnation 7 never connected"
    );
    assert!(
        wait_for(&mut f5, &mut inc, long, gone),
        "incarnation 5 was not replaced"
    );
    drop(f5);
    assert!(
        !wait_for(&mut f7, &mut inc, short, gone),
        "incarnation 7 lost its connection"
    );
    done.store(true, Ordering::Release);
    let stats = h.join().unwrap();
    rt.shutdown().unwrap();
    // 5 and 7 accepted; 3 (and 5, if it reconnected before it was dropped)
    // refused.
    assert_eq!(stats.connects, 2, "{stats:?}");
    assert!(stats.refused_conns >= 1, "{stats:?}");
}
