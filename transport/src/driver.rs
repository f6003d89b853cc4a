//! The [`Driver`]: one io_uring, its connections, their buffers.

use std::alloc::{Layout, alloc, dealloc};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use rkyv::util::AlignedVec;

use crate::frame::{
    self, ARCHIVE_ALIGN, Control, FrameError, FrameKind, HEADER_LEN, HandshakeError, Header,
};
use crate::recv_buf::{AssemblyPool, RecvFrame, RecvRing};
use crate::send_buf::{BufRef, SendBuf, SendPool};
use crate::sys::{self, RawAddr};
use crate::{ConnId, DriverConfig, Error, Event, PeerInfo, SendOutcome, Stats, VersionRange};

/// `IOU_PBUF_RING_INC` (kernel 6.12+): the kernel consumes a provided buffer
/// incrementally, so successive receives append to the same buffer. The
/// io-uring crate does not export its `sys` constants.
const IOU_PBUF_RING_INC: u16 = 2;

// user_data layout: kind (8 bits) | aux (24 bits) | connection index (32 bits).
const K_ACCEPT: u8 = 1;
const K_CONNECT: u8 = 2;
const K_RECV: u8 = 3;
const K_SEND: u8 = 4;
const K_SEND_ZC: u8 = 5;
const K_WAKE: u8 = 6;
const K_CANCEL: u8 = 7;
const K_CANCEL_ALL: u8 = 8;
const K_SHUTDOWN: u8 = 9;

fn ud(kind: u8, aux: u32, index: u32) -> u64 {
    ((kind as u64) << 56) | (((aux & 0xff_ffff) as u64) << 32) | index as u64
}

fn ud_split(u: u64) -> (u8, u32, u32) {
    ((u >> 56) as u8, ((u >> 32) & 0xff_ffff) as u32, u as u32)
}

fn os_err(res: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(-res)
}

/// Creates a throwaway ring and checks the operations we rely on.
pub(crate) fn probe_ring() -> Result<(), Error> {
    let ring: IoUring = IoUring::builder()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(8)
        .map_err(|source| Error::RingSetup { source })?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|source| Error::Io {
            op: "io_uring probe",
            source,
        })?;
    for (code, what) in [
        (opcode::RecvMulti::CODE, "RECV (multishot)"),
        (opcode::Send::CODE, "SEND"),
        (opcode::SendZc::CODE, "SEND_ZC"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::AcceptMulti::CODE, "ACCEPT (multishot)"),
        (opcode::Connect::CODE, "CONNECT"),
        (opcode::AsyncCancel2::CODE, "ASYNC_CANCEL"),
        (opcode::Shutdown::CODE, "SHUTDOWN"),
        (opcode::Read::CODE, "READ"),
    ] {
        if !probe.is_supported(code) {
            return Err(Error::Unsupported { what });
        }
    }
    if !ring.params().is_feature_ext_arg() {
        return Err(Error::Unsupported {
            what: "EXT_ARG (timed waits)",
        });
    }
    // Provided-buffer rings with incremental consumption.
    let r = RecvRing::new(0, 4096, 1);
    // SAFETY: the ring memory lives in `r`, which outlives the registration
    // (unregistered just below, before `r` drops).
    let reg = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(r.ring_addr(), 1, 0, IOU_PBUF_RING_INC)
    };
    match reg {
        Ok(()) => {
            let _ = ring.submitter().unregister_buf_ring(0);
            Ok(())
        }
        Err(_) => Err(Error::Unsupported {
            what: "provided buffer rings (IOU_PBUF_RING_INC)",
        }),
    }
}

const IDLE: u8 = 0;
const PARKED: u8 = 1;
const NOTIFIED: u8 = 2;

#[derive(Debug)]
struct UnparkInner {
    state: AtomicU8,
    efd: RawFd,
}

impl Drop for UnparkInner {
    fn drop(&mut self) {
        sys::close(self.efd);
    }
}

/// Wakes a parked [`Driver`] from any thread. Cheap when the driver is not
/// parked: one atomic swap, no syscall.
#[derive(Debug, Clone)]
pub struct Unparker {
    inner: Arc<UnparkInner>,
}

impl Unparker {
    /// Makes the driver's current (or next) [`Driver::park`] return promptly.
    pub fn unpark(&self) {
        if self.inner.state.swap(NOTIFIED, Ordering::AcqRel) == PARKED {
            sys::eventfd_write(self.inner.efd);
        }
    }
}

/// A staging chunk: raw memory the kernel reads during a send while we
/// append further frames after it (disjoint ranges).
struct Chunk {
    ptr: NonNull<u8>,
    cap: usize,
    wpos: usize,
    /// Queue items that reference this chunk.
    pending: u32,
}

impl Chunk {
    fn new(cap: usize) -> Chunk {
        let layout = Layout::from_size_align(cap, 64).expect("validated size");
        // SAFETY: cap >= 4096 (validated).
        let ptr = NonNull::new(unsafe { alloc(layout) })
            .unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Chunk {
            ptr,
            cap,
            wpos: 0,
            pending: 0,
        }
    }

    /// # Safety
    /// `[off, off + len)` must be within `cap` and not under a send in flight.
    unsafe fn slice_mut(&mut self, off: usize, len: usize) -> &mut [u8] {
        debug_assert!(off + len <= self.cap);
        // SAFETY: per the contract; the memory is ours and the range is one
        // the kernel is not reading.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(off), len) }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; connections drop their
        // chunks only when no send is in flight (or the driver leaks them).
        unsafe {
            dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.cap, 64),
            )
        };
    }
}

enum Item {
    Staged { chunk: u8, start: u32, end: u32 },
    Pooled { buf: BufRef, len: u32 },
}

/// `MSG_WAITALL` on copying sends: io_uring then keeps a send that filled
/// the socket buffer armed and finishes it in the kernel (io_net_retry),
/// instead of completing it short and having us resubmit the rest.
const SEND_WAITALL: i32 = libc::MSG_WAITALL;

/// Most queue items one gathered send (SENDMSG) covers.
const MAX_IOV: usize = 64;
/// Most bytes one gathered send covers (a CQE's result is an i32).
const MAX_GATHER: usize = 1 << 30;

/// The iovec array and message header of a connection's gathered send. One
/// send is in flight per connection at a time, so one of each suffices; boxed
/// so the kernel sees stable addresses while the connection table grows.
struct Gather {
    iov: [libc::iovec; MAX_IOV],
    msg: libc::msghdr,
}

impl Gather {
    fn new() -> Box<Gather> {
        // SAFETY: iovec and msghdr are plain C structs (pointers and
        // integers); all-zero is a valid value of each.
        Box::new(unsafe { std::mem::zeroed() })
    }
}

struct SendState {
    chunks: Vec<Chunk>,
    free: Vec<u8>,
    fill: Option<u8>,
    queue: VecDeque<Item>,
    /// Bytes of the head item already sent.
    head_sent: u32,
    in_flight: bool,
    /// Bytes the send in flight was submitted with (to count short sends).
    in_flight_len: u32,
    want_writable: bool,
    in_flush_list: bool,
    gather: Box<Gather>,
}

impl Default for SendState {
    fn default() -> Self {
        SendState {
            chunks: Vec::new(),
            free: Vec::new(),
            fill: None,
            queue: VecDeque::new(),
            head_sent: 0,
            in_flight: false,
            in_flight_len: 0,
            want_writable: false,
            in_flush_list: false,
            gather: Gather::new(),
        }
    }
}

impl SendState {
    fn reset(&mut self) {
        self.queue.clear();
        self.head_sent = 0;
        self.fill = None;
        self.free.clear();
        for (i, c) in self.chunks.iter_mut().enumerate() {
            c.wpos = 0;
            c.pending = 0;
            self.free.push(i as u8);
        }
    }
}

struct Assembly {
    slot: u32,
    header: Option<Header>,
}

struct RecvState {
    ring: Rc<RecvRing>,
    registered: bool,
    /// Buffer the kernel is still appending to (holds a reference).
    cur: Option<u16>,
    parse_off: u32,
    asm: Option<Assembly>,
    armed: bool,
    starved: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Handshaking {
        deadline: Instant,
    },
    Open,
    /// Closing once the queue has flushed (reason already reported).
    Draining,
    /// Socket shut down; waiting for in-flight operations.
    Closing,
    /// Outgoing only: waiting to reconnect.
    Backoff {
        until: Instant,
    },
}

struct Conn {
    id: ConnId,
    fd: RawFd,
    state: State,
    /// `Some` for connections we initiate (kept across reconnects).
    target: Option<Box<RawAddr>>,
    addr: SocketAddr,
    backoff: Duration,
    app_closed: bool,
    announced: bool,
    reported: bool,
    abortive: bool,
    /// `Some(deadline)` while a [`Driver::close`] lingers: the queue drains,
    /// then the write side shuts down, then the peer's EOF completes it.
    linger_until: Option<Instant>,
    /// The SHUTDOWN(SHUT_WR) of a lingering close was submitted / completed.
    wr_shut_sent: bool,
    wr_shut_done: bool,
    /// The peer's EOF arrived while lingering.
    peer_eof: bool,
    /// SEND_ZC buffers of this connection the kernel has not released yet.
    zc_pending: u32,
    /// Operations in flight that reference this connection's memory or fd.
    ops: u32,
    recv: Option<RecvState>,
    send: SendState,
    peer: Option<PeerInfo>,
}

struct Listener {
    fd: RawFd,
    addr: SocketAddr,
}

/// Owns one io_uring, its buffer pools and sockets. One per shard; `!Send`.
/// See the [crate docs](crate) for the model.
pub struct Driver {
    ring: IoUring,
    cfg: DriverConfig,
    conns: Vec<Option<Conn>>,
    generations: Vec<u32>,
    free_conns: Vec<u32>,
    listeners: Vec<Listener>,
    bgids: Vec<u16>,
    send_pool: Rc<SendPool>,
    asm_pool: Rc<AssemblyPool>,
    /// Reassembly slots preallocated (the most connections live at once).
    asm_preallocated: usize,
    /// SEND_ZC buffers awaiting their notification, with their connection.
    zc: Vec<Option<(BufRef, ConnId)>>,
    zc_free: Vec<u32>,
    flush: Vec<u32>,
    starved: Vec<u32>,
    cqes: Vec<cqueue::Entry>,
    scratch: AlignedVec<ARCHIVE_ALIGN>,
    unpark: Arc<UnparkInner>,
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// Every operation the kernel may still complete (drop waits for zero).
    ops: u64,
    next_deadline: Option<Instant>,
    /// Closes decided but not yet reported to the application.
    pending_reasons: Vec<(u32, ConnId, bool, SocketAddr, Error)>,
    shutting_down: bool,
    stats: Stats,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("node_id", &self.cfg.node_id)
            .field("conns", &self.conns.iter().filter(|c| c.is_some()).count())
            .field("listeners", &self.listeners.len())
            .field("ops_in_flight", &self.ops)
            .finish()
    }
}

/// Outcome of [`Driver::claim`].
#[derive(Debug)]
pub enum Claimed<'a> {
    /// Space reserved: fill [`Claim::payload_mut`], then [`Claim::commit`].
    Claim(Claim<'a>),
    /// The peer's queue is full.
    BackPressured,
}

/// Space reserved in a connection's staging chunk for one payload frame
/// (Aeron's `tryClaim`): the caller writes the payload in place, and
/// [`commit`](Claim::commit) writes the header and queues it. Dropping a
/// claim without committing abandons it.
pub struct Claim<'a> {
    driver: &'a mut Driver,
    index: u32,
    chunk: u8,
    off: usize,
    len: usize,
    extend: bool,
}

impl std::fmt::Debug for Claim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim").field("len", &self.len).finish()
    }
}

impl Claim<'_> {
    /// The payload to write.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let c = self.driver.conns[self.index as usize]
            .as_mut()
            .expect("claimed conn exists");
        let chunk = &mut c.send.chunks[self.chunk as usize];
        // SAFETY: the range [off, off + HEADER_LEN + len) was reserved beyond
        // the chunk's write position, which no queued send covers yet.
        unsafe { chunk.slice_mut(self.off + HEADER_LEN, self.len) }
    }

    /// Writes the header (checksum over the payload) and queues the frame.
    pub fn commit(self) {
        let Claim {
            driver,
            index,
            chunk,
            off,
            len,
            extend,
        } = self;
        driver.commit_staged(
            index,
            chunk,
            off,
            HEADER_LEN + len,
            extend,
            FrameKind::Payload,
        );
    }
}

enum Step {
    Frame(RecvFrame),
    Control(Control),
    NeedMore,
    Bad(FrameError),
}

impl Driver {
    /// Creates the ring (`COOP_TASKRUN | TASKRUN_FLAG`), the wake-up eventfd
    /// and the send pool.
    pub fn new(cfg: DriverConfig) -> Result<Driver, Error> {
        cfg.validate()?;
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(cfg.ring_entries * 4)
            .build(cfg.ring_entries)
            .map_err(|source| Error::RingSetup { source })?;
        if !ring.params().is_feature_ext_arg() {
            return Err(Error::Unsupported {
                what: "EXT_ARG (timed waits)",
            });
        }
        let efd = sys::eventfd().map_err(|source| Error::Io {
            op: "eventfd",
            source,
        })?;
        let unpark = Arc::new(UnparkInner {
            state: AtomicU8::new(IDLE),
            efd,
        });
        let mut d = Driver {
            ring,
            send_pool: Rc::new(SendPool::new(
                cfg.send_pool_bytes,
                cfg.max_frame_len as usize,
            )),
            asm_pool: Rc::new(AssemblyPool::default()),
            asm_preallocated: 0,
            conns: Vec::new(),
            generations: Vec::new(),
            free_conns: Vec::new(),
            listeners: Vec::new(),
            bgids: (0..u16::MAX).rev().collect(),
            zc: Vec::new(),
            zc_free: Vec::new(),
            flush: Vec::with_capacity(64),
            starved: Vec::with_capacity(64),
            cqes: Vec::with_capacity(cfg.ring_entries as usize * 4),
            scratch: AlignedVec::with_capacity(1024),
            unpark,
            wake_buf: Box::new(0),
            wake_armed: false,
            ops: 0,
            next_deadline: None,
            pending_reasons: Vec::new(),
            shutting_down: false,
            stats: Stats::default(),
            cfg,
            _not_send: PhantomData,
        };
        d.arm_wake();
        Ok(d)
    }

    /// The configuration in force.
    pub fn config(&self) -> &DriverConfig {
        &self.cfg
    }

    /// Counters since creation.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Who is on the other end of an open connection.
    pub fn peer(&self, conn: ConnId) -> Option<&PeerInfo> {
        self.conn_ref(conn).ok()?.peer.as_ref()
    }

    /// A handle that wakes this driver from [`park`](Driver::park).
    pub fn unparker(&self) -> Unparker {
        Unparker {
            inner: Arc::clone(&self.unpark),
        }
    }

    fn push_sqe(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: every entry we build points only at memory that stays
            // valid until its completion: connection chunks and recv rings
            // (kept until the connection's ops drain), pooled buffers (held by
            // a BufRef until completion/notification), the boxed connect
            // address and wake buffer (kept until the driver's ops drain).
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                self.ops += 1;
                return;
            }
            // SQ full: hand what we have to the kernel and retry.
            if let Err(err) = self.ring.submit() {
                if err.raw_os_error() != Some(libc::EBUSY)
                    && err.raw_os_error() != Some(libc::EINTR)
                {
                    tracing::error!(%err, "io_uring_enter failed while the SQ was full");
                }
                self.reap_raw_into_buffer();
            }
        }
    }

    /// Rare: the SQ is full and the kernel refuses more because the CQ is
    /// backed up. Pull CQEs into the local buffer so the kernel can proceed;
    /// they are dispatched by the next reap.
    fn reap_raw_into_buffer(&mut self) {
        let mut cq = self.ring.completion();
        for e in cq.by_ref() {
            self.cqes.push(e);
        }
    }

    fn arm_wake(&mut self) {
        let e = opcode::Read::new(
            types::Fd(self.unpark.efd),
            &mut *self.wake_buf as *mut u64 as *mut u8,
            8,
        )
        .build()
        .user_data(ud(K_WAKE, 0, 0));
        self.push_sqe(e);
        self.wake_armed = true;
    }

    // ---------------------------------------------------------------- setup

    /// Listens on `addr` (port 0 picks one) and returns the bound address.
    pub fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr, Error> {
        let (fd, bound) =
            sys::listen(addr, self.cfg.listen_backlog).map_err(|source| Error::Io {
                op: "listen",
                source,
            })?;
        let li = self.listeners.len() as u32;
        self.listeners.push(Listener { fd, addr: bound });
        self.arm_accept(li);
        self.submit();
        Ok(bound)
    }

    fn arm_accept(&mut self, li: u32) {
        let fd = self.listeners[li as usize].fd;
        let e = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ud(K_ACCEPT, li, 0));
        self.push_sqe(e);
    }

    /// Starts connecting to `addr` and returns at once. The driver retries
    /// with exponential backoff until the handshake completes
    /// ([`Event::Connected`]), and reconnects the same way whenever the
    /// connection breaks, until [`close`](Driver::close).
    pub fn connect(&mut self, addr: SocketAddr) -> Result<ConnId, Error> {
        let raw = Box::new(sys::to_raw(addr));
        let index = self.alloc_conn(addr, Some(raw));
        self.start_connect(index);
        self.submit();
        Ok(self.conns[index as usize]
            .as_ref()
            .expect("just allocated")
            .id)
    }

    fn alloc_conn(&mut self, addr: SocketAddr, target: Option<Box<RawAddr>>) -> u32 {
        let index = match self.free_conns.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.generations.push(0);
                (self.conns.len() - 1) as u32
            }
        };
        let generation = self.generations[index as usize];
        self.conns[index as usize] = Some(Conn {
            id: ConnId { index, generation },
            fd: -1,
            state: State::Connecting,
            target,
            addr,
            backoff: self.cfg.connect_backoff_initial,
            app_closed: false,
            announced: false,
            reported: false,
            abortive: false,
            linger_until: None,
            wr_shut_sent: false,
            wr_shut_done: false,
            peer_eof: false,
            zc_pending: 0,
            ops: 0,
            recv: None,
            send: SendState::default(),
            peer: None,
        });
        index
    }

    fn free_conn(&mut self, index: u32) {
        self.conns[index as usize] = None;
        self.generations[index as usize] = self.generations[index as usize].wrapping_add(1);
        self.free_conns.push(index);
    }

    fn start_connect(&mut self, index: u32) {
        self.stats.connect_attempts += 1;
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        c.reported = false;
        c.abortive = false;
        c.peer_eof = false;
        c.wr_shut_sent = false;
        c.wr_shut_done = false;
        c.zc_pending = 0;
        let addr = c.addr;
        let fd = match sys::tcp_socket(&addr) {
            Ok(fd) => fd,
            Err(err) => {
                tracing::warn!(%addr, %err, "socket() failed; backing off");
                self.enter_backoff(index);
                return;
            }
        };
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        c.fd = fd;
        c.state = State::Connecting;
        c.ops += 1;
        let raw = c.target.as_ref().expect("outgoing conn has a target");
        let e = opcode::Connect::new(
            types::Fd(fd),
            std::ptr::addr_of!(raw.storage).cast(),
            raw.len,
        )
        .build()
        .user_data(ud(K_CONNECT, 0, index));
        self.push_sqe(e);
    }

    fn enter_backoff(&mut self, index: u32) {
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        let until = Instant::now() + c.backoff;
        c.backoff = (c.backoff * 2).min(self.cfg.connect_backoff_max);
        c.state = State::Backoff { until };
        self.note_deadline(until);
    }

    /// The earliest deadline of any connection, from scratch (cold path: a
    /// handshake completed). [`poll`](Driver::poll) reads the clock only while
    /// some deadline is pending.
    fn recompute_deadline(&mut self) {
        self.next_deadline = None;
        for index in 0..self.conns.len() {
            let Some(c) = self.conns[index].as_ref() else {
                continue;
            };
            let at = match c.state {
                State::Backoff { until: at } | State::Handshaking { deadline: at } => Some(at),
                State::Draining => c.linger_until,
                _ => None,
            };
            if let Some(at) = at {
                self.note_deadline(at)
            }
        }
    }

    fn note_deadline(&mut self, at: Instant) {
        self.next_deadline = Some(self.next_deadline.map_or(at, |d| d.min(at)));
    }

    /// The socket is connected (either way): set it up and say Hello.
    fn established(&mut self, index: u32) {
        let keepalive = self.cfg.keepalive;
        let (buf_size, buf_count) = (self.cfg.recv_buf_size, self.cfg.recv_buf_count);
        let Some(bgid) = self.bgids.pop() else {
            self.abort(
                index,
                Error::Config {
                    what: "more than 65535 live connections",
                },
            );
            return;
        };
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        if let Err(err) = sys::set_nodelay(c.fd) {
            tracing::debug!(%err, "TCP_NODELAY failed");
        }
        if let Some(k) = keepalive
            && let Err(err) = sys::set_keepalive(c.fd, k)
        {
            tracing::debug!(%err, "keepalive setup failed");
        }
        let ring = Rc::new(RecvRing::new(bgid, buf_size, buf_count));
        // SAFETY: the ring memory is owned by `ring`, which the connection
        // keeps until after it unregisters the group (finish_close).
        let reg = unsafe {
            self.ring.submitter().register_buf_ring_with_flags(
                ring.ring_addr(),
                ring.entries(),
                bgid,
                IOU_PBUF_RING_INC,
            )
        };
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        c.recv = Some(RecvState {
            ring,
            registered: reg.is_ok(),
            cur: None,
            parse_off: 0,
            asm: None,
            armed: false,
            starved: false,
        });
        if let Err(source) = reg {
            self.abort(
                index,
                Error::Io {
                    op: "register provided buffer ring",
                    source,
                },
            );
            return;
        }
        // One reassembly buffer per concurrently live connection, sized for
        // the largest frame that fits a receive buffer: a frame straddling two
        // buffers is then copied without allocating, from the first one on.
        let live = self
            .conns
            .iter()
            .flatten()
            .filter(|c| c.recv.is_some())
            .count();
        if live > self.asm_preallocated {
            let cap = (buf_size as usize).min(self.cfg.max_frame_len as usize + HEADER_LEN);
            self.asm_pool.preallocate(cap);
            self.asm_preallocated += 1;
        }
        let deadline = Instant::now() + self.cfg.handshake_timeout;
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        c.state = State::Handshaking { deadline };
        self.note_deadline(deadline);
        self.arm_recv(index);
        let hello = Control::Hello(frame::Hello {
            node_id: self.cfg.node_id,
            cluster_id: self.cfg.cluster_id,
            protocol_min: self.cfg.protocol.min,
            protocol_max: self.cfg.protocol.max,
            build: self.cfg.build.clone(),
        });
        self.send_control(index, &hello);
    }

    fn arm_recv(&mut self, index: u32) {
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        let rs = c.recv.as_mut().expect("recv state");
        let e = opcode::RecvMulti::new(types::Fd(c.fd), rs.ring.bgid)
            .build()
            .user_data(ud(K_RECV, 0, index));
        rs.armed = true;
        rs.starved = false;
        c.ops += 1;
        self.stats.recv_arms += 1;
        self.push_sqe(e);
    }

    // ---------------------------------------------------------------- send

    fn conn_ref(&self, conn: ConnId) -> Result<&Conn, Error> {
        match self.conns.get(conn.index as usize) {
            Some(Some(c)) if c.id == conn => Ok(c),
            _ => Err(Error::UnknownConn { conn }),
        }
    }

    fn open_index(&self, conn: ConnId) -> Result<u32, Error> {
        let c = self.conn_ref(conn)?;
        if c.app_closed {
            return Err(Error::Closed);
        }
        if c.state != State::Open {
            return Err(Error::NotConnected { conn });
        }
        Ok(conn.index)
    }

    /// Reserves `flen` bytes (a whole frame) in the connection's staging
    /// chunks. `None` = back-pressured. Returns (chunk, offset, extends the
    /// queue's last item).
    fn reserve(&mut self, index: u32, flen: usize) -> Option<(u8, usize, bool)> {
        let chunk_size = self.cfg.send_chunk_size;
        let max_chunks = self.cfg.send_chunks;
        let max_items = self.cfg.send_queue_items;
        let s = &mut self.conns[index as usize]
            .as_mut()
            .expect("conn exists")
            .send;
        if let Some(f) = s.fill {
            let ch = &s.chunks[f as usize];
            if ch.wpos + flen <= ch.cap {
                let off = ch.wpos;
                let extend = matches!(s.queue.back(),
                    Some(Item::Staged { chunk, end, .. }) if *chunk == f && *end as usize == off);
                if extend || s.queue.len() < max_items {
                    return Some((f, off, extend));
                }
                return None;
            }
        }
        if s.queue.len() >= max_items {
            return None;
        }
        let c = match s.free.pop() {
            Some(c) => c,
            None if s.chunks.len() < max_chunks => {
                s.chunks.push(Chunk::new(chunk_size));
                (s.chunks.len() - 1) as u8
            }
            None => return None,
        };
        s.chunks[c as usize].wpos = 0;
        // The previous fill chunk, if idle, goes back to the free list.
        if let Some(old) = s.fill.replace(c)
            && s.chunks[old as usize].pending == 0
        {
            s.chunks[old as usize].wpos = 0;
            s.free.push(old);
        }
        Some((c, 0, false))
    }

    fn commit_staged(
        &mut self,
        index: u32,
        chunk: u8,
        off: usize,
        flen: usize,
        extend: bool,
        kind: FrameKind,
    ) {
        let checksum_payloads = self.cfg.checksum_payloads;
        let s = &mut self.conns[index as usize]
            .as_mut()
            .expect("conn exists")
            .send;
        let ch = &mut s.chunks[chunk as usize];
        // SAFETY: reserved range beyond wpos; no send covers it yet.
        let frame_bytes = unsafe { ch.slice_mut(off, flen) };
        frame::write_header_in_place(frame_bytes, kind, checksum_payloads);
        ch.wpos = off + flen;
        let end = (off + flen) as u32;
        if extend {
            if let Some(Item::Staged { end: e, .. }) = s.queue.back_mut() {
                *e = end;
            }
        } else {
            ch.pending += 1;
            s.queue.push_back(Item::Staged {
                chunk,
                start: off as u32,
                end,
            });
        }
        self.stats.frames_sent += 1;
        self.schedule_flush(index);
    }

    fn schedule_flush(&mut self, index: u32) {
        let s = &mut self.conns[index as usize]
            .as_mut()
            .expect("conn exists")
            .send;
        if !s.in_flush_list && !s.in_flight {
            s.in_flush_list = true;
            self.flush.push(index);
        }
    }

    fn back_pressured(&mut self, index: u32) -> SendOutcome {
        self.stats.back_pressured += 1;
        self.conns[index as usize]
            .as_mut()
            .expect("conn exists")
            .send
            .want_writable = true;
        SendOutcome::BackPressured
    }

    /// Queues one payload frame (copied once into the staging chunk, or into
    /// a pooled buffer when larger than a chunk). Sent on the next poll,
    /// batched with the connection's other queued frames.
    pub fn send(&mut self, conn: ConnId, payload: &[u8]) -> Result<SendOutcome, Error> {
        let index = self.open_index(conn)?;
        self.check_len(payload.len())?;
        let flen = HEADER_LEN + payload.len();
        if flen > self.cfg.send_chunk_size {
            let Some(mut buf) = self.alloc_buf(payload.len()) else {
                return Ok(self.back_pressured(index));
            };
            buf.payload_mut()
                .expect("fresh buffer")
                .copy_from_slice(payload);
            return self.send_buf(conn, &buf);
        }
        let Some((chunk, off, extend)) = self.reserve(index, flen) else {
            return Ok(self.back_pressured(index));
        };
        let s = &mut self.conns[index as usize]
            .as_mut()
            .expect("conn exists")
            .send;
        // SAFETY: reserved range beyond wpos; no send covers it yet.
        unsafe { s.chunks[chunk as usize].slice_mut(off + HEADER_LEN, payload.len()) }
            .copy_from_slice(payload);
        self.commit_staged(index, chunk, off, flen, extend, FrameKind::Payload);
        Ok(SendOutcome::Queued)
    }

    fn check_len(&self, len: usize) -> Result<(), Error> {
        let max = self.cfg.max_frame_len as usize;
        if len > max {
            return Err(Error::FrameTooLarge { len, max });
        }
        Ok(())
    }

    /// Reserves room for a `len`-byte payload in the connection's staging
    /// chunk, to be written in place (no copy). `len` plus the 16-byte header
    /// must fit a chunk ([`DriverConfig::send_chunk_size`]); larger payloads
    /// go through [`alloc_buf`](Driver::alloc_buf).
    pub fn claim(&mut self, conn: ConnId, len: usize) -> Result<Claimed<'_>, Error> {
        let index = self.open_index(conn)?;
        self.check_len(len)?;
        let max = self.cfg.send_chunk_size - HEADER_LEN;
        if len > max {
            return Err(Error::FrameTooLarge { len, max });
        }
        match self.reserve(index, HEADER_LEN + len) {
            Some((chunk, off, extend)) => Ok(Claimed::Claim(Claim {
                driver: self,
                index,
                chunk,
                off,
                len,
                extend,
            })),
            None => {
                let _ = self.back_pressured(index);
                Ok(Claimed::BackPressured)
            }
        }
    }

    /// A pooled buffer for a `len`-byte payload, or `None` when the pool is at
    /// [`DriverConfig::send_pool_bytes`] (back-pressure: wait for sends to
    /// complete) or `len` exceeds the maximum frame.
    pub fn alloc_buf(&mut self, len: usize) -> Option<SendBuf> {
        let (buf, fresh) = SendBuf::new(&self.send_pool, len)?;
        if fresh {
            self.stats.pool_allocations += 1;
        }
        Some(buf)
    }

    /// Queues `buf` on one connection. Call it for each peer: one buffer, N
    /// sends. The first call writes the header and freezes the buffer.
    pub fn send_buf(&mut self, conn: ConnId, buf: &SendBuf) -> Result<SendOutcome, Error> {
        let index = self.open_index(conn)?;
        let s = &self.conns[index as usize]
            .as_ref()
            .expect("conn exists")
            .send;
        if s.queue.len() >= self.cfg.send_queue_items {
            return Ok(self.back_pressured(index));
        }
        let r = buf.freeze(self.cfg.checksum_payloads);
        let len = r.frozen_len();
        let s = &mut self.conns[index as usize]
            .as_mut()
            .expect("conn exists")
            .send;
        s.queue.push_back(Item::Pooled { buf: r, len });
        self.stats.frames_sent += 1;
        self.schedule_flush(index);
        Ok(SendOutcome::Queued)
    }

    /// Control frames are rare (handshake, pong, goodbye): encoded with an
    /// allocation, then copied into staging. Dropped if the queue is full,
    /// which only a peer that stopped reading can cause.
    fn send_control(&mut self, index: u32, msg: &Control) -> bool {
        let f = frame::encode_control(msg);
        let Some((chunk, off, extend)) = self.reserve(index, f.len()) else {
            return false;
        };
        let s = &mut self.conns[index as usize]
            .as_mut()
            .expect("conn exists")
            .send;
        // SAFETY: reserved range beyond wpos; no send covers it yet.
        unsafe { s.chunks[chunk as usize].slice_mut(off, f.len()) }.copy_from_slice(&f);
        self.commit_staged(index, chunk, off, f.len(), extend, FrameKind::Control);
        true
    }

    fn flush_sends(&mut self) -> usize {
        let mut n = 0;
        while let Some(index) = self.flush.pop() {
            if let Some(c) = self.conns[index as usize].as_mut() {
                c.send.in_flush_list = false;
                n += self.start_send(index) as usize;
            }
        }
        n
    }

    /// Starts the connection's next send: the head item alone when it goes
    /// out with SEND_ZC, else the head and as many following items as one
    /// SENDMSG takes (up to [`MAX_IOV`]; a ZC item ends the run), so a queue
    /// of frames spread over several chunks and pooled buffers leaves in one
    /// operation. One send per connection is in flight at a time: TCP
    /// ordering needs no links, and a short send resumes where it stopped.
    fn start_send(&mut self, index: u32) -> bool {
        let zc_threshold = self.cfg.zc_threshold;
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        if c.send.in_flight
            || c.fd < 0
            || self.shutting_down
            || matches!(c.state, State::Closing | State::Backoff { .. })
        {
            return false;
        }
        let sent = c.send.head_sent as usize;
        let fd = c.fd;
        let (ptr, len, zc) = match c.send.queue.front() {
            None => return false,
            Some(Item::Staged { chunk, start, end }) => {
                let ch = &c.send.chunks[*chunk as usize];
                // SAFETY: start + sent < end <= cap.
                let p = unsafe { ch.ptr.as_ptr().add(*start as usize + sent) };
                (p as *const u8, *end as usize - *start as usize - sent, None)
            }
            Some(Item::Pooled { buf, len }) => {
                // SAFETY: sent < len = the frame length the buffer holds.
                let p = unsafe { buf.ptr().add(sent) };
                let zc = (*len as usize >= zc_threshold).then(|| buf.clone());
                (p, *len as usize - sent, zc)
            }
        };
        // Gather the items behind the head into one SENDMSG.
        let mut niov = 1;
        let mut total = len;
        if zc.is_none() && c.send.queue.len() > 1 {
            let s = &mut c.send;
            let g = &mut *s.gather;
            g.iov[0] = libc::iovec {
                iov_base: ptr as *mut libc::c_void,
                iov_len: len,
            };
            for item in s.queue.iter().skip(1) {
                if niov == MAX_IOV {
                    break;
                }
                let (p, l) = match item {
                    Item::Staged { chunk, start, end } => {
                        let ch = &s.chunks[*chunk as usize];
                        // SAFETY: start < end <= cap.
                        let p = unsafe { ch.ptr.as_ptr().add(*start as usize) };
                        (p as *const u8, (*end - *start) as usize)
                    }
                    Item::Pooled { buf, len } if (*len as usize) < zc_threshold => {
                        (buf.ptr(), *len as usize)
                    }
                    Item::Pooled { .. } => break,
                };
                if total + l > MAX_GATHER {
                    break;
                }
                g.iov[niov] = libc::iovec {
                    iov_base: p as *mut libc::c_void,
                    iov_len: l,
                };
                niov += 1;
                total += l;
            }
        }
        c.send.in_flight = true;
        c.send.in_flight_len = total.min(u32::MAX as usize) as u32;
        c.ops += 1;
        if zc.is_some() {
            c.zc_pending += 1;
        }
        let id = c.id;
        let len = len.min(u32::MAX as usize) as u32;
        self.stats.send_ops += 1;
        let e = match zc {
            Some(r) => {
                let slot = match self.zc_free.pop() {
                    Some(s) => s,
                    None => {
                        self.zc.push(None);
                        (self.zc.len() - 1) as u32
                    }
                };
                self.zc[slot as usize] = Some((r, id));
                self.stats.zc_sends += 1;
                opcode::SendZc::new(types::Fd(fd), ptr, len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(ud(K_SEND_ZC, slot, index))
            }
            None if niov > 1 => {
                self.stats.gathered_sends += 1;
                let g = &mut *c.send.gather;
                g.msg.msg_iov = g.iov.as_mut_ptr();
                g.msg.msg_iovlen = niov as _;
                opcode::SendMsg::new(types::Fd(fd), &g.msg)
                    .flags((libc::MSG_NOSIGNAL | SEND_WAITALL) as u32)
                    .build()
                    .user_data(ud(K_SEND, 0, index))
            }
            None => opcode::Send::new(types::Fd(fd), ptr, len)
                .flags(libc::MSG_NOSIGNAL | SEND_WAITALL)
                .build()
                .user_data(ud(K_SEND, 0, index)),
        };
        self.push_sqe(e);
        true
    }

    fn on_send(&mut self, index: u32, res: i32, on_event: &mut impl FnMut(&mut Driver, Event)) {
        let c = self.conns[index as usize]
            .as_mut()
            .expect("op's conn exists");
        c.ops -= 1;
        c.send.in_flight = false;
        if res < 0 {
            self.abort(
                index,
                Error::Io {
                    op: "send",
                    source: os_err(res),
                },
            );
            self.report_pending(on_event);
            self.maybe_finish_close(index);
            return;
        }
        self.stats.bytes_sent += res as u64;
        let s = &mut c.send;
        if (res as u32) < s.in_flight_len {
            self.stats.short_sends += 1;
        }
        // A gathered send may have finished several items and part of one.
        let mut left = res as u32;
        let mut popped = false;
        while left > 0 {
            let item_len = match s.queue.front() {
                Some(Item::Staged { start, end, .. }) => end - start,
                Some(Item::Pooled { len, .. }) => *len,
                None => break,
            };
            let rest = item_len - s.head_sent;
            if left < rest {
                s.head_sent += left;
                break;
            }
            left -= rest;
            popped = true;
            s.head_sent = 0;
            if let Some(Item::Staged { chunk, .. }) = s.queue.pop_front() {
                let ch = &mut s.chunks[chunk as usize];
                ch.pending -= 1;
                if ch.pending == 0 {
                    ch.wpos = 0;
                    if s.fill != Some(chunk) {
                        s.free.push(chunk);
                    }
                }
            }
        }
        let state = c.state;
        let empty = s.queue.is_empty();
        let writable = popped && s.want_writable && state == State::Open;
        if writable {
            s.want_writable = false;
        }
        if !empty {
            self.start_send(index);
        } else if state == State::Draining {
            if c.linger_until.is_some() {
                self.linger_step(index);
            } else {
                self.shutdown_socket(index);
            }
        }
        if writable {
            let conn = self.conns[index as usize].as_ref().expect("conn exists").id;
            on_event(self, Event::Writable { conn });
        }
        self.maybe_finish_close(index);
    }

    // ---------------------------------------------------------------- close

    /// Closes a connection gracefully; an outgoing one stops reconnecting.
    ///
    /// From this call on the connection accepts nothing new: [`send`],
    /// [`claim`] and [`send_buf`] return [`Error::Closed`]. Every frame
    /// already queued (answered [`SendOutcome::Queued`]) is still sent, in
    /// order, followed by a Goodbye; once the last send has completed and the
    /// kernel has released every SEND_ZC buffer, the write side is shut down
    /// (SHUTDOWN with `SHUT_WR`), and the close completes when the peer's EOF
    /// arrives, i.e. after the peer has read everything. Frames the peer
    /// sends meanwhile are still delivered. Only then does
    /// [`Event::Disconnected`] with [`Error::Closed`] follow: after it, the
    /// driver may be dropped without losing any accepted frame.
    ///
    /// If that takes longer than [`DriverConfig::close_linger`] (a peer that
    /// stops reading or never closes), the connection is reset and the event
    /// carries [`Error::LingerTimeout`] instead; a send or receive error on
    /// the way carries that error. A connection not yet open is dropped at
    /// once: connecting or handshaking, with [`Event::HandshakeFailed`]
    /// (reason [`Error::Closed`]); backing off, silently.
    ///
    /// Dropping the [`Driver`] instead is abortive: see its `Drop`.
    ///
    /// [`send`]: Driver::send
    /// [`claim`]: Driver::claim
    /// [`send_buf`]: Driver::send_buf
    pub fn close(&mut self, conn: ConnId) -> Result<(), Error> {
        self.conn_ref(conn)?;
        let index = conn.index;
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        c.app_closed = true;
        match c.state {
            State::Open => {
                // Without room for the Goodbye the peer still sees the EOF.
                self.send_control(index, &Control::Goodbye { code: 0 });
                let until = Instant::now() + self.cfg.close_linger;
                let c = self.conns[index as usize].as_mut().expect("conn exists");
                c.state = State::Draining;
                c.linger_until = Some(until);
                self.note_deadline(until);
                self.linger_step(index);
            }
            State::Backoff { .. } => self.free_conn(index),
            State::Draining | State::Closing => {}
            State::Connecting | State::Handshaking { .. } => self.abort(index, Error::Closed),
        }
        Ok(())
    }

    /// Advances a lingering close: flush the queue, wait for the SEND_ZC
    /// notifications, shut the write side down, wait for the peer's EOF,
    /// then report [`Error::Closed`] and release the socket.
    fn linger_step(&mut self, index: u32) {
        let Some(c) = self.conns[index as usize].as_mut() else {
            return;
        };
        if c.state != State::Draining || c.linger_until.is_none() {
            return;
        }
        if !c.send.queue.is_empty() || c.send.in_flight {
            self.schedule_flush(index);
            return;
        }
        if c.zc_pending > 0 {
            return;
        }
        if !c.wr_shut_sent {
            c.wr_shut_sent = true;
            c.ops += 1;
            let e = opcode::Shutdown::new(types::Fd(c.fd), libc::SHUT_WR)
                .build()
                .user_data(ud(K_SHUTDOWN, 0, index));
            self.push_sqe(e);
            return;
        }
        if c.wr_shut_done && c.peer_eof {
            c.linger_until = None;
            self.set_reason(index, Error::Closed);
            self.shutdown_socket(index);
            // Cold path: drop the linger deadline so polls stop reading the clock.
            self.recompute_deadline();
        }
    }

    fn on_shutdown(&mut self, index: u32, res: i32) {
        let Some(c) = self.conns[index as usize].as_mut() else {
            return;
        };
        c.ops -= 1;
        if res < 0 {
            if c.state == State::Draining {
                self.abort(
                    index,
                    Error::Io {
                        op: "shutdown",
                        source: os_err(res),
                    },
                );
            }
        } else {
            c.wr_shut_done = true;
            self.linger_step(index);
        }
        self.maybe_finish_close(index);
    }

    /// The kernel let go of a SEND_ZC buffer (or will send no notification).
    fn zc_released(&mut self, slot: u32) {
        let Some((_, id)) = self.zc[slot as usize].take() else {
            return;
        };
        self.zc_free.push(slot);
        if let Some(c) = self.conns[id.index as usize].as_mut()
            && c.id == id
        {
            c.zc_pending = c.zc_pending.saturating_sub(1);
            if c.zc_pending == 0 {
                self.linger_step(id.index);
            }
        }
    }

    /// Records why the connection ends, to be reported once.
    fn set_reason(&mut self, index: u32, reason: Error) {
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        if !c.reported {
            c.reported = true;
            self.pending_reasons
                .push((index, c.id, c.announced, c.addr, reason));
        }
    }

    fn graceful(&mut self, index: u32, reason: Error) {
        let c = self.conns[index as usize].as_ref().expect("conn exists");
        if c.state == State::Draining && c.linger_until.is_some() {
            // Our own close is lingering; it reports when it completes.
            return;
        }
        self.set_reason(index, reason);
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        if matches!(
            c.state,
            State::Closing | State::Backoff { .. } | State::Draining
        ) {
            return;
        }
        c.state = State::Draining;
        if c.send.queue.is_empty() && !c.send.in_flight {
            self.shutdown_socket(index);
        } else {
            self.schedule_flush(index);
        }
    }

    fn abort(&mut self, index: u32, reason: Error) {
        self.set_reason(index, reason);
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        if matches!(c.state, State::Closing | State::Backoff { .. }) {
            return;
        }
        c.abortive = true;
        self.shutdown_socket(index);
    }

    fn shutdown_socket(&mut self, index: u32) {
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        c.state = State::Closing;
        if c.fd < 0 {
            return;
        }
        if c.abortive {
            let _ = sys::set_linger_zero(c.fd);
        }
        // Wakes the armed recv (EOF) and fails a blocked send; the cancel
        // catches a connect still in progress.
        sys::shutdown(c.fd);
        if c.ops > 0 {
            c.ops += 1;
            let e = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(c.fd)).all())
                .build()
                .user_data(ud(K_CANCEL, 0, index));
            self.push_sqe(e);
        }
    }

    /// Emits the Disconnected / HandshakeFailed events recorded so far.
    fn report_pending(&mut self, on_event: &mut impl FnMut(&mut Driver, Event)) {
        let pending = std::mem::take(&mut self.pending_reasons);
        for (index, conn, announced, addr, reason) in pending {
            if announced {
                self.stats.disconnects += 1;
                let c = self.conns[index as usize].as_mut();
                if let Some(c) = c {
                    c.announced = false;
                    c.peer = None;
                }
                on_event(self, Event::Disconnected { conn, reason });
            } else {
                on_event(self, Event::HandshakeFailed { conn, addr, reason });
            }
        }
    }

    fn maybe_finish_close(&mut self, index: u32) {
        let Some(c) = self.conns[index as usize].as_mut() else {
            return;
        };
        if c.state != State::Closing || c.ops > 0 {
            return;
        }
        if let Some(mut rs) = c.recv.take() {
            if rs.registered {
                let _ = self.ring.submitter().unregister_buf_ring(rs.ring.bgid);
            }
            if let Some(bid) = rs.cur.take() {
                rs.ring.release(bid);
            }
            if let Some(a) = rs.asm.take() {
                self.asm_pool.give_back(a.slot);
            }
            self.bgids.push(rs.ring.bgid);
        }
        if c.fd >= 0 {
            sys::close(c.fd);
            c.fd = -1;
        }
        c.send.reset();
        if c.linger_until.take().is_some() {
            // A close that ended in an error: forget its deadline.
            self.recompute_deadline();
        }
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        if c.target.is_some() && !c.app_closed {
            self.enter_backoff(index);
        } else {
            self.free_conn(index);
        }
    }

    // ---------------------------------------------------------------- poll

    /// Non-blocking: runs due timers, flushes queued sends into one
    /// submission, reaps completions and dispatches events to `on_event`
    /// (which may call back into the driver, e.g. to reply). Returns the
    /// amount of work done; 0 means idle.
    pub fn poll<F: FnMut(&mut Driver, Event)>(&mut self, on_event: &mut F) -> usize {
        let mut work = 0;
        if !self.pending_reasons.is_empty() {
            self.report_pending(on_event);
        }
        if let Some(d) = self.next_deadline {
            self.stats.clock_reads += 1;
            if Instant::now() >= d {
                work += self.run_timers(on_event);
            }
        }
        if !self.starved.is_empty() {
            work += self.rearm_starved();
        }
        work += self.flush_sends();
        self.submit();
        work += self.reap(on_event);
        if !self.flush.is_empty() {
            work += self.flush_sends();
            self.submit();
        }
        work
    }

    /// Submits queued SQEs; with nothing to submit, enters the kernel only if
    /// it flagged pending task work (IORING_SQ_TASKRUN), which is what lets
    /// an idle spin stay in user space.
    fn submit(&mut self) {
        let need = {
            let mut sq = self.ring.submission();
            sq.sync();
            !sq.is_empty() || sq.taskrun() || sq.cq_overflow()
        };
        if need && let Err(err) = self.ring.submit() {
            match err.raw_os_error() {
                Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::EINTR) => {}
                _ => tracing::error!(%err, "io_uring_enter failed"),
            }
        }
    }

    fn reap<F: FnMut(&mut Driver, Event)>(&mut self, on_event: &mut F) -> usize {
        let mut n = 0;
        loop {
            let mut buf = std::mem::take(&mut self.cqes);
            {
                let mut cq = self.ring.completion();
                let room = buf.capacity() - buf.len();
                buf.extend(cq.by_ref().take(room));
            }
            if buf.is_empty() {
                self.cqes = buf;
                return n;
            }
            n += buf.len();
            let full = buf.len() == buf.capacity();
            for e in buf.drain(..) {
                self.dispatch(e, on_event);
            }
            if !self.cqes.is_empty() {
                // Entries pulled while the SQ was full during dispatch.
                buf.append(&mut self.cqes);
            }
            self.cqes = buf;
            if !full && self.cqes.is_empty() {
                return n;
            }
        }
    }

    fn dispatch<F: FnMut(&mut Driver, Event)>(&mut self, e: cqueue::Entry, on_event: &mut F) {
        let (kind, aux, index) = ud_split(e.user_data());
        let res = e.result();
        let flags = e.flags();
        let more = cqueue::more(flags);
        let finished = match kind {
            K_ACCEPT | K_RECV => !more,
            K_SEND_ZC => cqueue::notif(flags) || !more,
            _ => true,
        };
        if finished {
            self.ops -= 1;
        }
        match kind {
            K_WAKE => {
                self.wake_armed = false;
                if !self.shutting_down {
                    self.arm_wake();
                }
            }
            K_ACCEPT => self.on_accept(aux, res, more),
            K_CONNECT => self.on_connect(index, res),
            K_RECV => self.on_recv(index, res, flags, on_event),
            K_SEND => self.on_send(index, res, on_event),
            K_SEND_ZC => {
                if cqueue::notif(flags) {
                    self.stats.zc_notifications += 1;
                    self.zc_released(aux);
                } else {
                    if !more {
                        self.zc_released(aux);
                    }
                    self.on_send(index, res, on_event);
                }
            }
            K_CANCEL => {
                if let Some(c) = self.conns[index as usize].as_mut() {
                    c.ops -= 1;
                }
                self.maybe_finish_close(index);
            }
            K_CANCEL_ALL => {}
            K_SHUTDOWN => self.on_shutdown(index, res),
            _ => tracing::error!(kind, "completion with unknown kind"),
        }
        if !self.pending_reasons.is_empty() {
            self.report_pending(on_event);
        }
    }

    fn on_accept(&mut self, li: u32, res: i32, more: bool) {
        if res >= 0 {
            let fd = res as RawFd;
            let addr = match sys::peer_addr(fd) {
                Ok(a) => a,
                Err(err) => {
                    tracing::debug!(%err, "accepted socket already gone");
                    sys::close(fd);
                    return self.rearm_accept_if_needed(li, more);
                }
            };
            let index = self.alloc_conn(addr, None);
            self.conns[index as usize]
                .as_mut()
                .expect("just allocated")
                .fd = fd;
            self.established(index);
        } else if !self.shutting_down {
            tracing::warn!(err = %os_err(res), listener = %self.listeners[li as usize].addr, "accept failed");
        }
        self.rearm_accept_if_needed(li, more);
    }

    fn rearm_accept_if_needed(&mut self, li: u32, more: bool) {
        if !more && !self.shutting_down {
            self.arm_accept(li);
        }
    }

    fn on_connect(&mut self, index: u32, res: i32) {
        let c = self.conns[index as usize]
            .as_mut()
            .expect("op's conn exists");
        c.ops -= 1;
        if c.state == State::Closing {
            self.maybe_finish_close(index);
            return;
        }
        if res < 0 {
            tracing::debug!(addr = %c.addr, err = %os_err(res), "connect failed; backing off");
            sys::close(c.fd);
            c.fd = -1;
            self.enter_backoff(index);
            return;
        }
        self.established(index);
    }

    fn on_recv<F: FnMut(&mut Driver, Event)>(
        &mut self,
        index: u32,
        res: i32,
        flags: u32,
        on_event: &mut F,
    ) {
        let more_op = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let buf_more = cqueue::buffer_more(flags);
        let c = self.conns[index as usize]
            .as_mut()
            .expect("op's conn exists");
        let receiving = c.is_receiving();
        let lingering = c.linger_until.is_some();
        let rs = c.recv.as_mut().expect("armed recv has state");
        if !more_op {
            c.ops -= 1;
            rs.armed = false;
        }
        if res > 0 {
            let bid = bid.expect("multishot recv always selects a buffer");
            let start = rs.ring.landed(bid, res as u32);
            if rs.cur != Some(bid) {
                if let Some(old) = rs.cur.replace(bid) {
                    // Defensive: the kernel moved on without reporting `old` full.
                    rs.ring.release(old);
                }
                rs.parse_off = start;
            }
            self.stats.bytes_received += res as u64;
            self.stats.recv_completions += 1;
            if receiving && !self.shutting_down {
                self.parse_loop(index, bid, buf_more, on_event);
            }
            if !buf_more
                && let Some(rs) = self.conns[index as usize]
                    .as_mut()
                    .and_then(|c| c.recv.as_mut())
                && rs.cur == Some(bid)
            {
                rs.cur = None;
                rs.ring.release(bid);
            }
        } else {
            if let Some(bid) = bid
                && !buf_more
            {
                if rs.cur == Some(bid) {
                    rs.cur = None;
                    rs.ring.release(bid);
                } else {
                    rs.ring.landed(bid, 0);
                    rs.ring.release(bid);
                }
            }
            if res == -libc::ENOBUFS {
                if receiving && !more_op {
                    self.stats.recv_starved += 1;
                    rs.starved = true;
                    self.starved.push(index);
                }
            } else if receiving && res == 0 && lingering {
                // The peer has read everything and closed: our close can end.
                self.conns[index as usize]
                    .as_mut()
                    .expect("op's conn exists")
                    .peer_eof = true;
                self.linger_step(index);
            } else if receiving {
                let reason = if res == 0 {
                    Error::PeerClosed
                } else {
                    Error::Io {
                        op: "recv",
                        source: os_err(res),
                    }
                };
                self.abort(index, reason);
            }
        }
        if let Some(c) = self.conns[index as usize].as_ref()
            && let Some(rs) = c.recv.as_ref()
            && !more_op
            && !rs.armed
            && !rs.starved
            && c.is_receiving()
            && !self.shutting_down
        {
            self.arm_recv(index);
        }
        self.report_pending(on_event);
        self.maybe_finish_close(index);
    }

    fn rearm_starved(&mut self) -> usize {
        let mut n = 0;
        let mut i = 0;
        while i < self.starved.len() {
            let index = self.starved[i];
            let ready = self.conns[index as usize].as_ref().and_then(|c| {
                let rs = c.recv.as_ref()?;
                (rs.starved && c.is_receiving()).then(|| rs.ring.in_ring() > 0)
            });
            match ready {
                Some(true) => {
                    self.starved.swap_remove(i);
                    self.arm_recv(index);
                    n += 1;
                }
                Some(false) => i += 1,
                None => {
                    self.starved.swap_remove(i);
                }
            }
        }
        n
    }

    /// Parses every complete frame in the connection's current buffer and
    /// dispatches it; stops if a callback closes the connection.
    fn parse_loop<F: FnMut(&mut Driver, Event)>(
        &mut self,
        index: u32,
        bid: u16,
        buf_more: bool,
        on_event: &mut F,
    ) {
        let id = self.conns[index as usize].as_ref().expect("conn").id;
        loop {
            match self.conns[index as usize].as_ref() {
                Some(c)
                    if c.id == id
                        && c.is_receiving()
                        && c.recv.as_ref().is_some_and(|r| r.cur == Some(bid)) => {}
                _ => return,
            }
            match self.parse_step(index, bid, buf_more) {
                Step::NeedMore => return,
                Step::Frame(frame) => {
                    self.stats.frames_received += 1;
                    let state = self.conns[index as usize].as_ref().expect("conn").state;
                    match state {
                        State::Open => on_event(self, Event::Frame { conn: id, frame }),
                        State::Handshaking { .. } => {
                            drop(frame);
                            self.handshake_failed(
                                index,
                                HandshakeError::NotHello { got: "payload" },
                            );
                        }
                        // Closing on our side: the application asked to stop.
                        _ => drop(frame),
                    }
                }
                Step::Control(msg) => {
                    self.stats.frames_received += 1;
                    self.on_control(index, msg, on_event);
                }
                Step::Bad(e) => {
                    self.stats.bad_frames += 1;
                    let c = self.conns[index as usize].as_ref().expect("conn");
                    tracing::warn!(peer = %c.addr, conn = %id, error = %e, "bad frame; closing connection");
                    if matches!(c.state, State::Handshaking { .. }) {
                        self.handshake_failed(index, HandshakeError::Frame(e));
                    } else {
                        self.abort(index, Error::Frame(e));
                    }
                }
            }
            if !self.pending_reasons.is_empty() {
                self.report_pending(on_event);
            }
        }
    }

    /// One step of the stream decoder over buffer `bid` from `parse_off`.
    fn parse_step(&mut self, index: u32, bid: u16, buf_more: bool) -> Step {
        let max = self.cfg.max_frame_len;
        let Driver {
            conns,
            asm_pool,
            stats,
            scratch,
            ..
        } = self;
        let c = conns[index as usize].as_mut().expect("conn");
        let id = c.id;
        let rs = c.recv.as_mut().expect("recv state");
        let ring = Rc::clone(&rs.ring);
        let end = ring.fill(bid);
        loop {
            let avail = end - rs.parse_off;
            if let Some(asm) = rs.asm.as_mut() {
                // A frame that straddles buffers: copy it together.
                let slot = asm.slot;
                let have = asm_pool.with_slot(slot, |v| v.len());
                if asm.header.is_none() && have >= HEADER_LEN {
                    let h = match asm_pool.with_slot(slot, |v| frame::decode_header(v, max)) {
                        Ok(h) => h,
                        Err(e) => {
                            rs.asm = None;
                            asm_pool.give_back(slot);
                            return Step::Bad(e);
                        }
                    };
                    stats.assembly_allocations +=
                        asm_pool.reserve(slot, h.frame_len() - have) as u64;
                    asm.header = Some(h);
                }
                if let Some(h) = asm.header
                    && have == h.frame_len()
                {
                    rs.asm = None;
                    stats.straddled_frames += 1;
                    if let Err(e) = asm_pool.with_slot(slot, |v| frame::verify_checksum(&h, v)) {
                        asm_pool.give_back(slot);
                        return Step::Bad(e);
                    }
                    return match h.kind {
                        FrameKind::Payload => Step::Frame(RecvFrame::from_assembly(
                            id,
                            asm_pool,
                            slot,
                            h.frame_len() as u32,
                        )),
                        FrameKind::Control => {
                            let r = asm_pool.with_slot(slot, |v| {
                                frame::decode_control(&v[HEADER_LEN..], scratch)
                            });
                            asm_pool.give_back(slot);
                            match r {
                                Ok((msg, copied)) => {
                                    stats.misaligned_archives += copied as u64;
                                    Step::Control(msg)
                                }
                                Err(e) => Step::Bad(e),
                            }
                        }
                    };
                }
                if avail == 0 {
                    return Step::NeedMore;
                }
                let target = asm.header.map_or(HEADER_LEN, |h| h.frame_len());
                let take = (target - have).min(avail as usize) as u32;
                // SAFETY: [parse_off, parse_off + take) lies within what the
                // kernel reported into `bid`, on which the driver holds `cur`.
                let src = unsafe { ring.slice(bid, rs.parse_off, take) };
                asm_pool.with_slot(slot, |v| v.extend_from_slice(src));
                stats.straddled_bytes += take as u64;
                rs.parse_off += take;
                continue;
            }
            if avail == 0 {
                return Step::NeedMore;
            }
            let off = rs.parse_off;
            let room_left = (ring.buf_size - off) as usize;
            if (avail as usize) < HEADER_LEN {
                if buf_more && room_left >= HEADER_LEN {
                    return Step::NeedMore;
                }
                let (slot, fresh) = asm_pool.take();
                stats.assembly_allocations += fresh as u64;
                rs.asm = Some(Assembly { slot, header: None });
                continue;
            }
            // SAFETY: HEADER_LEN <= avail bytes from `off` are within the fill.
            let head = unsafe { ring.slice(bid, off, HEADER_LEN as u32) };
            let h = match frame::decode_header(head, max) {
                Ok(h) => h,
                Err(e) => return Step::Bad(e),
            };
            let flen = h.frame_len();
            if avail as usize >= flen {
                // SAFETY: flen <= avail bytes from `off` are within the fill.
                let whole = unsafe { ring.slice(bid, off, flen as u32) };
                if let Err(e) = frame::verify_checksum(&h, whole) {
                    return Step::Bad(e);
                }
                rs.parse_off += flen as u32;
                return match h.kind {
                    FrameKind::Payload => {
                        Step::Frame(RecvFrame::from_ring(id, &ring, bid, off, flen as u32))
                    }
                    FrameKind::Control => {
                        match frame::decode_control(&whole[HEADER_LEN..], scratch) {
                            Ok((msg, copied)) => {
                                stats.misaligned_archives += copied as u64;
                                Step::Control(msg)
                            }
                            Err(e) => Step::Bad(e),
                        }
                    }
                };
            }
            if buf_more && room_left >= flen {
                // The rest will land right after, in this buffer.
                return Step::NeedMore;
            }
            let (slot, fresh) = asm_pool.take();
            stats.assembly_allocations += fresh as u64 + asm_pool.reserve(slot, flen) as u64;
            rs.asm = Some(Assembly { slot, header: None });
        }
    }

    fn on_control<F: FnMut(&mut Driver, Event)>(
        &mut self,
        index: u32,
        msg: Control,
        on_event: &mut F,
    ) {
        let state = self.conns[index as usize].as_ref().expect("conn").state;
        match state {
            State::Handshaking { .. } => match frame::hello_from_control(msg) {
                Ok(h) => self.on_hello(index, h, on_event),
                Err(e) => self.handshake_failed(index, e),
            },
            State::Open | State::Draining => match msg {
                Control::Ping { nonce } => {
                    if state == State::Open {
                        self.send_control(index, &Control::Pong { nonce });
                    }
                }
                Control::Pong { .. } => {}
                Control::Goodbye { code } => self.graceful(index, Error::PeerGoodbye { code }),
                Control::Hello(_) => self.abort(index, Error::UnexpectedControl { got: "Hello" }),
                Control::Reject(_) => self.abort(index, Error::UnexpectedControl { got: "Reject" }),
            },
            _ => {}
        }
    }

    fn on_hello<F: FnMut(&mut Driver, Event)>(
        &mut self,
        index: u32,
        h: frame::Hello,
        on_event: &mut F,
    ) {
        let ours = self.cfg.protocol;
        let theirs = VersionRange {
            min: h.protocol_min,
            max: h.protocol_max,
        };
        if h.cluster_id != self.cfg.cluster_id {
            return self.handshake_failed(
                index,
                HandshakeError::ClusterMismatch {
                    ours: self.cfg.cluster_id,
                    theirs: h.cluster_id,
                },
            );
        }
        let Some(negotiated) = ours.highest_common(&theirs) else {
            return self.handshake_failed(index, HandshakeError::NoCommonVersion { ours, theirs });
        };
        let c = self.conns[index as usize].as_mut().expect("conn");
        let peer = PeerInfo {
            addr: c.addr,
            node_id: h.node_id,
            cluster_id: h.cluster_id,
            protocol: theirs,
            negotiated,
            build: h.build,
        };
        c.state = State::Open;
        c.announced = true;
        c.backoff = self.cfg.connect_backoff_initial;
        c.peer = Some(peer.clone());
        let conn = c.id;
        self.stats.handshakes += 1;
        // Its handshake deadline no longer matters: without this, every poll
        // would read the clock until that deadline had passed.
        self.recompute_deadline();
        tracing::debug!(%conn, peer = %peer.addr, node = peer.node_id, negotiated, "connected");
        on_event(self, Event::Connected { conn, peer });
    }

    /// Tells the peer why (when the decision is ours and it can parse it),
    /// then closes.
    fn handshake_failed(&mut self, index: u32, e: HandshakeError) {
        let addr = self.conns[index as usize].as_ref().expect("conn").addr;
        tracing::warn!(peer = %addr, error = %e, "handshake failed; closing connection");
        let code = match &e {
            HandshakeError::ClusterMismatch { .. } => Some(frame::reject_code::CLUSTER_MISMATCH),
            HandshakeError::NoCommonVersion { .. } => Some(frame::reject_code::NO_COMMON_VERSION),
            HandshakeError::BuildTooLong { .. } | HandshakeError::NotHello { .. } => {
                Some(frame::reject_code::MALFORMED)
            }
            _ => None,
        };
        match code {
            Some(code) => {
                let reject = Control::Reject(frame::Reject {
                    code,
                    cluster_id: self.cfg.cluster_id,
                    protocol_min: self.cfg.protocol.min,
                    protocol_max: self.cfg.protocol.max,
                });
                self.send_control(index, &reject);
                self.graceful(index, Error::Handshake(e));
            }
            None => self.abort(index, Error::Handshake(e)),
        }
    }

    fn run_timers<F: FnMut(&mut Driver, Event)>(&mut self, on_event: &mut F) -> usize {
        let now = Instant::now();
        self.next_deadline = None;
        let mut n = 0;
        for index in 0..self.conns.len() as u32 {
            let Some((state, linger)) = self.conns[index as usize]
                .as_ref()
                .map(|c| (c.state, c.linger_until))
            else {
                continue;
            };
            match state {
                State::Draining => match linger {
                    Some(at) if at <= now => {
                        let linger = self.cfg.close_linger;
                        self.abort(index, Error::LingerTimeout { linger });
                        n += 1;
                    }
                    Some(at) => self.note_deadline(at),
                    None => {}
                },
                State::Backoff { until } if until <= now => {
                    self.start_connect(index);
                    n += 1;
                }
                State::Handshaking { deadline } if deadline <= now => {
                    self.handshake_failed(index, HandshakeError::Timeout);
                    n += 1;
                }
                State::Backoff { until: at } | State::Handshaking { deadline: at } => {
                    self.note_deadline(at)
                }
                _ => {}
            }
        }
        self.report_pending(on_event);
        n
    }

    /// Blocks in the kernel until a completion arrives, an [`Unparker`]
    /// fires, the timeout passes, or the driver's next timer (reconnect,
    /// handshake deadline) is due. Queued sends are submitted first.
    pub fn park(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        self.flush_sends();
        let timeout = match (timeout, self.next_deadline) {
            (t, None) => t,
            (t, Some(d)) => {
                let until = d.saturating_duration_since(Instant::now());
                Some(t.map_or(until, |t| t.min(until)))
            }
        };
        let st = &self.unpark.state;
        if st
            .compare_exchange(IDLE, PARKED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // An unpark arrived since the last park: consume it.
            st.store(IDLE, Ordering::Release);
            self.submit();
            return Ok(());
        }
        let ready = !self.cqes.is_empty() || !self.ring.completion().is_empty();
        let res = if ready || timeout == Some(Duration::ZERO) {
            self.submit();
            Ok(0)
        } else {
            match timeout {
                Some(t) => {
                    let ts = types::Timespec::from(t);
                    let args = types::SubmitArgs::new().timespec(&ts);
                    self.ring.submitter().submit_with_args(1, &args)
                }
                None => self.ring.submit_and_wait(1),
            }
        };
        self.unpark.state.store(IDLE, Ordering::Release);
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(source) => Err(Error::Io {
                op: "io_uring_enter (park)",
                source,
            }),
        }
    }
}

impl Conn {
    fn is_receiving(&self) -> bool {
        matches!(
            self.state,
            State::Handshaking { .. } | State::Open | State::Draining
        ) && !self.peer_eof
    }
}

impl Drop for Driver {
    /// Abortive: every connection still open or closing is reset (RST), and
    /// frames still queued or in the kernel's socket buffers are lost, even
    /// on connections whose [`Driver::close`] has not completed yet. To lose
    /// nothing, close each connection and poll until its
    /// [`Event::Disconnected`] before dropping.
    ///
    /// Cancels everything in flight and waits for the kernel to let go of
    /// every buffer it could still read or write. If that takes too long
    /// (it should not), the memory is leaked rather than freed under the
    /// kernel.
    fn drop(&mut self) {
        self.shutting_down = true;
        for c in self.conns.iter_mut().flatten() {
            if c.fd >= 0 {
                let _ = sys::set_linger_zero(c.fd);
                sys::shutdown(c.fd);
            }
            c.send.queue.retain(|_| false);
        }
        for l in &self.listeners {
            sys::shutdown(l.fd);
        }
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(ud(K_CANCEL_ALL, 0, 0));
        self.push_sqe(e);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut noop = |_: &mut Driver, _: Event| {};
        while self.ops > 0 && Instant::now() < deadline {
            let ts = types::Timespec::from(Duration::from_millis(20));
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.reap(&mut noop);
            // Connections whose ops drained are closed by maybe_finish_close;
            // ones still waiting may need another cancel (a send blocked on a
            // full socket buffer is woken by the shutdown above).
        }
        if self.ops > 0 {
            tracing::error!(
                ops = self.ops,
                "io_uring operations still in flight after 5 s at driver drop; leaking their buffers"
            );
            for c in std::mem::take(&mut self.conns).into_iter().flatten() {
                if c.fd >= 0 {
                    sys::close(c.fd);
                }
                std::mem::forget(c);
            }
            std::mem::forget(std::mem::take(&mut self.zc));
            std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
        }
        for c in self.conns.iter_mut().flatten() {
            if c.fd >= 0 {
                sys::close(c.fd);
                c.fd = -1;
            }
        }
        for l in &self.listeners {
            sys::close(l.fd);
        }
    }
}
