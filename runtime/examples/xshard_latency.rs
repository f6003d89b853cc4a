//! Cross-shard channel round-trip latency under each idle strategy.
//!
//! Shard 0 sends a message to shard 1 over a runtime channel, shard 1 answers
//! over another, shard 0 awaits the answer: one sample is that round trip,
//! including both task wake-ups. The baseline, measured in the same run, is two
//! plain pinned threads busy-polling a pair of `ArrayQueue`s (the floor for any
//! cross-core hand-off). Prints p50/p99/p99.9/max and the p50 ratio to the floor.
//!
//! ```text
//! cargo run --release -p concord-runtime --example xshard_latency            # 20k rounds
//! cargo run --release -p concord-runtime --example xshard_latency -- --quick  # 2k rounds
//! cargo run --release -p concord-runtime --example xshard_latency -- --gap-us 200
//! ```
//! `--gap-us N` pauses N microseconds between rounds (traffic that is not hot),
//! which is where the strategies differ most.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use concord_runtime::{IdleStrategy, Runtime, ShardContext, affinity, channel};
use crossbeam_queue::ArrayQueue;
use hdrhistogram::Histogram;

struct Opts {
    rounds: usize,
    warmup: usize,
    gap: Duration,
}

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        rounds: 20_000,
        warmup: 2_000,
        gap: Duration::ZERO,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => {
                o.rounds = 2_000;
                o.warmup = 200;
            }
            "--rounds" => o.rounds = args.next().context("--rounds N")?.parse()?,
            "--gap-us" => {
                o.gap = Duration::from_micros(args.next().context("--gap-us N")?.parse()?)
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(o)
}

fn new_hist() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000_000, 3)?)
}

fn report(name: &str, h: &Histogram<u64>, floor_p50: Option<u64>) {
    let us = |ns: u64| ns as f64 / 1000.0;
    let ratio = floor_p50.map_or(String::new(), |f| {
        format!(
            "  x{:.2} floor",
            h.value_at_quantile(0.5) as f64 / f.max(1) as f64
        )
    });
    println!(
        "{name:<28} p50 {:>8.2} us  p99 {:>8.2} us  p99.9 {:>9.2} us  max {:>9.2} us{ratio}",
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max()),
    );
}

/// Busy spin for `gap` (sleeping would add the wake-up we are measuring).
fn pause(gap: Duration) {
    if gap.is_zero() {
        return;
    }
    let until = Instant::now() + gap;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

fn floor(o: &Opts, cpus: &[usize]) -> anyhow::Result<Histogram<u64>> {
    let ping = Arc::new(ArrayQueue::<u64>::new(1));
    let pong = Arc::new(ArrayQueue::<u64>::new(1));
    let total = o.warmup + o.rounds;
    let (p1, p2) = (Arc::clone(&ping), Arc::clone(&pong));
    let peer_cpu = cpus[1];
    let peer = std::thread::spawn(move || {
        let _ = affinity::pin_current_thread(peer_cpu);
        for _ in 0..total {
            let v = loop {
                if let Some(v) = p1.pop() {
                    break v;
                }
                std::hint::spin_loop();
            };
            while p2.push(v + 1).is_err() {
                std::hint::spin_loop();
            }
        }
    });
    let me_cpu = cpus[0];
    let gap = o.gap;
    let warmup = o.warmup;
    let h = std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
        let _ = affinity::pin_current_thread(me_cpu);
        let mut h = new_hist()?;
        for i in 0..total {
            pause(gap);
            let t = Instant::now();
            while ping.push(i as u64).is_err() {
                std::hint::spin_loop();
            }
            loop {
                if pong.pop().is_some() {
                    break;
                }
                std::hint::spin_loop();
            }
            if i >= warmup {
                h.record(t.elapsed().as_nanos() as u64)?;
            }
        }
        Ok(h)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("floor thread panicked"))??;
    peer.join()
        .map_err(|_| anyhow::anyhow!("floor peer panicked"))?;
    Ok(h)
}

/// The histogram, and parks and unparks per round trip.
fn through_runtime(o: &Opts, idle: IdleStrategy) -> anyhow::Result<(Histogram<u64>, f64, f64)> {
    let rt = Runtime::builder().shards(2).pin(true).idle(idle).build()?;
    let (to_b, mut b_in) = channel::<u64>(16);
    let (to_a, mut a_in) = channel::<u64>(16);
    let b = rt.spawn_on(1, move || async move {
        while let Some(v) = b_in.recv().await {
            if !to_a.try_send(v + 1).is_sent() {
                return Err("pong back-pressured");
            }
        }
        Ok(())
    })?;
    let (total, warmup, gap) = (o.warmup + o.rounds, o.warmup, o.gap);
    let a = rt.spawn_on(0, move || async move {
        let _ctx = ShardContext::current().map_err(|e| e.to_string())?;
        let mut h = new_hist().map_err(|e| e.to_string())?;
        for i in 0..total {
            pause(gap);
            let t = Instant::now();
            if !to_b.try_send(i as u64).is_sent() {
                return Err("ping back-pressured".to_owned());
            }
            a_in.recv().await.ok_or("peer gone")?;
            if i >= warmup {
                h.record(t.elapsed().as_nanos() as u64)
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok::<_, String>(h)
    })?;
    let h = a.join()?.map_err(anyhow::Error::msg)?;
    b.join()?.map_err(anyhow::Error::msg)?;
    let (mut parks, mut unparks) = (0, 0);
    for shard in 0..2 {
        let s = rt.handle().stats(shard).context("shard stats")?;
        parks += s.parks;
        unparks += s.unparks;
    }
    rt.shutdown()?;
    Ok((
        h,
        parks as f64 / total as f64,
        unparks as f64 / total as f64,
    ))
}

fn main() -> anyhow::Result<()> {
    let o = parse()?;
    let cpus = affinity::current_cpus()?;
    if cpus.len() < 2 {
        bail!("needs 2 CPUs, this process may use {cpus:?}");
    }
    println!(
        "cross-shard round trip, {} rounds after {} warm-up, gap {:?}, cpus {:?}",
        o.rounds,
        o.warmup,
        o.gap,
        &cpus[..2]
    );
    let f = floor(&o, &cpus)?;
    report("floor (spinning threads)", &f, None);
    let floor_p50 = Some(f.value_at_quantile(0.5));
    let strategies = [
        ("BusySpin", IdleStrategy::BusySpin),
        ("Yield", IdleStrategy::Yield),
        (
            "SpinThenPark(50us)",
            IdleStrategy::spin_then_park(Duration::from_micros(50)),
        ),
        ("Park", IdleStrategy::Park),
        ("Adaptive(default)", IdleStrategy::adaptive()),
    ];
    for (name, idle) in strategies {
        let (h, parks, unparks) = through_runtime(&o, idle)?;
        report(name, &h, floor_p50);
        println!(
            "{:<28} parks {parks:.2} / unparks {unparks:.2} per round trip",
            ""
        );
    }
    Ok(())
}
