//! A connection's slot: its state, its socket and buffers, and the table
//! that hands out [`ConnId`]s.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::Driver;
use super::recv::RecvState;
use super::send::SendState;
use crate::sys::RawAddr;
use crate::{ConnId, Error, PeerInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
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

pub(super) struct Conn {
    pub(super) id: ConnId,
    pub(super) fd: RawFd,
    pub(super) state: State,
    /// `Some` for connections we initiate (kept across reconnects).
    pub(super) target: Option<Box<RawAddr>>,
    pub(super) addr: SocketAddr,
    pub(super) backoff: Duration,
    pub(super) app_closed: bool,
    pub(super) announced: bool,
    pub(super) reported: bool,
    pub(super) abortive: bool,
    /// `Some(deadline)` while a [`Driver::close`] lingers: the queue drains,
    /// then the write side shuts down, then the peer's EOF completes it.
    pub(super) linger_until: Option<Instant>,
    /// The SHUTDOWN(SHUT_WR) of a lingering close was submitted / completed.
    pub(super) wr_shut_sent: bool,
    pub(super) wr_shut_done: bool,
    /// The peer's EOF arrived while lingering.
    pub(super) peer_eof: bool,
    /// SEND_ZC buffers of this connection the kernel has not released yet.
    pub(super) zc_pending: u32,
    /// Operations in flight that reference this connection's memory or fd.
    pub(super) ops: u32,
    pub(super) recv: Option<RecvState>,
    pub(super) send: SendState,
    pub(super) peer: Option<PeerInfo>,
}

pub(super) struct Listener {
    pub(super) fd: RawFd,
    pub(super) addr: SocketAddr,
}

impl Conn {
    #[inline]
    pub(super) fn is_receiving(&self) -> bool {
        matches!(
            self.state,
            State::Handshaking { .. } | State::Open | State::Draining
        ) && !self.peer_eof
    }
}

impl Driver {
    pub(super) fn alloc_conn(&mut self, addr: SocketAddr, target: Option<Box<RawAddr>>) -> u32 {
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

    pub(super) fn free_conn(&mut self, index: u32) {
        self.conns[index as usize] = None;
        self.generations[index as usize] = self.generations[index as usize].wrapping_add(1);
        self.free_conns.push(index);
    }

    pub(super) fn conn_ref(&self, conn: ConnId) -> Result<&Conn, Error> {
        match self.conns.get(conn.index as usize) {
            Some(Some(c)) if c.id == conn => Ok(c),
            _ => Err(Error::UnknownConn { conn }),
        }
    }
}
