//! Bytes on the wire.
//!
//! A frame is a fixed 10-byte prefix, an rkyv archive of the message with
//! each payload replaced by its length, and then the raw payload bytes:
//!
//! ```text
//! | magic 0xC0 | version 3 | header_len u32 LE | payload_len u32 LE | header (rkyv) | payload area |
//! ```
//!
//! The header is a `Message<u32>`: a `Data` carries its payload's length, a
//! `DataBatch` the length of each of its payloads, in order, and the payload
//! area is those payloads back to back (their lengths must add up to
//! `payload_len`). The payload is never part of the archive, so the node can
//! hand the application a borrowed slice of its receive buffer (no copy).
//!
//! A batch's count is the length of an archived `Vec<u32>`, so bytecheck
//! refuses a damaged count that claims more elements than the header holds
//! before it walks any (4 bytes each, at most [`MAX_HEADER`] in all). Version
//! 1 archived a `Vec<()>` there, whose elements take no bytes: a damaged
//! count made rkyv walk up to 2^32 of them before the frame was refused.
//!
//! The header is small; [`decode`] copies it into an aligned buffer before
//! checked access, because TCP places a frame at any offset of a receive
//! buffer and rkyv's validation needs the archive aligned. Every input is
//! validated by bytecheck: `decode` returns [`WireError`] for anything
//! malformed and never panics.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use std::ops::Range;

use crate::message::{ArchivedBody, ArchivedMessage, Body, Message, OrderEntry, SharedPool};
use crate::types::{GroupId, NodeId, Payload};

/// First byte of every frame.
pub const MAGIC: u8 = 0xC0;
/// Wire format version.
pub const VERSION: u8 = 3;
/// Bytes before the header.
pub const PREFIX: usize = 10;
/// Largest header accepted (control messages are small; this bounds the copy).
pub const MAX_HEADER: usize = 1 << 20;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than its prefix says.
    #[error("frame truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// Not a concord membership frame.
    #[error("bad magic byte {found:#x}")]
    BadMagic {
        /// What was found.
        found: u8,
    },
    /// A wire version this build does not speak.
    #[error("unsupported wire version {found}")]
    UnsupportedVersion {
        /// What was found.
        found: u8,
    },
    /// Header larger than [`MAX_HEADER`].
    #[error("header of {len} bytes exceeds the limit")]
    HeaderTooLarge {
        /// Its length.
        len: usize,
    },
    /// The header failed validation.
    #[error("invalid header archive")]
    InvalidHeader,
    /// A payload area whose length is not what the header's payload lengths
    /// add up to (bytes on a message that carries none, too few or too many).
    #[error("payload length {len} does not fit the message kind")]
    UnexpectedPayload {
        /// The payload length.
        len: usize,
    },
    /// The message could not be serialized.
    #[error("serialization failed")]
    Serialize,
}

/// Append one frame for `msg` to `out`.
pub fn encode<P: Payload>(msg: &Message<P>, out: &mut Vec<u8>) -> Result<(), WireError> {
    encode_with(msg, &mut AlignedVec::new(), out)
}

/// [`encode`], serializing the header in `scratch` (its contents are
/// replaced): a caller that keeps `scratch` and `out` allocates nothing once
/// they have grown to its largest frame.
pub fn encode_with<P: Payload>(
    msg: &Message<P>,
    scratch: &mut AlignedVec,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let mut lens_ok = true;
    let header = msg.clone().map_payload(|p| {
        u32::try_from(p.as_ref().len()).unwrap_or_else(|_| {
            lens_ok = false;
            0
        })
    });
    if !lens_ok {
        return Err(WireError::Serialize);
    }
    let single: &[P] = match &msg.body {
        Body::Data { payload, .. } => std::slice::from_ref(payload),
        Body::DataBatch { payloads, .. } => payloads,
        _ => &[],
    };
    let area: usize = single.iter().map(|p| p.as_ref().len()).sum();
    let mut buf = std::mem::take(scratch);
    buf.clear();
    let bytes = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&header, buf)
        .map_err(|_| WireError::Serialize)?;
    let header_len = u32::try_from(bytes.len()).map_err(|_| WireError::Serialize)?;
    let payload_len = u32::try_from(area).map_err(|_| WireError::Serialize)?;
    out.reserve(PREFIX + bytes.len() + area);
    out.push(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&bytes);
    for p in single {
        out.extend_from_slice(p.as_ref());
    }
    *scratch = bytes;
    Ok(())
}

/// Length of the frame at the start of `bytes`, if its prefix is complete
/// (for stream reassembly).
pub fn frame_len(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < PREFIX {
        return None;
    }
    let header = u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize;
    let payload = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
    Some(PREFIX + header + payload)
}

/// Checks the prefix of the one frame in `bytes` (magic, version, the header
/// bound, and that the frame is exactly as long as its prefix says) and
/// returns its header archive and where its payload area starts. Every
/// decoder of this format starts here, so all refuse the same inputs with the
/// same error.
pub fn split_frame(bytes: &[u8]) -> Result<(&[u8], usize), WireError> {
    if bytes.len() < PREFIX {
        return Err(WireError::Truncated {
            need: PREFIX,
            have: bytes.len(),
        });
    }
    if bytes[0] != MAGIC {
        return Err(WireError::BadMagic { found: bytes[0] });
    }
    if bytes[1] != VERSION {
        return Err(WireError::UnsupportedVersion { found: bytes[1] });
    }
    let header_len = u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize;
    let payload_len = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
    if header_len > MAX_HEADER {
        return Err(WireError::HeaderTooLarge { len: header_len });
    }
    let need = PREFIX
        .saturating_add(header_len)
        .saturating_add(payload_len);
    if bytes.len() < need {
        return Err(WireError::Truncated {
            need,
            have: bytes.len(),
        });
    }
    if bytes.len() > need {
        return Err(WireError::UnexpectedPayload {
            len: bytes.len() - PREFIX - header_len,
        });
    }
    Ok((&bytes[PREFIX..PREFIX + header_len], PREFIX + header_len))
}

/// Decode exactly one frame. Every payload borrows `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Message<&[u8]>, WireError> {
    Decoder::default().decode_with(bytes, |r| &bytes[r])
}

/// Decodes frames, reusing everything it needs: the aligned buffer the
/// header is copied into for checked access, and the lists of the messages
/// that carry one (an `Order`'s entries, a `DataBatch`'s payloads), lent to
/// each message from a [`SharedPool`] and refilled once the message was
/// dropped. A receiver that handles each message before it decodes the next
/// allocates nothing per frame once the buffers have grown, where
/// deserializing the header whole would allocate an `Order`'s list twice
/// (the vector and its share) for every record.
///
/// Same checks in the same order as [`decode`] (which is this decoder used
/// once), so both refuse the same inputs with the same error.
#[derive(Debug)]
pub struct Decoder<P> {
    header: AlignedVec,
    entries: Vec<OrderEntry>,
    records: SharedPool<OrderEntry>,
    payloads: Vec<P>,
    batches: SharedPool<P>,
}

impl<P> Default for Decoder<P> {
    fn default() -> Self {
        Decoder {
            header: AlignedVec::new(),
            entries: Vec::new(),
            records: SharedPool::default(),
            payloads: Vec::new(),
            batches: SharedPool::default(),
        }
    }
}

impl<P: Clone> Decoder<P> {
    /// The message in the one frame `bytes`, making each payload from its
    /// range in `bytes`.
    pub fn decode_with(
        &mut self,
        bytes: &[u8],
        mut payload_at: impl FnMut(Range<usize>) -> P,
    ) -> Result<Message<P>, WireError> {
        let (header_bytes, start) = split_frame(bytes)?;
        let area = bytes.len() - start;
        self.header.clear();
        self.header.extend_from_slice(header_bytes);
        let archived = rkyv::access::<ArchivedMessage<u32>, rancor::Error>(&self.header)
            .map_err(|_| WireError::InvalidHeader)?;
        let incarnation = archived.incarnation.to_native();
        // The two kinds with a list are built here from the validated
        // archive, their lists from the pools; every other kind is
        // deserialized whole (none allocates on the data path).
        let body = match &archived.body {
            ArchivedBody::Order {
                group,
                epoch,
                first,
                entries,
                stable,
            } => {
                if area != 0 {
                    return Err(WireError::UnexpectedPayload { len: area });
                }
                self.entries.clear();
                for e in entries.iter() {
                    self.entries.push(de::<OrderEntry>(e)?);
                }
                Body::Order {
                    group: de::<GroupId>(group)?,
                    epoch: epoch.to_native(),
                    first: first.to_native(),
                    entries: self.records.share(&mut self.entries),
                    stable: stable.to_native(),
                }
            }
            ArchivedBody::DataBatch {
                group,
                epoch,
                sender,
                sender_incarnation,
                first_seq,
                ack,
                payloads,
            } => {
                let named: u64 = payloads.iter().map(|l| u64::from(l.to_native())).sum();
                if named != area as u64 {
                    return Err(WireError::UnexpectedPayload { len: area });
                }
                self.payloads.clear();
                let mut at = start;
                for len in payloads.iter() {
                    let r = at..at + len.to_native() as usize;
                    at = r.end;
                    self.payloads.push(payload_at(r));
                }
                Body::DataBatch {
                    group: de::<GroupId>(group)?,
                    epoch: epoch.to_native(),
                    sender: de::<NodeId>(sender)?,
                    sender_incarnation: sender_incarnation.to_native(),
                    first_seq: first_seq.to_native(),
                    ack: ack.to_native(),
                    payloads: self.batches.share(&mut self.payloads),
                }
            }
            _ => {
                let header = de::<Message<u32>>(archived)?;
                check_lengths(&header, area)?;
                let mut at = start;
                return Ok(header.map_payload(|len| {
                    let r = at..at + len as usize;
                    at = r.end;
                    payload_at(r)
                }));
            }
        };
        Ok(Message { incarnation, body })
    }

    /// Lets go of the payloads of the batches already handled (their lists
    /// otherwise keep them until refilled; a received payload holds its
    /// receive buffer). Call it once a decoded message was handled.
    pub fn release(&mut self) {
        self.batches.release();
    }
}

/// One validated archived value, deserialized.
fn de<T>(archived: &T::Archived) -> Result<T, WireError>
where
    T: rkyv::Archive,
    T::Archived: rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    rkyv::deserialize::<T, rancor::Error>(archived).map_err(|_| WireError::InvalidHeader)
}

/// Checks that the payload lengths a decoded header names add up to the
/// payload area's length exactly (a message kind without payloads names
/// none): after this, cutting the area at those lengths in order cannot
/// fail. Every decoder of this format checks it before it slices.
pub fn check_lengths(header: &Message<u32>, area: usize) -> Result<(), WireError> {
    let named = match &header.body {
        Body::Data { payload, .. } => u64::from(*payload),
        Body::DataBatch { payloads, .. } => payloads.iter().map(|&l| u64::from(l)).sum(),
        _ => 0,
    };
    if named == area as u64 {
        Ok(())
    } else {
        Err(WireError::UnexpectedPayload { len: area })
    }
}
