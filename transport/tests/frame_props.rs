//! Property tests for everything that decodes bytes from the network: the
//! frame header/checksum decoder, the control-archive decoder and the
//! handshake decoder. Bounded case counts so `cargo test` stays quick.

use concord_transport::frame::{
    self, ARCHIVE_ALIGN, Control, FrameError, FrameKind, HEADER_LEN, HandshakeError, Hello, Reject,
};
use proptest::prelude::*;
use rkyv::util::AlignedVec;

const MAX: u32 = 1 << 20;

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn arb_control() -> impl Strategy<Value = Control> {
    prop_oneof![
        (
            (any::<u64>(), any::<u64>()),
            any::<u64>(),
            any::<u16>(),
            any::<u16>(),
            "[ -~]{0,64}"
        )
            .prop_map(
                |((node_id, incarnation), cluster_id, protocol_min, protocol_max, build)| {
                    Control::Hello(Hello {
                        node_id,
                        incarnation,
                        cluster_id,
                        protocol_min,
                        protocol_max,
                        build,
                    })
                }
            ),
        (any::<u8>(), any::<u64>(), any::<u16>(), any::<u16>()).prop_map(
            |(code, cluster_id, protocol_min, protocol_max)| {
                Control::Reject(Reject {
                    code,
                    cluster_id,
                    protocol_min,
                    protocol_max,
                })
            }
        ),
        any::<u64>().prop_map(|nonce| Control::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Control::Pong { nonce }),
        any::<u32>().prop_map(|code| Control::Goodbye { code }),
    ]
}

/// Puts `bytes` at offset `shift` of a 16-aligned buffer so both the aligned
/// and the copy-to-scratch paths run.
fn at_offset(bytes: &[u8], shift: usize) -> AlignedVec<ARCHIVE_ALIGN> {
    let mut v = AlignedVec::new();
    v.extend_from_slice(&vec![0u8; shift]);
    v.extend_from_slice(bytes);
    v
}

proptest! {
    #![proptest_config(cfg(3000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256),
                                   shift in 0usize..16) {
        let buf = at_offset(&bytes, shift);
        let input = &buf[shift..];
        let mut scratch = AlignedVec::new();
        let _ = frame::decode_header(input, MAX);
        let _ = frame::verify_frame(input, MAX);
        let _ = frame::decode_control(input, &mut scratch);
        let _ = frame::decode_hello(input, MAX, &mut scratch);
    }

    #[test]
    fn arbitrary_payload_behind_a_valid_control_header_is_typed(
        payload in proptest::collection::vec(any::<u8>(), 0..200), shift in 0usize..16) {
        // The checksum is right, so only bytecheck stands between garbage and the Driver.
        let f = frame::encode_frame(FrameKind::Control, &payload);
        let buf = at_offset(&f, shift);
        let mut scratch = AlignedVec::new();
        match frame::decode_hello(&buf[shift..], MAX, &mut scratch) {
            Ok(_) | Err(HandshakeError::Frame(FrameError::BadArchive { .. }))
            | Err(HandshakeError::NotHello { .. }) | Err(HandshakeError::BuildTooLong { .. })
            | Err(HandshakeError::Rejected { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    #[test]
    fn hello_round_trips_through_the_handshake_decoder(msg in arb_control(), shift in 0usize..16) {
        let f = frame::encode_control(&msg);
        let buf = at_offset(&f, shift);
        let mut scratch = AlignedVec::new();
        let got = frame::decode_hello(&buf[shift..], MAX, &mut scratch);
        match msg {
            Control::Hello(h) => prop_assert_eq!(got, Ok(h)),
            _ => prop_assert!(got.is_err()),
        }
    }

    #[test]
    fn payload_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let f = frame::encode_frame(FrameKind::Payload, &payload);
        let (h, p) = frame::verify_frame(&f, MAX).unwrap();
        prop_assert_eq!(h.kind, FrameKind::Payload);
        prop_assert_eq!(h.len as usize, payload.len());
        prop_assert_eq!(p, &payload[..]);
    }

    #[test]
    fn control_round_trip(msg in arb_control(), shift in 0usize..16) {
        let f = frame::encode_control(&msg);
        let buf = at_offset(&f, shift);
        let (h, p) = frame::verify_frame(&buf[shift..], MAX).unwrap();
        prop_assert_eq!(h.kind, FrameKind::Control);
        let mut scratch = AlignedVec::new();
        let (back, copied) = frame::decode_control(p, &mut scratch).unwrap();
        prop_assert_eq!(copied, !(shift + HEADER_LEN).is_multiple_of(ARCHIVE_ALIGN));
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn any_single_bit_flip_is_refused(msg in arb_control(), bit in any::<prop::sample::Index>()) {
        let mut f = frame::encode_control(&msg);
        let i = bit.index(f.len() * 8);
        f[i / 8] ^= 1 << (i % 8);
        let mut scratch = AlignedVec::new();
        prop_assert!(frame::verify_frame(&f, MAX).is_err());
        prop_assert!(frame::decode_hello(&f, MAX, &mut scratch).is_err());
    }

    #[test]
    fn mutated_frames_never_panic(
        msg in arb_control(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut f = frame::encode_control(&msg);
        for (i, b) in edits {
            let i = i.index(f.len());
            f[i] = b;
        }
        let cut = cut.index(f.len() + 1);
        f.truncate(cut);
        f.extend_from_slice(&extra);
        let mut scratch = AlignedVec::new();
        if let Ok((h, p)) = frame::verify_frame(&f, MAX) {
            prop_assert_eq!(p.len(), h.len as usize);
            let _ = frame::decode_control(p, &mut scratch);
        }
        let _ = frame::decode_hello(&f, MAX, &mut scratch);
    }
}
