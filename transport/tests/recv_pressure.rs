//! Frames the application holds pin receive buffers; when they hold them
//! all the connection pauses visibly (RecvPressure, a Stats counter), TCP
//! back-pressures the sender, and reading resumes by itself once the frames
//! drop, with every frame delivered in order.

mod common;

use std::time::Instant;

use common::*;
use concord_transport::{Driver, DriverConfig, Event, RecvHeld, SendOutcome};

const LEN: usize = 16 << 10;

fn pattern(seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; LEN];
    fill(&mut p, seq);
    p
}

#[test]
fn held_frames_pause_the_connection_visibly_and_it_resumes_losing_nothing() {
    init_tracing();
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2)).unwrap();
    let (s, c, _) = connect_pair(&mut server, &mut client, addr);
    assert_eq!(server.recv_held(s), Some(RecvHeld::default()));

    // 4 x 64 KiB receive buffers; 32 MiB is more than the ring and the
    // kernel's socket buffers on both sides hold.
    let n = 2048u32;
    let mut sent = 0u32;
    let mut held = Vec::new();
    let mut pressure = None;
    let start = Instant::now();
    while pressure.is_none() {
        assert!(start.elapsed() < GUARD, "never paused");
        while sent < n && client.send(c, &pattern(sent)).unwrap() == SendOutcome::Queued {
            sent += 1;
        }
        client.poll(&mut |_, _| {});
        server.poll(&mut |_, ev| match ev {
            Event::Frame { frame, .. } => {
                assert!(pressure.is_none(), "a frame after the pause");
                assert!(frame[..] == pattern(held.len() as u32)[..]);
                held.push(frame);
            }
            Event::RecvPressure {
                conn,
                held_buffers,
                held_bytes,
            } => {
                assert_eq!(conn, s);
                pressure = Some((held_buffers, held_bytes));
            }
            other => panic!("unexpected {other:?}"),
        });
    }
    let (held_buffers, held_bytes) = pressure.unwrap();
    assert_eq!(held_buffers, 4, "every buffer is held");
    assert!(held_bytes > 3 * (64 << 10), "{held_bytes}");
    assert_eq!(
        server.recv_held(s),
        Some(RecvHeld {
            buffers: held_buffers,
            bytes: held_bytes,
            paused: true
        })
    );
    let st = server.stats();
    assert_eq!(st.recv_paused, 1);
    assert_eq!(st.held_recv_buffers, 4);
    assert_eq!(st.held_recv_bytes, held_bytes);
    let delivered = held.len();
    assert!(delivered < n as usize);

    // While paused, nothing is read, and the sender fills up: its sends
    // come back BackPressured and stay so.
    let mut refused = 0u32;
    let start = Instant::now();
    while refused < 1000 {
        assert!(start.elapsed() < GUARD, "the sender was never held back");
        match client.send(c, &pattern(sent)).unwrap() {
            SendOutcome::Queued => {
                sent += 1;
                refused = 0;
            }
            SendOutcome::BackPressured => refused += 1,
        }
        assert!(
            sent < n,
            "the whole stream fit: pressure never reached the sender"
        );
        client.poll(&mut |_, _| {});
        server.poll(&mut |_, ev| panic!("while paused: {ev:?}"));
    }
    assert!(client.stats().back_pressured >= 1000);

    // Dropping the frames resumes the connection; the rest arrives in order.
    drop(held);
    let mut next = delivered as u32;
    let mut resumed = 0;
    let start = Instant::now();
    while next < n {
        assert!(start.elapsed() < GUARD, "stalled at {next} of {n}");
        while sent < n && client.send(c, &pattern(sent)).unwrap() == SendOutcome::Queued {
            sent += 1;
        }
        client.poll(&mut |_, _| {});
        server.poll(&mut |_, ev| match ev {
            Event::Frame { frame, .. } => {
                assert!(frame[..] == pattern(next)[..], "frame {next}");
                next += 1;
            }
            Event::RecvResumed { conn } => {
                assert_eq!(conn, s);
                resumed += 1;
            }
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(resumed, 1);
    let st = server.stats();
    assert_eq!((st.recv_paused, st.recv_resumed), (1, 1));
    assert_eq!(st.held_recv_buffers, 0);
    assert_eq!(st.held_recv_bytes, 0);
    assert_eq!(server.recv_held(s), Some(RecvHeld::default()));
    assert_eq!(
        st.frames_received,
        n as u64 + 1,
        "every frame and the Hello"
    );
}

/// Sends `n` frames on `c` and hands what the server receives to `f`.
fn deliver(
    server: &mut Driver,
    client: &mut Driver,
    c: concord_transport::ConnId,
    seqs: std::ops::Range<u32>,
    mut f: impl FnMut(u32, concord_transport::RecvFrame),
) {
    let (mut sent, mut next) = (seqs.start, seqs.start);
    let start = Instant::now();
    while next < seqs.end {
        assert!(start.elapsed() < GUARD, "stalled at {next}");
        while sent < seqs.end && client.send(c, &pattern(sent)).unwrap() == SendOutcome::Queued {
            sent += 1;
        }
        client.poll(&mut |_, _| {});
        server.poll(&mut |_, ev| match ev {
            Event::Frame { frame, .. } => {
                assert!(frame[..] == pattern(next)[..], "frame {next}");
                f(next, frame);
                next += 1;
            }
            other => panic!("unexpected {other:?}"),
        });
    }
}

/// Holding less than the whole ring never pauses a connection, and the held
/// figures follow the frames the application keeps, per connection and in
/// total. A buffer counts as held once the kernel is done filling it.
#[test]
fn held_buffers_are_counted_per_connection_and_per_driver() {
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2)).unwrap();
    let (s1, c1, _) = connect_pair(&mut server, &mut client, addr);
    let (s2, c2, _) = connect_pair(&mut server, &mut client, addr);
    let mut kept = Vec::new();
    // c1: 1 MiB through its 4 x 64 KiB ring, keeping only the first frame
    // (it lies whole in the first buffer, right after the Hello).
    deliver(&mut server, &mut client, c1, 0..64, |seq, f| {
        if seq == 0 {
            assert!(!f.was_reassembled());
            kept.push(f);
        }
    });
    let h1 = server.recv_held(s1).unwrap();
    assert_eq!(h1.buffers, 1, "{h1:?}");
    assert_eq!(h1.bytes, 64 << 10, "the kernel filled it");
    // c2: two kept frames in the buffer the kernel is still filling.
    deliver(&mut server, &mut client, c2, 0..2, |_, f| kept.push(f));
    assert_eq!(server.recv_held(s2).unwrap().buffers, 0);
    // Fill that buffer up: now it is held, by those two frames.
    deliver(&mut server, &mut client, c2, 2..8, |_, _| {});
    let h2 = server.recv_held(s2).unwrap();
    assert_eq!(h2.buffers, 1, "{h2:?}");
    assert!(!h1.paused && !h2.paused);
    let st = server.stats();
    assert_eq!(st.held_recv_buffers, 2);
    assert_eq!(st.held_recv_bytes, h1.bytes + h2.bytes);
    assert_eq!(st.recv_paused, 0);
    // A clone or a slice keeps the buffer as the frame did.
    let slice = kept[0].slice(0..4);
    drop(kept);
    assert_eq!(server.recv_held(s1).unwrap().buffers, 1);
    assert_eq!(server.recv_held(s2).unwrap().buffers, 0);
    drop(slice);
    assert_eq!(server.recv_held(s1).unwrap().buffers, 0);
    let st = server.stats();
    assert_eq!((st.held_recv_buffers, st.held_recv_bytes), (0, 0));
}

#[test]
fn receive_buffers_sized_for_a_window() {
    let cfg = DriverConfig::default(); // 1 MiB buffers
    // 1024 unstable messages of 1 KiB (plus framing) fit the default 4.
    assert_eq!(cfg.recv_buf_count_for(1024 * (1024 + 64)), Some(4));
    assert_eq!(cfg.recv_buf_count_for(0), Some(2));
    // 1024 x 64 KiB: 64 MiB of span, 66 buffers, rounded to 128.
    assert_eq!(cfg.recv_buf_count_for(1024 * (64 << 10)), Some(128));
    assert_eq!(cfg.recv_buf_count_for(1 << 50), None);
}

/// Frames dropped after the last poll must not leave a paused connection
/// asleep: `park` returns at once, and the next poll resumes it.
#[test]
fn park_does_not_sleep_on_a_connection_that_can_resume() {
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2)).unwrap();
    let (s, c, _) = connect_pair(&mut server, &mut client, addr);
    let mut held = Vec::new();
    let mut paused = false;
    let mut sent = 0u32;
    let start = Instant::now();
    while !paused {
        assert!(start.elapsed() < GUARD, "never paused");
        while sent < 2048 && client.send(c, &pattern(sent)).unwrap() == SendOutcome::Queued {
            sent += 1;
        }
        client.poll(&mut |_, _| {});
        server.poll(&mut |_, ev| match ev {
            Event::Frame { frame, .. } => held.push(frame),
            Event::RecvPressure { .. } => paused = true,
            _ => {}
        });
    }
    drop(held);
    assert!(
        park_returns_by_itself(&mut server),
        "park slept with buffers back"
    );
    let mut resumed = false;
    server.poll(&mut |_, ev| resumed |= matches!(ev, Event::RecvResumed { conn } if conn == s));
    assert!(resumed);
}
