//! The send path: staging chunks and their queue, claims, pooled buffers,
//! gathering the queue into one SEND / SENDMSG / SEND_ZC per connection, and
//! the completions and SEND_ZC notifications that release them.

use std::alloc::{Layout, alloc, dealloc};
use std::collections::VecDeque;
use std::ptr::NonNull;

use io_uring::{opcode, types};

use super::Driver;
use super::conn::State;
use super::op::{Op, os_err, ud};
use crate::frame::{self, Control, FrameKind, HEADER_LEN};
use crate::send_buf::{BufRef, SendBuf};
use crate::{CloseReason, ConnId, Event, SendError, SendOutcome};

/// A staging chunk: raw memory the kernel reads during a send while we
/// append further frames after it (disjoint ranges).
pub(super) struct Chunk {
    pub(super) ptr: NonNull<u8>,
    pub(super) cap: usize,
    pub(super) wpos: usize,
    /// Queue items that reference this chunk.
    pub(super) pending: u32,
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

pub(super) enum Item {
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
pub(super) struct Gather {
    pub(super) iov: [libc::iovec; MAX_IOV],
    pub(super) msg: libc::msghdr,
}

impl Gather {
    fn new() -> Box<Gather> {
        // SAFETY: iovec and msghdr are plain C structs (pointers and
        // integers); all-zero is a valid value of each.
        Box::new(unsafe { std::mem::zeroed() })
    }
}

pub(super) struct SendState {
    pub(super) chunks: Vec<Chunk>,
    pub(super) free: Vec<u8>,
    pub(super) fill: Option<u8>,
    pub(super) queue: VecDeque<Item>,
    /// Bytes of the head item already sent.
    pub(super) head_sent: u32,
    pub(super) in_flight: bool,
    /// Bytes the send in flight was submitted with (to count short sends).
    pub(super) in_flight_len: u32,
    pub(super) want_writable: bool,
    /// In the driver's list of connections the send pool refused.
    pub(super) pool_wait: bool,
    pub(super) in_flush_list: bool,
    pub(super) gather: Box<Gather>,
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
            pool_wait: false,
            in_flush_list: false,
            gather: Gather::new(),
        }
    }
}

impl SendState {
    pub(super) fn reset(&mut self) {
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

impl Driver {
    fn open_index(&self, conn: ConnId) -> Result<u32, SendError> {
        let c = self.conn_ref(conn)?;
        if c.state.app_closed() {
            return Err(SendError::Closed);
        }
        if c.state != State::Open {
            return Err(SendError::NotConnected { conn });
        }
        Ok(conn.index)
    }

    /// Reserves `flen` bytes (a whole frame) in the connection's staging
    /// chunks. `None` = back-pressured. Returns (chunk, offset, extends the
    /// queue's last item).
    pub(super) fn reserve(&mut self, index: u32, flen: usize) -> Option<(u8, usize, bool)> {
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

    pub(super) fn schedule_flush(&mut self, index: u32) {
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

    /// Refused because the shared send pool is at its cap: the connection's
    /// own queue may be empty, so its completions would never wake it.
    /// [`Event::Writable`] follows when any pooled buffer comes back.
    fn pool_back_pressured(&mut self, index: u32) -> SendOutcome {
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        if !c.send.pool_wait {
            c.send.pool_wait = true;
            self.pool_waiters.push(c.id);
        }
        self.back_pressured(index)
    }

    /// Wakes everyone the send pool refused, once a buffer has come back:
    /// [`Event::Writable`] for each connection still waiting, and
    /// [`Event::PoolWritable`] if an [`alloc_buf`](Driver::alloc_buf) failed.
    pub(super) fn wake_pool_waiters<F: FnMut(&mut Driver, Event)>(
        &mut self,
        on_event: &mut F,
    ) -> usize {
        if !self.send_pool.take_space_returned() {
            return 0;
        }
        let mut n = 0;
        let mut waiters = std::mem::take(&mut self.pool_waiters);
        for conn in waiters.drain(..) {
            let Some(c) = self.conns[conn.index as usize].as_mut() else {
                continue;
            };
            if c.id != conn {
                continue;
            }
            c.send.pool_wait = false;
            // A completion of its own may have woken it already.
            if c.send.want_writable && c.state == State::Open {
                c.send.want_writable = false;
                n += 1;
                on_event(self, Event::Writable { conn });
            }
        }
        if self.pool_waiters.is_empty() {
            // Keep the capacity: waiting again allocates nothing.
            self.pool_waiters = waiters;
        }
        if std::mem::take(&mut self.alloc_waiter) {
            n += 1;
            on_event(self, Event::PoolWritable);
        }
        n
    }

    /// Queues one payload frame (copied once into the staging chunk, or into
    /// a pooled buffer when larger than a chunk). Sent on the next poll,
    /// batched with the connection's other queued frames.
    pub fn send(&mut self, conn: ConnId, payload: &[u8]) -> Result<SendOutcome, SendError> {
        let index = self.open_index(conn)?;
        self.check_len(payload.len())?;
        let flen = HEADER_LEN + payload.len();
        if flen > self.cfg.send_chunk_size {
            let max = self.send_pool.max_payload();
            if payload.len() > max {
                // No amount of waiting would make room for it.
                return Err(SendError::FrameTooLarge {
                    len: payload.len(),
                    max,
                });
            }
            let Some((mut buf, fresh)) = SendBuf::new(&self.send_pool, payload.len()) else {
                return Ok(self.pool_back_pressured(index));
            };
            self.stats.pool_allocations += fresh as u64;
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

    fn check_len(&self, len: usize) -> Result<(), SendError> {
        let max = self.cfg.max_frame_len as usize;
        if len > max {
            return Err(SendError::FrameTooLarge { len, max });
        }
        Ok(())
    }

    /// Reserves room for a `len`-byte payload in the connection's staging
    /// chunk, to be written in place (no copy). `len` plus the 16-byte header
    /// must fit a chunk ([`DriverConfig::send_chunk_size`](crate::DriverConfig::send_chunk_size)); larger payloads
    /// go through [`alloc_buf`](Driver::alloc_buf).
    pub fn claim(&mut self, conn: ConnId, len: usize) -> Result<Claimed<'_>, SendError> {
        let index = self.open_index(conn)?;
        self.check_len(len)?;
        let max = self.cfg.send_chunk_size - HEADER_LEN;
        if len > max {
            return Err(SendError::FrameTooLarge { len, max });
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

    /// A pooled buffer for a `len`-byte payload, or `None`: when `len`
    /// exceeds the maximum frame (or the largest buffer
    /// [`DriverConfig::send_pool_bytes`](crate::DriverConfig::send_pool_bytes)
    /// admits: frames take power-of-two buffers), for good; when the pool is
    /// at its cap, as back-pressure, and [`Event::PoolWritable`] follows once
    /// a pooled buffer comes back (a send completes, a [`SendBuf`] drops).
    pub fn alloc_buf(&mut self, len: usize) -> Option<SendBuf> {
        match SendBuf::new(&self.send_pool, len) {
            Some((buf, fresh)) => {
                self.stats.pool_allocations += fresh as u64;
                Some(buf)
            }
            None => {
                if len <= self.send_pool.max_payload() {
                    self.stats.back_pressured += 1;
                    self.alloc_waiter = true;
                }
                None
            }
        }
    }

    /// Queues `buf` on one connection. Call it for each peer: one buffer, N
    /// sends. The first call writes the header and freezes the buffer.
    pub fn send_buf(&mut self, conn: ConnId, buf: &SendBuf) -> Result<SendOutcome, SendError> {
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
    pub(super) fn send_control(&mut self, index: u32, msg: &Control) -> bool {
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

    pub(super) fn flush_sends(&mut self) -> usize {
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
            || matches!(c.state, State::Closing { .. } | State::Backoff { .. })
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
                    .user_data(ud(Op::SendZc, slot, index))
            }
            None if niov > 1 => {
                self.stats.gathered_sends += 1;
                let g = &mut *c.send.gather;
                g.msg.msg_iov = g.iov.as_mut_ptr();
                g.msg.msg_iovlen = niov as _;
                opcode::SendMsg::new(types::Fd(fd), &g.msg)
                    .flags((libc::MSG_NOSIGNAL | SEND_WAITALL) as u32)
                    .build()
                    .user_data(ud(Op::Send, 0, index))
            }
            None => opcode::Send::new(types::Fd(fd), ptr, len)
                .flags(libc::MSG_NOSIGNAL | SEND_WAITALL)
                .build()
                .user_data(ud(Op::Send, 0, index)),
        };
        self.push_sqe(e);
        true
    }

    pub(super) fn on_send(
        &mut self,
        index: u32,
        res: i32,
        on_event: &mut impl FnMut(&mut Driver, Event),
    ) {
        let c = self.conns[index as usize]
            .as_mut()
            .expect("op's conn exists");
        c.ops -= 1;
        c.send.in_flight = false;
        if res < 0 {
            self.abort(
                index,
                CloseReason::Io {
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
        } else {
            match state {
                State::Lingering { .. } => self.linger_step(index),
                State::Draining { .. } => self.shutdown_socket(index, false),
                _ => {}
            }
        }
        if writable {
            let conn = self.conns[index as usize].as_ref().expect("conn exists").id;
            on_event(self, Event::Writable { conn });
        }
        self.maybe_finish_close(index);
    }

    /// The kernel let go of a SEND_ZC buffer (or will send no notification).
    pub(super) fn zc_released(&mut self, slot: u32) {
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
}
