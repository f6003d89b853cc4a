//! Bytes on the wire.
//!
//! A frame is a fixed 10-byte prefix, an rkyv archive of the message with the
//! payload left out, and then the raw payload bytes:
//!
//! ```text
//! | magic 0xC0 | version 1 | header_len u32 LE | payload_len u32 LE | header (rkyv) | payload |
//! ```
//!
//! The payload is never part of the archive, so the node can hand the
//! application a borrowed slice of its receive buffer (no copy). The header is
//! small; [`decode`] copies it into an aligned buffer before checked access,
//! because TCP places a frame at any offset of a receive buffer and rkyv's
//! validation needs the archive aligned. Every input is validated by bytecheck:
//! `decode` returns [`WireError`] for anything malformed and never panics.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::message::{Body, Message};
use crate::types::Payload;

/// First byte of every frame.
pub const MAGIC: u8 = 0xC0;
/// Wire format version.
pub const VERSION: u8 = 1;
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
    /// A payload on a message that carries none, or bytes after the payload.
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
    let mut payload: &[u8] = &[];
    let mut batch: Option<&[P]> = None;
    let header = match &msg.body {
        Body::Data { payload: p, .. } => {
            payload = p.as_ref();
            msg.clone().map_payload(|_| ())
        }
        Body::DataBatch { payloads, .. } => {
            batch = Some(payloads);
            msg.clone().map_payload(|_| ())
        }
        _ => msg.clone().map_payload(|_| ()),
    };
    // A batch's payload area: each payload as `len u32 LE | bytes`.
    let batch_len = batch.map_or(0, |b| b.iter().map(|p| 4 + p.as_ref().len()).sum::<usize>());
    let mut buf = std::mem::take(scratch);
    buf.clear();
    let bytes = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&header, buf)
        .map_err(|_| WireError::Serialize)?;
    let header_len = u32::try_from(bytes.len()).map_err(|_| WireError::Serialize)?;
    let payload_len = u32::try_from(payload.len() + batch_len).map_err(|_| WireError::Serialize)?;
    out.reserve(PREFIX + bytes.len() + payload.len() + batch_len);
    out.push(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&bytes);
    out.extend_from_slice(payload);
    for p in batch.unwrap_or_default() {
        let p = p.as_ref();
        let len = u32::try_from(p.len()).map_err(|_| WireError::Serialize)?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(p);
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

/// Decode exactly one frame. The payload of a `Data` message borrows `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Message<&[u8]>, WireError> {
    let (header_bytes, start) = split_frame(bytes)?;
    let header_len = header_bytes.len();
    let mut aligned = AlignedVec::<16>::with_capacity(header_len);
    aligned.extend_from_slice(header_bytes);
    let header = rkyv::from_bytes::<Message<()>, rancor::Error>(&aligned)
        .map_err(|_| WireError::InvalidHeader)?;
    let payload = &bytes[start..];
    match header.body {
        Body::Data { .. } => Ok(header.map_payload(|()| payload)),
        Body::DataBatch { ref payloads, .. } => {
            let parts = split_batch(payload, payloads.len())?;
            let mut parts = parts.into_iter();
            Ok(header.map_payload(|()| parts.next().unwrap_or_default()))
        }
        _ if payload.is_empty() => Ok(header.map_payload(|()| payload)),
        _ => Err(WireError::UnexpectedPayload { len: payload.len() }),
    }
}

/// Split a batch's payload area into exactly `count` length-prefixed
/// payloads (borrowed), refusing anything short, long or left over.
fn split_batch(mut area: &[u8], count: usize) -> Result<Vec<&[u8]>, WireError> {
    let total = area.len();
    // Each payload needs at least its 4-byte length: bounds the allocation.
    if count > total / 4 {
        return Err(WireError::UnexpectedPayload { len: total });
    }
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        let Some((len, rest)) = area.split_first_chunk::<4>() else {
            return Err(WireError::Truncated {
                need: total + 4,
                have: total,
            });
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(WireError::Truncated {
                need: total - rest.len() + len,
                have: total,
            });
        }
        parts.push(&rest[..len]);
        area = &rest[len..];
    }
    if !area.is_empty() {
        return Err(WireError::UnexpectedPayload { len: area.len() });
    }
    Ok(parts)
}
