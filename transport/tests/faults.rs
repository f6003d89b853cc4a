//! Misbehaving peers, back-pressure, peer restarts and teardown with
//! operations in flight.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

use common::*;
use concord_transport::frame::{self, Control, FrameError, FrameKind, HEADER_LEN, Hello};
use concord_transport::{
    CloseReason, ConnId, Driver, DriverConfig, Event, HandshakeError, SendError, SendOutcome,
};

/// Server with one well-behaved Driver client connected.
fn server_with_good_client() -> (Driver, Driver, SocketAddr, ConnId, ConnId) {
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2)).unwrap();
    let (s, c, _) = connect_pair(&mut server, &mut client, addr);
    (server, client, addr, s, c)
}

/// The good connection still carries traffic both ways.
fn assert_good_connection_works(server: &mut Driver, client: &mut Driver, s: ConnId, c: ConnId) {
    assert_eq!(client.send(c, b"still here").unwrap(), SendOutcome::Queued);
    let mut phase = 0;
    pump(
        &mut [server, client],
        "good connection round trip",
        |i, d, ev| {
            if let Event::Frame { conn, frame } = ev {
                if i == 0 && phase == 0 {
                    assert_eq!((conn, &frame[..]), (s, &b"still here"[..]));
                    assert_eq!(d.send(s, b"and you").unwrap(), SendOutcome::Queued);
                    phase = 1;
                } else if i == 1 && phase == 1 {
                    assert_eq!((conn, &frame[..]), (c, &b"and you"[..]));
                    return true;
                }
            }
            false
        },
    );
}

/// A raw peer that completed the handshake; returns its stream and the
/// server's id for it.
fn raw_connected(
    server: &mut Driver,
    client: &mut Driver,
    addr: SocketAddr,
) -> (TcpStream, ConnId) {
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.write_all(&hello(99)).unwrap();
    let mut id = None;
    pump(&mut [server, client], "raw peer connected", |i, _, ev| {
        if let (0, Event::Connected { conn, peer }) = (i, ev) {
            assert_eq!(peer.node_id, 99);
            id = Some(conn);
            return true;
        }
        false
    });
    (raw, id.unwrap())
}

fn expect_closed_with(
    server: &mut Driver,
    client: &mut Driver,
    raw_conn: Option<ConnId>,
    what: &str,
    check: impl Fn(&CloseReason) -> bool,
) {
    pump(&mut [server, client], what, |i, _, ev| match (i, ev) {
        (0, Event::Disconnected { conn, reason }) => {
            assert_eq!(Some(conn), raw_conn, "only the bad connection closes");
            assert!(check(&reason), "{what}: got {reason:?}");
            true
        }
        (0, Event::HandshakeFailed { reason, .. }) => {
            assert!(
                raw_conn.is_none(),
                "connected peer reported as handshake failure"
            );
            assert!(check(&reason), "{what}: got {reason:?}");
            true
        }
        (_, Event::Disconnected { conn, reason }) => panic!("{conn} closed too: {reason}"),
        _ => false,
    });
}

/// The misbehaving peer sees its connection end (EOF or reset), not a hang.
fn assert_peer_sees_close(raw: &mut TcpStream, server: &mut Driver, what: &str) {
    raw.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            start.elapsed() < GUARD,
            "{what}: the peer's connection never ended"
        );
        match raw.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                server.poll(&mut |_, _| {});
            }
            Err(_) => return,
        }
    }
}

#[test]
fn each_bad_frame_closes_only_its_connection() {
    init_tracing();
    let (mut server, mut client, addr, s, c) = server_with_good_client();
    let good = frame::encode_frame(FrameKind::Payload, b"0123456789abcdef");
    type Case = (&'static str, Vec<u8>, fn(&CloseReason) -> bool);
    let cases: Vec<Case> = vec![
        (
            "bad magic",
            {
                let mut f = good.clone();
                f[1] ^= 0xff;
                f
            },
            |e| matches!(e, CloseReason::Frame(FrameError::BadMagic { .. })),
        ),
        (
            "bad wire version",
            {
                let mut f = good.clone();
                f[4] = 200;
                f
            },
            |e| matches!(e, CloseReason::Frame(FrameError::BadVersion { found: 200 })),
        ),
        (
            "bad kind",
            {
                let mut f = good.clone();
                f[5] = 9;
                f
            },
            |e| matches!(e, CloseReason::Frame(FrameError::BadKind { found: 9 })),
        ),
        (
            "oversized length",
            {
                let mut f = good.clone();
                f[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
                f
            },
            |e| {
                matches!(
                    e,
                    CloseReason::Frame(FrameError::BadLength { len: u32::MAX, .. })
                )
            },
        ),
        (
            "bad checksum",
            {
                let mut f = good.clone();
                f[HEADER_LEN + 3] ^= 1;
                f
            },
            |e| matches!(e, CloseReason::Frame(FrameError::BadChecksum { .. })),
        ),
        (
            "archive failing validation",
            frame::encode_frame(FrameKind::Control, &[0xAB; 48]),
            |e| matches!(e, CloseReason::Frame(FrameError::BadArchive { .. })),
        ),
        ("hello after the handshake", hello(5), |e| {
            matches!(e, CloseReason::UnexpectedControl { got: "Hello" })
        }),
    ];
    let bad_before = server.stats().bad_frames;
    for (what, bytes, check) in cases {
        let (mut raw, id) = raw_connected(&mut server, &mut client, addr);
        // A good frame first: it is delivered, then the bad one closes.
        raw.write_all(&good).unwrap();
        raw.write_all(&bytes).unwrap();
        let mut delivered = false;
        pump(&mut [&mut server, &mut client], what, |i, _, ev| {
            match (i, ev) {
                (0, Event::Frame { conn, frame }) if conn == id => {
                    assert_eq!(&frame[..], b"0123456789abcdef");
                    delivered = true;
                    false
                }
                (0, Event::Disconnected { conn, reason }) => {
                    assert_eq!(conn, id, "only the bad connection closes");
                    assert!(check(&reason), "{what}: got {reason:?}");
                    true
                }
                (_, Event::Disconnected { conn, reason }) => panic!("{conn} closed too: {reason}"),
                _ => false,
            }
        });
        assert!(delivered, "{what}: the good frame before it was delivered");
        assert_peer_sees_close(&mut raw, &mut server, what);
        assert_good_connection_works(&mut server, &mut client, s, c);
    }
    assert_eq!(server.stats().bad_frames, bad_before + 6);
}

#[test]
fn garbage_handshakes_fail_with_typed_errors() {
    init_tracing();
    let (mut server, mut client, addr, s, c) = server_with_good_client();
    type Case = (&'static str, Vec<u8>, fn(&CloseReason) -> bool);
    let cases: Vec<Case> = vec![
        (
            "random bytes",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            |e| {
                matches!(
                    e,
                    CloseReason::Handshake(HandshakeError::Frame(FrameError::BadMagic { .. }))
                )
            },
        ),
        (
            "payload before hello",
            frame::encode_frame(FrameKind::Payload, b"hi"),
            |e| {
                matches!(
                    e,
                    CloseReason::Handshake(HandshakeError::NotHello { got: "payload" })
                )
            },
        ),
        (
            "ping before hello",
            frame::encode_control(&Control::Ping { nonce: 1 }),
            |e| {
                matches!(
                    e,
                    CloseReason::Handshake(HandshakeError::NotHello { got: "Ping" })
                )
            },
        ),
        (
            "garbage archive",
            frame::encode_frame(FrameKind::Control, &[0x5A; 64]),
            |e| {
                matches!(
                    e,
                    CloseReason::Handshake(HandshakeError::Frame(FrameError::BadArchive { .. }))
                )
            },
        ),
        (
            "wrong cluster",
            frame::encode_control(&Control::Hello(Hello {
                node_id: 5,
                incarnation: 0,
                cluster_id: 8,
                protocol_min: 1,
                protocol_max: 1,
                build: String::new(),
            })),
            |e| {
                matches!(
                    e,
                    CloseReason::Handshake(HandshakeError::ClusterMismatch { ours: 7, theirs: 8 })
                )
            },
        ),
        (
            "no common version",
            frame::encode_control(&Control::Hello(Hello {
                node_id: 5,
                incarnation: 0,
                cluster_id: 7,
                protocol_min: 4,
                protocol_max: 9,
                build: String::new(),
            })),
            |e| {
                matches!(
                    e,
                    CloseReason::Handshake(HandshakeError::NoCommonVersion { .. })
                )
            },
        ),
    ];
    for (what, bytes, check) in cases {
        let mut raw = TcpStream::connect(addr).unwrap();
        raw.write_all(&bytes).unwrap();
        expect_closed_with(&mut server, &mut client, None, what, check);
        assert_peer_sees_close(&mut raw, &mut server, what);
        assert_good_connection_works(&mut server, &mut client, s, c);
    }
}

#[test]
fn handshake_refuses_other_cluster_and_disjoint_versions() {
    init_tracing();
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut other = cfg(2);
    other.protocol = concord_transport::VersionRange { min: 3, max: 4 };
    let mut client = Driver::new(other).unwrap();
    let conn = client.connect(addr).unwrap();
    let (mut server_saw, mut client_saw) = (None, None);
    pump(
        &mut [&mut server, &mut client],
        "both sides refuse",
        |i, _, ev| {
            match (i, ev) {
                (0, Event::HandshakeFailed { reason, .. }) => server_saw = Some(reason),
                (
                    1,
                    Event::HandshakeFailed {
                        conn: c, reason, ..
                    },
                ) => {
                    assert_eq!(c, conn);
                    client_saw = Some(reason);
                }
                (_, Event::Connected { .. }) => panic!("disjoint versions connected"),
                _ => {}
            }
            server_saw.is_some() && client_saw.is_some()
        },
    );
    for r in [server_saw.unwrap(), client_saw.unwrap()] {
        assert!(
            matches!(
                r,
                CloseReason::Handshake(HandshakeError::NoCommonVersion { .. })
                    | CloseReason::Handshake(HandshakeError::Rejected { code: 2, .. })
            ),
            "{r:?}"
        );
    }
}

/// Parses frames from a byte stream; returns payload frames' sequence numbers.
fn drain_frames(raw: &mut TcpStream, want: u32) -> Vec<u32> {
    let mut seqs = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    while (seqs.len() as u32) < want {
        let n = raw.read(&mut chunk).unwrap();
        assert!(n > 0, "eof after {} frames", seqs.len());
        buf.extend_from_slice(&chunk[..n]);
        let mut off = 0;
        while let Ok((h, p)) = frame::verify_frame(&buf[off..], 1 << 24) {
            if h.kind == FrameKind::Payload {
                seqs.push(u32::from_le_bytes(p[..4].try_into().unwrap()));
            }
            off += h.frame_len();
        }
        buf.drain(..off);
    }
    seqs
}

#[test]
fn full_queue_back_pressures_then_drains_without_loss() {
    init_tracing();
    let (mut client, conn, mut raw) = raw_pair(cfg(2));

    // The peer reads nothing: the kernel buffers fill, then our bounded queue.
    let mut payload = vec![0u8; 1024];
    let mut sent = 0u32;
    let start = Instant::now();
    loop {
        assert!(
            sent < 200_000,
            "never back-pressured: the queue is unbounded"
        );
        assert!(start.elapsed() < GUARD, "never back-pressured");
        payload[..4].copy_from_slice(&sent.to_le_bytes());
        match client.send(conn, &payload).unwrap() {
            SendOutcome::Queued => sent += 1,
            SendOutcome::BackPressured => break,
        }
        client.poll(&mut |_, _| {});
    }
    assert!(client.stats().back_pressured >= 1);
    let total = sent + 3000;
    let reader = std::thread::spawn(move || drain_frames(&mut raw, total));
    let mut writable = false;
    while sent < total {
        assert!(start.elapsed() < GUARD, "stalled after back-pressure");
        payload[..4].copy_from_slice(&sent.to_le_bytes());
        if client.send(conn, &payload).unwrap() == SendOutcome::Queued {
            sent += 1;
        }
        client.poll(&mut |_, ev| writable |= matches!(ev, Event::Writable { .. }));
    }
    let t = Instant::now();
    while !reader.is_finished() {
        assert!(t.elapsed() < GUARD, "reader never got everything");
        client.poll(&mut |_, ev| writable |= matches!(ev, Event::Writable { .. }));
    }
    let seqs = reader.join().unwrap();
    assert!(
        writable,
        "Writable follows BackPressured once the peer drains"
    );
    assert_eq!(
        seqs,
        (0..total).collect::<Vec<_>>(),
        "no loss, no reordering"
    );
}

#[test]
fn reconnects_after_the_peer_restarts() {
    init_tracing();
    let life = |incarnation| DriverConfig {
        incarnation,
        ..cfg(1)
    };
    let mut server = Driver::new(life(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2)).unwrap();
    let (_, conn, first) = connect_pair(&mut server, &mut client, addr);
    assert_eq!((first.node_id, first.incarnation), (1, 1));
    assert_eq!(client.send(conn, b"before").unwrap(), SendOutcome::Queued);
    pump(
        &mut [&mut server, &mut client],
        "first frame",
        |i, _, ev| i == 0 && matches!(ev, Event::Frame { .. }),
    );
    drop(server);
    pump(&mut [&mut client], "disconnect seen", |_, _, ev| match ev {
        Event::Disconnected { conn: c, .. } => {
            assert_eq!(c, conn);
            true
        }
        _ => false,
    });
    assert!(matches!(
        client.send(conn, b"x"),
        Err(SendError::NotConnected { .. })
    ));
    // Let a few connect attempts fail against the closed port.
    let t = Instant::now();
    while t.elapsed().as_millis() < 30 {
        client.poll(&mut |_, ev| assert!(!matches!(ev, Event::Connected { .. })));
    }
    // The same node, restarted: a new incarnation.
    let mut server = Driver::new(life(2)).unwrap();
    assert_eq!(server.listen(addr).unwrap(), addr);
    let mut peer = None;
    pump(
        &mut [&mut server, &mut client],
        "reconnected",
        |i, _, ev| {
            if let (1, Event::Connected { conn: c, peer: p }) = (i, ev) {
                assert_eq!(c, conn, "same ConnId across reconnects");
                peer = Some(p);
                return true;
            }
            false
        },
    );
    let peer = peer.unwrap();
    assert_eq!((peer.node_id, peer.incarnation), (1, 2), "{peer:?}");
    assert!(client.stats().connect_attempts >= 2);
    assert_eq!(client.send(conn, b"after").unwrap(), SendOutcome::Queued);
    pump(
        &mut [&mut server, &mut client],
        "traffic resumes",
        |i, _, ev| match (i, ev) {
            (0, Event::Frame { frame, .. }) => {
                assert_eq!(&frame[..], b"after");
                true
            }
            _ => false,
        },
    );
}

#[test]
fn dropping_a_driver_with_operations_in_flight_is_safe() {
    init_tracing();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut ccfg = cfg(2);
    ccfg.zc_threshold = 4096;
    let mut client = Driver::new(ccfg).unwrap();
    let conn = client.connect(addr).unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    raw.write_all(&hello(1)).unwrap();
    raw.write_all(&frame::encode_frame(
        FrameKind::Payload,
        b"kept across the drop",
    ))
    .unwrap();
    let mut kept = None;
    pump(&mut [&mut client], "frame", |_, _, ev| {
        if let Event::Frame { frame, .. } = ev {
            kept = Some(frame);
            return true;
        }
        false
    });
    // SEND_ZC sends the peer never reads: pending in the kernel at drop.
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < GUARD);
        let Some(mut buf) = client.alloc_buf(256 << 10) else {
            break;
        };
        buf.payload_mut().unwrap().fill(0xEE);
        if client.send_buf(conn, &buf).unwrap() == SendOutcome::BackPressured {
            break;
        }
        client.poll(&mut |_, _| {});
    }
    assert!(client.stats().zc_sends > 0);
    drop(client);
    // The frame's buffer outlives the driver and is still intact.
    let kept = kept.unwrap();
    assert_eq!(&kept[..], b"kept across the drop");
    drop(kept);
    drop(raw);
}
