//! Measures where SEND_ZC starts to pay: one-way streaming of pooled
//! [`SendBuf`](concord_transport::SendBuf)s over loopback, each size once with
//! copying sends (`zc_threshold = usize::MAX`) and once with SEND_ZC
//! (`zc_threshold = 0`), interleaved over several rounds; prints the median
//! GB/s of each and their ratio. Two threads pinned to cores 0 and 1.
//!
//! ```sh
//! cargo run --release -p concord-bench --example zc_threshold
//! cargo run --release -p concord-bench --example zc_threshold -- 0.3 3   # secs, rounds
//! ```

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use concord_runtime::affinity;
use concord_transport::{ConnId, Driver, DriverConfig, Event, SendOutcome};

const SIZES: &[usize] = &[16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20];

/// Pins the calling thread to CPU `cpu`, best effort: on a machine that
/// refuses, the example still runs, unpinned.
fn pin(cpu: usize) {
    let _ = affinity::pin_current_thread(cpu);
}

fn cfg(node_id: u64, zc_threshold: usize) -> DriverConfig {
    DriverConfig {
        node_id,
        cluster_id: 9,
        zc_threshold,
        send_pool_bytes: 64 << 20,
        ..DriverConfig::default()
    }
}

/// Receives until the empty end marker; returns (payload bytes, elapsed).
fn receiver(tx: mpsc::Sender<SocketAddr>) -> (u64, Duration) {
    pin(1);
    let mut d = Driver::new(cfg(1, usize::MAX)).expect("driver");
    let addr = d.listen("127.0.0.1:0".parse().unwrap()).expect("listen");
    tx.send(addr).unwrap();
    let mut bytes = 0u64;
    let mut start = None;
    let mut end = None;
    let mut last = Instant::now();
    let mut polls = 0u32;
    while end.is_none() {
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(1 << 16) && last.elapsed() > Duration::from_secs(10) {
            panic!("receiver stalled after {bytes} bytes: {:?}", d.stats());
        }
        d.poll(&mut |d, ev| {
            if let Event::Frame { conn, frame } = ev {
                let now = Instant::now();
                last = now;
                start.get_or_insert(now);
                if frame.is_empty() {
                    end = Some(now);
                    // The sender closes (and drops its driver) only after this.
                    let _ = d.send(conn, b"k");
                } else {
                    bytes += frame.len() as u64;
                }
            }
        });
    }
    // Let the sender see its last completions before the socket goes.
    let t = Instant::now();
    let mut gone = false;
    while !gone && t.elapsed() < Duration::from_secs(2) {
        d.poll(&mut |_, ev| gone |= matches!(ev, Event::Disconnected { .. }));
    }
    (bytes, end.unwrap() - start.unwrap())
}

fn sender(rx: mpsc::Receiver<SocketAddr>, size: usize, zc: bool, secs: f64) -> u64 {
    pin(0);
    let mut d = Driver::new(cfg(2, if zc { 0 } else { usize::MAX })).expect("driver");
    let conn: ConnId = d.connect(rx.recv().unwrap()).expect("connect");
    let mut up = false;
    while !up {
        d.poll(&mut |_, ev| up |= matches!(ev, Event::Connected { .. }));
    }
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        if let Some(mut b) = d.alloc_buf(size) {
            b.payload_mut().unwrap()[..8].copy_from_slice(&sent.to_le_bytes());
            while d.send_buf(conn, &b).unwrap() == SendOutcome::BackPressured {
                d.poll(&mut |_, _| {});
            }
            sent += 1;
        }
        d.poll(&mut |_, _| {});
    }
    while d.send(conn, &[]).unwrap() == SendOutcome::BackPressured {
        d.poll(&mut |_, _| {});
    }
    // Dropping a driver resets its connections, so wait for the receiver's
    // acknowledgement before closing.
    let mut acked = false;
    while !acked {
        d.poll(&mut |_, ev| acked |= matches!(ev, Event::Frame { .. }));
    }
    let zc_sends = d.stats().zc_sends;
    d.close(conn).unwrap();
    let t = Instant::now();
    let mut gone = false;
    while !gone && t.elapsed() < Duration::from_secs(5) {
        d.poll(&mut |_, ev| gone |= matches!(ev, Event::Disconnected { .. }));
    }
    assert_eq!(zc_sends > 0, zc, "SEND_ZC used iff asked for");
    sent
}

fn run(size: usize, zc: bool, secs: f64) -> f64 {
    let (tx, rx) = mpsc::channel();
    let r = std::thread::spawn(move || receiver(tx));
    let s = std::thread::spawn(move || sender(rx, size, zc, secs));
    let sent = s.join().unwrap();
    let (bytes, elapsed) = r.join().unwrap();
    assert_eq!(bytes, sent * size as u64, "every byte arrived");
    bytes as f64 / 1e9 / elapsed.as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().map_or(0.5, |a| a.parse().expect("seconds"));
    let rounds: usize = args.next().map_or(3, |a| a.parse().expect("rounds"));
    let mut copy = vec![Vec::new(); SIZES.len()];
    let mut zc = vec![Vec::new(); SIZES.len()];
    for _ in 0..rounds {
        for (i, &size) in SIZES.iter().enumerate() {
            copy[i].push(run(size, false, secs));
            zc[i].push(run(size, true, secs));
        }
    }
    println!(
        "{:>9} {:>10} {:>10} {:>8}",
        "size", "copy GB/s", "zc GB/s", "zc/copy"
    );
    for (i, &size) in SIZES.iter().enumerate() {
        let (c, z) = (median(&mut copy[i]), median(&mut zc[i]));
        println!("{size:>9} {c:>10.3} {z:>10.3} {:>8.2}", z / c);
    }
}
