//! concord-transport: TCP connections driven by io_uring, with zero-copy
//! framing, bounded per-peer send queues and a versioned handshake.
//!
//! # The model
//!
//! One [`Driver`] per shard (thread). It owns one io_uring, its buffer pools
//! and its sockets, and is `!Send`: everything it hands out (a
//! [`RecvFrame`], a [`SendBuf`]) uses shard-local reference counts. The
//! runtime's duty loop calls [`Driver::poll`] (non-blocking: flush queued
//! sends in one submission, reap completions, dispatch [`Event`]s) and, when
//! idle for a while, [`Driver::park`]; another thread wakes a parked driver
//! with an [`Unparker`].
//!
//! - **Ring setup.** `COOP_TASKRUN | TASKRUN_FLAG`: completions are reaped by
//!   spinning in user space on the CQ, and the kernel is entered only to
//!   submit or when the SQ ring's `IORING_SQ_TASKRUN` flag says task work is
//!   pending. On this 2-core VM that is what gets within ~1.2x of a
//!   busy-polled socket: cross-core wake-ups (IPIs) are what cost.
//! - **Receive.** Each connection has a multishot recv over its own
//!   provided-buffer ring in incremental mode, so the kernel appends to one
//!   large buffer until it is full and frames are parsed in place where they
//!   landed. A frame is handed out as a [`RecvFrame`] borrowing the buffer;
//!   only a frame straddling two buffers is copied (counted in [`Stats`]).
//!   A `RecvFrame` is a refcounted view: cloning or slicing it bumps a
//!   shard-local count (so it is `!Send`), and copies out are explicit
//!   ([`RecvFrame::to_vec`], [`RecvFrame::detach`]) and counted.
//! - **Send.** Small frames are written (or claimed and filled in place,
//!   [`Driver::claim`]) into per-connection staging chunks and batched: one
//!   send per connection in flight, covering everything queued (several
//!   chunks and pooled buffers gathered into one SENDMSG), all connections'
//!   sends in one `io_uring_enter`. A
//!   [`SendBuf`] is filled once and sent to many peers; above
//!   [`DriverConfig::zc_threshold`] it goes out with `SEND_ZC` and is held
//!   until the kernel's notification.
//! - **Bounds.** Each peer's queue is bounded (chunks and items); a full queue
//!   answers [`SendOutcome::BackPressured`] and later [`Event::Writable`].
//!   When the application's frames hold every receive buffer of a
//!   connection, the driver stops reading it and says so
//!   ([`Event::RecvPressure`], then [`Event::RecvResumed`] once frames drop):
//!   TCP back-pressures the peer, and memory stays bounded both ways.
//!   [`DriverConfig::recv_buf_count_for`] sizes the ring for what the
//!   application holds.
//! - **Bad input** (wrong magic, wire version, length, checksum, or a control
//!   archive failing bytecheck validation) closes only that connection with a
//!   typed [`CloseReason`], logged at `warn`. Nothing the network sends can panic
//!   the driver.
//! - **Close** ([`Driver::close`]) is graceful: sends are refused from the
//!   call on ([`SendError::Closed`]), everything already queued is flushed (SEND_ZC
//!   buffers until their notification), the write side is shut down, and
//!   `Disconnected { reason: Closed }` comes once the peer has read it all and
//!   closed, or [`CloseReason::LingerTimeout`] after [`DriverConfig::close_linger`].
//!   Dropping the driver is abortive (connections are reset).
//!
//! # Example
//!
//! ```no_run
//! use concord_transport::{Driver, DriverConfig, Event, SendOutcome};
//!
//! let mut server = Driver::new(DriverConfig { node_id: 1, ..DriverConfig::default() })?;
//! let addr = server.listen("127.0.0.1:0".parse().unwrap())?;
//! let mut client = Driver::new(DriverConfig { node_id: 2, ..DriverConfig::default() })?;
//! let conn = client.connect(addr)?;
//! let mut connected = false;
//! while !connected {
//!     server.poll(&mut |_, _| {});
//!     client.poll(&mut |_, ev| connected |= matches!(ev, Event::Connected { .. }));
//! }
//! assert_eq!(client.send(conn, b"hello")?, SendOutcome::Queued);
//! let mut got = None;
//! while got.is_none() {
//!     client.poll(&mut |_, _| {});
//!     server.poll(&mut |_, ev| {
//!         if let Event::Frame { frame, .. } = ev {
//!             got = Some(frame.to_vec()); // or keep `frame`: no copy needed
//!         }
//!     });
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::SocketAddr;
use std::time::Duration;

mod driver;
mod error;
pub mod frame;
mod recv_buf;
mod send_buf;
mod sys;

pub use driver::{Claim, Claimed, Driver, Unparker};
pub use error::{CloseReason, SendError, SetupError};
pub use frame::{FrameError, HandshakeError};
pub use recv_buf::RecvFrame;
pub use send_buf::SendBuf;

/// A closed range of protocol versions a node supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionRange {
    /// Lowest supported version.
    pub min: u16,
    /// Highest supported version.
    pub max: u16,
}

impl VersionRange {
    /// The highest version both ranges contain, if any.
    pub fn highest_common(&self, other: &VersionRange) -> Option<u16> {
        let hi = self.max.min(other.max);
        let lo = self.min.max(other.min);
        (lo <= hi).then_some(hi)
    }
}

impl std::fmt::Display for VersionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {}]", self.min, self.max)
    }
}

/// Identifies one connection of one [`Driver`]. An outgoing connection keeps
/// its id across reconnects; an accepted one gets a new id each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}.{}", self.index, self.generation)
    }
}

/// What the peer said about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Peer's socket address.
    pub addr: SocketAddr,
    /// Peer's node id.
    pub node_id: u64,
    /// Peer's incarnation ([`DriverConfig::incarnation`]): a higher one than
    /// before from the same `node_id` means the node restarted.
    pub incarnation: u64,
    /// Peer's cluster id (equal to ours, or the handshake fails).
    pub cluster_id: u64,
    /// Protocol versions the peer supports.
    pub protocol: VersionRange,
    /// Highest version both sides support.
    pub negotiated: u16,
    /// Peer's build string.
    pub build: String,
}

/// Result of queueing a send. Back-pressure is an outcome, not an error: the
/// caller keeps the data and retries after [`Event::Writable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a BackPressured send was not queued"]
pub enum SendOutcome {
    /// The frame is queued and will go out on the next poll.
    Queued,
    /// The peer's queue is full; nothing was queued.
    BackPressured,
}

/// Something that happened on a connection, delivered by [`Driver::poll`].
#[derive(Debug)]
pub enum Event {
    /// The handshake completed; the connection can send and receive.
    Connected {
        /// The connection.
        conn: ConnId,
        /// Who is on the other end.
        peer: PeerInfo,
    },
    /// A payload frame arrived. Dropping `frame` returns its buffer.
    Frame {
        /// The connection.
        conn: ConnId,
        /// The payload, borrowed from the receive buffer.
        frame: RecvFrame,
    },
    /// A connection that had reported `Connected` is gone. Outgoing
    /// connections then reconnect with backoff (same `ConnId`) unless closed
    /// with [`Driver::close`]. For a `close`d connection this comes only once
    /// the close completed (reason [`CloseReason::Closed`]) or failed (any
    /// other reason, e.g. [`CloseReason::LingerTimeout`]).
    Disconnected {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// A connection failed before its handshake completed (garbage, wrong
    /// cluster, no common version, timeout). Outgoing connections retry.
    HandshakeFailed {
        /// The connection.
        conn: ConnId,
        /// The peer's address.
        addr: SocketAddr,
        /// Why.
        reason: CloseReason,
    },
    /// A connection that answered `BackPressured` has room again: its own
    /// queue drained, or (when the shared send pool was what refused it) a
    /// pooled buffer came back.
    Writable {
        /// The connection.
        conn: ConnId,
    },
    /// The send pool, which refused a [`Driver::alloc_buf`], has a buffer
    /// back: allocating may succeed again.
    PoolWritable,
    /// The application's frames hold every receive buffer of this
    /// connection, so the driver stopped reading from it: the peer's data
    /// waits in the kernel's socket buffers, TCP back-pressures the peer, and
    /// its sends end up `BackPressured`. Nothing is lost. Reading resumes by
    /// itself, with [`Event::RecvResumed`], once frames are dropped (or
    /// [`detach`](RecvFrame::detach)ed); a connection that ends while paused
    /// reports `Disconnected` instead.
    RecvPressure {
        /// The connection.
        conn: ConnId,
        /// Receive buffers the application's frames hold on it.
        held_buffers: u32,
        /// Bytes landed in those buffers.
        held_bytes: u64,
    },
    /// A connection paused by [`Event::RecvPressure`] reads again.
    RecvResumed {
        /// The connection.
        conn: ConnId,
    },
}

/// Receive memory that frames hold on one connection ([`Driver::recv_held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecvHeld {
    /// Receive buffers frames keep out of the connection's ring (the kernel
    /// filled them; the last view into each returns it).
    pub buffers: u32,
    /// Bytes the kernel landed in those buffers.
    pub bytes: u64,
    /// The connection is paused ([`Event::RecvPressure`]): every buffer is held.
    pub paused: bool,
}

/// Driver settings. `Default` suits a small cluster on one host.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Our node id, sent in the handshake.
    pub node_id: u64,
    /// Which life of this node, sent in the handshake: must grow with every
    /// restart of `node_id` (a persisted counter or a boot timestamp; the
    /// membership `Config::incarnation`). Peers see it in
    /// [`PeerInfo::incarnation`].
    pub incarnation: u64,
    /// Cluster id; peers with another id are refused.
    pub cluster_id: u64,
    /// Protocol versions we support.
    pub protocol: VersionRange,
    /// Our build string (at most 64 bytes).
    pub build: String,
    /// Submission queue entries (the completion queue gets 4x).
    pub ring_entries: u32,
    /// Size of each receive buffer. Frames straddling two buffers are copied,
    /// so a buffer several times the typical frame keeps copies rare. The
    /// driver also keeps one reassembly buffer of this size (capped at
    /// `max_frame_len`) per concurrently live connection, so that copy never
    /// allocates; only frames larger than a receive buffer grow one, once.
    pub recv_buf_size: u32,
    /// Receive buffers per connection (a power of two).
    pub recv_buf_count: u16,
    /// Size of each per-connection staging chunk where small frames are
    /// batched; a frame larger than a chunk goes through a pooled buffer.
    pub send_chunk_size: usize,
    /// Staging chunks per connection: with `send_chunk_size`, the byte bound
    /// of a peer's queue of small frames.
    pub send_chunks: usize,
    /// Queued sends per connection (batched small frames count as one while
    /// they share a chunk; each [`SendBuf`] send counts one).
    pub send_queue_items: usize,
    /// Total bytes of pooled [`SendBuf`]s the driver may allocate.
    pub send_pool_bytes: usize,
    /// Frames at least this long (header included) sent from a [`SendBuf`]
    /// use SEND_ZC. `usize::MAX` disables zero-copy send. The default (8 MiB)
    /// is measured for loopback and veth, where the kernel copies zero-copy
    /// pages on local delivery anyway: there SEND_ZC streamed at 0.54-0.88x
    /// of copying sends for 16 KiB to 4 MiB frames (`cargo run --release -p
    /// concord-bench --example zc_threshold`). On a real NIC measure again;
    /// it usually pays from a few tens of KiB.
    pub zc_threshold: usize,
    /// Whether payload frames we send carry a checksum over the payload
    /// (control frames always do, and the header always is). Off by default:
    /// crc32c costs ~1.3 us per 4 KiB here, TCP checksums segments, and the
    /// header checksum already keeps a corrupt length from misframing.
    pub checksum_payloads: bool,
    /// Largest payload accepted, both ways.
    pub max_frame_len: u32,
    /// First reconnect delay.
    pub connect_backoff_initial: Duration,
    /// Reconnect delay cap (the delay doubles up to this).
    pub connect_backoff_max: Duration,
    /// Time a new connection has to complete the handshake.
    pub handshake_timeout: Duration,
    /// Kernel keepalive / user timeout for dead-peer detection; `None` off.
    pub keepalive: Option<Duration>,
    /// listen(2) backlog.
    pub listen_backlog: i32,
    /// How long a [`Driver::close`] may take to flush the queue and see the
    /// peer close before the connection is reset and reported with
    /// [`CloseReason::LingerTimeout`].
    pub close_linger: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            node_id: 0,
            incarnation: 0,
            cluster_id: 0,
            protocol: VersionRange { min: 1, max: 1 },
            build: concat!("concord-transport ", env!("CARGO_PKG_VERSION")).to_string(),
            ring_entries: 256,
            recv_buf_size: 1 << 20,
            recv_buf_count: 4,
            send_chunk_size: 256 << 10,
            send_chunks: 4,
            send_queue_items: 256,
            send_pool_bytes: 64 << 20,
            zc_threshold: 8 << 20,
            checksum_payloads: false,
            max_frame_len: 16 << 20,
            connect_backoff_initial: Duration::from_millis(10),
            connect_backoff_max: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(5),
            keepalive: Some(Duration::from_secs(10)),
            listen_backlog: 128,
            close_linger: Duration::from_secs(10),
        }
    }
}

impl DriverConfig {
    /// Checks ranges; [`Driver::new`] calls it.
    pub fn validate(&self) -> Result<(), SetupError> {
        let bad = |what| Err(SetupError::Config { what });
        if self.protocol.min > self.protocol.max {
            return bad("protocol.min > protocol.max");
        }
        if self.build.len() > frame::MAX_BUILD_LEN {
            return bad("build string longer than 64 bytes");
        }
        if !self.ring_entries.is_power_of_two() || !(8..=32768).contains(&self.ring_entries) {
            return bad("ring_entries must be a power of two in 8..=32768");
        }
        if !self.recv_buf_count.is_power_of_two() || self.recv_buf_count > 32768 {
            return bad("recv_buf_count must be a power of two <= 32768");
        }
        if self.recv_buf_size < 4096 || self.recv_buf_size > (1 << 30) {
            return bad("recv_buf_size must be in 4 KiB..=1 GiB");
        }
        if self.send_chunk_size < 4096 || self.send_chunk_size > (1 << 30) {
            return bad("send_chunk_size must be in 4 KiB..=1 GiB");
        }
        if self.send_chunks == 0 || self.send_chunks > 255 {
            return bad("send_chunks must be in 1..=255");
        }
        if self.send_queue_items == 0 {
            return bad("send_queue_items must be at least 1");
        }
        if self.max_frame_len as u64 > (1 << 30) {
            return bad("max_frame_len must be at most 1 GiB");
        }
        if self.connect_backoff_initial.is_zero()
            || self.connect_backoff_max < self.connect_backoff_initial
        {
            return bad("connect backoff must be non-zero with max >= initial");
        }
        if self.close_linger.is_zero() {
            return bad("close_linger must be non-zero");
        }
        Ok(())
    }

    /// The receive buffers per connection ([`recv_buf_count`](Self::recv_buf_count))
    /// that let the application hold `held_bytes` of one peer's traffic
    /// without pausing that connection: frames are released roughly in the
    /// order they arrived (a peer's messages become stable in order), so
    /// what they pin is a span of the stream. It covers `held_bytes` (count
    /// the traffic interleaved with the held payloads, e.g. order records
    /// and acks, too), plus the partly released buffer at its old end and
    /// the one the kernel is filling. Rounded up to a power of two; `None`
    /// past 32768 buffers (use larger buffers).
    ///
    /// For a membership node: `held_bytes` = groups x `Config::window`
    /// (unstable messages per sender) x (largest payload + its framing).
    pub fn recv_buf_count_for(&self, held_bytes: u64) -> Option<u16> {
        let n = held_bytes.div_ceil(self.recv_buf_size as u64) + 2;
        let n = n.checked_next_power_of_two()?;
        (n <= 32768).then_some(n as u16)
    }

    /// Memory the kernel pins per connection (the buffer ring itself; the
    /// buffers are ordinary memory) plus slack for the rings' own pages.
    fn memlock_needed(&self) -> u64 {
        let ring = (self.recv_buf_count as u64 * 16).next_multiple_of(4096);
        ring * 64 + (1 << 20)
    }
}

/// Counters, read with [`Driver::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Payload and control frames queued for sending.
    pub frames_sent: u64,
    /// Bytes handed to the kernel (headers included).
    pub bytes_sent: u64,
    /// Frames received and verified.
    pub frames_received: u64,
    /// Bytes received (headers included).
    pub bytes_received: u64,
    /// Send operations submitted.
    pub send_ops: u64,
    /// SEND_ZC operations submitted.
    pub zc_sends: u64,
    /// Send operations that gathered several queue items (staging chunks,
    /// pooled buffers) into one SENDMSG.
    pub gathered_sends: u64,
    /// Send completions that covered fewer bytes than were submitted (the
    /// rest is resubmitted). Copying sends carry `MSG_WAITALL`, so the kernel
    /// finishes a send that filled the socket buffer itself once room frees
    /// up; only an error part-way (or a SEND_ZC) ends one short.
    pub short_sends: u64,
    /// SEND_ZC notifications received (the kernel released the pages).
    pub zc_notifications: u64,
    /// Sends answered with `BackPressured`, and `alloc_buf` calls refused at
    /// the pool's cap.
    pub back_pressured: u64,
    /// Payload frames a peer sent after its own Goodbye (or after its
    /// refused handshake): a protocol violation, dropped and logged.
    pub frames_after_goodbye: u64,
    /// Frames refused as bad (each closes its connection).
    pub bad_frames: u64,
    /// Frames that straddled receive buffers and were copied.
    pub straddled_frames: u64,
    /// Bytes copied for them.
    pub straddled_bytes: u64,
    /// Control archives copied to an aligned scratch before validation.
    pub misaligned_archives: u64,
    /// Times a connection's multishot receive ended for want of a buffer
    /// (the kernel outran the parser, or frames held every buffer).
    pub recv_starved: u64,
    /// Times a connection paused because frames held every one of its
    /// receive buffers (each reported with [`Event::RecvPressure`]).
    pub recv_paused: u64,
    /// Times a paused connection resumed ([`Event::RecvResumed`]).
    pub recv_resumed: u64,
    /// Now (a gauge): receive buffers that frames hold, all connections.
    pub held_recv_buffers: u64,
    /// Now (a gauge): bytes landed in those buffers.
    pub held_recv_bytes: u64,
    /// Now (a gauge): reassembly bytes held by frames that straddled buffers.
    pub held_assembly_bytes: u64,
    /// Multishot receives (re)armed.
    pub recv_arms: u64,
    /// Receive completions that carried bytes (`bytes_received` over this is
    /// the mean bytes the kernel landed per completion).
    pub recv_completions: u64,
    /// Polls that read the clock because a timer (reconnect backoff,
    /// handshake deadline) was pending; 0 per poll in steady state.
    pub clock_reads: u64,
    /// Connect attempts started.
    pub connect_attempts: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Connections closed after having been announced.
    pub disconnects: u64,
    /// Pooled send buffers allocated (not reused).
    pub pool_allocations: u64,
    /// Frames copied out of the receive buffers by [`RecvFrame::to_vec`] or
    /// [`RecvFrame::detach`] (the only copies of a received payload besides
    /// straddling frames).
    pub copied_out_frames: u64,
    /// Bytes copied by them.
    pub copied_out_bytes: u64,
    /// Reassembly buffers allocated or grown (0 while straddling frames fit
    /// a receive buffer: those are preallocated per connection).
    pub assembly_allocations: u64,
}

/// Checks that io_uring works with the operations the driver uses and that
/// the memlock limit suffices; the error says how to fix what is missing.
pub fn check_environment(cfg: &DriverConfig) -> Result<(), SetupError> {
    cfg.validate()?;
    driver::probe_ring()?;
    let limit = sys::memlock_limit().map_err(|source| SetupError::Io {
        op: "getrlimit",
        source,
    })?;
    let needed = cfg.memlock_needed();
    if limit != libc::RLIM_INFINITY && limit < needed {
        return Err(SetupError::MemLock { needed, limit });
    }
    Ok(())
}
