//! What one run of one case measured: a ping-pong [`CaseResult`] or a
//! [`StreamResult`].

use crate::harness::summary::Summary;
use concord_runtime::alloc::AllocSnapshot;
use std::time::Duration;

/// What one ping-pong case measured.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Round-trip latency over the measured loop.
    pub summary: Summary,
    /// Measured round trips (each is two messages: request and echo).
    pub round_trips: u64,
    /// Heap activity across the measured loop on every thread; `None` when the
    /// counting allocator is not installed in this process.
    pub allocs: Option<AllocSnapshot>,
    /// Whether both threads were pinned.
    pub pinned: bool,
    /// Frames that straddled two receive buffers and were copied (concord's
    /// transport only; both sides together).
    pub straddled_frames: Option<u64>,
}

impl CaseResult {
    /// Heap allocations per message (two messages per round trip).
    #[must_use]
    pub fn allocs_per_msg(&self) -> Option<f64> {
        let a = self.allocs?;
        if self.round_trips == 0 {
            return None;
        }
        Some(a.allocs as f64 / (2 * self.round_trips) as f64)
    }
}

/// What one streaming case measured.
#[derive(Debug, Clone, Copy)]
pub struct StreamResult {
    /// Messages delivered (equal to those sent, or the case fails).
    pub messages: u64,
    /// Payload bytes delivered.
    pub payload_bytes: u64,
    /// Receiver's clock from first byte to close.
    pub elapsed: Duration,
    /// Heap activity on every thread over the steady part of the stream
    /// ([`crate::harness::alloc_window`]); `None` when the counting allocator
    /// is not installed in this process.
    pub allocs: Option<AllocSnapshot>,
    /// Messages sent inside that window.
    pub steady_messages: u64,
    /// Whether both threads were pinned.
    pub pinned: bool,
    /// Frames that straddled two receive buffers and were copied (concord's
    /// transport only; both sides together).
    pub straddled_frames: Option<u64>,
}

impl StreamResult {
    /// Messages per second.
    #[must_use]
    pub fn msgs_per_s(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Payload gigabytes (1e9 bytes) per second.
    #[must_use]
    pub fn gb_per_s(&self) -> f64 {
        self.payload_bytes as f64 / 1e9 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Heap allocations per message in the steady part of the stream.
    #[must_use]
    pub fn allocs_per_msg(&self) -> Option<f64> {
        let a = self.allocs?;
        if self.steady_messages == 0 {
            return None;
        }
        Some(a.allocs as f64 / self.steady_messages as f64)
    }
}
