//! A send larger than the socket can take at once: the kernel finishes it
//! (MSG_WAITALL) instead of completing it short, frames queued while it is
//! in flight follow it, and the peer gets every byte in order.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Instant;

use common::*;
use concord_transport::SendOutcome;
use concord_transport::frame::{self, FrameKind, HEADER_LEN};

/// Reads frames off `raw` until `n` payload frames arrived; returns their
/// (sequence, length) in arrival order, checking every payload byte.
fn read_frames(mut raw: TcpStream, n: usize) -> Vec<(u32, usize)> {
    let mut hdr = [0u8; HEADER_LEN];
    let mut got = Vec::new();
    let mut body = Vec::new();
    while got.len() < n {
        raw.read_exact(&mut hdr).unwrap();
        let h = frame::decode_header(&hdr, 64 << 20).unwrap();
        body.resize(h.len as usize, 0);
        raw.read_exact(&mut body).unwrap();
        if h.kind != FrameKind::Payload {
            continue;
        }
        let seq = u32::from_le_bytes(body[..4].try_into().unwrap());
        let mut want = vec![0u8; body.len()];
        fill(&mut want, seq);
        assert!(body == want, "frame {seq} corrupted");
        got.push((seq, body.len()));
    }
    got
}

#[test]
fn a_send_larger_than_the_socket_buffer_completes_once_and_in_order() {
    let (mut client, conn, raw) = raw_pair(cfg(2));
    let before = client.stats();
    // Eight 1 MiB pooled frames (below the SEND_ZC threshold): one gathered
    // SENDMSG of 8 MiB, more than loopback's socket buffers hold while the
    // peer reads nothing, so the send has to wait for the peer.
    let big = 1 << 20;
    let mut expect = Vec::new();
    let mut bufs = Vec::new();
    for seq in 0..8u32 {
        let mut b = client.alloc_buf(big).expect("pool has room");
        fill(b.payload_mut().unwrap(), seq);
        assert_eq!(client.send_buf(conn, &b).unwrap(), SendOutcome::Queued);
        expect.push((seq, big));
        bufs.push(b);
    }
    drop(bufs);
    // Submit it, then queue small frames behind the send in flight (staged
    // frames, several chunks' worth, some back-pressured and retried).
    client.poll(&mut |_, _| {});
    let (tx, rx) = mpsc::channel();
    let peer = std::thread::spawn(move || {
        // Start reading only when told: by then the 8 MiB send has been in
        // the kernel with a full socket buffer for a while.
        rx.recv().unwrap();
        read_frames(raw, 8 + 40)
    });
    let mut small = vec![0u8; 20 << 10];
    let mut seq = 8u32;
    let start = Instant::now();
    let mut told = false;
    let mut polls = 0u64;
    while seq < 48 {
        assert!(start.elapsed() < GUARD, "small frames never queued");
        fill(&mut small, seq);
        match client.send(conn, &small).unwrap() {
            SendOutcome::Queued => {
                expect.push((seq, small.len()));
                seq += 1;
            }
            SendOutcome::BackPressured => {
                if !told {
                    // The queue is full behind the blocked send: let the peer read.
                    tx.send(()).unwrap();
                    told = true;
                }
            }
        }
        client.poll(&mut |_, _| {});
        polls += 1;
    }
    if !told {
        tx.send(()).unwrap();
    }
    // Everything goes out (the peer reads 48 frames; stop once it has).
    while !peer.is_finished() {
        assert!(start.elapsed() < GUARD, "peer never got every frame");
        client.poll(&mut |_, _| {});
    }
    let got = peer.join().unwrap();
    assert_eq!(got, expect, "frames out of order, lost or resized");
    let st = client.stats();
    assert_eq!(
        st.short_sends - before.short_sends,
        0,
        "a send came back short although the peer read everything \
         ({} send ops, {polls} polls)",
        st.send_ops - before.send_ops
    );
    // The big send went out as one operation, so fewer ops than frames.
    assert!(
        st.send_ops - before.send_ops < 48,
        "{} send ops for 48 frames",
        st.send_ops - before.send_ops
    );
}
