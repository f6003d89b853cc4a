//! A node process: one `Node` on one shard, a member of both benchmark
//! groups, carrying out the parent's [`Command`]s one at a time.
//!
//! One reader task per group takes every event the moment it arrives,
//! folds each delivery into the group's running [`order_hash`] and
//! delivered count, and wakes a closed-loop sender waiting for its own
//! message. The commands run on the node's shard, so a multicast, its
//! frames and the deliveries never cross a thread; the floor's busy-polled
//! sockets run on a thread of their own, like the floor of `pingpong`.

use super::proto::{
    Command, GroupName, MemberSpec, ORDER_HASH_START, Reply, Throughput, order_hash,
};
use crate::cases::std_sockets::{self, StdMode};
use crate::harness::alloc_window::{ALLOC_WARMUP, AllocWindow};
use crate::harness::seq::{seq_of, stamp};
use crate::harness::size::check_pingpong_size;
use crate::harness::summary::LatencyHistogram;
use anyhow::{Context as _, bail};
use concord_membership::{DeliveryMode, NodeId};
use concord_runtime::alloc::{self, thread_allocs};
use concord_runtime::node::{self, Bytes, Group, GroupEvent, Multicast, Node, NodeConfig};
use concord_runtime::{Offer, Receiver, ShardContext, channel, yield_now};
use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{BufRead as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a node waits for both groups to hold every node, and for a
/// `Drain` or a floor thread to finish.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// How often the throughput sender reads the clock and yields to the
/// reader and the node (multicast attempts).
const YIELD_EVERY: u64 = 32;

/// Runs a node process: `spec` is the [`MemberSpec`] as JSON. Returns when
/// told to quit or when stdin closes (the parent is gone).
pub fn main(spec: &str) -> anyhow::Result<()> {
    let spec: MemberSpec = serde_json::from_str(spec).context("parsing the member spec")?;
    let me = NodeId(spec.id);
    let listen = spec
        .nodes
        .iter()
        .find(|(n, _)| *n == spec.id)
        .map(|(_, a)| *a)
        .context("the spec has no address for this node")?;
    let mut cfg = NodeConfig::new(me, spec.cluster, listen, spec.data_dir.clone());
    for (n, a) in &spec.nodes {
        cfg.add_node(NodeId(*n), *a);
    }
    cfg.failure_timeout = spec.failure_timeout;
    let nodes = spec.nodes.len();
    let rt = node::runtime(&cfg).idle(spec.idle.strategy()).build()?;
    let (tx, rx) = channel::<String>(16);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(mut msg) = line else { break };
                loop {
                    match tx.try_send(msg) {
                        Offer::Sent => break,
                        Offer::BackPressured(m) => {
                            msg = m;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Offer::Closed(_) => return,
                    }
                }
            }
            // The parent is gone: nobody will stop this process otherwise.
            std::process::exit(0);
        })?;
    let done = rt.spawn_on(0, move || async move { serve(cfg, nodes, rx).await })?;
    let out = done.join()?;
    rt.shutdown()?;
    out
}

/// Writes one reply line to stdout.
fn reply(r: &Reply) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, r);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// What a group's reader has seen.
#[derive(Debug)]
struct Tally {
    delivered: u64,
    hash: u64,
    members: usize,
    coordinator: u32,
    /// The sender sequence number of this node's latest own delivery.
    own_seq: u64,
    waiter: Option<Waker>,
    ready: bool,
    /// Reasons of the view changes since `ready`, in order.
    view_changes: Vec<String>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            delivered: 0,
            hash: ORDER_HASH_START,
            members: 0,
            coordinator: 0,
            own_seq: 0,
            waiter: None,
            ready: false,
            view_changes: Vec::new(),
        }
    }
}

type Shared = Rc<RefCell<Tally>>;

/// Takes every event of `g` as it arrives.
async fn read_events(g: Rc<Group>, t: Shared, me: NodeId) {
    while let Some(ev) = g.next().await {
        let mut t = t.borrow_mut();
        match ev {
            GroupEvent::Delivery(d) => {
                let first = if d.payload.len() >= 8 {
                    seq_of(&d.payload)
                } else {
                    0
                };
                t.hash = order_hash(
                    t.hash,
                    [
                        d.seq,
                        u64::from(d.sender.0),
                        d.sender_incarnation,
                        d.sender_seq,
                        first,
                    ],
                );
                t.delivered += 1;
                if d.sender == me {
                    t.own_seq = d.sender_seq;
                    if let Some(w) = t.waiter.take() {
                        w.wake();
                    }
                }
            }
            GroupEvent::ViewChange { view, reason, .. } => {
                t.members = view.members.len();
                t.coordinator = view.coordinator().map_or(0, |n| n.0);
                if t.ready {
                    t.view_changes
                        .push(format!("{reason:?} -> {:?}", view.members));
                }
            }
            GroupEvent::VersionAdjusted { .. } | GroupEvent::Partitioned => {}
        }
    }
}

struct Joined {
    name: GroupName,
    group: Rc<Group>,
    tally: Shared,
}

async fn serve(cfg: NodeConfig, nodes: usize, mut rx: Receiver<String>) -> anyhow::Result<()> {
    let ctx = ShardContext::current()?;
    let node = Node::start(cfg)?;
    let me = node.id();
    let mut groups = Vec::new();
    for name in GroupName::ALL {
        let mode = match name {
            GroupName::Agreed => DeliveryMode::Agreed,
            GroupName::Safe => DeliveryMode::Safe,
        };
        let group = Rc::new(
            node.join(name.name(), mode)
                .await
                .with_context(|| format!("joining {}", name.name()))?,
        );
        let tally = Shared::default();
        drop(ctx.spawn_local(read_events(Rc::clone(&group), Rc::clone(&tally), me))?);
        groups.push(Joined { name, group, tally });
    }
    // Cold path: a bounded poll until every node is in both groups.
    let deadline = Instant::now() + WAIT_LIMIT;
    while groups.iter().any(|j| j.tally.borrow().members < nodes) {
        if Instant::now() > deadline {
            bail!("node {}: the groups did not reach {nodes} members", me.0);
        }
        ctx.sleep(Duration::from_millis(2)).await;
    }
    for j in &groups {
        j.tally.borrow_mut().ready = true;
    }
    reply(&Reply::Ready {
        node: me.0,
        pid: std::process::id(),
        coordinators: groups
            .iter()
            .map(|j| j.tally.borrow().coordinator)
            .collect(),
    });
    let mut floor_server: Option<JoinHandle<anyhow::Result<u64>>> = None;
    while let Some(line) = rx.recv().await {
        let cmd: Command = match serde_json::from_str(&line) {
            Ok(c) => c,
            Err(e) => {
                reply(&Reply::Error {
                    message: format!("bad command {line:?}: {e}"),
                });
                continue;
            }
        };
        if matches!(cmd, Command::Quit) {
            std::process::exit(0);
        }
        let out = run(&ctx, &node, &groups, &mut floor_server, cmd).await;
        reply(&out.unwrap_or_else(|e| Reply::Error {
            message: format!("{e:#}"),
        }));
    }
    Ok(())
}

async fn run(
    ctx: &ShardContext,
    node: &Node,
    groups: &[Joined],
    floor_server: &mut Option<JoinHandle<anyhow::Result<u64>>>,
    cmd: Command,
) -> anyhow::Result<Reply> {
    let joined = |name: GroupName| {
        groups
            .iter()
            .find(|j| j.name == name)
            .context("no such group")
    };
    match cmd {
        Command::FloorServe { size } => {
            check_pingpong_size(size)?;
            let l = TcpListener::bind("127.0.0.1:0").context("binding the floor listener")?;
            let port = l.local_addr()?.port();
            *floor_server = Some(std::thread::spawn(move || {
                let (s, _) = l.accept().context("accepting the floor connection")?;
                s.set_nodelay(true)?;
                std_sockets::echo(StdMode::BusyPoll, s, size)
            }));
            Ok(Reply::FloorPort { port })
        }
        Command::FloorJoin => {
            let h = floor_server.take().context("no floor server is running")?;
            let echoed = finish(ctx, h, WAIT_LIMIT).await?;
            Ok(Reply::FloorEchoed { echoed })
        }
        Command::FloorPing {
            port,
            size,
            warmup,
            iters,
        } => {
            let h = std::thread::spawn(move || {
                let s = TcpStream::connect(("127.0.0.1", port))
                    .with_context(|| format!("connecting to the floor server on port {port}"))?;
                s.set_nodelay(true)?;
                std_sockets::ping(StdMode::BusyPoll, s, size, warmup, iters)
            });
            let m = finish(ctx, h, floor_limit(warmup + iters)).await?;
            Ok(Reply::Floor {
                summary: m.hist.summary(),
            })
        }
        Command::Latency {
            group,
            size,
            warmup,
            count,
        } => {
            let j = joined(group)?;
            latency(&j.group, &j.tally, size, warmup, count).await
        }
        Command::Throughput { group, size, secs } => {
            let j = joined(group)?;
            throughput(node, &j.group, &j.tally, size, secs).await
        }
        Command::Drain { group, expected } => {
            let t = &joined(group)?.tally;
            let deadline = Instant::now() + WAIT_LIMIT;
            loop {
                {
                    let t = t.borrow();
                    if t.delivered >= expected {
                        return Ok(Reply::Drained {
                            delivered: t.delivered,
                            hash: t.hash,
                            view_changes: t.view_changes.clone(),
                        });
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "{}: delivered {} of {expected} in {WAIT_LIMIT:?}",
                            group.name(),
                            t.delivered
                        );
                    }
                }
                ctx.sleep(Duration::from_millis(1)).await;
            }
        }
        Command::Quit => unreachable!("handled by the caller"),
    }
}

/// How long `round_trips` floor round trips may take: a minute, and 1 ms
/// each (loopback round trips take microseconds; a loaded machine's tail,
/// tens of milliseconds now and then).
#[must_use]
pub fn floor_limit(round_trips: u64) -> Duration {
    WAIT_LIMIT + Duration::from_millis(1) * u32::try_from(round_trips).unwrap_or(u32::MAX)
}

/// Waits at most `limit`, without blocking the shard, for a floor thread to
/// end.
async fn finish<T>(
    ctx: &ShardContext,
    h: JoinHandle<anyhow::Result<T>>,
    limit: Duration,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    while !h.is_finished() {
        if Instant::now() > deadline {
            bail!("the floor did not finish within {limit:?}");
        }
        ctx.sleep(Duration::from_millis(2)).await;
    }
    h.join()
        .map_err(|_| anyhow::anyhow!("the floor thread panicked"))?
}

/// Closed loop: multicast, wait for the own delivery, `warmup + count` times.
async fn latency(
    g: &Group,
    t: &Shared,
    size: usize,
    warmup: u64,
    count: u64,
) -> anyhow::Result<Reply> {
    check_pingpong_size(size)?;
    let mut hist = LatencyHistogram::new()?;
    let mut buf = vec![0u8; size];
    let counting = alloc::is_installed();
    let mut before = alloc::snapshot();
    for i in 0..warmup + count {
        if i == warmup {
            before = alloc::snapshot();
        }
        stamp(&mut buf, i);
        let t0 = Instant::now();
        let mut p = g.payload_buf();
        p.extend_from_slice(&buf);
        let seq = g.send(p).await?;
        poll_fn(|cx| {
            let mut t = t.borrow_mut();
            if t.own_seq >= seq {
                Poll::Ready(())
            } else {
                t.waiter = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        if i >= warmup {
            hist.record(t0.elapsed());
        }
    }
    let allocs = alloc::snapshot().since(&before).allocs;
    Ok(Reply::Latency {
        summary: hist.summary(),
        sent: warmup + count,
        allocs: counting.then_some(allocs),
    })
}

/// Multicasts as fast as back-pressure allows for `secs`, counting this
/// node's deliveries meanwhile and, in the steady part, its allocations and
/// received-payload copies.
async fn throughput(
    node: &Node,
    g: &Group,
    t: &Shared,
    size: usize,
    secs: f64,
) -> anyhow::Result<Reply> {
    check_pingpong_size(size)?;
    let dur = Duration::from_secs_f64(secs);
    let warm = dur.mul_f64(ALLOC_WARMUP);
    let mut window = AllocWindow::new(dur);
    let mut at_open = None;
    let mut buf = vec![0u8; size];
    let mut out = Throughput::default();
    let mut pending: Option<Bytes> = None;
    let d0 = t.borrow().delivered;
    let start = Instant::now();
    let mut attempts = 0u64;
    let elapsed = loop {
        if attempts.is_multiple_of(YIELD_EVERY) {
            let el = start.elapsed();
            let delivered = t.borrow().delivered - d0;
            if at_open.is_none() && el >= warm {
                // Before the window opens: reading the stats does not count.
                at_open = Some(node.stats());
            }
            window.at_clock_check(el, delivered);
            if el >= dur {
                break el;
            }
            // Let the reader take its deliveries and the node its frames.
            yield_now().await;
        }
        attempts += 1;
        let p = match pending.take() {
            Some(p) => p,
            None => {
                stamp(&mut buf, out.sent);
                let before = thread_allocs();
                // The node's pooled buffer: written once, shared by the
                // window, every member's Data and the own delivery.
                let mut pb = g.payload_buf();
                pb.extend_from_slice(&buf);
                let p = Bytes::from(pb);
                if at_open.is_some() {
                    out.payload_allocs += thread_allocs() - before;
                }
                p
            }
        };
        match g.multicast(p)? {
            Multicast::Accepted { .. } => out.sent += 1,
            Multicast::BackPressured(p) => {
                pending = Some(p);
                out.back_pressured += 1;
                g.writable().await;
            }
        }
    };
    out.delivered = t.borrow().delivered - d0;
    out.secs = elapsed.as_secs_f64();
    let (allocs, in_window) = window.close(out.delivered);
    let end = node.stats();
    out.window_deliveries = in_window;
    out.window_allocs = allocs.map(|a| a.allocs);
    if let Some(open) = at_open {
        out.straddled = end.reassembled_frames - open.reassembled_frames;
        out.pressure_copies = end.pressure_copies - open.pressure_copies;
        out.backlogged = end.backlogged - open.backlogged;
    }
    Ok(Reply::Throughput(out))
}
