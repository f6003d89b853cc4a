//! Helpers shared by the driver tests: pumping drivers until something
//! happens (with a generous hang guard, never a timing assertion).

#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use concord_transport::frame::{self, Control, Hello};
use concord_transport::{ConnId, Driver, DriverConfig, Event, PeerInfo};

/// Fails a test that hangs instead of letting it hang CI.
pub const GUARD: Duration = Duration::from_secs(20);

pub fn cfg(node_id: u64) -> DriverConfig {
    DriverConfig {
        node_id,
        cluster_id: 7,
        // Small buffers so tests exercise straddling and starvation.
        recv_buf_size: 64 << 10,
        recv_buf_count: 4,
        send_chunk_size: 64 << 10,
        send_pool_bytes: 16 << 20,
        connect_backoff_initial: Duration::from_millis(5),
        connect_backoff_max: Duration::from_millis(50),
        handshake_timeout: Duration::from_secs(5),
        ..DriverConfig::default()
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Polls every driver, handing each event to `f(driver_index, driver, event)`,
/// until `f` has returned `true` for `until` or the guard expires.
pub fn pump(
    drivers: &mut [&mut Driver],
    what: &str,
    mut f: impl FnMut(usize, &mut Driver, Event) -> bool,
) {
    let start = Instant::now();
    let mut done = false;
    while !done {
        assert!(start.elapsed() < GUARD, "timed out waiting for: {what}");
        for (i, d) in drivers.iter_mut().enumerate() {
            d.poll(&mut |d, ev| {
                if f(i, d, ev) {
                    done = true;
                }
            });
        }
    }
}

/// Connects `client` to `addr` and waits until both sides report Connected.
pub fn connect_pair(
    server: &mut Driver,
    client: &mut Driver,
    addr: SocketAddr,
) -> (ConnId, ConnId, PeerInfo) {
    let c = client.connect(addr).unwrap();
    let mut server_conn = None;
    let mut client_peer = None;
    pump(&mut [server, client], "both sides connected", |i, _, ev| {
        match ev {
            Event::Connected { conn, .. } if i == 0 => server_conn = Some(conn),
            Event::Connected { conn, peer } if i == 1 && conn == c => client_peer = Some(peer),
            _ => {}
        }
        server_conn.is_some() && client_peer.is_some()
    });
    (server_conn.unwrap(), c, client_peer.unwrap())
}

/// The handshake a raw TCP peer sends: a Hello frame of `node_id`
/// (incarnation 1) in the tests' cluster (7), protocol version 1 only.
pub fn hello(node_id: u64) -> Vec<u8> {
    frame::encode_control(&Control::Hello(Hello {
        node_id,
        incarnation: 1,
        cluster_id: 7,
        protocol_min: 1,
        protocol_max: 1,
        build: "raw".into(),
    }))
}

/// Payload of frame `seq`: the sequence number, then a byte pattern of it.
pub fn fill(p: &mut [u8], seq: u32) {
    p[..4].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in p[4..].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
}

/// A client driver connected to a raw TCP peer (node 1) that has not read
/// anything yet.
pub fn raw_pair(cfg: DriverConfig) -> (Driver, ConnId, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = Driver::new(cfg).unwrap();
    let conn = client.connect(addr).unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    raw.write_all(&hello(1)).unwrap();
    pump(&mut [&mut client], "connected", |_, _, ev| {
        matches!(ev, Event::Connected { .. })
    });
    (client, conn, raw)
}

/// Parks `d` with no timeout; true if it returned by itself, false if only
/// a watchdog's unpark (after [`GUARD`]) ended it.
pub fn park_returns_by_itself(d: &mut Driver) -> bool {
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let unparker = d.unparker();
    let watchdog = std::thread::spawn(move || {
        let fired = done_rx.recv_timeout(GUARD).is_err();
        if fired {
            unparker.unpark();
        }
        fired
    });
    d.park(None).unwrap();
    // The watchdog may have fired already; then nobody receives this.
    let _ = done_tx.send(());
    !watchdog.join().unwrap()
}
