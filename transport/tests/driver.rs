//! End-to-end tests of the Driver over loopback.

mod common;

use common::*;
use concord_transport::{Claimed, Driver, DriverConfig, Event, SendOutcome};

#[test]
fn smoke_round_trip() {
    init_tracing();
    let mut server = Driver::new(DriverConfig {
        incarnation: 77,
        ..cfg(1)
    })
    .unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(DriverConfig {
        incarnation: u64::MAX - 1,
        ..cfg(2)
    })
    .unwrap();
    let (sconn, cconn, peer) = connect_pair(&mut server, &mut client, addr);
    assert_eq!((peer.node_id, peer.incarnation), (1, 77));
    let theirs = server.peer(sconn).unwrap();
    assert_eq!((theirs.node_id, theirs.incarnation), (2, u64::MAX - 1));
    assert_eq!(client.send(cconn, b"ping").unwrap(), SendOutcome::Queued);
    let mut got = Vec::new();
    pump(&mut [&mut server, &mut client], "frame", |i, d, ev| {
        let Event::Frame { conn, frame } = ev else {
            return false;
        };
        if i == 0 {
            assert_eq!(conn, sconn);
            got = frame.to_vec();
            drop(frame);
            match d.claim(conn, 4).unwrap() {
                Claimed::Claim(mut c) => {
                    c.payload_mut().copy_from_slice(b"pong");
                    c.commit();
                }
                Claimed::BackPressured => panic!("empty queue back-pressured"),
            }
            return false;
        }
        assert_eq!(&frame[..], b"pong");
        true
    });
    assert_eq!(got, b"ping");
}

fn pattern(seq: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as usize * 31 + i * 7) as u8)
        .collect()
}

/// Every payload size through each send path, in order, intact; one pooled
/// buffer sent to two peers (SEND_ZC above the lowered threshold).
#[test]
fn round_trip_every_size_and_send_path() {
    init_tracing();
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut ccfg = cfg(2);
    ccfg.zc_threshold = 4096;
    // The receiver verifies payload checksums too, straddled frames included.
    ccfg.checksum_payloads = true;
    let mut client = Driver::new(ccfg).unwrap();
    let (s1, c1, _) = connect_pair(&mut server, &mut client, addr);
    let (s2, c2, _) = connect_pair(&mut server, &mut client, addr);
    assert_ne!(s1, s2);

    let sizes = [0usize, 1, 64, 4096, 65 << 10, 1 << 20, 3, 64];
    let mut expect: Vec<(concord_transport::ConnId, Vec<u8>)> = Vec::new();
    for (seq, &len) in sizes.iter().enumerate() {
        let p = pattern(seq as u32, len);
        assert_eq!(client.send(c1, &p).unwrap(), SendOutcome::Queued);
        expect.push((s1, p));
    }
    // claim/commit (in place) for a small frame
    let p = pattern(100, 200);
    match client.claim(c1, 200).unwrap() {
        Claimed::Claim(mut c) => {
            c.payload_mut().copy_from_slice(&p);
            c.commit();
        }
        Claimed::BackPressured => panic!("back-pressured on an empty queue"),
    }
    expect.push((s1, p));
    // one buffer, two peers
    for (seq, len) in [(200u32, 10_000usize), (201, 100)] {
        let p = pattern(seq, len);
        let mut buf = client.alloc_buf(len).unwrap();
        buf.payload_mut().unwrap().copy_from_slice(&p);
        assert_eq!(client.send_buf(c1, &buf).unwrap(), SendOutcome::Queued);
        assert!(buf.payload_mut().is_none(), "frozen once sent");
        assert_eq!(client.send_buf(c2, &buf).unwrap(), SendOutcome::Queued);
        expect.push((s1, p.clone()));
        expect.push((s2, p));
    }
    let mut got: Vec<(concord_transport::ConnId, Vec<u8>)> = Vec::new();
    let total = expect.len();
    pump(&mut [&mut server, &mut client], "all frames", |i, _, ev| {
        if let (0, Event::Frame { conn, frame }) = (i, ev) {
            got.push((conn, frame.to_vec()));
        }
        got.len() == total
    });
    for conn in [s1, s2] {
        let g: Vec<_> = got
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, p)| p.len())
            .collect();
        let e: Vec<_> = expect
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, p)| p.len())
            .collect();
        assert_eq!(g, e, "order and sizes on {conn}");
    }
    for conn in [s1, s2] {
        let g = got.iter().filter(|(c, _)| *c == conn);
        let e = expect.iter().filter(|(c, _)| *c == conn);
        for ((_, a), (_, b)) in g.zip(e) {
            assert!(a == b, "payload mismatch ({} bytes)", a.len());
        }
    }
    let cs = client.stats();
    assert!(cs.zc_sends >= 2, "SEND_ZC used above the threshold: {cs:?}");
    let ss = server.stats();
    assert!(
        ss.straddled_frames >= 1,
        "a 1 MiB frame cannot fit a 64 KiB buffer: {ss:?}"
    );
    assert_eq!(ss.bad_frames, 0);
    // ZC notifications arrive once the peer has acknowledged the data.
    let start = std::time::Instant::now();
    while client.stats().zc_notifications < cs.zc_sends {
        assert!(start.elapsed() < GUARD, "zc notifications never came");
        client.poll(&mut |_, _| {});
        server.poll(&mut |_, _| {});
    }
}

/// A frame held by the application keeps its buffer; holding enough of them
/// starves the connection's ring (it stops reading) until they drop.
#[test]
fn held_frames_starve_then_resume() {
    init_tracing();
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2)).unwrap();
    let (_s, c, _) = connect_pair(&mut server, &mut client, addr);
    // 4 x 64 KiB of receive buffers; 40 x 16 KiB frames cannot all be held.
    let n = 40u32;
    let mut sent = 0u32;
    let mut held = Vec::new();
    let mut next = 0u32;
    let start = std::time::Instant::now();
    while server.stats().recv_starved == 0 {
        assert!(start.elapsed() < GUARD, "never starved");
        while sent < n {
            let p = pattern(sent, 16 << 10);
            match client.send(c, &p).unwrap() {
                SendOutcome::Queued => sent += 1,
                SendOutcome::BackPressured => break,
            }
        }
        client.poll(&mut |_, _| {});
        server.poll(&mut |_, ev| {
            if let Event::Frame { frame, .. } = ev {
                assert_eq!(&frame[..], &pattern(next, 16 << 10)[..]);
                next += 1;
                held.push(frame);
            }
        });
    }
    assert!(held.len() < n as usize, "starved before everything arrived");
    drop(held);
    let start = std::time::Instant::now();
    while next < n {
        assert!(
            start.elapsed() < GUARD,
            "the rest never arrived after release"
        );
        while sent < n && client.send(c, &pattern(sent, 16 << 10)).unwrap() == SendOutcome::Queued {
            sent += 1;
        }
        client.poll(&mut |_, _| {});
        server.poll(&mut |_, ev| {
            if let Event::Frame { frame, .. } = ev {
                assert_eq!(&frame[..], &pattern(next, 16 << 10)[..]);
                next += 1;
            }
        });
    }
    assert!(server.stats().recv_arms >= 2, "re-armed after starvation");
}

#[test]
fn unparker_wakes_a_parked_driver_and_park_times_out() {
    let mut d = Driver::new(cfg(1)).unwrap();
    d.park(Some(std::time::Duration::from_millis(1))).unwrap();
    let u = d.unparker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        u.unpark();
    });
    // No timeout: only the unpark can end this.
    d.park(None).unwrap();
    t.join().unwrap();
    // An unpark before park is not lost.
    d.unparker().unpark();
    d.park(None).unwrap();
}

#[test]
fn environment_check_passes_here() {
    concord_transport::check_environment(&cfg(1)).unwrap();
    let bad = concord_transport::DriverConfig {
        recv_buf_count: 3,
        ..cfg(1)
    };
    assert!(matches!(
        Driver::new(bad),
        Err(concord_transport::SetupError::Config { .. })
    ));
}

#[test]
fn steady_state_polls_do_not_read_the_clock() {
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2)).unwrap();
    let (_, cconn, _) = connect_pair(&mut server, &mut client, addr);
    // Both handshakes are done and nothing is connecting or backing off:
    // no timer is pending, so polling (idle or busy) must not read the clock.
    let before = (server.stats().clock_reads, client.stats().clock_reads);
    for _ in 0..1000 {
        server.poll(&mut |_, _| {});
        client.poll(&mut |_, _| {});
    }
    assert_eq!(client.send(cconn, b"tick").unwrap(), SendOutcome::Queued);
    pump(&mut [&mut server, &mut client], "frame", |i, _, ev| {
        i == 0 && matches!(ev, Event::Frame { .. })
    });
    let after = (server.stats().clock_reads, client.stats().clock_reads);
    assert_eq!(after, before, "(server, client) clock reads");
    // While a reconnect is pending the timer is checked, as it must be.
    let pending = client.connect("127.0.0.1:1".parse().unwrap()).unwrap();
    let start = std::time::Instant::now();
    while client.stats().clock_reads == after.1 {
        assert!(
            start.elapsed() < GUARD,
            "the reconnect timer was never checked"
        );
        client.poll(&mut |_, _| {});
    }
    client.close(pending).unwrap();
}

/// Frames queued across several staging chunks and pooled buffers leave in
/// gathered sends (fewer send operations than frames), in order and intact,
/// and a pooled buffer at the SEND_ZC threshold still goes out on its own.
#[test]
fn queued_frames_leave_in_gathered_sends_in_order() {
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut ccfg = cfg(2);
    ccfg.zc_threshold = 40_000;
    let mut client = Driver::new(ccfg).unwrap();
    let (sconn, cconn, _) = connect_pair(&mut server, &mut client, addr);
    let before = client.stats();
    // 24 KiB frames: two per 64 KiB chunk, so 12 of them span 6 chunks
    // (more than the 4 the config allows: some wait for room); pooled
    // buffers of 10 KB between them, and one of 50 KB (SEND_ZC).
    let mut expect = Vec::new();
    let mut seq = 0u32;
    let mut pending: std::collections::VecDeque<Vec<u8>> = (0..12)
        .flat_map(|i| {
            let mut v = vec![(24 << 10, false)];
            if i % 3 == 0 {
                v.push((10_000, true));
            }
            if i == 5 {
                v.push((50_000, true));
            }
            v
        })
        .map(|(len, pooled)| {
            seq += 1;
            let mut p = pattern(seq, len);
            // Last byte marks the path so a mix-up would show.
            *p.last_mut().unwrap() = pooled as u8;
            p
        })
        .collect();
    let total = pending.len();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let start = std::time::Instant::now();
    while got.len() < total {
        assert!(
            start.elapsed() < GUARD,
            "timed out: {} of {total}",
            got.len()
        );
        // Queue as much as fits before the next poll.
        while let Some(p) = pending.front() {
            let outcome = if *p.last().unwrap() == 1 {
                match client.alloc_buf(p.len()) {
                    Some(mut b) => {
                        b.payload_mut().unwrap().copy_from_slice(p);
                        client.send_buf(cconn, &b).unwrap()
                    }
                    None => SendOutcome::BackPressured,
                }
            } else {
                client.send(cconn, p).unwrap()
            };
            if outcome == SendOutcome::BackPressured {
                break;
            }
            expect.push(pending.pop_front().unwrap());
        }
        client.poll(&mut |_, _| {});
        server.poll(&mut |_, ev| {
            if let Event::Frame { conn, frame } = ev {
                assert_eq!(conn, sconn);
                got.push(frame.to_vec());
            }
        });
    }
    assert_eq!(got.len(), expect.len());
    for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
        assert!(
            g == e,
            "frame {i}: {} bytes vs {} expected",
            g.len(),
            e.len()
        );
    }
    let cs = client.stats();
    let frames = cs.frames_sent - before.frames_sent;
    let ops = cs.send_ops - before.send_ops;
    assert!(cs.gathered_sends > before.gathered_sends, "{cs:?}");
    assert!(ops < frames, "{ops} send ops for {frames} frames");
    assert_eq!(cs.zc_sends - before.zc_sends, 1, "{cs:?}");
}

/// Frames that straddle two receive buffers are copied into a reassembly
/// buffer preallocated with the connection: even the first copy allocates
/// nothing, so the steady state is allocation-free without a warm-up.
#[test]
fn straddled_frames_reassemble_without_allocating() {
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2)).unwrap();
    let (_, cconn, _) = connect_pair(&mut server, &mut client, addr);
    // 5000 + 16 bytes do not divide a 64 KiB buffer: every buffer boundary
    // cuts a frame (and some cut a header).
    let n = 100u32;
    let mut next = 0u32;
    let mut got = 0u32;
    let start = std::time::Instant::now();
    while got < n {
        assert!(start.elapsed() < GUARD, "timed out: {got} of {n}");
        while next < n && client.send(cconn, &pattern(next, 5000)).unwrap() == SendOutcome::Queued {
            next += 1;
        }
        client.poll(&mut |_, _| {});
        server.poll(&mut |_, ev| {
            if let Event::Frame { frame, .. } = ev {
                assert!(frame[..] == pattern(got, 5000)[..], "frame {got}");
                got += 1;
            }
        });
    }
    let ss = server.stats();
    assert!(ss.straddled_frames >= 5, "{ss:?}");
    assert_eq!(ss.assembly_allocations, 0, "{ss:?}");
}
