//! A reused `wire::Decoder` allocates nothing per frame once warm: the
//! receiver's side of "no allocation per delivered message". Its own test
//! binary, because it installs a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use concord_membership::wire;
use concord_membership::{Body, GroupId, Message, NodeId, OrderEntry};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to `System` unchanged; the counting touches a
// const-initialised, Drop-free thread-local only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is `System.alloc`'s.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System` with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is `System.realloc`'s.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

fn frame(msg: &Message<Vec<u8>>) -> Vec<u8> {
    let mut bytes = Vec::new();
    wire::encode(msg, &mut bytes).unwrap();
    bytes
}

fn order(first: u64, n: u64) -> Vec<u8> {
    frame(&Message {
        incarnation: 2,
        body: Body::Order {
            group: GroupId(7),
            epoch: 1,
            first,
            entries: (0..n)
                .map(|i| OrderEntry::Data {
                    sender: NodeId(1 + i as u32 % 3),
                    incarnation: 2,
                    first_seq: first + i,
                    count: 1,
                })
                .collect(),
            stable: first.saturating_sub(10),
        },
    })
}

fn data(seq: u64) -> Vec<u8> {
    frame(&Message {
        incarnation: 2,
        body: Body::Data {
            group: GroupId(7),
            epoch: 1,
            sender: NodeId(2),
            sender_incarnation: 2,
            sender_seq: seq,
            ack: seq.saturating_sub(3),
            payload: vec![7; 64],
        },
    })
}

fn batch(seq: u64) -> Vec<u8> {
    frame(&Message {
        incarnation: 2,
        body: Body::DataBatch {
            group: GroupId(7),
            epoch: 1,
            sender: NodeId(2),
            sender_incarnation: 2,
            first_seq: seq,
            ack: 0,
            payloads: vec![vec![1; 64], vec![2; 64], vec![3; 64]].into(),
        },
    })
}

#[test]
fn a_reused_decoder_allocates_nothing_per_frame() {
    // Frames of the data path, records of one to four entries (a sequencer
    // batches what arrived together), built before counting.
    let frames: Vec<Vec<u8>> = (0..400u64)
        .flat_map(|i| [data(i), order(i, 1 + i % 4), batch(i)])
        .collect();
    let mut d = wire::Decoder::<&[u8]>::default();
    let handle = |f: &[u8], d: &mut wire::Decoder<&'static [u8]>| {
        // The payloads borrow nothing that outlives the call: empty slices
        // stand in for views of the receive buffer.
        let msg = d.decode_with(f, |_| &[][..]).unwrap();
        std::hint::black_box(&msg);
        drop(msg);
        d.release();
    };
    for f in &frames[..30] {
        handle(f, &mut d);
    }
    let before = allocs();
    for f in &frames[30..] {
        handle(f, &mut d);
    }
    assert_eq!(
        allocs() - before,
        0,
        "allocations decoding {} warm frames",
        frames.len() - 30
    );
}
