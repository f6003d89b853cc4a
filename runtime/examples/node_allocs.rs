//! Allocations per delivery at one node in steady state: three nodes in one
//! process (one runtime and shard each) over loopback, every node
//! multicasting 64-byte payloads in an Agreed group; the shard thread of
//! each node counts its own allocations ([`alloc::thread_allocs`]) between
//! its 2,000th and its last delivery, and the received payloads that were
//! copied in the same span: frames the transport reassembled because they
//! straddled two receive buffers (`NodeStats::reassembled_frames`) and
//! payloads copied out of a receive buffer (`Stats::copied_out_frames`).
//!
//! ```text
//! cargo run --release -p concord-runtime --example node_allocs
//! ```

use std::net::TcpListener;
use std::time::{Duration, Instant};

use concord_membership::{DeliveryMode, NodeId};
use concord_runtime::alloc::{self, CountingAlloc};
use concord_runtime::node::{self, GroupEvent, Node, NodeConfig};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const PER_NODE: u64 = 5_000;
const WARM: u64 = 2_000;

fn main() {
    assert!(alloc::is_installed());
    let tmp = std::env::temp_dir().join(format!("concord-node-allocs-{}", std::process::id()));
    let ls: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<_> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    drop(ls);
    let threads: Vec<_> = (0..3u32)
        .map(|i| {
            let mut cfg =
                NodeConfig::new(NodeId(i + 1), 1, addrs[i as usize], tmp.join(i.to_string()));
            for (j, a) in addrs.iter().enumerate() {
                cfg.add_node(NodeId(j as u32 + 1), *a);
            }
            cfg.failure_timeout = Duration::from_secs(1);
            cfg.heartbeat_interval = Duration::from_millis(50);
            std::thread::spawn(move || run(cfg))
        })
        .collect();
    for t in threads {
        let (id, delivered, allocs, copies, seq) = t.join().unwrap();
        println!(
            "node {id}: {delivered} deliveries measured, {allocs} allocations on its shard thread: {:.2} per delivery; {copies} received payloads copied: {:.4} per delivery (sequencer: {seq})",
            allocs as f64 / delivered as f64,
            copies as f64 / delivered as f64
        );
    }
    let _ = std::fs::remove_dir_all(tmp);
}

/// Received payloads copied so far at this node.
fn copies(node: &Node, ctx: &concord_runtime::ShardContext) -> u64 {
    let t = ctx.driver().unwrap().stats();
    node.stats().reassembled_frames + t.copied_out_frames
}

fn run(cfg: NodeConfig) -> (u32, u64, u64, u64, bool) {
    let rt = node::runtime(&cfg).build().unwrap();
    let h = rt
        .spawn_on(0, move || async move {
            let ctx = concord_runtime::ShardContext::current().unwrap();
            let node = Node::start(cfg).unwrap();
            let g = node.join("allocs", DeliveryMode::Agreed).await.unwrap();
            let payload = [7u8; 64];
            let (mut sent, mut delivered, mut full) = (0u64, 0u64, false);
            let mut mark = None;
            let mut held = None;
            let deadline = Instant::now() + Duration::from_secs(120);
            while delivered < 3 * PER_NODE && Instant::now() < deadline {
                while let Some(ev) = g.try_next() {
                    match ev {
                        GroupEvent::Delivery(_) => {
                            delivered += 1;
                            if delivered == WARM {
                                mark = Some((alloc::thread_allocs(), copies(&node, &ctx)));
                            }
                        }
                        GroupEvent::ViewChange { view, .. } => full = view.members.len() == 3,
                        _ => {}
                    }
                }
                if full && sent < PER_NODE {
                    // A back-pressured payload is offered again as it is:
                    // a fresh copy per attempt would count against the node.
                    let p = held
                        .take()
                        .unwrap_or_else(|| node::Bytes::copy_from(&payload));
                    match g.multicast(p) {
                        Ok(node::Multicast::Accepted { .. }) => sent += 1,
                        Ok(node::Multicast::BackPressured(p)) => {
                            held = Some(p);
                            concord_runtime::yield_now().await;
                        }
                        Err(e) => panic!("multicast: {e}"),
                    }
                } else {
                    concord_runtime::yield_now().await;
                }
            }
            let (a0, c0) = mark.unwrap_or((0, 0));
            let allocs = alloc::thread_allocs() - a0;
            let copied = copies(&node, &ctx) - c0;
            let seq = g.view().and_then(|v| v.coordinator()) == Some(node.id());
            let id = node.id().0;
            ctx.sleep(Duration::from_millis(300)).await;
            node.shutdown().await.unwrap();
            (id, delivered - WARM, allocs, copied, seq)
        })
        .unwrap();
    let out = h.join().unwrap();
    rt.shutdown().unwrap();
    out
}
