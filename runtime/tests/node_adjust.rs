//! Adjust-version through the Node: three nodes in one process over
//! loopback, traffic flowing, one member switches the group's protocol
//! version down and back up; every member reads each switch at the same
//! position of the order, and the requester's refusals name the culprit.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use concord_membership::{
    AdjustError as EngineAdjustError, DeliveryMode, NodeId, ProtocolVersion, Reason, Target,
    VersionError,
};
use concord_runtime::node::{self, AdjustError, GroupEvent, Node, NodeConfig};

const PER_NODE: u64 = 150;
/// The node that asks (node 1 creates the group and sequences it in most
/// runs; asking from another one goes through the sequencer's check).
const ASKER: u32 = 2;

fn configs(dir: &std::path::Path) -> Vec<NodeConfig> {
    let ls: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    (0..3)
        .map(|i| {
            let mut c = NodeConfig::new(
                NodeId(i as u32 + 1),
                7,
                addrs[i],
                dir.join(format!("n{}", i + 1)),
            );
            for (j, a) in addrs.iter().enumerate() {
                c.add_node(NodeId(j as u32 + 1), *a);
            }
            // Three shard threads on 2 cores (see tests/node.rs).
            c.heartbeat_interval = Duration::from_millis(50);
            c.failure_timeout = Duration::from_secs(3);
            c
        })
        .collect()
}

/// `f`, or a panic naming `what` if it takes longer than 30 s (a lost
/// outcome must fail the test, not hang it).
async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    let ctx = concord_runtime::ShardContext::current().unwrap();
    let mut f = std::pin::pin!(f);
    let mut t = std::pin::pin!(ctx.sleep(Duration::from_secs(30)));
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(cx) {
            return std::task::Poll::Ready(v);
        }
        if t.as_mut().poll(cx).is_ready() {
            panic!("{what}: no outcome after 30 s");
        }
        std::task::Poll::Pending
    })
    .await
}

/// A switch as one member read it: (position, from, to).
type Switch = (u64, ProtocolVersion, ProtocolVersion);

/// What the asker's calls returned.
#[derive(Debug, Default)]
struct Asked {
    switches: Vec<Switch>,
}

fn run_node(cfg: NodeConfig, finished: Arc<AtomicUsize>) -> (Vec<Switch>, Asked, usize) {
    let rt = node::runtime(&cfg).build().expect("runtime");
    let h = rt
        .spawn_on(0, move || async move {
            let me = cfg.node;
            let ctx = concord_runtime::ShardContext::current().unwrap();
            let node = Node::start(cfg).expect("start");
            let g = node
                .join("orders", DeliveryMode::Agreed)
                .await
                .expect("join");
            let mut seen = Vec::new();
            let mut delivered = 0;
            let mut sent = 0;
            let mut members = 0;
            let mut last_adjust_view = None;
            let mut asked = Asked::default();
            let mut asking = me.0 == ASKER;
            let deadline = Instant::now() + Duration::from_secs(60);
            while delivered < PER_NODE * 3 || seen.len() < 2 {
                assert!(Instant::now() < deadline, "timed out: {delivered} {seen:?}");
                while let Some(ev) = g.try_next() {
                    match ev {
                        GroupEvent::Delivery(_) => delivered += 1,
                        GroupEvent::ViewChange {
                            view,
                            reason,
                            position,
                        } => {
                            members = view.members.len();
                            if let Reason::AdjustVersion { from, to } = reason {
                                assert_eq!(view.protocol, to);
                                last_adjust_view = Some((position, from, to));
                            }
                        }
                        GroupEvent::VersionAdjusted { from, to } => {
                            // Right after the view of the switch.
                            let (p, f, t) = last_adjust_view.take().expect("a view first");
                            assert_eq!((f, t), (from, to));
                            seen.push((p, from, to));
                        }
                        GroupEvent::Partitioned => panic!("partitioned"),
                    }
                }
                if members == 3 && sent < PER_NODE {
                    let p = sent.to_le_bytes();
                    if let Ok(node::Multicast::Accepted { .. }) = g.multicast(&p[..]) {
                        sent += 1;
                    }
                }
                if asking && members == 3 && sent >= PER_NODE / 3 {
                    asking = false;
                    let v = |n| ProtocolVersion(n);
                    assert_eq!(g.view().unwrap().protocol, v(2), "created at the highest");
                    // A version no node runs: refused here, naming a node
                    // and what it supports, before anything is ordered.
                    match within("v3", g.adjust_version(Target::Exact(v(3)))).await {
                        Err(AdjustError::Refused(EngineAdjustError::Version(
                            VersionError::NotCapable { node, supported },
                        ))) => {
                            assert!((1..=3).contains(&node.0));
                            assert_eq!((supported.min, supported.max), (v(1), v(2)));
                        }
                        other => panic!("{other:?}"),
                    }
                    assert_eq!(
                        within("v2", g.adjust_version(Target::Exact(v(2))))
                            .await
                            .unwrap(),
                        None
                    );
                    let down = within("down", g.adjust_version(Target::Exact(v(1))))
                        .await
                        .expect("switch down")
                        .expect("ordered");
                    assert_eq!((down.group, down.from, down.to), (g.id(), v(2), v(1)));
                    asked.switches.push((down.position, down.from, down.to));
                    let all = within("up", node.adjust_version(Target::HighestCommon))
                        .await
                        .unwrap();
                    assert_eq!(all.len(), 1, "{all:?}");
                    let up = all.into_iter().next().unwrap().expect("switch up");
                    assert_eq!((up.from, up.to), (v(1), v(2)));
                    assert!(up.position > down.position);
                    asked.switches.push((up.position, up.from, up.to));
                }
                ctx.sleep(Duration::from_micros(200)).await;
            }
            finished.fetch_add(1, Ordering::AcqRel);
            let deadline = Instant::now() + Duration::from_secs(60);
            while finished.load(Ordering::Acquire) < 3 && Instant::now() < deadline {
                ctx.sleep(Duration::from_millis(5)).await;
            }
            node.shutdown().await.expect("shutdown");
            (seen, asked, delivered as usize)
        })
        .expect("spawn");
    let out = h.join().expect("node task");
    rt.shutdown().expect("runtime shutdown");
    out
}

#[test]
fn every_member_reads_each_switch_at_the_position_the_asker_was_told() {
    let tmp = tempfile::tempdir().unwrap();
    let finished = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = configs(tmp.path())
        .into_iter()
        .map(|c| {
            let finished = Arc::clone(&finished);
            std::thread::spawn(move || run_node(c, finished))
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let asker = &results[ASKER as usize - 1].1;
    assert_eq!(asker.switches.len(), 2);
    for (seen, _, delivered) in &results {
        assert_eq!(*delivered as u64, PER_NODE * 3);
        assert_eq!(seen, &asker.switches);
    }
}
