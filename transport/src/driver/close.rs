//! Closing: the graceful close that lingers until the peer has read
//! everything, the peer's goodbye, aborts, and releasing a connection once
//! the kernel is done with it.

use std::time::Instant;

use io_uring::{opcode, types};

use super::Driver;
use super::conn::{State, WrShut};
use super::op::{Op, os_err, ud};
use crate::frame::Control;
use crate::sys;
use crate::{CloseReason, ConnId, Event, SendError};

impl Driver {
    /// Closes a connection gracefully; an outgoing one stops reconnecting.
    ///
    /// From this call on the connection accepts nothing new: [`send`],
    /// [`claim`] and [`send_buf`] return [`SendError::Closed`]. Every frame
    /// already queued (answered [`SendOutcome::Queued`](crate::SendOutcome::Queued)) is still sent, in
    /// order, followed by a Goodbye; once the last send has completed and the
    /// kernel has released every SEND_ZC buffer, the write side is shut down
    /// (SHUTDOWN with `SHUT_WR`), and the close completes when the peer's EOF
    /// arrives, i.e. after the peer has read everything. Frames the peer
    /// sends meanwhile are still delivered. Only then does
    /// [`Event::Disconnected`] with [`CloseReason::Closed`] follow: after it, the
    /// driver may be dropped without losing any accepted frame.
    ///
    /// If that takes longer than [`DriverConfig::close_linger`](crate::DriverConfig::close_linger) (a peer that
    /// stops reading or never closes), the connection is reset and the event
    /// carries [`CloseReason::LingerTimeout`] instead; a send or receive error on
    /// the way carries that error. A connection not yet open is dropped at
    /// once: connecting or handshaking, with [`Event::HandshakeFailed`]
    /// (reason [`CloseReason::Closed`]); backing off, silently.
    ///
    /// Dropping the [`Driver`] instead is abortive: see its `Drop`.
    ///
    /// [`send`]: Driver::send
    /// [`claim`]: Driver::claim
    /// [`send_buf`]: Driver::send_buf
    pub fn close(&mut self, conn: ConnId) -> Result<(), SendError> {
        self.conn_ref(conn)?;
        let index = conn.index;
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        match &mut c.state {
            State::Open => {
                // Without room for the Goodbye the peer still sees the EOF.
                self.send_control(index, &Control::Goodbye { code: 0 });
                let until = Instant::now() + self.cfg.close_linger;
                let c = self.conns[index as usize].as_mut().expect("conn exists");
                c.state = State::Lingering {
                    until,
                    wr_shut: WrShut::NotSent,
                    peer_eof: false,
                };
                self.note_deadline(until);
                self.linger_step(index);
            }
            State::Backoff { .. } => self.free_conn(index),
            State::Draining { app_closed } | State::Closing { app_closed, .. } => {
                *app_closed = true
            }
            State::Lingering { .. } => {}
            State::Connecting | State::Handshaking { .. } => {
                self.abort(index, CloseReason::Closed);
                // abort left it Closing; no reconnect follows.
                if let Some(c) = self.conns[index as usize].as_mut()
                    && let State::Closing { app_closed, .. } = &mut c.state
                {
                    *app_closed = true;
                }
            }
        }
        Ok(())
    }

    /// Advances a lingering close: flush the queue, wait for the SEND_ZC
    /// notifications, shut the write side down, wait for the peer's EOF,
    /// then report [`CloseReason::Closed`] and release the socket.
    pub(super) fn linger_step(&mut self, index: u32) {
        let Some(c) = self.conns[index as usize].as_mut() else {
            return;
        };
        let State::Lingering {
            wr_shut, peer_eof, ..
        } = c.state
        else {
            return;
        };
        if !c.send.queue.is_empty() || c.send.in_flight {
            self.schedule_flush(index);
            return;
        }
        if c.zc_pending > 0 {
            return;
        }
        if wr_shut == WrShut::NotSent {
            if let State::Lingering { wr_shut, .. } = &mut c.state {
                *wr_shut = WrShut::Sent;
            }
            c.ops += 1;
            let e = opcode::Shutdown::new(types::Fd(c.fd), libc::SHUT_WR)
                .build()
                .user_data(ud(Op::Shutdown, 0, index));
            self.push_sqe(e);
            return;
        }
        if wr_shut == WrShut::Done && peer_eof {
            self.set_reason(index, CloseReason::Closed);
            // The linger is over: shut down as a drained close, which has no
            // deadline left to forget when it finishes.
            let c = self.conns[index as usize].as_mut().expect("conn exists");
            c.state = State::Draining { app_closed: true };
            self.shutdown_socket(index, false);
            // Cold path: drop the linger deadline so polls stop reading the clock.
            self.recompute_deadline();
        }
    }

    pub(super) fn on_shutdown(&mut self, index: u32, res: i32) {
        let Some(c) = self.conns[index as usize].as_mut() else {
            return;
        };
        c.ops -= 1;
        if res < 0 {
            if matches!(c.state, State::Draining { .. } | State::Lingering { .. }) {
                self.abort(
                    index,
                    CloseReason::Io {
                        op: "shutdown",
                        source: os_err(res),
                    },
                );
            }
        } else {
            if let State::Lingering { wr_shut, .. } = &mut c.state {
                *wr_shut = WrShut::Done;
            }
            self.linger_step(index);
        }
        self.maybe_finish_close(index);
    }

    /// Records why the connection ends, to be reported once.
    fn set_reason(&mut self, index: u32, reason: CloseReason) {
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        if !c.state.reason_recorded() {
            self.pending_reasons
                .push((index, c.id, c.state.announced(), c.addr, reason));
        }
    }

    pub(super) fn graceful(&mut self, index: u32, reason: CloseReason) {
        let c = self.conns[index as usize].as_ref().expect("conn exists");
        if matches!(c.state, State::Lingering { .. }) {
            // Our own close is lingering; it reports when it completes.
            return;
        }
        self.set_reason(index, reason);
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        if matches!(
            c.state,
            State::Closing { .. } | State::Backoff { .. } | State::Draining { .. }
        ) {
            return;
        }
        // Connecting, handshaking or open: close was not called.
        c.state = State::Draining { app_closed: false };
        if c.send.queue.is_empty() && !c.send.in_flight {
            self.shutdown_socket(index, false);
        } else {
            self.schedule_flush(index);
        }
    }

    pub(super) fn abort(&mut self, index: u32, reason: CloseReason) {
        self.set_reason(index, reason);
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        if matches!(c.state, State::Closing { .. } | State::Backoff { .. }) {
            return;
        }
        self.shutdown_socket(index, true);
    }

    /// Shuts the socket down (`abortive`: with a reset) and moves to
    /// `Closing` until the operations in flight complete.
    pub(super) fn shutdown_socket(&mut self, index: u32, abortive: bool) {
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        c.state = c.state.closing();
        if c.fd < 0 {
            return;
        }
        if abortive {
            let _ = sys::set_linger_zero(c.fd);
        }
        // Wakes the armed recv (EOF) and fails a blocked send; the cancel
        // catches a connect still in progress.
        sys::shutdown(c.fd);
        if c.ops > 0 {
            c.ops += 1;
            let e = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(c.fd)).all())
                .build()
                .user_data(ud(Op::Cancel, 0, index));
            self.push_sqe(e);
        }
    }

    /// Emits the Disconnected / HandshakeFailed events recorded so far.
    pub(super) fn report_pending(&mut self, on_event: &mut impl FnMut(&mut Driver, Event)) {
        let pending = std::mem::take(&mut self.pending_reasons);
        for (index, conn, announced, addr, reason) in pending {
            if announced {
                self.stats.disconnects += 1;
                let c = self.conns[index as usize].as_mut();
                if let Some(c) = c {
                    c.peer = None;
                }
                on_event(self, Event::Disconnected { conn, reason });
            } else {
                on_event(self, Event::HandshakeFailed { conn, addr, reason });
            }
        }
    }

    pub(super) fn maybe_finish_close(&mut self, index: u32) {
        let Some(c) = self.conns[index as usize].as_mut() else {
            return;
        };
        let State::Closing {
            app_closed,
            linger_deadline,
        } = c.state
        else {
            return;
        };
        if c.ops > 0 {
            return;
        }
        if let Some(mut rs) = c.recv.take() {
            if rs.registered {
                let _ = self.ring.submitter().unregister_buf_ring(rs.ring.bgid);
            }
            if let Some(bid) = rs.cur.take() {
                rs.ring.retire(bid);
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
        if linger_deadline {
            // A close that ended in an error: forget its deadline.
            self.recompute_deadline();
        }
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        if c.target.is_some() && !app_closed {
            self.enter_backoff(index);
        } else {
            self.free_conn(index);
        }
    }
}
