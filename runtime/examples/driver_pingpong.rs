//! 64-byte TCP round trip over loopback through the runtime (two shards, each
//! owning a transport Driver) versus the same Drivers driven by two plain pinned
//! threads spinning on `poll` (the runtime's overhead is the difference).
//!
//! ```text
//! cargo run --release -p concord-runtime --example driver_pingpong            # 20k rounds
//! cargo run --release -p concord-runtime --example driver_pingpong -- --quick  # 2k rounds
//! ```
//! The echo side runs as a `DriverReactor::with_handler` (replies inside poll);
//! the measuring side is a task awaiting `ShardContext::driver_event()`.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, bail};
use concord_runtime::transport::{Driver, DriverConfig, Event, SendOutcome};
use concord_runtime::{DriverReactor, IdleStrategy, Runtime, ShardContext, affinity, channel};
use hdrhistogram::Histogram;

const PAYLOAD: [u8; 64] = [7; 64];

fn cfg(node: u64) -> DriverConfig {
    DriverConfig {
        node_id: node,
        ..DriverConfig::default()
    }
}

fn hist() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000_000, 3)?)
}

fn report(name: &str, h: &Histogram<u64>, floor: Option<u64>) {
    let us = |ns: u64| ns as f64 / 1000.0;
    let ratio = floor.map_or(String::new(), |f| {
        format!(
            "  x{:.2} threads",
            h.value_at_quantile(0.5) as f64 / f.max(1) as f64
        )
    });
    println!(
        "{name:<26} p50 {:>8.2} us  p99 {:>8.2} us  p99.9 {:>9.2} us  max {:>9.2} us{ratio}",
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max()),
    );
}

fn echo(d: &mut Driver, ev: Event) {
    if let Event::Frame { conn, frame } = ev {
        let payload = frame.to_vec();
        drop(frame);
        // An echo that cannot be queued would stall the measurement; report it.
        if !matches!(d.send(conn, &payload), Ok(SendOutcome::Queued)) {
            eprintln!("echo back-pressured or failed");
        }
    }
}

fn threads(total: usize, warmup: usize, cpus: &[usize]) -> anyhow::Result<Histogram<u64>> {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let server_cpu = cpus[0];
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        affinity::pin_current_thread(server_cpu)?;
        let mut d = Driver::new(cfg(1))?;
        addr_tx.send(d.listen("127.0.0.1:0".parse()?)?)?;
        while done_rx.try_recv().is_err() {
            d.poll(&mut echo);
        }
        Ok(())
    });
    let addr = addr_rx.recv()?;
    let client_cpu = cpus[1];
    let h = std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
        affinity::pin_current_thread(client_cpu)?;
        let mut d = Driver::new(cfg(2))?;
        let conn = d.connect(addr)?;
        let mut up = false;
        while !up {
            d.poll(&mut |_, ev| up |= matches!(ev, Event::Connected { .. }));
        }
        let mut h = hist()?;
        for i in 0..total {
            let t = Instant::now();
            if d.send(conn, &PAYLOAD)? != SendOutcome::Queued {
                bail!("client back-pressured");
            }
            let mut got = false;
            while !got {
                d.poll(&mut |_, ev| got |= matches!(ev, Event::Frame { .. }));
            }
            if i >= warmup {
                h.record(t.elapsed().as_nanos() as u64)?;
            }
        }
        Ok(h)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("client panicked"))??;
    done_tx.send(())?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    Ok(h)
}

fn through_runtime(
    total: usize,
    warmup: usize,
    idle: IdleStrategy,
) -> anyhow::Result<Histogram<u64>> {
    let rt = Runtime::builder()
        .shards(2)
        .pin(true)
        .idle(idle)
        .reactor(|shard| {
            Driver::new(cfg(shard as u64 + 1)).map(|d| {
                if shard == 0 {
                    DriverReactor::with_handler(d, echo)
                } else {
                    DriverReactor::new(d)
                }
            })
        })
        .build()?;
    let (addr_tx, mut addr_rx) = channel::<SocketAddr>(1);
    let server = rt.spawn_on(0, move || async move {
        let ctx = ShardContext::current()?;
        let addr = ctx.driver()?.listen("127.0.0.1:0".parse().expect("addr"))?;
        let _ = addr_tx.try_send(addr);
        Ok::<_, concord_runtime::Error>(())
    })?;
    server.join()??;
    let client = rt.spawn_on(1, move || async move {
        let ctx = ShardContext::current()?;
        let addr = addr_rx.recv().await.context("no address")?;
        let conn = ctx.driver()?.connect(addr)?;
        loop {
            if let Event::Connected { .. } = ctx.driver_event().await? {
                break;
            }
        }
        let mut h = hist()?;
        for i in 0..total {
            let t = Instant::now();
            if ctx.driver()?.send(conn, &PAYLOAD)? != SendOutcome::Queued {
                bail!("client back-pressured");
            }
            loop {
                if let Event::Frame { .. } = ctx.driver_event().await? {
                    break;
                }
            }
            if i >= warmup {
                h.record(t.elapsed().as_nanos() as u64)?;
            }
        }
        Ok::<_, anyhow::Error>(h)
    })?;
    let h = client.join()??;
    rt.shutdown()?;
    Ok(h)
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, warmup) = if quick { (2_000, 200) } else { (20_000, 2_000) };
    let cpus = affinity::current_cpus()?;
    if cpus.len() < 2 {
        bail!("needs 2 CPUs, this process may use {cpus:?}");
    }
    println!("64-byte TCP round trip over loopback, {rounds} rounds after {warmup} warm-up");
    let base = threads(rounds + warmup, warmup, &cpus)?;
    report("Drivers on plain threads", &base, None);
    let floor = Some(base.value_at_quantile(0.5));
    for (name, idle) in [
        ("runtime BusySpin", IdleStrategy::BusySpin),
        ("runtime Adaptive", IdleStrategy::adaptive()),
        ("runtime Park", IdleStrategy::Park),
    ] {
        let h = through_runtime(rounds + warmup, warmup, idle)?;
        report(name, &h, floor);
    }
    Ok(())
}
