//! The [`Driver`]: one io_uring, its connections, their buffers.
//!
//! This file holds the driver itself (creation, submission, the poll loop
//! that reaps completions and dispatches them, timers, parking); one file per
//! concern beside it: [`op`] (user_data), [`conn`] (a connection's state),
//! [`connect`], [`handshake`], [`send`], [`recv`], [`close`], [`probe`].

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use rkyv::util::AlignedVec;

use crate::frame::{ARCHIVE_ALIGN, HandshakeError};
use crate::recv_buf::{AssemblyPool, RecvAccount};
use crate::send_buf::{BufRef, SendPool};
use crate::sys;
use crate::{CloseReason, ConnId, DriverConfig, Event, PeerInfo, RecvHeld, SetupError, Stats};

mod close;
mod conn;
mod connect;
mod handshake;
mod op;
mod probe;
mod recv;
mod send;

use conn::{Conn, Listener, State};
use op::{Op, ud, ud_split};
pub(crate) use probe::probe_ring;
pub use send::{Claim, Claimed};

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
    /// Receive counters the frames update (copies out, bytes held).
    recv_account: Rc<RecvAccount>,
    /// Reassembly slots preallocated (the most connections live at once).
    asm_preallocated: usize,
    /// SEND_ZC buffers awaiting their notification, with their connection.
    zc: Vec<Option<(BufRef, ConnId)>>,
    zc_free: Vec<u32>,
    flush: Vec<u32>,
    starved: Vec<u32>,
    /// Connections the send pool refused (woken when a buffer comes back).
    pool_waiters: Vec<ConnId>,
    /// An `alloc_buf` was refused at the pool's cap.
    alloc_waiter: bool,
    cqes: Vec<cqueue::Entry>,
    scratch: AlignedVec<ARCHIVE_ALIGN>,
    unpark: Arc<UnparkInner>,
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// Every operation the kernel may still complete (drop waits for zero).
    ops: u64,
    next_deadline: Option<Instant>,
    /// Closes decided but not yet reported to the application.
    pending_reasons: Vec<(u32, ConnId, bool, SocketAddr, CloseReason)>,
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

impl Driver {
    /// Creates the ring (`COOP_TASKRUN | TASKRUN_FLAG`), the wake-up eventfd
    /// and the send pool.
    pub fn new(cfg: DriverConfig) -> Result<Driver, SetupError> {
        cfg.validate()?;
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(cfg.ring_entries * 4)
            .build(cfg.ring_entries)
            .map_err(|source| SetupError::RingSetup { source })?;
        if !ring.params().is_feature_ext_arg() {
            return Err(SetupError::Unsupported {
                what: "EXT_ARG (timed waits)",
            });
        }
        let efd = sys::eventfd().map_err(|source| SetupError::Io {
            op: "eventfd",
            source,
        })?;
        let unpark = Arc::new(UnparkInner {
            state: AtomicU8::new(IDLE),
            efd,
        });
        let recv_account = Rc::new(RecvAccount::default());
        let mut d = Driver {
            ring,
            send_pool: Rc::new(SendPool::new(
                cfg.send_pool_bytes,
                cfg.max_frame_len as usize,
            )),
            asm_pool: Rc::new(AssemblyPool::new(Rc::clone(&recv_account))),
            recv_account,
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
            pool_waiters: Vec::with_capacity(64),
            alloc_waiter: false,
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

    /// Sets the incarnation that handshakes started from now on carry
    /// ([`DriverConfig::incarnation`]): for an owner that learns it only
    /// after the driver exists (from its persisted state). Call it before
    /// the first `listen` or `connect`; connections already handshaking or
    /// open keep the one they sent.
    pub fn set_incarnation(&mut self, incarnation: u64) {
        self.cfg.incarnation = incarnation;
    }

    /// Counters since creation.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        let a = &self.recv_account;
        s.held_recv_buffers = a.held_buffers.get();
        s.held_recv_bytes = a.held_bytes.get();
        s.held_assembly_bytes = a.held_asm_bytes.get();
        s.copied_out_frames = self.recv_account.copied_frames.get();
        s.copied_out_bytes = self.recv_account.copied_bytes.get();
        s
    }

    /// Receive memory the application's frames hold on one connection: the
    /// buffers they keep out of its ring and the bytes landed in them.
    /// `None` for an unknown connection or one without receive buffers.
    pub fn recv_held(&self, conn: ConnId) -> Option<RecvHeld> {
        let rs = self.conn_ref(conn).ok()?.recv.as_ref()?;
        let (buffers, bytes) = rs.ring.held();
        Some(RecvHeld {
            buffers: buffers as u32,
            bytes,
            paused: rs.starved,
        })
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
        .user_data(ud(Op::Wake, 0, 0));
        self.push_sqe(e);
        self.wake_armed = true;
    }

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
            work += self.rearm_starved(on_event);
        }
        work += self.wake_pool_waiters(on_event);
        work += self.flush_sends();
        self.submit();
        work += self.reap(on_event);
        work += self.wake_pool_waiters(on_event);
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
        let op = Op::from_kind(kind);
        let res = e.result();
        let flags = e.flags();
        let more = cqueue::more(flags);
        let finished = match op {
            Some(Op::Accept | Op::Recv) => !more,
            Some(Op::SendZc) => cqueue::notif(flags) || !more,
            _ => true,
        };
        if finished {
            self.ops -= 1;
        }
        match op {
            Some(Op::Wake) => {
                self.wake_armed = false;
                if !self.shutting_down {
                    self.arm_wake();
                }
            }
            Some(Op::Accept) => self.on_accept(aux, res, more),
            Some(Op::Connect) => self.on_connect(index, res),
            Some(Op::Recv) => self.on_recv(index, res, flags, on_event),
            Some(Op::Send) => self.on_send(index, res, on_event),
            Some(Op::SendZc) => {
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
            Some(Op::Cancel) => {
                if let Some(c) = self.conns[index as usize].as_mut() {
                    c.ops -= 1;
                }
                self.maybe_finish_close(index);
            }
            Some(Op::CancelAll) => {}
            Some(Op::Shutdown) => self.on_shutdown(index, res),
            None => tracing::error!(kind, "completion with unknown kind"),
        }
        if !self.pending_reasons.is_empty() {
            self.report_pending(on_event);
        }
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
                State::Lingering { until: at, .. } => Some(at),
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

    fn run_timers<F: FnMut(&mut Driver, Event)>(&mut self, on_event: &mut F) -> usize {
        let now = Instant::now();
        self.next_deadline = None;
        let mut n = 0;
        for index in 0..self.conns.len() as u32 {
            let Some(state) = self.conns[index as usize].as_ref().map(|c| c.state) else {
                continue;
            };
            match state {
                State::Lingering { until, .. } if until <= now => {
                    let linger = self.cfg.close_linger;
                    self.abort(index, CloseReason::LingerTimeout { linger });
                    n += 1;
                }
                State::Lingering { until: at, .. } => self.note_deadline(at),
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
    pub fn park(&mut self, timeout: Option<Duration>) -> Result<(), SetupError> {
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
        let ready = !self.cqes.is_empty()
            || !self.ring.completion().is_empty()
            || (!self.starved.is_empty() && self.can_resume())
            || self.send_pool.space_returned();
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
            Err(source) => Err(SetupError::Io {
                op: "io_uring_enter (park)",
                source,
            }),
        }
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
            .user_data(ud(Op::CancelAll, 0, 0));
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
