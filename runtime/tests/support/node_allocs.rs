//! Allocations and payload copies per delivery at each node in steady state,
//! shared by `examples/node_allocs.rs` (which prints the figures) and
//! `tests/node_allocs.rs` (which fails on an allocation per delivery).
//!
//! Three nodes in one process (one runtime and shard each) over loopback,
//! every node multicasting 64-byte payloads written into pooled buffers
//! (`Group::payload_buf`) in an Agreed group. The shard thread of each node
//! counts its own allocations (`alloc::thread_allocs`) between its `warm`th
//! and its last delivery, and the received payloads that were copied in the
//! same span: frames the transport reassembled because they straddled two
//! receive buffers (`NodeStats::reassembled_frames`) and payloads copied out
//! of a receive buffer under receive pressure (`NodeStats::pressure_copies`).
//! The binary that uses it installs `alloc::CountingAlloc`.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use concord_membership::{DeliveryMode, NodeId};
use concord_runtime::alloc;
use concord_runtime::node::{self, GroupEvent, Node, NodeConfig};

/// What one node counted over its measured deliveries.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    pub node: u32,
    /// Deliveries in the measured span.
    pub deliveries: u64,
    /// Deliveries it should have made in that span (all of them arrived if
    /// equal).
    pub expected: u64,
    /// Allocations on the node's shard thread in that span.
    pub allocs: u64,
    /// Received frames reassembled (copied) in that span.
    pub reassembled: u64,
    /// Received payloads copied under receive pressure in that span.
    pub pressure_copies: u64,
    /// Whether the node was the group's sequencer at the end.
    pub sequencer: bool,
}

impl Figure {
    pub fn allocs_per_delivery(&self) -> f64 {
        self.allocs as f64 / self.deliveries.max(1) as f64
    }

    pub fn copies_per_delivery(&self) -> f64 {
        (self.reassembled + self.pressure_copies) as f64 / self.deliveries.max(1) as f64
    }

    /// One line of JSON.
    pub fn json(&self) -> String {
        format!(
            "{{\"node\":{},\"deliveries\":{},\"expected\":{},\"allocs\":{},\"allocs_per_delivery\":{:.6},\"reassembled\":{},\"pressure_copies\":{},\"copies_per_delivery\":{:.6},\"sequencer\":{}}}",
            self.node,
            self.deliveries,
            self.expected,
            self.allocs,
            self.allocs_per_delivery(),
            self.reassembled,
            self.pressure_copies,
            self.copies_per_delivery(),
            self.sequencer
        )
    }
}

/// Runs the three nodes, each multicasting `per_node` payloads, and counts
/// from each node's `warm`th delivery on.
pub fn measure(per_node: u64, warm: u64) -> Vec<Figure> {
    assert!(alloc::is_installed(), "install alloc::CountingAlloc");
    assert!(warm < 3 * per_node);
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
            // Three busy nodes share two cores: a generous timeout keeps the
            // detector from suspecting one (a view change is not steady state).
            cfg.failure_timeout = Duration::from_secs(3);
            cfg.heartbeat_interval = Duration::from_millis(50);
            std::thread::spawn(move || run(cfg, per_node, warm))
        })
        .collect();
    let figures = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let _ = std::fs::remove_dir_all(tmp);
    figures
}

/// (reassembled frames, pressure copies) so far at this node.
fn copies(node: &Node) -> (u64, u64) {
    let s = node.stats();
    (s.reassembled_frames, s.pressure_copies)
}

fn run(cfg: NodeConfig, per_node: u64, warm: u64) -> Figure {
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
            let deadline = Instant::now() + Duration::from_secs(300);
            while delivered < 3 * per_node && Instant::now() < deadline {
                while let Some(ev) = g.try_next() {
                    match ev {
                        GroupEvent::Delivery(_) => {
                            delivered += 1;
                            if delivered == warm {
                                mark = Some((alloc::thread_allocs(), copies(&node)));
                            }
                        }
                        GroupEvent::ViewChange { view, .. } => full = view.members.len() == 3,
                        _ => {}
                    }
                }
                if full && sent < per_node {
                    // Written once into a pooled buffer; a back-pressured
                    // payload is offered again as it is.
                    let p = held.take().unwrap_or_else(|| {
                        let mut b = g.payload_buf();
                        b.extend_from_slice(&payload);
                        node::Bytes::from(b)
                    });
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
            let (a0, (r0, p0)) = mark.unwrap_or((0, (0, 0)));
            let allocs = alloc::thread_allocs() - a0;
            let (r1, p1) = copies(&node);
            let sequencer = g.view().and_then(|v| v.coordinator()) == Some(node.id());
            let figure = Figure {
                node: node.id().0,
                deliveries: delivered.saturating_sub(warm),
                expected: 3 * per_node - warm,
                allocs,
                reassembled: r1 - r0,
                pressure_copies: p1 - p0,
                sequencer,
            };
            ctx.sleep(Duration::from_millis(300)).await;
            node.shutdown().await.unwrap();
            figure
        })
        .unwrap();
    let out = h.join().unwrap();
    rt.shutdown().unwrap();
    out
}
