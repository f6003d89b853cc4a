//! Wire framing: a fixed 16-byte header, then either an rkyv-archived
//! [`Control`] message or raw payload bytes.
//!
//! Pure functions, no IO: everything that reads bytes from the network goes
//! through [`decode_header`], [`verify_frame`] and [`decode_control`], which is
//! what the property tests and the fuzz targets hit.
//!
//! ```text
//!  0       4   5    6      8          12         16
//!  +-------+---+----+------+----------+----------+---------------------+
//!  | magic |ver|kind|flags |  length  | checksum | payload (length B)  |
//!  +-------+---+----+------+----------+----------+---------------------+
//!    all integers little endian
//!    checksum = crc32c(header[0..12])               flags = 0
//!    checksum = crc32c(header[0..12] ++ payload)    flags = FLAG_PAYLOAD_CHECKSUM
//! ```
//!
//! The checksum always covers the header, so a corrupt length or kind can
//! never make the decoder misframe the stream. Covering the payload is the
//! sender's choice, carried in the (checksummed) flags: control frames always
//! do, payload frames do when the sending driver has
//! [`checksum_payloads`](crate::DriverConfig::checksum_payloads) on. crc32c
//! runs at only ~3-5 GB/s on this VM (measured, see docs/DESIGN.md, section 3), which
//! would cost a 64 KiB stream about a third of its throughput, while TCP
//! already checksums every segment that leaves the host.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// `b"CNCD"` read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"CNCD");
/// The wire version this build speaks: the layout of this header and of the
/// handshake ([`Hello`], [`Reject`]), which two builds must share before
/// they can negotiate anything else. Distinct from the protocol version
/// range negotiated in the handshake. 2: `Hello` carries the incarnation.
pub const WIRE_VERSION: u8 = 2;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 16;
/// Alignment rkyv's checked access needs for [`Control`] archives.
pub const ARCHIVE_ALIGN: usize = 16;
/// Longest build string a [`Hello`] may carry.
pub const MAX_BUILD_LEN: usize = 64;

/// What follows the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// An rkyv-archived [`Control`] message, consumed by the transport itself.
    Control = 1,
    /// Raw application bytes, handed to the application as a
    /// [`RecvFrame`](crate::RecvFrame).
    Payload = 2,
}

impl FrameKind {
    /// Parses the kind byte.
    pub fn from_u8(b: u8) -> Option<FrameKind> {
        match b {
            1 => Some(FrameKind::Control),
            2 => Some(FrameKind::Payload),
            _ => None,
        }
    }
}

/// Why a frame was refused. Every variant means the peer is broken or
/// hostile: the connection that sent it is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first four bytes are not [`MAGIC`].
    #[error("bad magic {found:#010x} (expected {MAGIC:#010x})")]
    BadMagic {
        /// The value found.
        found: u32,
    },
    /// The wire version byte is not one this build speaks.
    #[error("unsupported wire version {found} (this build speaks {WIRE_VERSION})")]
    BadVersion {
        /// The version byte found.
        found: u8,
    },
    /// Unknown frame kind byte.
    #[error("unknown frame kind {found}")]
    BadKind {
        /// The kind byte found.
        found: u8,
    },
    /// Unknown flag bits are set.
    #[error("unknown header flags {found:#06x}")]
    BadFlags {
        /// The value found.
        found: u16,
    },
    /// The length field exceeds the configured maximum.
    #[error("frame length {len} exceeds the maximum {max}")]
    BadLength {
        /// Declared payload length.
        len: u32,
        /// Configured maximum.
        max: u32,
    },
    /// The checksum does not match the header and payload.
    #[error("checksum mismatch: header says {expected:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// Checksum carried in the header.
        expected: u32,
        /// Checksum computed over what arrived.
        computed: u32,
    },
    /// A control frame whose archive failed bytecheck validation.
    #[error("control archive failed validation: {reason}")]
    BadArchive {
        /// bytecheck's explanation (rendered once, on this cold path).
        reason: String,
    },
    /// Fewer bytes than the header or declared length (only from the
    /// whole-buffer helpers; the streaming decoder waits for more instead).
    #[error("truncated frame: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

/// A decoded and validated header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What follows.
    pub kind: FrameKind,
    /// Payload length in bytes (header excluded).
    pub len: u32,
    /// Whether the checksum covers the payload too.
    pub payload_checksummed: bool,
    /// crc32c over header bytes 0..12 (and the payload if flagged).
    pub checksum: u32,
}

impl Header {
    /// Header plus payload.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.len as usize
    }
}

/// Flag: the checksum covers the payload as well as the header.
pub const FLAG_PAYLOAD_CHECKSUM: u16 = 1;

/// Writes a header for `payload` into `out` (which must be [`HEADER_LEN`]
/// bytes) and returns the checksum it wrote. Control frames always checksum
/// their payload.
pub fn encode_header(
    out: &mut [u8; HEADER_LEN],
    kind: FrameKind,
    payload: &[u8],
    checksum_payload: bool,
) -> u32 {
    let len = u32::try_from(payload.len()).expect("payload length checked against max_frame_len");
    let covered = checksum_payload || kind == FrameKind::Control;
    let flags = if covered { FLAG_PAYLOAD_CHECKSUM } else { 0 };
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4] = WIRE_VERSION;
    out[5] = kind as u8;
    out[6..8].copy_from_slice(&flags.to_le_bytes());
    out[8..12].copy_from_slice(&len.to_le_bytes());
    let crc = checksum(&out[0..12], if covered { payload } else { &[] });
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    crc
}

/// Encodes a whole frame (header then payload) into `out`, which must be
/// exactly `HEADER_LEN + payload.len()` bytes long.
pub fn encode_frame_into(out: &mut [u8], kind: FrameKind, payload: &[u8]) {
    assert_eq!(
        out.len(),
        HEADER_LEN + payload.len(),
        "output sized for header + payload"
    );
    out[HEADER_LEN..].copy_from_slice(payload);
    write_header_in_place(out, kind, true);
}

/// Writes the header of a frame whose payload is already in place at
/// `frame[HEADER_LEN..]` (the claim/commit path: no payload copy).
pub fn write_header_in_place(frame: &mut [u8], kind: FrameKind, checksum_payload: bool) {
    let (head, payload) = frame.split_at_mut(HEADER_LEN);
    let head: &mut [u8; HEADER_LEN] = head.try_into().expect("split at HEADER_LEN");
    encode_header(head, kind, payload, checksum_payload);
}

/// Convenience for tests and cold paths: a freshly allocated frame whose
/// checksum covers the payload.
pub fn encode_frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; HEADER_LEN + payload.len()];
    encode_frame_into(&mut v, kind, payload);
    v
}

fn checksum(head12: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(head12), payload)
}

/// Decodes and validates the fixed header (everything but the checksum, which
/// needs the payload). `bytes` may be longer than a header; only the first
/// [`HEADER_LEN`] are read.
pub fn decode_header(bytes: &[u8], max_len: u32) -> Result<Header, FrameError> {
    let Some(h) = bytes.get(..HEADER_LEN) else {
        return Err(FrameError::Truncated {
            need: HEADER_LEN,
            have: bytes.len(),
        });
    };
    let le32 = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let magic = le32(0);
    if magic != MAGIC {
        return Err(FrameError::BadMagic { found: magic });
    }
    if h[4] != WIRE_VERSION {
        return Err(FrameError::BadVersion { found: h[4] });
    }
    let kind = FrameKind::from_u8(h[5]).ok_or(FrameError::BadKind { found: h[5] })?;
    let flags = u16::from_le_bytes([h[6], h[7]]);
    if flags & !FLAG_PAYLOAD_CHECKSUM != 0 {
        return Err(FrameError::BadFlags { found: flags });
    }
    let len = le32(8);
    if len > max_len {
        return Err(FrameError::BadLength { len, max: max_len });
    }
    Ok(Header {
        kind,
        len,
        payload_checksummed: flags & FLAG_PAYLOAD_CHECKSUM != 0,
        checksum: le32(12),
    })
}

/// Checks the checksum of a frame whose header decoded to `header`;
/// `frame` is exactly header + payload.
pub fn verify_checksum(header: &Header, frame: &[u8]) -> Result<(), FrameError> {
    debug_assert_eq!(frame.len(), header.frame_len());
    let payload = if header.payload_checksummed {
        &frame[HEADER_LEN..]
    } else {
        &[]
    };
    let computed = checksum(&frame[0..12], payload);
    if computed != header.checksum {
        return Err(FrameError::BadChecksum {
            expected: header.checksum,
            computed,
        });
    }
    Ok(())
}

/// Decodes one complete frame from the front of `bytes`: header, length and
/// checksum. Returns the header and the payload slice.
pub fn verify_frame(bytes: &[u8], max_len: u32) -> Result<(Header, &[u8]), FrameError> {
    let header = decode_header(bytes, max_len)?;
    let frame = bytes
        .get(..header.frame_len())
        .ok_or(FrameError::Truncated {
            need: header.frame_len(),
            have: bytes.len(),
        })?;
    verify_checksum(&header, frame)?;
    Ok((header, &frame[HEADER_LEN..]))
}

/// The transport's own messages, carried in [`FrameKind::Control`] frames.
/// Application traffic (including membership messages) rides in
/// [`FrameKind::Payload`] frames.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Control {
    /// First frame each side sends on a new connection.
    Hello(Hello),
    /// Sent instead of proceeding when the peer's Hello is unacceptable.
    Reject(Reject),
    /// Liveness probe; answered with `Pong` carrying the same nonce.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Answer to `Ping`.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// Orderly close: the sender will send nothing more.
    Goodbye {
        /// Why (an application-chosen code; 0 = normal close).
        code: u32,
    },
}

/// Handshake contents.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Hello {
    /// Sender's node id.
    pub node_id: u64,
    /// Which life of that node: grows with every restart, so a peer can
    /// tell a restarted node from the one it knew.
    pub incarnation: u64,
    /// Cluster the sender belongs to; must equal ours.
    pub cluster_id: u64,
    /// Lowest protocol version the sender supports.
    pub protocol_min: u16,
    /// Highest protocol version the sender supports.
    pub protocol_max: u16,
    /// Sender's build (e.g. "0.1.0+abc123"), at most [`MAX_BUILD_LEN`] bytes.
    pub build: String,
}

/// Why a Hello was refused.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Reject {
    /// 1 = cluster mismatch, 2 = no common protocol version, 3 = malformed hello.
    pub code: u8,
    /// Rejecting side's cluster id.
    pub cluster_id: u64,
    /// Rejecting side's supported range.
    pub protocol_min: u16,
    /// Rejecting side's supported range.
    pub protocol_max: u16,
}

/// Reject codes.
pub mod reject_code {
    /// Cluster ids differ.
    pub const CLUSTER_MISMATCH: u8 = 1;
    /// Protocol ranges do not overlap.
    pub const NO_COMMON_VERSION: u8 = 2;
    /// The Hello itself was malformed (e.g. build string too long).
    pub const MALFORMED: u8 = 3;
}

/// Serializes a control message into a complete frame (header included).
/// Cold path (handshake, close, keepalive): allocates.
pub fn encode_control(msg: &Control) -> Vec<u8> {
    let archive = rkyv::to_bytes::<rancor::Error>(msg)
        .expect("serializing a Control into a Vec cannot fail: no shared pointers, no IO");
    encode_frame(FrameKind::Control, &archive)
}

/// Validates a control archive with bytecheck and deserializes it.
///
/// TCP lands a frame at any offset of a receive buffer, and rkyv's checked
/// access needs the archive aligned to [`ARCHIVE_ALIGN`]. When `payload` is
/// misaligned it is copied into `scratch` (reused, so no allocation once warm)
/// and the returned flag is `true`; callers count these copies. Control
/// frames are rare and small, so the copy costs less than padding every frame
/// on the wire (measured: see docs/DESIGN.md, section 3).
pub fn decode_control(
    payload: &[u8],
    scratch: &mut AlignedVec<ARCHIVE_ALIGN>,
) -> Result<(Control, bool), FrameError> {
    let misaligned = !(payload.as_ptr() as usize).is_multiple_of(ARCHIVE_ALIGN);
    let bytes: &[u8] = if misaligned {
        scratch.clear();
        scratch.extend_from_slice(payload);
        scratch.as_slice()
    } else {
        payload
    };
    let archived = rkyv::access::<ArchivedControl, rancor::Error>(bytes).map_err(|e| {
        FrameError::BadArchive {
            reason: e.to_string(),
        }
    })?;
    let msg = rkyv::deserialize::<Control, rancor::Error>(archived).map_err(|e| {
        FrameError::BadArchive {
            reason: e.to_string(),
        }
    })?;
    Ok((msg, misaligned))
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The first frame was not a well-formed frame.
    #[error("handshake frame: {0}")]
    Frame(#[from] FrameError),
    /// The first frame was a valid frame but not a Hello.
    #[error("expected Hello as the first frame, got {got}")]
    NotHello {
        /// What arrived instead ("payload", "Ping", ...).
        got: &'static str,
    },
    /// The build string is longer than [`MAX_BUILD_LEN`].
    #[error("build string of {len} bytes exceeds {MAX_BUILD_LEN}")]
    BuildTooLong {
        /// Its length.
        len: usize,
    },
    /// The peer is in another cluster.
    #[error("peer is in cluster {theirs}, we are in {ours}")]
    ClusterMismatch {
        /// Our cluster id.
        ours: u64,
        /// Theirs.
        theirs: u64,
    },
    /// Protocol ranges do not overlap.
    #[error("no common protocol version: ours {ours}, theirs {theirs}")]
    NoCommonVersion {
        /// Our supported range.
        ours: crate::VersionRange,
        /// Theirs.
        theirs: crate::VersionRange,
    },
    /// The peer refused our Hello.
    #[error("peer rejected our hello (code {code}); its cluster {cluster_id}, range {range}")]
    Rejected {
        /// Reject code (see [`reject_code`]).
        code: u8,
        /// Peer's cluster id.
        cluster_id: u64,
        /// Peer's supported range.
        range: crate::VersionRange,
    },
    /// The peer sent nothing acceptable within the handshake timeout.
    #[error("handshake timed out")]
    Timeout,
}

/// The handshake decoder: one complete frame that must be a valid [`Hello`]
/// (or a [`Reject`], reported as [`HandshakeError::Rejected`]).
pub fn decode_hello(
    frame: &[u8],
    max_len: u32,
    scratch: &mut AlignedVec<ARCHIVE_ALIGN>,
) -> Result<Hello, HandshakeError> {
    let (header, payload) = verify_frame(frame, max_len)?;
    if header.kind != FrameKind::Control {
        return Err(HandshakeError::NotHello { got: "payload" });
    }
    let (msg, _) = decode_control(payload, scratch)?;
    hello_from_control(msg)
}

/// Extracts the Hello from a decoded control message.
pub fn hello_from_control(msg: Control) -> Result<Hello, HandshakeError> {
    match msg {
        Control::Hello(h) if h.build.len() > MAX_BUILD_LEN => {
            Err(HandshakeError::BuildTooLong { len: h.build.len() })
        }
        Control::Hello(h) => Ok(h),
        Control::Reject(r) => Err(HandshakeError::Rejected {
            code: r.code,
            cluster_id: r.cluster_id,
            range: crate::VersionRange {
                min: r.protocol_min,
                max: r.protocol_max,
            },
        }),
        Control::Ping { .. } => Err(HandshakeError::NotHello { got: "Ping" }),
        Control::Pong { .. } => Err(HandshakeError::NotHello { got: "Pong" }),
        Control::Goodbye { .. } => Err(HandshakeError::NotHello { got: "Goodbye" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 1 << 20;

    #[test]
    fn header_round_trip() {
        let f = encode_frame(FrameKind::Payload, b"hello");
        let (h, p) = verify_frame(&f, MAX).unwrap();
        assert_eq!(h.kind, FrameKind::Payload);
        assert_eq!(h.len, 5);
        assert_eq!(p, b"hello");
    }

    #[test]
    fn each_bad_field_is_named() {
        let good = encode_frame(FrameKind::Payload, b"abc");
        let mut f = good.clone();
        f[0] ^= 1;
        assert!(matches!(
            verify_frame(&f, MAX),
            Err(FrameError::BadMagic { .. })
        ));
        let mut f = good.clone();
        f[4] = 9;
        assert_eq!(
            verify_frame(&f, MAX),
            Err(FrameError::BadVersion { found: 9 })
        );
        let mut f = good.clone();
        f[5] = 77;
        assert_eq!(
            verify_frame(&f, MAX),
            Err(FrameError::BadKind { found: 77 })
        );
        let mut f = good.clone();
        f[7] = 1;
        assert_eq!(
            verify_frame(&f, MAX),
            Err(FrameError::BadFlags { found: 0x101 })
        );
        let mut f = good.clone();
        f[8..12].copy_from_slice(&(MAX + 1).to_le_bytes());
        assert_eq!(
            verify_frame(&f, MAX),
            Err(FrameError::BadLength {
                len: MAX + 1,
                max: MAX
            })
        );
        let mut f = good.clone();
        f[HEADER_LEN] ^= 0x40;
        assert!(matches!(
            verify_frame(&f, MAX),
            Err(FrameError::BadChecksum { .. })
        ));
        assert!(matches!(
            verify_frame(&good[..10], MAX),
            Err(FrameError::Truncated { .. })
        ));
    }

    #[test]
    fn header_only_checksum_still_guards_the_header() {
        let mut f = vec![0u8; HEADER_LEN + 8];
        f[HEADER_LEN..].copy_from_slice(b"payload!");
        write_header_in_place(&mut f, FrameKind::Payload, false);
        let (h, _) = verify_frame(&f, MAX).unwrap();
        assert!(!h.payload_checksummed);
        // Not covered: the payload (TCP's checksum is what guards it).
        let mut g = f.clone();
        g[HEADER_LEN] ^= 1;
        assert!(verify_frame(&g, MAX).is_ok());
        // Covered: every header bit, including the flag that says so.
        for bit in 0..12 * 8 {
            let mut g = f.clone();
            g[bit / 8] ^= 1 << (bit % 8);
            assert!(
                verify_frame(&g, MAX).is_err(),
                "header bit {bit} flip accepted"
            );
        }
        // Control frames always cover their payload.
        let mut c = vec![0u8; HEADER_LEN + 4];
        write_header_in_place(&mut c, FrameKind::Control, false);
        assert!(decode_header(&c, MAX).unwrap().payload_checksummed);
    }

    #[test]
    fn every_control_kind_round_trips_aligned_and_not() {
        let msgs = [
            Control::Hello(Hello {
                node_id: 7,
                incarnation: u64::MAX - 3,
                cluster_id: 9,
                protocol_min: 1,
                protocol_max: 3,
                build: "0.1.0".into(),
            }),
            Control::Reject(Reject {
                code: reject_code::NO_COMMON_VERSION,
                cluster_id: 9,
                protocol_min: 4,
                protocol_max: 5,
            }),
            Control::Ping { nonce: 42 },
            Control::Pong { nonce: 42 },
            Control::Goodbye { code: 0 },
        ];
        let mut scratch = AlignedVec::new();
        for m in msgs {
            let f = encode_control(&m);
            let (h, _) = verify_frame(&f, MAX).unwrap();
            assert_eq!(h.kind, FrameKind::Control);
            // Place the payload at every offset mod 16 to exercise both paths.
            for shift in 0..ARCHIVE_ALIGN {
                let mut buf: AlignedVec<ARCHIVE_ALIGN> = AlignedVec::new();
                buf.extend_from_slice(&vec![0u8; shift]);
                buf.extend_from_slice(&f);
                let (_, p) = verify_frame(&buf[shift..], MAX).unwrap();
                let (back, copied) = decode_control(p, &mut scratch).unwrap();
                assert_eq!(back, m);
                assert_eq!(copied, !(shift + HEADER_LEN).is_multiple_of(ARCHIVE_ALIGN));
            }
        }
    }

    #[test]
    fn hello_decoder_names_what_is_wrong() {
        let mut s = AlignedVec::new();
        let f = encode_frame(FrameKind::Payload, b"x");
        assert_eq!(
            decode_hello(&f, MAX, &mut s),
            Err(HandshakeError::NotHello { got: "payload" })
        );
        let f = encode_control(&Control::Ping { nonce: 1 });
        assert_eq!(
            decode_hello(&f, MAX, &mut s),
            Err(HandshakeError::NotHello { got: "Ping" })
        );
        let f = encode_frame(FrameKind::Control, &[0xff; 40]);
        assert!(matches!(
            decode_hello(&f, MAX, &mut s),
            Err(HandshakeError::Frame(FrameError::BadArchive { .. }))
        ));
        let long = Control::Hello(Hello {
            node_id: 1,
            incarnation: 1,
            cluster_id: 1,
            protocol_min: 1,
            protocol_max: 1,
            build: "x".repeat(MAX_BUILD_LEN + 1),
        });
        assert_eq!(
            decode_hello(&encode_control(&long), MAX, &mut s),
            Err(HandshakeError::BuildTooLong {
                len: MAX_BUILD_LEN + 1
            })
        );
    }
}
