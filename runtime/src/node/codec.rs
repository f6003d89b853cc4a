//! The payload type and the codec: the one place that decides how an Engine
//! message becomes bytes on a connection and how a received frame becomes an
//! Engine message.
//!
//! Today a received payload is copied out of the transport's
//! [`RecvFrame`] into a refcounted [`Bytes`]
//! (one allocation and one copy per payload), because a `RecvFrame` can be
//! neither cloned nor sliced and holding it would pin its whole receive
//! buffer while the Engine keeps the payload until it is stable. A message is
//! encoded with [`concord_membership::wire::encode`] into a reused scratch
//! buffer and copied once into the connection's staging chunk. When the
//! transport's frames become refcounted views (clone and slice), [`Bytes`]
//! becomes such a view and `decode` slices the frame instead of copying:
//! nothing outside this module changes.

use std::fmt;
use std::ops::Deref;
use std::rc::Rc;

use concord_membership::wire::{self, WireError};
use concord_membership::{Message, NodeId};
use concord_transport::RecvFrame;

/// Bytes of one application payload: refcounted, so the Engine's clones (one
/// per destination, one per delivery) and the application's copy of a
/// [`Delivery`](super::Delivery) share one buffer. Cloning never copies.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(Rc<[u8]>);

impl Bytes {
    /// A payload holding a copy of `bytes`.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Bytes(Rc::from(bytes))
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(Rc::from(v))
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Self {
        Bytes::copy_from(v)
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

/// Appends the frame for `msg` to `out` (cleared first).
pub(crate) fn encode(msg: &Message<Bytes>, out: &mut Vec<u8>) -> Result<(), WireError> {
    out.clear();
    wire::encode(msg, out)
}

/// The Engine message in `frame`, from `from`.
pub(crate) fn decode(frame: &RecvFrame) -> Result<Message<Bytes>, WireError> {
    let msg = wire::decode(frame.payload())?;
    Ok(msg.map_payload(Bytes::copy_from))
}

/// A peer id as the transport's handshake carries it.
pub(crate) fn node_from_wire(id: u64) -> Option<NodeId> {
    u32::try_from(id).ok().map(NodeId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_buffer() {
        let a = Bytes::copy_from(b"abc");
        let b = a.clone();
        assert_eq!(a.as_slice().as_ptr(), b.as_slice().as_ptr());
        assert_eq!(&*b, b"abc");
    }
}
