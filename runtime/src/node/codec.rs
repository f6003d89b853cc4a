//! The payload type and the codec: the one place that decides how an Engine
//! message becomes bytes on a connection and how a received frame becomes an
//! Engine message.
//!
//! A received payload is a view of the transport's [`RecvFrame`]: `decode`
//! slices the frame (a reference count, no copy, no allocation), so the
//! Engine's clones and the application's [`Delivery`](super::Delivery) share
//! the receive buffer the kernel wrote. The only received payloads that were
//! copied are those whose frame straddled two receive buffers (the
//! transport reassembles them) and those the node copies into its payload
//! pool under receive pressure (counted in `NodeStats`). A payload the
//! application multicasts is one refcounted buffer (a pooled
//! [`PayloadBuf`], or a heap copy), shared by every destination's message
//! and by its own delivery. A message is encoded with
//! [`concord_membership::wire::encode_with`] into reused buffers (a
//! multicast's `Data` once for every member) and copied once into each
//! connection's staging chunk; a frame is decoded with a reused
//! [`wire::Decoder`], which allocates nothing per frame.

use std::fmt;
use std::ops::{Deref, Range};
use std::rc::Rc;

use concord_membership::wire::{self, WireError};
use concord_membership::{Body, Message, NodeId};
use concord_transport::RecvFrame;
use rkyv::util::AlignedVec;

use super::payload::{PayloadBuf, PayloadPool, Pooled};

/// Bytes of one application payload: refcounted, so the Engine's clones (one
/// per destination, one per delivery) and the application's copy of a
/// [`Delivery`](super::Delivery) share one buffer. Cloning never copies.
///
/// A received payload is a view of the receive buffer it arrived in (see
/// [`is_received`](Bytes::is_received)); while any clone of it lives, that
/// buffer is not reused. To keep a payload far longer than the group's
/// traffic around it, [`detach`](Bytes::detach) it.
#[derive(Clone)]
pub struct Bytes(Repr);

#[derive(Clone)]
enum Repr {
    Heap(Rc<[u8]>),
    Pooled(Pooled),
    Recv(RecvFrame),
    /// A received payload copied out of its receive buffer into a pooled
    /// one (receive pressure).
    Copied(Pooled),
}

impl Bytes {
    /// A payload holding a copy of `bytes`.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Bytes(Repr::Heap(Rc::from(bytes)))
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Heap(b) => b,
            Repr::Pooled(b) | Repr::Copied(b) => b.as_slice(),
            Repr::Recv(f) => f.payload(),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether another node sent it: a view of the receive buffer it arrived
    /// in, or a copy of one (that view's [`detach`](Bytes::detach)ed copy,
    /// or the node's copy under receive pressure).
    pub fn is_received(&self) -> bool {
        matches!(self.0, Repr::Recv(_) | Repr::Copied(_))
    }

    /// The same bytes in a heap buffer of their own, releasing the receive
    /// buffer from this handle (one allocation and one copy, counted by the
    /// transport like [`RecvFrame::detach`]). A payload already on the heap
    /// (or in a pooled buffer of its own) is returned as it is.
    pub fn detach(self) -> Self {
        match self.0 {
            Repr::Heap(_) | Repr::Pooled(_) | Repr::Copied(_) => self,
            Repr::Recv(f) => Bytes(Repr::Recv(f.detach())),
        }
    }

    /// A view of `range` of a received frame.
    pub(crate) fn from_frame(frame: &RecvFrame, range: Range<usize>) -> Self {
        Bytes(Repr::Recv(frame.slice(range)))
    }
}

impl PartialEq for Bytes {
    /// Equal bytes, wherever they live.
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Bytes {}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(Repr::Heap(Rc::from(v)))
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Self {
        Bytes::copy_from(v)
    }
}

impl From<PayloadBuf> for Bytes {
    /// The buffer's bytes, shared from here on (no copy); the buffer goes
    /// back to its pool when the last clone is dropped.
    fn from(b: PayloadBuf) -> Self {
        Bytes(Repr::Pooled(b.freeze()))
    }
}

impl From<RecvFrame> for Bytes {
    /// A view of the frame's payload (no copy).
    fn from(f: RecvFrame) -> Self {
        Bytes(Repr::Recv(f))
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = match self.0 {
            Repr::Heap(_) => "heap",
            Repr::Pooled(_) => "pooled",
            Repr::Recv(_) => "received",
            Repr::Copied(_) => "received, copied",
        };
        write!(f, "Bytes({} bytes, {at})", self.len())
    }
}

/// Encodes Engine messages in the [`wire`] format into a reused buffer.
///
/// Every kind goes through [`wire::encode_with`] with the header archived in
/// a reused aligned buffer, so `Data`, the message of every multicast to every
/// member, is encoded without allocating (its clone for the header only bumps
/// the payload's reference count). A multicast's `Data` is the same message
/// for every member, so it is serialized once: the frame stays in the buffer
/// and the next member's identical `Data` (same header fields, same payload
/// buffer) is handed the same bytes ([`reused`](Encoder::reused) counts them).
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    header: AlignedVec,
    frame: Vec<u8>,
    /// The `Data` message `frame` holds, if it holds one.
    last: Option<DataKey>,
    /// Frames handed out again without serializing.
    pub reused: u64,
}

/// What identifies a `Data` frame: every header field and the payload's
/// buffer (a sender's `(incarnation, seq)` names one payload; the address
/// and length make that explicit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DataKey {
    incarnation: u64,
    group: u64,
    epoch: u32,
    sender: u32,
    sender_incarnation: u64,
    sender_seq: u64,
    ack: u64,
    payload: (usize, usize),
}

impl Encoder {
    /// The frame for `msg` (valid until the next call).
    pub(crate) fn frame(&mut self, msg: &Message<Bytes>) -> Result<&[u8], WireError> {
        let key = match &msg.body {
            Body::Data {
                group,
                epoch,
                sender,
                sender_incarnation,
                sender_seq,
                ack,
                payload,
            } => Some(DataKey {
                incarnation: msg.incarnation,
                group: group.0,
                epoch: *epoch,
                sender: sender.0,
                sender_incarnation: *sender_incarnation,
                sender_seq: *sender_seq,
                ack: *ack,
                payload: (payload.as_ptr() as usize, payload.len()),
            }),
            _ => None,
        };
        if key.is_some() && self.last == key {
            self.reused += 1;
            return Ok(&self.frame);
        }
        self.last = None;
        self.frame.clear();
        wire::encode_with(msg, &mut self.header, &mut self.frame)?;
        self.last = key;
        Ok(&self.frame)
    }

    /// The frame for `msg`, in `out` (cleared first).
    #[cfg(test)]
    fn encode(&mut self, msg: &Message<Bytes>, out: &mut Vec<u8>) -> Result<(), WireError> {
        out.clear();
        out.extend_from_slice(self.frame(msg)?);
        Ok(())
    }
}

/// Decodes frames in the [`wire`] format with a [`wire::Decoder`], which
/// reuses the aligned buffer that rkyv's checked access needs for the header
/// (TCP puts a frame at any offset of a receive buffer) and the lists of
/// `Order` and `DataBatch` messages: a frame decodes without allocating.
/// Same result as [`wire::decode`] for every input (`decodes_as_wire_does`).
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    wire: wire::Decoder<Bytes>,
}

impl Decoder {
    /// The Engine message in `frame`; its payloads are views of `frame`,
    /// or, with `copy_into`, copies in buffers of that pool (each counted in
    /// `copies`) that leave the receive buffer free.
    pub(crate) fn decode(
        &mut self,
        frame: &RecvFrame,
        copy_into: Option<&PayloadPool>,
        copies: &mut u64,
    ) -> Result<Message<Bytes>, WireError> {
        let bytes = frame.payload();
        self.wire.decode_with(bytes, |r| match copy_into {
            Some(pool) => {
                *copies += 1;
                let mut b = pool.take();
                b.extend_from_slice(&bytes[r]);
                Bytes(Repr::Copied(b.freeze()))
            }
            None => Bytes::from_frame(frame, r),
        })
    }

    /// The last decoded message was handled: let go of what the decoder's
    /// lists still hold of it (a batch's payloads pin their receive buffer).
    pub(crate) fn handled(&mut self) {
        self.wire.release();
    }

    #[cfg(test)]
    fn decode_bytes(&mut self, bytes: &[u8]) -> Result<Message<Bytes>, WireError> {
        self.wire
            .decode_with(bytes, |r| Bytes::copy_from(&bytes[r]))
    }
}

/// A peer id as the transport's handshake carries it.
pub(crate) fn node_from_wire(id: u64) -> Option<NodeId> {
    u32::try_from(id).ok().map(NodeId)
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_membership::{GroupId, OrderEntry};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encodes_data_as_wire_does(
            inc in any::<u64>(), group in any::<u64>(), epoch in any::<u32>(), sender in any::<u32>(),
            sinc in any::<u64>(), seq in any::<u64>(), ack in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let msg = Message {
                incarnation: inc,
                body: Body::Data {
                    group: GroupId(group),
                    epoch,
                    sender: NodeId(sender),
                    sender_incarnation: sinc,
                    sender_seq: seq,
                    ack,
                    payload: Bytes::from(payload),
                },
            };
            let mut want = Vec::new();
            wire::encode(&msg, &mut want).unwrap();
            let mut enc = Encoder::default();
            let mut got = vec![1, 2, 3];
            // Twice: the reused buffers must not leak the previous frame.
            enc.encode(&msg, &mut got).unwrap();
            enc.encode(&msg, &mut got).unwrap();
            prop_assert_eq!(&got, &want);
            prop_assert!(wire::decode(&got).is_ok());
        }
    }

    fn reference(bytes: &[u8]) -> Result<Message<Bytes>, WireError> {
        wire::decode(bytes).map(|m| m.map_payload(Bytes::copy_from))
    }

    fn sample_frames() -> Vec<Vec<u8>> {
        let data: Message<Bytes> = Message {
            incarnation: 9,
            body: Body::Data {
                group: GroupId(4),
                epoch: 1,
                sender: NodeId(2),
                sender_incarnation: 9,
                sender_seq: 77,
                ack: 5,
                payload: Bytes::from(vec![0xAB; 40]),
            },
        };
        let order: Message<Bytes> = Message {
            incarnation: 3,
            body: Body::Order {
                group: GroupId(1),
                epoch: 2,
                first: 5,
                entries: vec![OrderEntry::Leave { node: NodeId(2) }].into(),
                stable: 4,
            },
        };
        let batch: Message<Bytes> = Message {
            incarnation: 3,
            body: Body::DataBatch {
                group: GroupId(1),
                epoch: 2,
                sender: NodeId(3),
                sender_incarnation: 3,
                first_seq: 10,
                ack: 0,
                payloads: vec![Bytes::from(vec![1, 2]), Bytes::from(vec![])].into(),
            },
        };
        [data, order, batch]
            .iter()
            .map(|m| {
                let mut out = Vec::new();
                wire::encode(m, &mut out).unwrap();
                out
            })
            .collect()
    }

    #[test]
    fn decodes_valid_frames_as_wire_does() {
        let mut d = Decoder::default();
        for f in sample_frames() {
            assert_eq!(d.decode_bytes(&f), reference(&f));
            assert!(d.decode_bytes(&f).is_ok());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn decodes_as_wire_does(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut d = Decoder::default();
            prop_assert_eq!(d.decode_bytes(&bytes), reference(&bytes));
        }

        #[test]
        fn decodes_damaged_frames_as_wire_does(
            // Every sample, the DataBatch too: its count is an archived
            // `Vec<u32>`, so a damaged one fails bytecheck at once.
            which in 0usize..3,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let mut f = sample_frames().swap_remove(which);
            let n = f.len();
            for (at, x) in flips {
                f[at % n] ^= x;
            }
            if cut % 4 == 0 {
                f.truncate(cut % (n + 1));
            }
            let mut d = Decoder::default();
            prop_assert_eq!(d.decode_bytes(&f), reference(&f));
        }
    }

    #[test]
    fn a_batch_with_a_huge_count_is_refused_at_once() {
        // Compiled at this crate's opt-level, where rkyv's generic checks
        // and deserialization of the header are instantiated: a count of
        // zero-sized elements here was a walk of minutes per frame.
        let batch: Message<Bytes> = Message {
            incarnation: 0x0101_0101,
            body: Body::DataBatch {
                group: GroupId(0x0202_0202),
                epoch: 0x0303_0303,
                sender: NodeId(0x0404_0404),
                sender_incarnation: 0x0606_0606,
                first_seq: 0x0707_0707,
                ack: 0x0808_0808,
                payloads: (0..5u8).map(|i| Bytes::from(vec![i; 1000])).collect(),
            },
        };
        let mut f = Vec::new();
        wire::encode(&batch, &mut f).unwrap();
        let (header, start) = wire::split_frame(&f).unwrap();
        let at: Vec<usize> = (0..header.len() / 4)
            .map(|i| i * 4)
            .filter(|&i| header[i..i + 4] == 5u32.to_le_bytes())
            .collect();
        assert_eq!(at.len(), 1, "the count is not unique in the header");
        let at = start - header.len() + at[0];
        let mut d = Decoder::default();
        assert!(d.decode_bytes(&f).is_ok());
        for count in [u32::MAX, 1 << 31, 1 << 24] {
            f[at..at + 4].copy_from_slice(&count.to_le_bytes());
            assert_eq!(d.decode_bytes(&f), Err(WireError::InvalidHeader));
        }
    }

    #[test]
    fn other_messages_go_through_wire() {
        let msg: Message<Bytes> = Message {
            incarnation: 3,
            body: Body::Order {
                group: GroupId(1),
                epoch: 2,
                first: 5,
                entries: vec![OrderEntry::Leave { node: NodeId(2) }].into(),
                stable: 4,
            },
        };
        let mut want = Vec::new();
        wire::encode(&msg, &mut want).unwrap();
        let mut got = Vec::new();
        Encoder::default().encode(&msg, &mut got).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn a_multicast_is_serialized_once() {
        let data = |ack, payload: &Bytes| Message {
            incarnation: 2,
            body: Body::Data {
                group: GroupId(1),
                epoch: 1,
                sender: NodeId(1),
                sender_incarnation: 2,
                sender_seq: 9,
                ack,
                payload: payload.clone(),
            },
        };
        let p = Bytes::copy_from(&[5; 100]);
        let mut enc = Encoder::default();
        let want = |m: &Message<Bytes>| {
            let mut v = Vec::new();
            wire::encode(m, &mut v).unwrap();
            v
        };
        // The same message to three members: one serialization.
        for _ in 0..3 {
            assert_eq!(enc.frame(&data(4, &p)).unwrap(), want(&data(4, &p)));
        }
        assert_eq!(enc.reused, 2);
        // Another ack, another payload buffer with equal bytes, or another
        // message in between: serialized again, right bytes.
        assert_eq!(enc.frame(&data(5, &p)).unwrap(), want(&data(5, &p)));
        let q = Bytes::copy_from(&[6; 100]);
        assert_eq!(enc.frame(&data(5, &q)).unwrap(), want(&data(5, &q)));
        let order = sample_frames().swap_remove(1);
        let order_msg = wire::decode(&order).unwrap().map_payload(Bytes::copy_from);
        assert_eq!(enc.frame(&order_msg).unwrap(), order);
        assert_eq!(enc.frame(&data(5, &q)).unwrap(), want(&data(5, &q)));
        assert_eq!(enc.reused, 2);
    }

    #[test]
    fn clones_share_the_buffer() {
        let a = Bytes::copy_from(b"abc");
        let b = a.clone();
        assert_eq!(a.as_slice().as_ptr(), b.as_slice().as_ptr());
        assert_eq!(&*b, b"abc");
    }
}
