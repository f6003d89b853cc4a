//! Graceful close: every frame accepted before `close` reaches the peer even
//! when the driver is dropped right after the close event; nothing is
//! accepted after `close`; a peer that never reads ends in a linger timeout.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use concord_transport::frame::{self, Control, FrameKind};
use concord_transport::{
    CloseReason, ConnId, Driver, DriverConfig, Event, SendError, SendOutcome, SetupError,
};

fn check(p: &[u8]) -> u32 {
    let seq = u32::from_le_bytes(p[..4].try_into().unwrap());
    let mut want = vec![0u8; p.len()];
    fill(&mut want, seq);
    assert!(p == &want[..], "frame {seq} corrupted");
    seq
}

/// Polls `client` until `conn` is reported disconnected; returns the reason.
fn disconnect_reason(client: &mut Driver, conn: ConnId) -> CloseReason {
    let mut reason = None;
    pump(&mut [client], "close event", |_, _, ev| match ev {
        Event::Disconnected { conn: c, reason: r } => {
            assert_eq!(c, conn);
            reason = Some(r);
            true
        }
        _ => false,
    });
    reason.expect("pump returned without the event")
}

/// Queues frames (every fourth from a pooled buffer, large enough for
/// SEND_ZC) while the peer reads nothing, until the queue back-pressures.
/// Returns how many were accepted.
fn fill_until_back_pressured(client: &mut Driver, conn: ConnId) -> u32 {
    let mut small = vec![0u8; 3000];
    let mut sent = 0u32;
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < GUARD, "never back-pressured");
        assert!(sent < 200_000, "never back-pressured");
        let outcome = if sent % 4 == 3 {
            let Some(mut buf) = client.alloc_buf(100 << 10) else {
                break;
            };
            fill(buf.payload_mut().unwrap(), sent);
            client.send_buf(conn, &buf).unwrap()
        } else {
            fill(&mut small, sent);
            client.send(conn, &small).unwrap()
        };
        match outcome {
            SendOutcome::Queued => sent += 1,
            SendOutcome::BackPressured => break,
        }
        client.poll(&mut |_, _| {});
    }
    sent
}

/// Reads the stream to its end (or an error); returns the payload frames'
/// sequence numbers, each checked intact, and whether a Goodbye came last.
fn read_to_end(mut raw: TcpStream) -> (Vec<u32>, bool) {
    let mut seqs = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut goodbye_last = false;
    let mut scratch = rkyv::util::AlignedVec::<{ frame::ARCHIVE_ALIGN }>::new();
    loop {
        let n = match raw.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut off = 0;
        while let Ok((h, p)) = frame::verify_frame(&buf[off..], 1 << 24) {
            match h.kind {
                FrameKind::Payload => {
                    seqs.push(check(p));
                    goodbye_last = false;
                }
                FrameKind::Control => {
                    goodbye_last = matches!(
                        frame::decode_control(p, &mut scratch),
                        Ok((Control::Goodbye { .. }, _))
                    );
                }
            }
            off += h.frame_len();
        }
        buf.drain(..off);
    }
    (seqs, goodbye_last)
}

#[test]
fn close_delivers_every_queued_frame_before_reporting() {
    init_tracing();
    let cfg = DriverConfig {
        zc_threshold: 64 << 10,
        ..cfg(2)
    };
    let (mut client, conn, raw) = raw_pair(cfg);
    let sent = fill_until_back_pressured(&mut client, conn);
    assert!(client.stats().back_pressured >= 1);
    client.close(conn).unwrap();
    // Only now does the peer start reading; it closes after the EOF.
    let reader = std::thread::spawn(move || read_to_end(raw));
    let reason = Some(disconnect_reason(&mut client, conn));
    assert!(
        matches!(reason, Some(CloseReason::Closed)),
        "graceful close reports Closed: {reason:?}"
    );
    let zc = client.stats().zc_sends;
    drop(client);
    let (seqs, goodbye_last) = reader.join().unwrap();
    assert_eq!(
        seqs,
        (0..sent).collect::<Vec<_>>(),
        "every frame accepted before close arrives, intact and in order"
    );
    assert!(goodbye_last, "a Goodbye follows the last frame");
    assert!(zc > 0, "the queue held SEND_ZC frames");
}

#[test]
fn close_between_drivers_delivers_everything_then_both_sides_report() {
    init_tracing();
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2)).unwrap();
    let (s, c, _) = connect_pair(&mut server, &mut client, addr);
    let mut payload = vec![0u8; 2000];
    let mut sent = 0u32;
    while sent < 2000 {
        fill(&mut payload, sent);
        match client.send(c, &payload).unwrap() {
            SendOutcome::Queued => sent += 1,
            SendOutcome::BackPressured => break,
        }
    }
    assert!(sent > 0);
    // Nothing has been polled yet: all of it is still queued at close.
    client.close(c).unwrap();
    let mut got = Vec::new();
    let (mut client_reason, mut server_reason) = (None, None);
    pump(
        &mut [&mut server, &mut client],
        "client close event",
        |i, _, ev| match (i, ev) {
            (0, Event::Frame { conn, frame }) => {
                assert_eq!(conn, s);
                got.push(check(&frame));
                false
            }
            (0, Event::Disconnected { conn, reason }) => {
                assert_eq!(conn, s);
                server_reason = Some(reason);
                false
            }
            (1, Event::Disconnected { conn, reason }) => {
                assert_eq!(conn, c);
                client_reason = Some(reason);
                true
            }
            _ => false,
        },
    );
    assert!(
        matches!(client_reason, Some(CloseReason::Closed)),
        "{client_reason:?}"
    );
    drop(client);
    if server_reason.is_none() {
        pump(
            &mut [&mut server],
            "server sees the close",
            |_, _, ev| match ev {
                Event::Frame { frame, .. } => {
                    got.push(check(&frame));
                    false
                }
                Event::Disconnected { conn, reason } => {
                    assert_eq!(conn, s);
                    server_reason = Some(reason);
                    true
                }
                _ => false,
            },
        );
    }
    assert_eq!(got, (0..sent).collect::<Vec<_>>(), "no loss, no reordering");
    assert!(
        matches!(server_reason, Some(CloseReason::PeerGoodbye { code: 0 })),
        "{server_reason:?}"
    );
}

#[test]
fn send_after_close_is_refused_with_closed() {
    init_tracing();
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2)).unwrap();
    let (_, c, _) = connect_pair(&mut server, &mut client, addr);
    assert_eq!(client.send(c, b"before").unwrap(), SendOutcome::Queued);
    let buf = client.alloc_buf(16).unwrap();
    client.close(c).unwrap();
    assert!(
        matches!(client.send(c, b"after"), Err(SendError::Closed)),
        "send after close"
    );
    assert!(
        matches!(client.claim(c, 8), Err(SendError::Closed)),
        "claim after close"
    );
    assert!(
        matches!(client.send_buf(c, &buf), Err(SendError::Closed)),
        "send_buf after close"
    );
    assert!(!SendError::Closed.is_retryable());
    let (mut frames, mut client_done, mut server_done) = (0, false, false);
    pump(
        &mut [&mut server, &mut client],
        "both sides closed",
        |i, d, ev| {
            match (i, ev) {
                (0, Event::Frame { frame, .. }) => {
                    assert_eq!(&frame[..], b"before");
                    frames += 1;
                }
                (0, Event::Disconnected { reason, .. }) => {
                    assert!(
                        matches!(reason, CloseReason::PeerGoodbye { .. }),
                        "{reason:?}"
                    );
                    server_done = true;
                }
                (1, Event::Disconnected { conn, reason }) => {
                    assert!(matches!(reason, CloseReason::Closed), "{reason:?}");
                    assert!(matches!(
                        d.send(conn, b"x"),
                        Err(SendError::Closed | SendError::UnknownConn { .. })
                    ));
                    client_done = true;
                }
                _ => {}
            }
            client_done && server_done
        },
    );
    assert_eq!(frames, 1, "the frame queued before close arrives once");
    // The linger deadline is gone with the close: idle polls read no clock.
    let reads = client.stats().clock_reads;
    for _ in 0..100 {
        client.poll(&mut |_, _| {});
    }
    assert_eq!(client.stats().clock_reads, reads, "stale linger deadline");
}

#[test]
fn close_to_a_peer_that_never_reads_ends_with_linger_timeout() {
    init_tracing();
    let cfg = DriverConfig {
        close_linger: Duration::from_millis(100),
        ..cfg(2)
    };
    let (mut client, conn, raw) = raw_pair(cfg);
    fill_until_back_pressured(&mut client, conn);
    client.close(conn).unwrap();
    let reason = Some(disconnect_reason(&mut client, conn));
    assert!(
        matches!(reason, Some(CloseReason::LingerTimeout { linger }) if linger == Duration::from_millis(100)),
        "{reason:?}"
    );
    assert!(matches!(
        client.send(conn, b"x"),
        Err(SendError::Closed | SendError::UnknownConn { .. })
    ));
    drop(raw);
}

#[test]
fn zero_close_linger_is_refused() {
    let cfg = DriverConfig {
        close_linger: Duration::ZERO,
        ..cfg(1)
    };
    assert!(matches!(
        Driver::new(cfg),
        Err(SetupError::Config { what }) if what.contains("close_linger")
    ));
}

/// Queues up to `n` frames of 2000 bytes on `conn`; returns how many.
fn queue_frames(d: &mut Driver, conn: ConnId, n: u32) -> u32 {
    let mut payload = vec![0u8; 2000];
    let mut sent = 0u32;
    while sent < n {
        fill(&mut payload, sent);
        match d.send(conn, &payload).unwrap() {
            SendOutcome::Queued => sent += 1,
            SendOutcome::BackPressured => break,
        }
    }
    sent
}

/// Frames the peer sent before it saw our Goodbye reach the application
/// while our close lingers (they are not dropped), in order, all before
/// the close event.
#[test]
fn frames_arriving_while_a_close_lingers_are_delivered() {
    init_tracing();
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2)).unwrap();
    let (s, c, _) = connect_pair(&mut server, &mut client, addr);
    let sent = queue_frames(&mut server, s, 100);
    assert!(sent > 0);
    // The server's frames leave now, and the client closes before it has
    // polled (parsed) any of them.
    server.poll(&mut |_, _| {});
    client.close(c).unwrap();
    let mut got = Vec::new();
    let mut server_reason = None;
    let mut client_reason = None;
    pump(
        &mut [&mut server, &mut client],
        "both sides close",
        |i, _, ev| {
            match (i, ev) {
                (1, Event::Frame { conn, frame }) => {
                    assert_eq!(conn, c);
                    assert!(client_reason.is_none(), "a frame after the close event");
                    got.push(check(&frame));
                }
                (1, Event::Disconnected { reason, .. }) => client_reason = Some(reason),
                (0, Event::Disconnected { reason, .. }) => server_reason = Some(reason),
                (_, Event::Frame { .. }) => panic!("the client sent nothing"),
                _ => {}
            }
            client_reason.is_some() && server_reason.is_some()
        },
    );
    assert_eq!(got, (0..sent).collect::<Vec<_>>(), "no loss, no reordering");
    assert!(
        matches!(client_reason, Some(CloseReason::Closed)),
        "{client_reason:?}"
    );
    assert!(
        matches!(server_reason, Some(CloseReason::PeerGoodbye { code: 0 })),
        "{server_reason:?}"
    );
}

/// Both sides close at once: each gets everything the other queued before
/// its close, and both closes complete.
#[test]
fn simultaneous_closes_deliver_both_ways() {
    init_tracing();
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2)).unwrap();
    let (s, c, _) = connect_pair(&mut server, &mut client, addr);
    let sent = [
        queue_frames(&mut server, s, 100),
        queue_frames(&mut client, c, 100),
    ];
    server.close(s).unwrap();
    client.close(c).unwrap();
    let mut got: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
    let mut reasons: [Option<CloseReason>; 2] = [None, None];
    pump(
        &mut [&mut server, &mut client],
        "both closes",
        |i, _, ev| {
            match ev {
                Event::Frame { frame, .. } => {
                    assert!(reasons[i].is_none(), "a frame after the close event");
                    got[i].push(check(&frame));
                }
                Event::Disconnected { reason, .. } => reasons[i] = Some(reason),
                _ => {}
            }
            reasons.iter().all(Option::is_some)
        },
    );
    assert_eq!(
        got[0],
        (0..sent[1]).collect::<Vec<_>>(),
        "server got client's"
    );
    assert_eq!(
        got[1],
        (0..sent[0]).collect::<Vec<_>>(),
        "client got server's"
    );
    for r in &reasons {
        assert!(matches!(r, Some(CloseReason::Closed)), "{reasons:?}");
    }
}
