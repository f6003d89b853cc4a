//! The wire codec: round-trips of every message kind, and arbitrary or
//! mutated bytes never panic the decoder.

use concord_membership::wire::{self, WireError};
use concord_membership::{
    Ballot, Body, GroupId, MemberState, Message, NodeId, OrderEntry, Proposal, ProtocolVersion,
    SenderNext, VersionRange, View, ViewId,
};
use proptest::prelude::*;

fn view() -> View {
    View {
        group: GroupId(7),
        id: ViewId::first_of(3),
        members: vec![NodeId(1), NodeId(2), NodeId(3)],
        protocol: ProtocolVersion(1),
    }
}

fn proposal() -> Proposal {
    Proposal {
        view: view(),
        cut: 41,
        old_members: vec![NodeId(1), NodeId(2), NodeId(3), NodeId(4)],
        next: vec![SenderNext {
            node: NodeId(2),
            incarnation: 5,
            next: 9,
        }],
        incarnations: vec![1, 5, 2],
    }
}

/// One message of every kind.
fn every_kind() -> Vec<Message<Vec<u8>>> {
    let g = GroupId(7);
    let ballot = Ballot {
        round: 4,
        leader: 2,
    };
    let bodies = vec![
        Body::Heartbeat,
        Body::Data {
            group: g,
            epoch: 3,
            sender: NodeId(2),
            sender_incarnation: 5,
            sender_seq: 99,
            ack: 40,
            payload: b"sixty-four bytes of application data, more or less".to_vec(),
        },
        Body::DataBatch {
            group: g,
            epoch: 3,
            sender: NodeId(2),
            sender_incarnation: 5,
            first_seq: 100,
            ack: 40,
            payloads: vec![b"one".to_vec(), Vec::new(), vec![0xEE; 300]].into(),
        },
        Body::Order {
            group: g,
            epoch: 3,
            first: 42,
            entries: vec![
                OrderEntry::Data {
                    sender: NodeId(1),
                    incarnation: 1,
                    first_seq: 10,
                    count: 5,
                },
                OrderEntry::Join {
                    node: NodeId(4),
                    incarnation: 2,
                    rejoin: true,
                    first_seq: 7,
                },
                OrderEntry::Leave { node: NodeId(3) },
                OrderEntry::Skip { count: 3 },
            ]
            .into(),
            stable: 40,
        },
        Body::Ack {
            group: g,
            epoch: 3,
            ready: 41,
        },
        Body::Nack {
            group: g,
            epoch: 3,
            positions: Some((40, 50)),
            sender_seqs: Some((NodeId(2), 5, 7, 9)),
        },
        Body::JoinRequest {
            group: g,
            range: VersionRange {
                min: ProtocolVersion(1),
                max: ProtocolVersion(2),
            },
            rejoin: false,
            next_seq: 1,
            delivered: proposal().next,
            position: 97,
        },
        Body::Welcome {
            view: Box::new(view()),
            position: 42,
            stable: 40,
            next: proposal().next,
            incarnations: vec![1, 5, 2],
            rejoin: true,
        },
        Body::JoinRefused {
            group: g,
            active: ProtocolVersion(3),
        },
        Body::NoGroup {
            group: g,
            known: Some(Box::new(proposal())),
        },
        Body::LeaveRequest {
            group: g,
            last_seq: 12,
        },
        Body::Prepare {
            group: g,
            epoch: 4,
            ballot,
        },
        Body::Promise {
            group: g,
            epoch: 4,
            ballot,
            accepted: Some(Box::new((ballot, proposal()))),
            state: Some(Box::new(MemberState {
                view: view(),
                ready: 41,
                delivered: vec![SenderNext {
                    node: NodeId(2),
                    incarnation: 1,
                    next: 7,
                }],
            })),
        },
        Body::Reject {
            group: g,
            epoch: 4,
            promised: ballot,
        },
        Body::Accept {
            group: g,
            epoch: 4,
            ballot,
            proposal: Box::new(proposal()),
        },
        Body::Accepted {
            group: g,
            epoch: 4,
            ballot,
        },
        Body::Decided {
            group: g,
            epoch: 4,
            proposal: Box::new(proposal()),
        },
        Body::Lease {
            group: g,
            epoch: 4,
            sent: 123_456_789,
        },
        Body::LeaseGrant {
            group: g,
            epoch: 4,
            sent: 123_456_789,
        },
        Body::NotMember { group: g, epoch: 4 },
    ];
    bodies
        .into_iter()
        .map(|body| Message {
            incarnation: 17,
            body,
        })
        .collect()
}

#[test]
fn every_message_kind_round_trips() {
    for msg in every_kind() {
        let mut bytes = Vec::new();
        wire::encode(&msg, &mut bytes).unwrap();
        assert_eq!(wire::frame_len(&bytes), Some(bytes.len()));
        let back = wire::decode(&bytes).unwrap().map_payload(|p| p.to_vec());
        assert_eq!(back, msg);
    }
}

#[test]
fn decode_borrows_the_payload_without_copying() {
    let msg = &every_kind()[1];
    let mut bytes = Vec::new();
    wire::encode(msg, &mut bytes).unwrap();
    let decoded = wire::decode(&bytes).unwrap();
    let Body::Data { payload, .. } = decoded.body else {
        panic!("not data")
    };
    let range = bytes.as_ptr_range();
    assert!(range.contains(&payload.as_ptr()));
}

#[test]
fn typed_errors_for_malformed_frames() {
    assert!(matches!(
        wire::decode(&[]),
        Err(WireError::Truncated { .. })
    ));
    assert_eq!(
        wire::decode(&[0u8; 10]),
        Err(WireError::BadMagic { found: 0 })
    );
    assert_eq!(
        wire::decode(&[wire::MAGIC, 9, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(WireError::UnsupportedVersion { found: 9 })
    );
    let mut bytes = Vec::new();
    wire::encode(&every_kind()[4], &mut bytes).unwrap();
    bytes.push(0);
    assert!(matches!(
        wire::decode(&bytes),
        Err(WireError::UnexpectedPayload { .. })
    ));
    let mut huge = vec![wire::MAGIC, wire::VERSION];
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        wire::decode(&huge),
        Err(WireError::HeaderTooLarge { .. })
    ));
}

/// A `DataBatch` of `BATCH` payloads whose lengths (1000 + i) and header
/// fields differ from `BATCH`, and where its count sits in the header: the
/// one 4-aligned `BATCH as u32 LE` in the archive.
const BATCH: usize = 5;

fn batch_frame() -> (Vec<u8>, usize) {
    let msg: Message<Vec<u8>> = Message {
        incarnation: 0x0101_0101,
        body: Body::DataBatch {
            group: GroupId(0x0202_0202),
            epoch: 0x0303_0303,
            sender: NodeId(0x0404_0404),
            sender_incarnation: 0x0606_0606,
            first_seq: 0x0707_0707,
            ack: 0x0808_0808,
            payloads: (0..BATCH).map(|i| vec![i as u8; 1000 + i]).collect(),
        },
    };
    let mut bytes = Vec::new();
    wire::encode(&msg, &mut bytes).unwrap();
    let header_len = u32::from_le_bytes(bytes[2..6].try_into().unwrap()) as usize;
    let header = &bytes[wire::PREFIX..wire::PREFIX + header_len];
    let at: Vec<usize> = (0..header_len / 4)
        .map(|i| i * 4)
        .filter(|&i| header[i..i + 4] == (BATCH as u32).to_le_bytes())
        .collect();
    assert_eq!(at.len(), 1, "the count is not unique in the header: {at:?}");
    (bytes, wire::PREFIX + at[0])
}

#[test]
fn a_batch_with_a_huge_count_is_refused_by_its_header() {
    // Version 1 archived the count of a `Vec<()>`: rkyv walked up to 2^32
    // zero-sized elements (minutes) before the frame was refused. Now each
    // element is a 4-byte length, so bytecheck refuses a count the header
    // cannot hold before walking any.
    let (mut bytes, at) = batch_frame();
    assert!(wire::decode(&bytes).is_ok());
    for count in [u32::MAX, 1 << 31, 1 << 20, 1000] {
        bytes[at..at + 4].copy_from_slice(&count.to_le_bytes());
        assert_eq!(
            wire::decode(&bytes),
            Err(WireError::InvalidHeader),
            "count {count}"
        );
    }
}

#[test]
fn batch_lengths_must_add_up_to_the_payload_area() {
    let (bytes, at) = batch_frame();
    // Fewer payloads than the area holds: bytes left over.
    let mut fewer = bytes.clone();
    fewer[at..at + 4].copy_from_slice(&(BATCH as u32 - 1).to_le_bytes());
    assert!(matches!(
        wire::decode(&fewer),
        Err(WireError::UnexpectedPayload { .. })
    ));
    // One length longer than what is there.
    let header_len = u32::from_le_bytes(bytes[2..6].try_into().unwrap()) as usize;
    let header = &bytes[wire::PREFIX..wire::PREFIX + header_len];
    let first = (0..header_len - 3)
        .find(|&i| header[i..i + 4] == 1000u32.to_le_bytes())
        .unwrap();
    let mut longer = bytes.clone();
    longer[wire::PREFIX + first..wire::PREFIX + first + 4].copy_from_slice(&1001u32.to_le_bytes());
    assert!(matches!(
        wire::decode(&longer),
        Err(WireError::UnexpectedPayload { .. })
    ));
    // A Data whose payload is not as long as its header says.
    let mut data = Vec::new();
    wire::encode(&every_kind()[1], &mut data).unwrap();
    data.push(0);
    let area = data.len() as u32 - wire::PREFIX as u32 - header_len_of(&data);
    data[6..10].copy_from_slice(&area.to_le_bytes());
    assert!(matches!(
        wire::decode(&data),
        Err(WireError::UnexpectedPayload { .. })
    ));
}

fn header_len_of(frame: &[u8]) -> u32 {
    u32::from_le_bytes(frame[2..6].try_into().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn any_batch_count_decodes_or_is_refused_at_once(count in any::<u32>(), near in 0u32..16) {
        let (mut bytes, at) = batch_frame();
        let header_len = header_len_of(&bytes) as usize;
        // Half the cases near the real count, half anywhere.
        let count = if count % 2 == 0 { near } else { count };
        bytes[at..at + 4].copy_from_slice(&count.to_le_bytes());
        let got = wire::decode(&bytes);
        if count as usize == BATCH {
            prop_assert!(got.is_ok());
        } else if count as usize > header_len / 4 {
            prop_assert_eq!(got, Err(WireError::InvalidHeader));
        }
        // A small wrong count may read other header bytes (padding) as
        // lengths; whatever it decodes to, it never panics.
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = wire::decode(&bytes);
        let _ = wire::frame_len(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_prefix_never_panic(
        header in proptest::collection::vec(any::<u8>(), 0..400),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = vec![wire::MAGIC, wire::VERSION];
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&payload);
        let _ = wire::decode(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(
        kind in 0usize..64,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let msgs = every_kind();
        let mut bytes = Vec::new();
        wire::encode(&msgs[kind % msgs.len()], &mut bytes).unwrap();
        for (at, x) in flips {
            let i = at % bytes.len();
            bytes[i] ^= x;
        }
        let _ = wire::decode(&bytes);
        let end = cut % (bytes.len() + 1);
        let _ = wire::decode(&bytes[..end]);
    }
}

/// The decoder every frame went through before lists were pooled: the whole
/// header deserialized, then its lengths checked.
fn whole(bytes: &[u8]) -> Result<Message<Vec<u8>>, WireError> {
    let (header_bytes, start) = wire::split_frame(bytes)?;
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(header_bytes);
    let header = rkyv::from_bytes::<Message<u32>, rkyv::rancor::Error>(&aligned)
        .map_err(|_| WireError::InvalidHeader)?;
    wire::check_lengths(&header, bytes.len() - start)?;
    let mut at = start;
    Ok(header.map_payload(|len| {
        let p = bytes[at..at + len as usize].to_vec();
        at += len as usize;
        p
    }))
}

fn frame_of(msg: &Message<Vec<u8>>) -> Vec<u8> {
    let mut bytes = Vec::new();
    wire::encode(msg, &mut bytes).unwrap();
    bytes
}

#[test]
fn every_kind_with_bytes_its_header_does_not_name_is_refused() {
    let mut d = wire::Decoder::<Vec<u8>>::default();
    for msg in every_kind() {
        for extra in [1usize, 7] {
            let mut bytes = frame_of(&msg);
            let len = u32::from_le_bytes(bytes[6..10].try_into().unwrap()) + extra as u32;
            bytes[6..10].copy_from_slice(&len.to_le_bytes());
            bytes.extend(std::iter::repeat_n(0xAA, extra));
            let got = d.decode_with(&bytes, |r| bytes[r].to_vec());
            assert!(
                matches!(got, Err(WireError::UnexpectedPayload { .. })),
                "{msg:?}: {got:?}"
            );
            assert_eq!(got, whole(&bytes));
        }
    }
}

#[test]
fn a_decoder_lets_go_of_handled_batch_payloads() {
    let token = std::rc::Rc::new(());
    let mut d = wire::Decoder::<std::rc::Rc<()>>::default();
    let (frame, _) = batch_frame();
    let msg = d.decode_with(&frame, |_| token.clone()).unwrap();
    let Body::DataBatch { payloads, .. } = &msg.body else {
        panic!("not a batch")
    };
    let n = payloads.len();
    assert!(n > 0);
    assert_eq!(std::rc::Rc::strong_count(&token), 1 + n);
    drop(msg);
    d.release();
    assert_eq!(
        std::rc::Rc::strong_count(&token),
        1,
        "the pooled list still holds the payloads"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A reused decoder (its pools holding lists of earlier messages, some
    /// still referred to) decodes every frame, valid or damaged, as the
    /// whole deserialization does.
    #[test]
    fn a_reused_decoder_decodes_as_whole_deserialization_does(
        kinds in proptest::collection::vec(0usize..64, 1..6),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let msgs = every_kind();
        let mut d = wire::Decoder::<Vec<u8>>::default();
        let mut held = Vec::new();
        for (i, &k) in kinds.iter().enumerate() {
            let mut bytes = frame_of(&msgs[k % msgs.len()]);
            if i + 1 == kinds.len() {
                for &(at, x) in &flips {
                    let n = bytes.len();
                    bytes[at % n] ^= x;
                }
                if cut % 3 == 0 {
                    bytes.truncate(cut % (bytes.len() + 1));
                }
            }
            let got = d.decode_with(&bytes, |r| bytes[r].to_vec());
            prop_assert_eq!(&got, &whole(&bytes));
            if i % 2 == 0 {
                held.push(got);
            }
        }
    }
}
