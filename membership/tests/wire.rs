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
    wire::encode(&every_kind()[3], &mut bytes).unwrap();
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

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
