//! One frozen `SendBuf` queued to N connections costs no allocation and no
//! copy per send (each queue entry is a refcount on the one buffer), and the
//! receivers' clones and slices of what arrives allocate nothing either.
//!
//! Own binary: it installs the counting allocator and counts this thread
//! only (the drivers are polled inline, on the test's thread).

use std::time::{Duration, Instant};

use concord_runtime::alloc::{self, CountingAlloc};
use concord_runtime::transport::{ConnId, Driver, DriverConfig, Event, RecvFrame, SendOutcome};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const PEERS: usize = 4;
const GUARD: Duration = Duration::from_secs(30);

fn cfg(node_id: u64, zc_threshold: usize) -> DriverConfig {
    DriverConfig {
        node_id,
        recv_buf_size: 256 << 10,
        send_pool_bytes: 8 << 20,
        zc_threshold,
        ..DriverConfig::default()
    }
}

struct Fanout {
    server: Driver,
    client: Driver,
    conns: Vec<ConnId>,
    /// The receivers' views of this round's frames (capacity kept).
    held: Vec<RecvFrame>,
}

impl Fanout {
    fn new(zc_threshold: usize) -> Fanout {
        let mut server = Driver::new(cfg(1, zc_threshold)).unwrap();
        let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut client = Driver::new(cfg(2, zc_threshold)).unwrap();
        let conns: Vec<ConnId> = (0..PEERS).map(|_| client.connect(addr).unwrap()).collect();
        let (mut up_s, mut up_c) = (0, 0);
        let start = Instant::now();
        while up_s < PEERS || up_c < PEERS {
            assert!(start.elapsed() < GUARD, "connections never came up");
            server.poll(&mut |_, ev| up_s += matches!(ev, Event::Connected { .. }) as usize);
            client.poll(&mut |_, ev| up_c += matches!(ev, Event::Connected { .. }) as usize);
        }
        Fanout {
            server,
            client,
            conns,
            held: Vec::with_capacity(4 * PEERS),
        }
    }

    /// One buffer, filled once, sent to every connection; waits until every
    /// peer has it, cloning and slicing each arrival.
    fn round(&mut self, seq: u32, len: usize) {
        let mut buf = self.client.alloc_buf(len).expect("pool has room");
        let p = buf.payload_mut().expect("fresh buffer");
        p.fill(seq as u8);
        p[..4].copy_from_slice(&seq.to_le_bytes());
        for &c in &self.conns {
            assert_eq!(self.client.send_buf(c, &buf).unwrap(), SendOutcome::Queued);
        }
        drop(buf);
        let mut got = 0;
        let start = Instant::now();
        let held = &mut self.held;
        while got < PEERS {
            assert!(start.elapsed() < GUARD, "round {seq}: {got} of {PEERS}");
            self.client.poll(&mut |_, _| {});
            self.server.poll(&mut |_, ev| {
                if let Event::Frame { frame, .. } = ev {
                    assert_eq!(frame.len(), len);
                    assert_eq!(frame[..4], seq.to_le_bytes());
                    let body = frame.slice(4..);
                    assert!(body.iter().all(|&b| b == seq as u8));
                    held.push(body.slice(..8));
                    held.push(frame.clone());
                    held.push(body);
                    got += 1;
                }
            });
        }
        self.held.clear();
    }
}

fn fanout_allocates_nothing(len: usize, zc_threshold: usize) {
    assert!(alloc::is_installed());
    let mut f = Fanout::new(zc_threshold);
    for seq in 0..100 {
        f.round(seq, len);
    }
    let pool = f.client.stats().pool_allocations;
    let before = alloc::thread_allocs();
    let rounds = 500;
    for seq in 100..100 + rounds {
        f.round(seq, len);
    }
    let allocs = alloc::thread_allocs() - before;
    let s = f.client.stats();
    assert_eq!(
        allocs, 0,
        "{len} B to {PEERS} peers: {allocs} allocations in {rounds} rounds"
    );
    assert_eq!(s.pool_allocations, pool, "the pool never grew once warm");
    assert_eq!(f.server.stats().copied_out_frames, 0);
    if len >= zc_threshold {
        assert!(s.zc_sends >= (rounds * PEERS as u32) as u64, "{s:?}");
    }
}

#[test]
fn one_send_buf_to_many_connections_allocates_nothing() {
    fanout_allocates_nothing(1000, usize::MAX);
    fanout_allocates_nothing(64 << 10, usize::MAX);
}

#[test]
fn one_zero_copy_send_buf_to_many_connections_allocates_nothing() {
    fanout_allocates_nothing(64 << 10, 16 << 10);
}

/// A receiver that keeps a sliding window of payload slices, as the
/// membership Engine keeps unstable messages, allocates nothing once warm,
/// straddled frames included, and never pauses while the window fits its
/// ring.
#[test]
fn holding_a_sliding_window_of_received_slices_allocates_nothing() {
    assert!(alloc::is_installed());
    let mut server = Driver::new(cfg(1, usize::MAX)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2, usize::MAX)).unwrap();
    let c = client.connect(addr).unwrap();
    let mut up = 0;
    let start = Instant::now();
    while up < 2 {
        assert!(start.elapsed() < GUARD, "never connected");
        server.poll(&mut |_, ev| up += matches!(ev, Event::Connected { .. }) as usize);
        client.poll(&mut |_, ev| up += matches!(ev, Event::Connected { .. }) as usize);
    }
    // 5000 B frames do not divide the 256 KiB buffers: some straddle. The
    // window (100 x 5000 B) spans about two of the ring's four buffers.
    const WINDOW: usize = 100;
    let mut window = std::collections::VecDeque::with_capacity(WINDOW + 1);
    let mut payload = vec![0u8; 5000];
    let (mut sent, mut got) = (0u32, 0u32);
    let mut run = |n: u32, window: &mut std::collections::VecDeque<RecvFrame>| {
        let target = got + n;
        let start = Instant::now();
        while got < target {
            assert!(start.elapsed() < GUARD, "stalled at {got}");
            while sent < target {
                payload[..4].copy_from_slice(&sent.to_le_bytes());
                if client.send(c, &payload).unwrap() != SendOutcome::Queued {
                    break;
                }
                sent += 1;
            }
            client.poll(&mut |_, _| {});
            server.poll(&mut |_, ev| {
                if let Event::Frame { frame, .. } = ev {
                    assert_eq!(frame[..4], got.to_le_bytes());
                    window.push_back(frame.slice(4..));
                    if window.len() > WINDOW {
                        window.pop_front();
                    }
                    got += 1;
                }
            });
        }
    };
    run(1000, &mut window);
    let before = alloc::thread_allocs();
    run(5000, &mut window);
    let allocs = alloc::thread_allocs() - before;
    let st = server.stats();
    assert_eq!(allocs, 0, "{allocs} allocations while holding a window");
    assert!(st.straddled_frames > 0, "{st:?}");
    assert_eq!(st.recv_paused, 0, "{st:?}");
    assert!(st.held_recv_buffers >= 1, "the window pins buffers: {st:?}");
}
