//! Round-trip latency over loopback: the concord Driver against the
//! busy-polled non-blocking std-socket floor, measured in the same run, two
//! threads pinned to two cores. Also counts heap allocations per round trip
//! in steady state (a counting global allocator).
//!
//! ```sh
//! cargo run --release -p concord-transport --example rtt            # 50k round trips
//! cargo run --release -p concord-transport --example rtt -- --quick # 5k
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use concord_transport::{Driver, DriverConfig, Event, SendOutcome};
use hdrhistogram::Histogram;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
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
            allocs = ALLOCS.load(Ordering::Relaxed);
        }
        let t = Instant::now();
        write_all_spin(&mut s, &msg);
        read_spin(&mut s, &mut buf);
        if i >= warm {
            hist.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs;
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
            allocs = ALLOCS.load(Ordering::Relaxed);
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
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs;
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
