//! Received frames as refcounted views: clones and slices share the receive
//! buffer (and keep it from the ring), copies out are explicit and counted.

mod common;

use std::time::Instant;

use common::*;
use concord_transport::{ConnId, Driver, Event, RecvFrame, SendOutcome};

fn pattern(seq: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as usize * 31 + i * 7) as u8)
        .collect()
}

/// Sends `n` frames of `len` bytes from `client` and hands each one the
/// server receives to `keep`, until all arrived or (with `stop_when_starved`)
/// the server paused the connection (its frames hold every buffer).
fn stream(
    server: &mut Driver,
    client: &mut Driver,
    c: ConnId,
    (n, len): (u32, usize),
    stop_when_starved: bool,
    mut keep: impl FnMut(u32, RecvFrame),
) -> u32 {
    let mut sent = 0u32;
    let mut next = 0u32;
    let start = Instant::now();
    while next < n && !(stop_when_starved && server.stats().recv_paused > 0) {
        assert!(start.elapsed() < GUARD, "timed out: {next} of {n}");
        while sent < n && client.send(c, &pattern(sent, len)).unwrap() == SendOutcome::Queued {
            sent += 1;
        }
        client.poll(&mut |_, _| {});
        server.poll(&mut |_, ev| {
            if let Event::Frame { frame, .. } = ev {
                assert!(frame[..] == pattern(next, len)[..], "frame {next}");
                keep(next, frame);
                next += 1;
            }
        });
    }
    next
}

#[test]
fn clones_and_slices_view_the_same_bytes() {
    init_tracing();
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2)).unwrap();
    let (_s, c, _) = connect_pair(&mut server, &mut client, addr);
    let mut frames = Vec::new();
    // 5000 B frames straddle the 64 KiB buffers now and then: both stores.
    let got = stream(&mut server, &mut client, c, (30, 5000), false, |_, f| {
        frames.push(f)
    });
    assert_eq!(got, 30);
    assert!(frames.iter().any(|f| f.was_reassembled()));
    assert!(frames.iter().any(|f| !f.was_reassembled()));
    let before = server.stats();
    for (seq, f) in frames.iter().enumerate() {
        let want = pattern(seq as u32, 5000);
        let clone = f.clone();
        assert_eq!(clone, *f);
        assert_eq!(clone.conn(), f.conn());
        let s = f.slice(100..4000);
        assert_eq!(s.len(), 3900);
        assert_eq!(&s[..], &want[100..4000]);
        // A slice of a slice is relative to its own start.
        let ss = s.slice(10..=19);
        assert_eq!(&ss[..], &want[110..120]);
        assert_eq!(&f.slice(..)[..], &want[..]);
        assert_eq!(&f.slice(4990..)[..], &want[4990..]);
        assert!(f.slice(5000..).is_empty());
        assert!(f.try_slice(0..5001).is_none());
        #[allow(clippy::reversed_empty_ranges)]
        let decreasing = 4001..4000;
        assert!(f.try_slice(decreasing).is_none());
        assert!(s.try_slice(0..3901).is_none());
        assert_eq!(s.was_reassembled(), f.was_reassembled());
        drop(f.clone());
    }
    // Views copy nothing.
    assert_eq!(server.stats().copied_out_frames, before.copied_out_frames);
    // Copies out are counted.
    let v = frames[3].to_vec();
    assert_eq!(v, pattern(3, 5000));
    let d = frames[4].slice(1000..2000).detach();
    assert!(d.is_detached());
    assert_eq!(&d[..], &pattern(4, 5000)[1000..2000]);
    assert_eq!(&d.slice(10..20)[..], &pattern(4, 5000)[1010..1020]);
    // Detaching a detached view copies nothing more.
    let dd = d.clone().detach();
    assert_eq!(dd, d);
    let after = server.stats();
    assert_eq!(after.copied_out_frames - before.copied_out_frames, 2);
    assert_eq!(after.copied_out_bytes - before.copied_out_bytes, 6000);
}

#[test]
#[should_panic(expected = "out of bounds")]
fn slicing_past_the_end_panics_like_a_slice() {
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2)).unwrap();
    let (_s, c, _) = connect_pair(&mut server, &mut client, addr);
    let mut frames = Vec::new();
    stream(&mut server, &mut client, c, (1, 10), false, |_, f| {
        frames.push(f)
    });
    let _ = frames[0].slice(5..11);
}

/// A slice keeps its whole receive buffer from the ring just as the frame
/// did: holding only small slices of every frame still starves the ring.
/// Detached copies do not, so the same stream then completes.
#[test]
fn a_held_slice_pins_its_buffer_and_a_detached_copy_does_not() {
    init_tracing();
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2)).unwrap();
    let (_s, c, _) = connect_pair(&mut server, &mut client, addr);
    // 4 x 64 KiB of receive buffers; 40 x 16 KiB do not fit.
    let mut slices = Vec::new();
    let got = stream(&mut server, &mut client, c, (40, 16 << 10), true, |_, f| {
        slices.push(f.slice(0..8))
    });
    assert!(got < 40, "holding slices starved the ring");
    assert_eq!(server.stats().held_recv_buffers, 4);
    let mut detached = Vec::new();
    for (seq, s) in slices.drain(..).enumerate() {
        let d = s.detach();
        assert_eq!(&d[..], &pattern(seq as u32, 16 << 10)[..8]);
        detached.push(d);
    }
    assert_eq!(
        server.stats().held_recv_buffers,
        0,
        "detached views hold none"
    );
    // A stream of 12x the ring's size whose slices are all detached (and
    // held) completes without ever starving.
    let mut server2 = Driver::new(cfg(3)).unwrap();
    let addr2 = server2.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client2 = Driver::new(cfg(4)).unwrap();
    let (_s2, c2, _) = connect_pair(&mut server2, &mut client2, addr2);
    let got = stream(
        &mut server2,
        &mut client2,
        c2,
        (200, 16 << 10),
        false,
        |_, f| detached.push(f.slice(0..8).detach()),
    );
    assert_eq!(got, 200, "detached copies pin nothing");
    assert_eq!(server2.stats().copied_out_frames, 200);
    assert_eq!(server2.stats().copied_out_bytes, 200 * 8);
}
