//! The handshake: setting an established socket up and saying Hello,
//! checking the peer's Hello (or telling it why not), and the control
//! messages of an open connection.

use std::rc::Rc;
use std::time::Instant;

use super::Driver;
use super::conn::State;
use super::probe::IOU_PBUF_RING_INC;
use super::recv::RecvState;
use crate::frame::{self, Control, HEADER_LEN, HandshakeError};
use crate::recv_buf::RecvRing;
use crate::sys;
use crate::{CloseReason, Event, PeerInfo, VersionRange};

impl Driver {
    /// The socket is connected (either way): set it up and say Hello.
    pub(super) fn established(&mut self, index: u32) {
        let keepalive = self.cfg.keepalive;
        let (buf_size, buf_count) = (self.cfg.recv_buf_size, self.cfg.recv_buf_count);
        let Some(bgid) = self.bgids.pop() else {
            self.abort(
                index,
                CloseReason::Config {
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
        let ring = Rc::new(RecvRing::new(
            bgid,
            buf_size,
            buf_count,
            Rc::clone(&self.recv_account),
        ));
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
                CloseReason::Io {
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
            incarnation: self.cfg.incarnation,
            cluster_id: self.cfg.cluster_id,
            protocol_min: self.cfg.protocol.min,
            protocol_max: self.cfg.protocol.max,
            build: self.cfg.build.clone(),
        });
        self.send_control(index, &hello);
    }

    pub(super) fn on_control<F: FnMut(&mut Driver, Event)>(
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
            State::Open | State::Draining { .. } | State::Lingering { .. } => match msg {
                Control::Ping { nonce } => {
                    if state == State::Open {
                        self.send_control(index, &Control::Pong { nonce });
                    }
                }
                Control::Pong { .. } => {}
                Control::Goodbye { code } => {
                    self.graceful(index, CloseReason::PeerGoodbye { code })
                }
                Control::Hello(_) => {
                    self.abort(index, CloseReason::UnexpectedControl { got: "Hello" })
                }
                Control::Reject(_) => {
                    self.abort(index, CloseReason::UnexpectedControl { got: "Reject" })
                }
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
            incarnation: h.incarnation,
            cluster_id: h.cluster_id,
            protocol: theirs,
            negotiated,
            build: h.build,
        };
        c.state = State::Open;
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
    pub(super) fn handshake_failed(&mut self, index: u32, e: HandshakeError) {
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
                self.graceful(index, CloseReason::Handshake(e));
            }
            None => self.abort(index, CloseReason::Handshake(e)),
        }
    }
}
