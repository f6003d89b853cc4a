//! What a submission is: the operation kinds and how a kind, an aux value
//! and a connection index pack into an SQE's user_data.

/// The operation an SQE starts, carried back in its CQE's user_data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Op {
    /// Multishot accept on a listener (aux: listener index).
    Accept = 1,
    /// Outgoing connect.
    Connect = 2,
    /// Multishot receive into the connection's buffer ring.
    Recv = 3,
    /// Copying send (SEND or SENDMSG).
    Send = 4,
    /// SEND_ZC (aux: slot of the buffer held until the notification).
    SendZc = 5,
    /// Read of the unpark eventfd.
    Wake = 6,
    /// Cancel of one connection's operations.
    Cancel = 7,
    /// Cancel of everything, at drop.
    CancelAll = 8,
    /// SHUTDOWN(SHUT_WR) of a lingering close.
    Shutdown = 9,
}

impl Op {
    /// The operation a user_data's kind byte names, if any.
    #[inline]
    pub(super) fn from_kind(kind: u8) -> Option<Op> {
        Some(match kind {
            1 => Op::Accept,
            2 => Op::Connect,
            3 => Op::Recv,
            4 => Op::Send,
            5 => Op::SendZc,
            6 => Op::Wake,
            7 => Op::Cancel,
            8 => Op::CancelAll,
            9 => Op::Shutdown,
            _ => return None,
        })
    }
}

// user_data layout: kind (8 bits) | aux (24 bits) | connection index (32 bits).
#[inline]
pub(super) fn ud(op: Op, aux: u32, index: u32) -> u64 {
    ((op as u64) << 56) | (((aux & 0xff_ffff) as u64) << 32) | index as u64
}

/// (kind, aux, connection index) of a user_data; [`Op::from_kind`] reads the kind.
#[inline]
pub(super) fn ud_split(u: u64) -> (u8, u32, u32) {
    ((u >> 56) as u8, ((u >> 32) & 0xff_ffff) as u32, u as u32)
}

/// The OS error of a negative CQE result.
pub(super) fn os_err(res: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(-res)
}
