//! A replicated counter: every process holds a copy of one counter, and
//! every increment is multicast to the group "counter" in Safe mode, so
//! every replica applies the same increments in the same order and ends at
//! the same value (and the same running hash of the order).
//!
//! Run 3 local processes, one per terminal (or with `&`):
//!
//! ```text
//! N=127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103
//! cargo run --release -p concord-runtime --example counter -- --id 1 --nodes $N --data /tmp/counter/1
//! cargo run --release -p concord-runtime --example counter -- --id 2 --nodes $N --data /tmp/counter/2
//! cargo run --release -p concord-runtime --example counter -- --id 3 --nodes $N --data /tmp/counter/3
//! ```
//!
//! Each process adds `--rounds` (default 50) increments of its own, prints
//! every view change, and once it applied every replica's increments prints
//! the final value and hash (the same on all three), then leaves the group
//! in order and exits. `--nodes` lists the addresses of nodes 1, 2, 3...;
//! `--data` keeps the node's durable state (its incarnation and its votes)
//! across restarts. If memlock is too low: `ulimit -l unlimited`.

use std::time::{Duration, Instant};

use concord_membership::{DeliveryMode, NodeId};
use concord_runtime::ShardContext;
use concord_runtime::node::{self, GroupEvent, Node, NodeConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    cfg: NodeConfig,
    rounds: u64,
}

fn args() -> Result<Args, BoxError> {
    let mut id = None;
    let mut nodes = Vec::new();
    let mut data = None;
    let mut rounds = 50;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--id" => id = Some(NodeId(v.parse()?)),
            "--nodes" => {
                nodes = v
                    .split(',')
                    .map(|a| a.parse())
                    .collect::<Result<Vec<std::net::SocketAddr>, _>>()?
            }
            "--data" => data = Some(std::path::PathBuf::from(v)),
            "--rounds" => rounds = v.parse()?,
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    let id = id.ok_or("--id is required")?;
    let data = data.ok_or("--data is required")?;
    let listen = *nodes
        .get(id.0 as usize - 1)
        .ok_or("--nodes must list this node's address")?;
    let mut cfg = NodeConfig::new(id, 0xC0C0, listen, data);
    // A LAN would take the 100 ms default; three processes sharing a
    // laptop's cores with a build running want more slack.
    cfg.heartbeat_interval = Duration::from_millis(20);
    cfg.failure_timeout = Duration::from_millis(500);
    for (i, a) in nodes.iter().enumerate() {
        cfg.add_node(NodeId(i as u32 + 1), *a);
    }
    Ok(Args { cfg, rounds })
}

/// The replicated state: apply the same increments in the same order and
/// every replica holds the same value.
#[derive(Debug, Default)]
struct Counter {
    value: u64,
    applied: u64,
    /// FNV-1a over (sender, amount) in delivery order.
    order_hash: u64,
}

impl Counter {
    fn apply(&mut self, sender: NodeId, amount: u64) {
        self.value = self.value.wrapping_add(amount);
        self.applied += 1;
        let mut h = if self.order_hash == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.order_hash
        };
        for b in sender
            .0
            .to_le_bytes()
            .into_iter()
            .chain(amount.to_le_bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.order_hash = h;
    }
}

fn main() -> Result<(), BoxError> {
    let Args { cfg, rounds } = args()?;
    let replicas = cfg.nodes.len() as u64;
    let rt = node::runtime(&cfg).build()?;
    let task = rt.spawn_on(0, move || async move {
        let ctx = ShardContext::current()?;
        let node = Node::start(cfg)?;
        println!(
            "node {:?} incarnation {} started",
            node.id(),
            node.incarnation()
        );
        let group = node.join("counter", DeliveryMode::Safe).await?;
        let me = node.id();
        let mut counter = Counter::default();
        let mut sent = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut next_send = Instant::now();
        // Increments start once every replica is a member: a replica does
        // not receive what was multicast before it joined.
        let mut everyone = false;
        while counter.applied < rounds * replicas && Instant::now() < deadline {
            while let Some(ev) = group.try_next() {
                match ev {
                    GroupEvent::Delivery(d) => {
                        // Zero-copy: `d.payload` is the received bytes.
                        let amount = u64::from_le_bytes(d.payload[..8].try_into()?);
                        counter.apply(d.sender, amount);
                    }
                    GroupEvent::ViewChange { view, reason, .. } => {
                        everyone |= view.members.len() as u64 == replicas;
                        println!(
                            "view {:?}: members {:?} ({reason:?})",
                            view.id, view.members
                        )
                    }
                    other => println!("{other:?}"),
                }
            }
            if everyone && sent < rounds && Instant::now() >= next_send {
                let amount = u64::from(me.0) * 1000 + sent;
                // Written once into a pooled buffer: no allocation per
                // increment once the pool is warm.
                let mut payload = group.payload_buf();
                payload.extend_from_slice(&amount.to_le_bytes());
                group.send(payload).await?;
                sent += 1;
                next_send = Instant::now() + Duration::from_millis(10);
            }
            ctx.sleep(Duration::from_millis(1)).await;
        }
        println!(
            "final: value {} after {} increments, order hash {:#018x}",
            counter.value, counter.applied, counter.order_hash
        );
        // Give the slowest replica time to apply the last increments before
        // this one leaves.
        ctx.sleep(Duration::from_millis(500)).await;
        node.shutdown().await?;
        Ok::<(), BoxError>(())
    })?;
    task.join()??;
    rt.shutdown()?;
    Ok(())
}
