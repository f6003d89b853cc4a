//! The environment check: a throwaway ring that must support every
//! operation and feature the driver uses.

use io_uring::{IoUring, opcode};

use crate::SetupError;
use crate::recv_buf::RecvRing;

/// `IOU_PBUF_RING_INC` (kernel 6.12+): the kernel consumes a provided buffer
/// incrementally, so successive receives append to the same buffer. The
/// io-uring crate does not export its `sys` constants.
pub(super) const IOU_PBUF_RING_INC: u16 = 2;

/// Creates a throwaway ring and checks the operations we rely on.
pub(crate) fn probe_ring() -> Result<(), SetupError> {
    let ring: IoUring = IoUring::builder()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(8)
        .map_err(|source| SetupError::RingSetup { source })?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|source| SetupError::Io {
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
            return Err(SetupError::Unsupported { what });
        }
    }
    if !ring.params().is_feature_ext_arg() {
        return Err(SetupError::Unsupported {
            what: "EXT_ARG (timed waits)",
        });
    }
    // Provided-buffer rings with incremental consumption.
    let r = RecvRing::new(0, 4096, 1, Default::default());
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
        Err(_) => Err(SetupError::Unsupported {
            what: "provided buffer rings (IOU_PBUF_RING_INC)",
        }),
    }
}
