//! End-to-end tests of the Driver over loopback.

mod common;

use common::*;
use concord_transport::{Claimed, Driver, Event, SendOutcome};

#[test]
fn smoke_round_trip() {
    init_tracing();
    let mut server = Driver::new(cfg(1)).unwrap();
    let addr = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::new(cfg(2)).unwrap();
    let (sconn, cconn, peer) = connect_pair(&mut server, &mut client, addr);
    assert_eq!(peer.node_id, 1);
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
