//! A reused `wire::Decoder` allocates nothing per frame once warm: the
//! receiver's side of "no allocation per delivered message". In the bench
//! crate, with the runtime's counting allocator, like `engine_alloc`
//! (`membership` forbids the `unsafe` a `GlobalAlloc` needs).

use concord_membership::wire;
use concord_membership::{Body, GroupId, Message, NodeId, OrderEntry};
use concord_runtime::alloc::{self, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn allocs() -> u64 {
    alloc::thread_allocs()
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
