//! Listening, accepting, connecting, and reconnecting with backoff.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Instant;

use io_uring::{opcode, types};

use super::Driver;
use super::conn::{Listener, State};
use super::op::{Op, os_err, ud};
use crate::sys;
use crate::{ConnId, SetupError};

impl Driver {
    /// Listens on `addr` (port 0 picks one) and returns the bound address.
    pub fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr, SetupError> {
        let (fd, bound) =
            sys::listen(addr, self.cfg.listen_backlog).map_err(|source| SetupError::Io {
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
            .user_data(ud(Op::Accept, li, 0));
        self.push_sqe(e);
    }

    /// Starts connecting to `addr` and returns at once. The driver retries
    /// with exponential backoff until the handshake completes
    /// ([`Event::Connected`](crate::Event::Connected)), and reconnects the same way whenever the
    /// connection breaks, until [`close`](Driver::close).
    pub fn connect(&mut self, addr: SocketAddr) -> Result<ConnId, SetupError> {
        let raw = Box::new(sys::to_raw(addr));
        let index = self.alloc_conn(addr, Some(raw));
        self.start_connect(index);
        self.submit();
        Ok(self.conns[index as usize]
            .as_ref()
            .expect("just allocated")
            .id)
    }

    pub(super) fn start_connect(&mut self, index: u32) {
        self.stats.connect_attempts += 1;
        let c = self.conns[index as usize].as_mut().expect("conn exists");
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
        .user_data(ud(Op::Connect, 0, index));
        self.push_sqe(e);
    }

    pub(super) fn enter_backoff(&mut self, index: u32) {
        let c = self.conns[index as usize].as_mut().expect("conn exists");
        let until = Instant::now() + c.backoff;
        c.backoff = (c.backoff * 2).min(self.cfg.connect_backoff_max);
        c.state = State::Backoff { until };
        self.note_deadline(until);
    }

    pub(super) fn on_accept(&mut self, li: u32, res: i32, more: bool) {
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

    pub(super) fn on_connect(&mut self, index: u32, res: i32) {
        let c = self.conns[index as usize]
            .as_mut()
            .expect("op's conn exists");
        c.ops -= 1;
        if matches!(c.state, State::Closing { .. }) {
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
}
