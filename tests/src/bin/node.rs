//! A node process for the multi-process tests: joins the groups it is told,
//! multicasts a numbered stream into each, and writes everything its
//! application sees to a log (see `concord_tests::log` for the format), one
//! `write(2)` per record, so a `kill -9` loses nothing already written.
//!
//! ```text
//! concord-test-node --id 1 --cluster 7 --data DIR --node 1=127.0.0.1:7001 \
//!     --node 2=127.0.0.1:7002 --node 3=127.0.0.1:7003 \
//!     --group orders:agreed --group audit:safe --count 200 --interval-us 500
//! ```
//!
//! Commands on stdin, one a line: `quit` exits at once without leaving (the
//! logs are complete; the test then checks them), `leave` shuts the node down
//! with an ordered leave of every group and exits.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, bail};
use concord_membership::{DeliveryMode, NodeId, Reason};
use concord_runtime::node::{self, GroupEvent, Node, NodeConfig};
use concord_runtime::{Offer, ShardContext, channel};

struct Args {
    cfg: NodeConfig,
    groups: Vec<(String, DeliveryMode)>,
    count: u64,
    interval: Duration,
    size: usize,
}

fn parse() -> anyhow::Result<Args> {
    let mut id = None;
    let mut cluster = 0;
    let mut data = None;
    let mut nodes = Vec::new();
    let mut groups = Vec::new();
    let mut count = 100;
    let mut interval = Duration::from_micros(500);
    let mut size = 16;
    let mut heartbeat = None;
    let mut failure = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--id" => id = Some(NodeId(v.parse()?)),
            "--cluster" => cluster = v.parse()?,
            "--data" => data = Some(v.into()),
            "--node" => {
                let (n, a) = v.split_once('=').context("--node ID=ADDR")?;
                nodes.push((NodeId(n.parse()?), a.parse()?));
            }
            "--group" => {
                let (g, m) = v.split_once(':').context("--group NAME:agreed|safe")?;
                let mode = match m {
                    "agreed" => DeliveryMode::Agreed,
                    "safe" => DeliveryMode::Safe,
                    _ => bail!("unknown mode {m}"),
                };
                groups.push((g.to_owned(), mode));
            }
            "--count" => count = v.parse()?,
            "--interval-us" => interval = Duration::from_micros(v.parse()?),
            "--size" => size = v.parse::<usize>()?.max(16),
            "--heartbeat-ms" => heartbeat = Some(Duration::from_millis(v.parse()?)),
            "--failure-timeout-ms" => failure = Some(Duration::from_millis(v.parse()?)),
            _ => bail!("unknown flag {flag}"),
        }
    }
    let id = id.context("--id is required")?;
    let data = data.context("--data is required")?;
    let listen = nodes
        .iter()
        .find(|(n, _)| *n == id)
        .map(|(_, a)| *a)
        .context("--node for this node's own id is required")?;
    let mut cfg = NodeConfig::new(id, cluster, listen, data);
    for (n, a) in nodes {
        cfg.add_node(n, a);
    }
    if let Some(h) = heartbeat {
        cfg.heartbeat_interval = h;
    }
    if let Some(f) = failure {
        cfg.failure_timeout = f;
    }
    Ok(Args {
        cfg,
        groups,
        count,
        interval,
        size,
    })
}

/// The log: one record per `write(2)`.
struct Log(File);

impl Log {
    fn line(&mut self, s: &str) {
        // A failed log write would make the checkers lie: stop loudly.
        self.0.write_all(s.as_bytes()).expect("log write");
    }
}

fn reason(r: &Reason) -> String {
    let list = |ns: &[NodeId]| {
        ns.iter()
            .map(|n| n.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    match r {
        Reason::Join(n) => format!("J:{}", n.0),
        Reason::Leave(n) => format!("L:{}", n.0),
        Reason::Failed(ns) => format!("F:{}", list(ns)),
        Reason::Partitioned => "P".into(),
        Reason::Merged => "M".into(),
        Reason::AdjustVersion { from, to } => format!("A:{}:{}", from.0, to.0),
    }
}

fn now() -> u64 {
    node::clock::now().0
}

fn main() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let args = parse()?;
    let rt = node::runtime(&args.cfg).build()?;
    let (tx, mut rx) = channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let mut msg = line.trim().to_owned();
            loop {
                match tx.try_send(msg) {
                    Offer::Sent => break,
                    Offer::BackPressured(m) | Offer::Closed(m) => {
                        msg = m;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
    });
    let main = rt.spawn_on(0, move || async move {
        let ctx = ShardContext::current()?;
        let data = args.cfg.data_dir.clone();
        let node = Node::start(args.cfg)?;
        let me = node.id().0;
        let inc = node.incarnation();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join(format!("log-{inc}.txt")))?;
        let log = Rc::new(RefCell::new(Log(file)));
        log.borrow_mut().line(&format!("N {me} {inc}\n"));
        let mut readers = Vec::new();
        for (gi, (name, mode)) in args.groups.iter().enumerate() {
            let group = Rc::new(node.join(name, *mode).await?);
            let gid = group.id().0;
            let mode_tag = match mode {
                DeliveryMode::Agreed => "agreed",
                DeliveryMode::Safe => "safe",
            };
            let log_r = Rc::clone(&log);
            let g_r = Rc::clone(&group);
            readers.push(ctx.spawn_local(async move {
                loop {
                    let Some(ev) = g_r.next().await else {
                        return;
                    };
                    let at = now();
                    let rec = match ev {
                        GroupEvent::Delivery(d) => {
                            let digest = u64::from_le_bytes(d.payload[..8].try_into().unwrap());
                            format!(
                                "D {at} {gid} {} {} {} {} {} {digest} {mode_tag}\n",
                                d.view.0, d.seq, d.sender.0, d.sender_incarnation, d.sender_seq
                            )
                        }
                        GroupEvent::ViewChange {
                            view,
                            reason: r,
                            position,
                        } => {
                            let members: Vec<String> =
                                view.members.iter().map(|n| n.0.to_string()).collect();
                            format!(
                                "V {at} {gid} {} {} {position} {} {}\n",
                                view.id.0,
                                view.protocol.0,
                                reason(&r),
                                members.join(",")
                            )
                        }
                        GroupEvent::Partitioned => format!("P {at} {gid}\n"),
                        GroupEvent::VersionAdjusted { .. } => continue,
                    };
                    log_r.borrow_mut().line(&rec);
                }
            })?);
            let log_s = Rc::clone(&log);
            let (count, interval, size) = (args.count, args.interval, args.size);
            let ctx_s = ctx.clone();
            drop(ctx.spawn_local(async move {
                let mut payload = vec![0u8; size];
                for k in 1..=count {
                    let digest = (u64::from(me) << 56) | (inc << 40) | ((gi as u64) << 32) | k;
                    payload[..8].copy_from_slice(&digest.to_le_bytes());
                    loop {
                        let r = group.multicast(&payload[..]);
                        match r {
                            Ok(node::Multicast::Accepted { sender_seq }) => {
                                // Written before this task yields: no peer
                                // can have the message before the record.
                                log_s
                                    .borrow_mut()
                                    .line(&format!("S {} {gid} {sender_seq} {digest}\n", now()));
                                break;
                            }
                            Ok(node::Multicast::BackPressured(_)) => group.writable().await,
                            Err(e) if e.is_retryable() => {
                                ctx_s.sleep(Duration::from_millis(5)).await;
                            }
                            Err(_) => return,
                        }
                    }
                    ctx_s.sleep(interval).await;
                }
            })?);
        }
        while let Some(cmd) = rx.recv().await {
            match cmd.as_str() {
                "quit" => {
                    log.borrow_mut().line("END\n");
                    std::process::exit(0);
                }
                "leave" => {
                    node.shutdown().await?;
                    for r in readers {
                        let _ = r.await;
                    }
                    log.borrow_mut().line("END\n");
                    std::process::exit(0);
                }
                other => eprintln!("unknown command {other:?}"),
            }
        }
        Ok::<(), anyhow::Error>(())
    })?;
    main.join()??;
    rt.shutdown()?;
    Ok(())
}
