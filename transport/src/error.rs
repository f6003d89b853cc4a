//! The errors, one type per kind of operation: [`SetupError`] for creating
//! and setting up a [`Driver`](crate::Driver), [`SendError`] for what a send
//! (or a close) refuses, and [`CloseReason`] for why a connection ended.

use std::io;
use std::time::Duration;

use crate::ConnId;
use crate::frame::{FrameError, HandshakeError};

/// Why the driver could not be created or set up, or its ring failed:
/// returned by [`Driver::new`](crate::Driver::new),
/// [`listen`](crate::Driver::listen), [`connect`](crate::Driver::connect),
/// [`park`](crate::Driver::park), [`DriverConfig::validate`](crate::DriverConfig::validate)
/// and [`check_environment`](crate::check_environment). The operator fixes
/// these; the message says how where it can.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Creating the io_uring failed ([`Driver::new`](crate::Driver::new), the
    /// environment check).
    #[error(
        "io_uring setup failed: {source} (is io_uring enabled? check /proc/sys/kernel/io_uring_disabled)"
    )]
    RingSetup {
        /// The OS error.
        source: io::Error,
    },
    /// A required io_uring operation or feature is missing.
    #[error("io_uring {what} is not supported by this kernel (need Linux 6.12 or later)")]
    Unsupported {
        /// The missing operation or feature.
        what: &'static str,
    },
    /// RLIMIT_MEMLOCK is below what the configuration needs (the environment
    /// check).
    #[error(
        "memlock limit {limit} bytes is below the {needed} bytes needed; \
         run `ulimit -l unlimited` (or set LimitMEMLOCK= for the service) or shrink the config"
    )]
    MemLock {
        /// Bytes needed.
        needed: u64,
        /// Current soft limit.
        limit: u64,
    },
    /// A configuration value is out of range
    /// ([`DriverConfig::validate`](crate::DriverConfig::validate)).
    #[error("invalid config: {what}")]
    Config {
        /// Which value and why.
        what: &'static str,
    },
    /// An OS call on the driver's own resources failed: the eventfd, a
    /// listening socket, the ring probe, getrlimit, or entering the ring to
    /// park.
    #[error("{op} failed: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// Why [`Driver::send`](crate::Driver::send),
/// [`claim`](crate::Driver::claim), [`send_buf`](crate::Driver::send_buf)
/// or [`close`](crate::Driver::close) refused. Nothing was queued. A full
/// queue is not an error but [`SendOutcome::BackPressured`](crate::SendOutcome).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No such connection (closed and forgotten, or another driver's id).
    /// The only error of `close`.
    #[error("unknown connection {conn}")]
    UnknownConn {
        /// The id.
        conn: ConnId,
    },
    /// The connection exists but is not open (connecting, handshaking,
    /// closing or backing off before a reconnect). Retry after `Connected`.
    #[error("connection {conn} is not open")]
    NotConnected {
        /// The id.
        conn: ConnId,
    },
    /// We closed it ([`Driver::close`](crate::Driver::close)): sends are
    /// refused from the `close` call on.
    #[error("closed locally")]
    Closed,
    /// The payload is larger than the configured maximum frame (for
    /// [`claim`](crate::Driver::claim): than a staging chunk holds; for a
    /// [`send`](crate::Driver::send) through the send pool: than the largest
    /// buffer the pool's cap admits).
    #[error("payload of {len} bytes exceeds the maximum frame payload of {max}")]
    FrameTooLarge {
        /// Payload length.
        len: usize,
        /// Maximum.
        max: usize,
    },
}

impl SendError {
    /// Whether retrying later can succeed (the connection may come back), as
    /// opposed to a programming error or a connection that is gone for good.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SendError::NotConnected { .. })
    }
}

/// Why a connection ended: the reason of
/// [`Event::Disconnected`](crate::Event::Disconnected) and
/// [`Event::HandshakeFailed`](crate::Event::HandshakeFailed).
#[derive(Debug, thiserror::Error)]
pub enum CloseReason {
    /// The peer closed the connection (EOF) without saying goodbye.
    #[error("peer closed the connection")]
    PeerClosed,
    /// The peer said goodbye; the queue was flushed, then the connection
    /// closed.
    #[error("peer said goodbye (code {code})")]
    PeerGoodbye {
        /// The peer's code.
        code: u32,
    },
    /// We closed it ([`Driver::close`](crate::Driver::close)): every queued
    /// frame reached the peer, which then closed its side. For a connection
    /// closed before its handshake completed, the reason of its
    /// `HandshakeFailed`.
    #[error("closed locally")]
    Closed,
    /// A [`Driver::close`](crate::Driver::close) did not complete within
    /// [`DriverConfig::close_linger`](crate::DriverConfig::close_linger) (the
    /// peer stopped reading or never closed its side); the connection was
    /// reset and frames still queued may be lost.
    #[error("close did not complete within the linger time of {linger:?}; connection reset")]
    LingerTimeout {
        /// The configured linger time.
        linger: Duration,
    },
    /// The peer sent a bad frame after the handshake.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The handshake failed (a bad frame during it, a wrong cluster, no
    /// common version, a timeout, the peer's Reject).
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// A valid control message that makes no sense after the handshake.
    #[error("unexpected control message {got} after the handshake")]
    UnexpectedControl {
        /// Which message.
        got: &'static str,
    },
    /// An OS call on the connection's socket failed (send, recv, shutdown,
    /// registering its buffer ring).
    #[error("{op} failed: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A driver limit stopped the connection's setup: more than 65535 live
    /// connections (one buffer group id each).
    #[error("invalid config: {what}")]
    Config {
        /// Which limit.
        what: &'static str,
    },
}
