//! A send refused because the shared send pool is full is woken when pool
//! space comes back, even though its own connection has nothing in flight.

mod common;

use common::*;
use concord_transport::{Driver, Event, SendError, SendOutcome};

#[test]
fn a_send_refused_by_the_shared_pool_gets_writable_when_space_returns() {
    init_tracing();
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut ccfg = cfg(2);
    // 64 KiB chunks: larger frames go through the pool, which holds 1 MiB.
    ccfg.send_pool_bytes = 1 << 20;
    let mut client = Driver::new(ccfg).unwrap();
    let (sa, a, _) = connect_pair(&mut server, &mut client, addr);
    let (sb, b, _) = connect_pair(&mut server, &mut client, addr);

    // Connection a exhausts the pool: four 256 KiB buffers, sent and kept.
    let mut held = Vec::new();
    while let Some(mut buf) = client.alloc_buf((256 << 10) - 16) {
        buf.payload_mut().unwrap().fill(0xaa);
        assert_eq!(client.send_buf(a, &buf).unwrap(), SendOutcome::Queued);
        held.push(buf);
    }
    assert_eq!(held.len(), 4);
    // Connection b, idle, is refused by the pool (a 100 KiB frame needs a
    // pooled buffer of another size class), and so is a plain alloc_buf.
    let big = vec![0xbb; 100 << 10];
    assert_eq!(client.send(b, &big).unwrap(), SendOutcome::BackPressured);
    assert!(client.alloc_buf(10_000).is_none());

    // a's frames arrive (its sends complete), but the buffers stay held, so
    // no room returns: no wake-up may come yet.
    let mut got_a = 0;
    pump(&mut [&mut server, &mut client], "a's frames", |i, _, ev| {
        match (i, ev) {
            (0, Event::Frame { conn, frame }) => {
                assert_eq!((conn, frame.len()), (sa, (256 << 10) - 16));
                got_a += 1;
            }
            (1, Event::Writable { .. } | Event::PoolWritable) => {
                panic!("woken while the pool is still full")
            }
            _ => {}
        }
        got_a == 4
    });

    // Dropping them returns pool space: b is told, and so is the allocator.
    // A driver parked right after the drop does not sleep through it.
    drop(held);
    assert!(
        park_returns_by_itself(&mut client),
        "park slept with pool space back"
    );
    let (mut writable, mut pool_writable) = (false, false);
    pump(&mut [&mut server, &mut client], "b writable", |i, _, ev| {
        match (i, ev) {
            (1, Event::Writable { conn }) if conn == b => {
                assert!(!writable, "one Writable per refusal");
                writable = true;
            }
            (1, Event::PoolWritable) => pool_writable = true,
            (1, Event::Writable { conn }) => panic!("{conn} was never refused"),
            _ => {}
        }
        writable && pool_writable
    });
    // The retry fits: the pool gives idle buffers of another size back.
    assert_eq!(client.send(b, &big).unwrap(), SendOutcome::Queued);
    pump(
        &mut [&mut server, &mut client],
        "b's frame",
        |i, _, ev| matches!((i, ev), (0, Event::Frame { conn, frame }) if conn == sb && frame[..] == big[..]),
    );
    assert!(client.alloc_buf(10_000).is_some());
}

/// A frame the pool could never hold is an error, not back-pressure that
/// would wait forever.
#[test]
fn a_frame_larger_than_the_pool_can_ever_hold_is_refused_for_good() {
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut ccfg = cfg(2);
    ccfg.send_pool_bytes = 3 << 20; // the largest buffer: 2 MiB
    let mut client = Driver::new(ccfg).unwrap();
    let (_, c, _) = connect_pair(&mut server, &mut client, addr);
    let max = (2 << 20) - 16;
    let refused = client.send(c, &vec![1; max + 1]);
    assert!(
        matches!(refused, Err(SendError::FrameTooLarge { len, max: m }) if len == max + 1 && m == max),
        "{refused:?}"
    );
    assert!(client.alloc_buf(max + 1).is_none());
    assert_eq!(client.stats().back_pressured, 0, "not back-pressure");
    assert_eq!(client.send(c, &vec![1; max]).unwrap(), SendOutcome::Queued);
}
