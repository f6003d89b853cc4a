//! Round-trip latency over loopback: the concord Driver against the
//! busy-polled non-blocking std-socket floor, measured in the same run, two
//! threads pinned to two cores. Also counts heap allocations per round trip
//! in steady state (`concord_runtime::alloc`, a counting global allocator).
//!
//! ```sh
//! cargo run --release -p concord-bench --example rtt            # 50k round trips
//! cargo run --release -p concord-bench --example rtt -- --quick # 5k
//! ```

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Instant;

use concord_runtime::affinity;
use concord_runtime::alloc::{self, CountingAlloc};
use concord_transport::{Driver, DriverConfig, Event, SendOutcome};
use hdrhistogram::Histogram;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Allocations so far, on every thread.
fn allocs_so_far() -> u64 {
    alloc::snapshot().allocs
}

/// Pins the calling thread to CPU `cpu`, best effort: on a machine that
/// refuses, the example still runs, unpinned. The exact CPU rather than
/// `affinity::pin_to`'s mapping, because the main thread pins itself before
/// it spawns later peers, which inherit its one-CPU mask.
fn pin(cpu: usize) {
    let _ = affinity::pin_current_thread(cpu);
}

struct Run {
    hist: Histogram<u64>,
    allocs_per_rt: f64,
}

fn report(name: &str, size: usize, r: &Run, floor: Option<&Run>) {
    let h = &r.hist;
    let us = |v: u64| v as f64 / 1000.0;
    let ratio = floor.map_or(String::new(), |f| {
        format!(
            "  p50 ratio {:.2}x",
            h.value_at_quantile(0.5) as f64 / f.hist.value_at_quantile(0.5) as f64
        )
    });
    println!(
        "{name:<18} {size:>5} B  p50 {:>7.2} us  p99 {:>7.2} us  p99.9 {:>8.2} us  max {:>9.2} us  allocs/rt {:.3}{ratio}",
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max()),
        r.allocs_per_rt,
    );
}

fn floor(size: usize, n: usize, warm: usize) -> Run {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        pin(1);
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        s.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; size];
        for _ in 0..n + warm {
            read_spin(&mut s, &mut buf);
            write_all_spin(&mut s, &buf);
        }
    });
    pin(0);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_nonblocking(true).unwrap();
    let msg = vec![7u8; size];
    let mut buf = vec![0u8; size];
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut allocs = 0;
    for i in 0..n + warm {
        if i == warm {
            allocs = allocs_so_far();
        }
        let t = Instant::now();
        write_all_spin(&mut s, &msg);
        read_spin(&mut s, &mut buf);
        if i >= warm {
            hist.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    }
    let allocs = allocs_so_far() - allocs;
    echo.join().unwrap();
    Run {
        hist,
        allocs_per_rt: allocs as f64 / n as f64,
    }
}

fn read_spin(s: &mut TcpStream, buf: &mut [u8]) {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => panic!("eof"),
            Ok(k) => got += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => panic!("{e}"),
        }
    }
}

fn write_all_spin(s: &mut TcpStream, buf: &[u8]) {
    let mut sent = 0;
    while sent < buf.len() {
        match s.write(&buf[sent..]) {
            Ok(k) => sent += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => panic!("{e}"),
        }
    }
}

fn concord(size: usize, n: usize, warm: usize) -> Run {
    let cfg = |node_id| DriverConfig {
        node_id,
        cluster_id: 1,
        ..DriverConfig::default()
    };
    let (tx, rx) = mpsc::channel();
    let echo = std::thread::spawn(move || {
        pin(1);
        let mut d = Driver::new(cfg(1)).unwrap();
        tx.send(d.listen("127.0.0.1:0".parse().unwrap()).unwrap())
            .unwrap();
        let mut echoed = 0;
        let mut closed = false;
        while !closed {
            d.poll(&mut |d, ev| match ev {
                Event::Frame { conn, frame } => {
                    assert_eq!(d.send(conn, &frame).unwrap(), SendOutcome::Queued);
                    echoed += 1;
                }
                Event::Disconnected { .. } => closed = true,
                _ => {}
            });
        }
        assert_eq!(echoed, n + warm);
    });
    pin(0);
    let addr = rx.recv().unwrap();
    let mut d = Driver::new(cfg(2)).unwrap();
    let conn = d.connect(addr).unwrap();
    let mut up = false;
    while !up {
        d.poll(&mut |_, ev| up |= matches!(ev, Event::Connected { .. }));
    }
    let msg = vec![7u8; size];
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut allocs = 0;
    for i in 0..n + warm {
        if i == warm {
            allocs = allocs_so_far();
        }
        let t = Instant::now();
        assert_eq!(d.send(conn, &msg).unwrap(), SendOutcome::Queued);
        let mut back = false;
        while !back {
            d.poll(&mut |_, ev| {
                if let Event::Frame { frame, .. } = ev {
                    debug_assert_eq!(frame.len(), size);
                    back = true;
                }
            });
        }
        if i >= warm {
            hist.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    }
    let allocs = allocs_so_far() - allocs;
    let stats = d.stats();
    d.close(conn).unwrap();
    // Let the Goodbye go out before the driver drops.
    let t = Instant::now();
    while t.elapsed().as_millis() < 50 {
        d.poll(&mut |_, _| {});
    }
    echo.join().unwrap();
    eprintln!(
        "  concord stats: send_ops {} frames_sent {} straddled {} starved {}",
        stats.send_ops, stats.frames_sent, stats.straddled_frames, stats.recv_starved
    );
    Run {
        hist,
        allocs_per_rt: allocs as f64 / n as f64,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 5_000 } else { 50_000 };
    let warm = n / 10;
    println!("{n} round trips per run (+{warm} warm-up), threads pinned to cpus 0 and 1");
    for size in [64usize, 4096] {
        let f = floor(size, n, warm);
        report("std busy-poll", size, &f, None);
        let c = concord(size, n, warm);
        report("concord Driver", size, &c, Some(&f));
    }
}
