//! The receive path: the multishot receive over a connection's provided
//! buffer ring, parsing frames in place (and reassembling those that
//! straddle two buffers), and re-arming a ring the application starved.

use std::rc::Rc;

use io_uring::{cqueue, opcode, types};

use super::Driver;
use super::conn::State;
use super::op::{Op, os_err, ud};
use crate::frame::{self, Control, FrameError, FrameKind, HEADER_LEN, HandshakeError, Header};
use crate::recv_buf::{RecvFrame, RecvRing};
use crate::{CloseReason, Event};

pub(super) struct Assembly {
    pub(super) slot: u32,
    pub(super) header: Option<Header>,
}

pub(super) struct RecvState {
    pub(super) ring: Rc<RecvRing>,
    pub(super) registered: bool,
    /// Buffer the kernel is still appending to (holds a reference).
    pub(super) cur: Option<u16>,
    pub(super) parse_off: u32,
    pub(super) asm: Option<Assembly>,
    pub(super) armed: bool,
    pub(super) starved: bool,
}

pub(super) enum Step {
    Frame(RecvFrame),
    Control(Control),
    NeedMore,
    Bad(FrameError),
}

impl Driver {
    pub(super) fn arm_recv(&mut self, index: u32) {
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        let rs = c.recv.as_mut().expect("recv state");
        let e = opcode::RecvMulti::new(types::Fd(c.fd), rs.ring.bgid)
            .build()
            .user_data(ud(Op::Recv, 0, index));
        rs.armed = true;
        rs.starved = false;
        c.ops += 1;
        self.stats.recv_arms += 1;
        self.push_sqe(e);
    }

    pub(super) fn on_recv<F: FnMut(&mut Driver, Event)>(
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
        let lingering = matches!(c.state, State::Lingering { .. });
        let rs = c.recv.as_mut().expect("armed recv has state");
        let mut pressure = None;
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
                    rs.ring.retire(old);
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
                rs.ring.retire(bid);
            }
        } else {
            if let Some(bid) = bid
                && !buf_more
            {
                if rs.cur == Some(bid) {
                    rs.cur = None;
                    rs.ring.retire(bid);
                } else {
                    rs.ring.landed(bid, 0);
                    rs.ring.retire(bid);
                }
            }
            if res == -libc::ENOBUFS {
                if receiving && !more_op {
                    self.stats.recv_starved += 1;
                    // Every earlier completion has been parsed and its buffer
                    // retired, so buffers still out of the ring are held by
                    // frames. If some came back, the kernel merely outran the
                    // parser: re-arm at once (below). Otherwise pause.
                    if rs.ring.in_ring() == 0 {
                        rs.starved = true;
                        self.starved.push(index);
                        self.stats.recv_paused += 1;
                        pressure = Some(rs.ring.held());
                    }
                }
            } else if receiving && res == 0 && lingering {
                // The peer has read everything and closed: our close can end.
                if let State::Lingering { peer_eof, .. } = &mut self.conns[index as usize]
                    .as_mut()
                    .expect("op's conn exists")
                    .state
                {
                    *peer_eof = true;
                }
                self.linger_step(index);
            } else if receiving {
                let reason = if res == 0 {
                    CloseReason::PeerClosed
                } else {
                    CloseReason::Io {
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
        if let Some((held_buffers, held_bytes)) = pressure {
            let conn = self.conns[index as usize].as_ref().expect("conn").id;
            tracing::debug!(%conn, held_buffers, held_bytes, "receive paused: frames hold every buffer");
            on_event(
                self,
                Event::RecvPressure {
                    conn,
                    held_buffers: held_buffers as u32,
                    held_bytes,
                },
            );
        }
        self.report_pending(on_event);
        self.maybe_finish_close(index);
    }

    /// Whether a paused connection has buffers back (so a park must not
    /// block: the next poll resumes it).
    pub(super) fn can_resume(&self) -> bool {
        self.starved.iter().any(|&index| {
            self.conns[index as usize]
                .as_ref()
                .and_then(|c| c.recv.as_ref())
                .is_some_and(|rs| rs.starved && rs.ring.in_ring() > 0)
        })
    }

    /// Re-arms every paused connection whose frames gave buffers back, and
    /// reports [`Event::RecvResumed`] for each.
    pub(super) fn rearm_starved<F: FnMut(&mut Driver, Event)>(
        &mut self,
        on_event: &mut F,
    ) -> usize {
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
                    self.stats.recv_resumed += 1;
                    let conn = self.conns[index as usize].as_ref().expect("conn").id;
                    on_event(self, Event::RecvResumed { conn });
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
                        // While our close lingers the peer keeps sending until
                        // it reads our Goodbye: those frames are delivered,
                        // before the close event (which waits for its EOF).
                        State::Open | State::Lingering { .. } => {
                            on_event(self, Event::Frame { conn: id, frame })
                        }
                        State::Handshaking { .. } => {
                            drop(frame);
                            self.handshake_failed(
                                index,
                                HandshakeError::NotHello { got: "payload" },
                            );
                        }
                        // Draining: after the peer's own Goodbye (it promised
                        // nothing more, and its close was reported), or after
                        // we refused its handshake (never announced).
                        _ => {
                            self.stats.frames_after_goodbye += 1;
                            tracing::warn!(conn = %id, "payload frame after the peer's Goodbye; dropped");
                            drop(frame)
                        }
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
                        self.abort(index, CloseReason::Frame(e));
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
}
