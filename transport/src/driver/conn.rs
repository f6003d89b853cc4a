//! A connection's slot: its state, its socket and buffers, and the table
//! that hands out [`ConnId`]s.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::Driver;
use super::recv::RecvState;
use super::send::SendState;
use crate::sys::RawAddr;
use crate::{ConnId, PeerInfo, SendError};

/// Where a connection is in its life. Each phase carries what only it
/// needs, so a flag of one phase cannot be set in another.
///
/// The reason a connection ends is recorded once per connection attempt
/// ([`Driver::set_reason`]): in `Draining` and `Closing` it has been, in the
/// phases before them it has not. Nothing records a reason while backing off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Outgoing: the CONNECT is in flight. An accepted connection starts
    /// here too and is set up at once.
    Connecting,
    /// Hello sent; the peer's Hello is due by `deadline`.
    Handshaking {
        /// When the handshake times out.
        deadline: Instant,
    },
    /// `Connected` was reported; sends are accepted.
    Open,
    /// A [`Driver::close`] of an open connection lingers: the queue drains,
    /// the SEND_ZC buffers come back, then the write side shuts down, then
    /// the peer's EOF completes it. Sends are refused.
    Lingering {
        /// When the connection is reset instead.
        until: Instant,
        /// The SHUTDOWN(SHUT_WR) of the write side.
        wr_shut: WrShut,
        /// The peer's EOF arrived (nothing more is received).
        peer_eof: bool,
    },
    /// Closing once the queue has flushed (reason already recorded): the
    /// peer said goodbye, or we refused its handshake.
    Draining {
        /// [`Driver::close`] was called meanwhile: sends are refused and no
        /// reconnect follows.
        app_closed: bool,
    },
    /// Socket shut down (reason already recorded); waiting for in-flight
    /// operations.
    Closing {
        /// [`Driver::close`] was called: no reconnect follows.
        app_closed: bool,
        /// A lingering close ended here before completing: its deadline is
        /// forgotten once the connection is released.
        linger_deadline: bool,
    },
    /// Outgoing only: waiting to reconnect.
    Backoff {
        /// When to connect again.
        until: Instant,
    },
}

/// The SHUTDOWN(SHUT_WR) of a lingering close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WrShut {
    /// Not submitted yet (the queue or SEND_ZC buffers are still draining).
    NotSent,
    /// Submitted, not completed.
    Sent,
    /// Completed: the peer has seen our EOF.
    Done,
}

impl State {
    /// [`Driver::close`] was called: sends are refused with `Closed`, and the
    /// connection is released, not reconnected, once closed.
    pub(super) fn app_closed(&self) -> bool {
        match *self {
            State::Lingering { .. } => true,
            State::Draining { app_closed } | State::Closing { app_closed, .. } => app_closed,
            _ => false,
        }
    }

    /// The application saw `Connected` and no reason to end has been
    /// recorded yet, so the end is reported as `Disconnected`.
    pub(super) fn announced(&self) -> bool {
        matches!(self, State::Open | State::Lingering { .. })
    }

    /// Why the connection ends has been recorded already.
    pub(super) fn reason_recorded(&self) -> bool {
        matches!(self, State::Draining { .. } | State::Closing { .. })
    }

    /// The `Closing` a shutdown of the socket in this phase leads to.
    pub(super) fn closing(self) -> State {
        match self {
            State::Lingering { .. } => State::Closing {
                app_closed: true,
                linger_deadline: true,
            },
            State::Draining { app_closed } => State::Closing {
                app_closed,
                linger_deadline: false,
            },
            State::Closing { .. } => self,
            State::Connecting | State::Handshaking { .. } | State::Open | State::Backoff { .. } => {
                State::Closing {
                    app_closed: false,
                    linger_deadline: false,
                }
            }
        }
    }
}

pub(super) struct Conn {
    pub(super) id: ConnId,
    pub(super) fd: RawFd,
    pub(super) state: State,
    /// `Some` for connections we initiate (kept across reconnects).
    pub(super) target: Option<Box<RawAddr>>,
    pub(super) addr: SocketAddr,
    pub(super) backoff: Duration,
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
            State::Handshaking { .. }
                | State::Open
                | State::Draining { .. }
                | State::Lingering {
                    peer_eof: false,
                    ..
                }
        )
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

    pub(super) fn conn_ref(&self, conn: ConnId) -> Result<&Conn, SendError> {
        match self.conns.get(conn.index as usize) {
            Some(Some(c)) if c.id == conn => Ok(c),
            _ => Err(SendError::UnknownConn { conn }),
        }
    }
}
