//! Three nodes in one process, each running two shards from a
//! [`ShardPlan`]: groups on both shards, every node delivers the same
//! sequence per group, a group is joined only on the shard that owns it, and
//! a data directory keeps the shard count it was created with.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use concord_membership::{DeliveryMode, GroupId, NodeId};
use concord_runtime::node::{
    self, GroupEvent, JoinError, LAYOUT_FILE, Node, NodeConfig, ShardPlan, StartError, shard_of,
};

const SHARDS: usize = 2;
const PER_NODE: u64 = 200;

/// Three base ports `p` with `p..p + SHARDS` all free (held until chosen, so
/// none repeats).
fn free_port_runs() -> Vec<SocketAddr> {
    let mut held = Vec::new();
    let mut bases = Vec::new();
    while bases.len() < 3 {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = first.local_addr().unwrap();
        let rest: Option<Vec<TcpListener>> = (1..SHARDS)
            .map(|s| {
                let mut a = base;
                a.set_port(base.port().checked_add(s as u16)?);
                TcpListener::bind(a).ok()
            })
            .collect();
        if let Some(rest) = rest {
            bases.push(base);
            held.push(first);
            held.extend(rest);
        }
    }
    bases
}

fn base_configs(dir: &std::path::Path) -> Vec<NodeConfig> {
    let addrs = free_port_runs();
    (0..3)
        .map(|i| {
            let mut c = NodeConfig::new(
                NodeId(i as u32 + 1),
                42,
                addrs[i],
                dir.join(format!("n{}", i + 1)),
            );
            for (j, a) in addrs.iter().enumerate() {
                c.add_node(NodeId(j as u32 + 1), *a);
            }
            // Six shard threads share 2 cores (see tests/node.rs).
            c.heartbeat_interval = Duration::from_millis(50);
            c.failure_timeout = Duration::from_secs(3);
            c
        })
        .collect()
}

/// Two group names per shard.
fn groups() -> Vec<Vec<String>> {
    let mut by_shard = vec![Vec::new(); SHARDS];
    for i in 0.. {
        let name = format!("g{i}");
        let s = shard_of(GroupId::from_name(&name), SHARDS);
        if by_shard[s].len() < 2 {
            by_shard[s].push(name);
        }
        if by_shard.iter().all(|g| g.len() == 2) {
            return by_shard;
        }
    }
    unreachable!()
}

/// What one shard of one node saw, per group it joined: (sender,
/// sender_seq, seq) in delivery order.
type Seen = Vec<(String, Vec<(u32, u64, u64)>)>;

async fn run_shard(
    node: Node,
    mine: Vec<String>,
    theirs: Vec<String>,
    finished: Arc<AtomicUsize>,
) -> (Seen, u64) {
    let ctx = concord_runtime::ShardContext::current().unwrap();
    let me = node.id();
    let shard = node.shard();
    for name in &theirs {
        assert!(!node.owns(name));
        match node.join(name, DeliveryMode::Agreed).await {
            Err(JoinError::WrongShard { shard: s, .. }) => {
                assert_eq!(s, shard_of(GroupId::from_name(name), SHARDS));
                assert_ne!(s, shard.index);
            }
            other => panic!("joined {name} on shard {shard:?}: {other:?}"),
        }
    }
    let mut gs = Vec::new();
    for name in &mine {
        assert!(node.owns(name));
        gs.push(node.join(name, DeliveryMode::Agreed).await.expect("join"));
    }
    let total = PER_NODE * 3;
    let mut seen: Seen = mine.iter().map(|n| (n.clone(), Vec::new())).collect();
    let mut members = vec![0; gs.len()];
    let mut sent = vec![0u64; gs.len()];
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.iter().any(|(_, s)| (s.len() as u64) < total) {
        assert!(Instant::now() < deadline, "timed out: {seen:?}");
        for (i, g) in gs.iter().enumerate() {
            while let Some(ev) = g.try_next() {
                match ev {
                    GroupEvent::Delivery(d) => {
                        assert_eq!(d.payload[..8], (d.sender_seq - 1).to_le_bytes());
                        assert_eq!(&d.payload[8..], mine[i].as_bytes());
                        assert_eq!(d.payload.is_received(), d.sender != me);
                        seen[i].1.push((d.sender.0, d.sender_seq, d.seq));
                    }
                    GroupEvent::ViewChange { view, .. } => members[i] = view.members.len(),
                    _ => {}
                }
            }
            if members[i] == 3 && sent[i] < PER_NODE {
                let mut p = sent[i].to_le_bytes().to_vec();
                p.extend_from_slice(mine[i].as_bytes());
                if let Ok(node::Multicast::Accepted { .. }) = g.multicast(&p[..]) {
                    sent[i] += 1;
                }
            }
        }
        ctx.sleep(Duration::from_micros(200)).await;
    }
    let stats = node.stats();
    // Shard s connects to shard s of each of the two peers, and to
    // nothing else: another shard's domain id fails the handshake.
    assert_eq!((stats.connects, stats.refused_conns), (2, 0), "{stats:?}");
    let inc = node.incarnation();
    finished.fetch_add(1, Ordering::AcqRel);
    let deadline = Instant::now() + Duration::from_secs(60);
    while finished.load(Ordering::Acquire) < 3 * SHARDS && Instant::now() < deadline {
        ctx.sleep(Duration::from_millis(5)).await;
    }
    node.shutdown().await.expect("shutdown");
    (seen, inc)
}

fn run_node(base: NodeConfig, groups: Vec<Vec<String>>, finished: Arc<AtomicUsize>) -> Vec<Seen> {
    let plan = ShardPlan::new(base, SHARDS).expect("plan");
    let rt = plan.runtime().build().expect("runtime");
    let handles: Vec<_> = (0..SHARDS)
        .map(|s| {
            let cfg = plan.config(s);
            let mine = groups[s].clone();
            let theirs: Vec<String> = groups
                .iter()
                .enumerate()
                .filter(|&(t, _)| t != s)
                .flat_map(|(_, g)| g.clone())
                .collect();
            let finished = Arc::clone(&finished);
            rt.spawn_on(s, move || {
                let node = Node::start(cfg).expect("start");
                assert_eq!(node.shard().index, s);
                run_shard(node, mine, theirs, finished)
            })
            .expect("spawn")
        })
        .collect();
    let out: Vec<Seen> = handles
        .into_iter()
        .map(|h| {
            let (seen, inc) = h.join().expect("shard task");
            assert_eq!(inc, 1, "a first start runs incarnation 1");
            seen
        })
        .collect();
    rt.shutdown().expect("runtime shutdown");
    out
}

#[test]
fn every_node_delivers_the_same_sequence_per_group_on_every_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let groups = groups();
    let finished = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = base_configs(tmp.path())
        .into_iter()
        .map(|c| {
            let groups = groups.clone();
            let finished = Arc::clone(&finished);
            std::thread::spawn(move || run_node(c, groups, finished))
        })
        .collect();
    let results: Vec<Vec<Seen>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for s in 0..SHARDS {
        for (g, (name, seq)) in results[0][s].iter().enumerate() {
            assert_eq!(seq.len() as u64, PER_NODE * 3, "{name}");
            for n in &results[1..] {
                assert_eq!(&n[s][g].0, name);
                assert_eq!(&n[s][g].1, seq, "node order differs in {name}");
            }
            assert!(seq.windows(2).all(|w| w[0].2 < w[1].2), "{name}");
        }
    }
    // Each shard keeps its state in its own directory under the node's.
    for i in 1..=3 {
        let dir = tmp.path().join(format!("n{i}"));
        let layout = std::fs::read_to_string(dir.join(LAYOUT_FILE)).unwrap();
        assert_eq!(layout.trim(), format!("shards {SHARDS}"));
        for s in 0..SHARDS {
            assert!(dir.join(format!("shard-{s}")).join("node.state").exists());
        }
        assert!(!dir.join("node.state").exists());
    }
}

fn start_err(cfg: NodeConfig) -> StartError {
    let rt = node::runtime(&cfg).build().expect("runtime");
    let r = rt
        .spawn_on(0, move || async move { Node::start(cfg).map(drop) })
        .expect("spawn")
        .join()
        .expect("task");
    rt.shutdown().expect("runtime shutdown");
    r.expect_err("the node started")
}

fn is_layout(e: &StartError) -> bool {
    matches!(e, StartError::Layout { .. })
}

#[test]
fn a_data_directory_keeps_its_shard_count() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base_configs(tmp.path()).remove(0);
    let dir = base.data_dir.clone();

    let plan = ShardPlan::new(base.clone(), 2).expect("first plan");
    // Shard 0 is the one-shard node's domain; shard 1 has its own id, ports
    // and directory.
    let (c0, c1) = (plan.config(0), plan.config(1));
    assert_eq!((c0.cluster, c0.listen), (base.cluster, base.listen));
    assert_ne!(c1.cluster, c0.cluster);
    assert_eq!(c1.listen.port(), base.listen.port() + 1);
    for (id, a) in &c1.nodes {
        assert_eq!(a.port(), base.nodes[id].port() + 1);
    }
    assert_eq!(c1.data_dir, dir.join("shard-1"));
    assert_eq!(node::domain_id(base.cluster, 1), c1.cluster);
    ShardPlan::new(base.clone(), 2).expect("the same count again");
    for cores in [1, 3] {
        let e = ShardPlan::new(base.clone(), cores).unwrap_err();
        assert!(is_layout(&e), "{cores} cores: {e}");
        assert!(e.to_string().contains("ran 2 shard(s)"), "{e}");
    }
    // A one-shard start over the directory of a two-shard node.
    let e = start_err(base.clone());
    assert!(is_layout(&e), "{e}");

    // A shard of a plan whose directory lost its layout file.
    let plan = ShardPlan::new(base.clone(), 2).unwrap();
    std::fs::remove_file(dir.join(LAYOUT_FILE)).unwrap();
    let e = start_err(plan.config(0));
    assert!(is_layout(&e) && e.to_string().contains("missing"), "{e}");

    // A damaged layout file is an error naming it, not a fresh start.
    std::fs::write(dir.join(LAYOUT_FILE), "shards two\n").unwrap();
    let e = ShardPlan::new(base.clone(), 2).unwrap_err();
    assert!(is_layout(&e) && e.to_string().contains(LAYOUT_FILE), "{e}");

    // A one-shard node that ran cannot be split into shards.
    let tmp1 = tempfile::tempdir().unwrap();
    let mut one = base.clone();
    one.data_dir = tmp1.path().join("one");
    let rt = node::runtime(&one).build().unwrap();
    let c = one.clone();
    rt.spawn_on(0, move || async move {
        let n = Node::start(c).expect("one-shard start");
        n.shutdown().await.expect("shutdown");
    })
    .unwrap()
    .join()
    .unwrap();
    rt.shutdown().unwrap();
    let e = ShardPlan::new(one.clone(), 2).unwrap_err();
    assert!(is_layout(&e) && e.to_string().contains("one-shard"), "{e}");
    ShardPlan::new(one, 1).expect("a one-shard plan over a one-shard node");

    // Zero shards, and ports that do not fit.
    assert!(matches!(
        ShardPlan::new(base.clone(), 0),
        Err(StartError::Config(_))
    ));
    let mut high = base;
    high.data_dir = tmp1.path().join("high");
    high.listen.set_port(65535);
    let me = high.node;
    high.add_node(me, high.listen);
    high.validate().expect("a valid one-shard config");
    assert!(matches!(
        ShardPlan::new(high, 2),
        Err(StartError::Config(_))
    ));
}
