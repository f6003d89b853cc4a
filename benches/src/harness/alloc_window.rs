//! Where a stream counts its allocations: the steady part of the stream.
//!
//! A connection's send staging grows to its bound once, early in a stream
//! (concord's transport allocates its staging chunks on demand), so a stream
//! sender opens its window at its first clock check after [`ALLOC_WARMUP`]
//! of the run and closes it after its last message. Allocations per message
//! are the window's allocations (every thread) over the messages sent in it.

use concord_runtime::alloc::{self, AllocSnapshot};
use std::time::Duration;

/// Share of a stream's duration before its allocation window opens.
pub const ALLOC_WARMUP: f64 = 0.1;

/// A stream sender's allocation window.
#[derive(Debug)]
pub struct AllocWindow {
    counting: bool,
    warmup: Duration,
    /// Counters and messages sent when the window opened.
    open: Option<(AllocSnapshot, u64)>,
}

impl AllocWindow {
    /// A window for a stream of `duration`; opens later, at
    /// [`at_clock_check`](AllocWindow::at_clock_check).
    #[must_use]
    pub fn new(duration: Duration) -> Self {
        AllocWindow {
            counting: alloc::is_installed(),
            warmup: duration.mul_f64(ALLOC_WARMUP),
            open: None,
        }
    }

    /// Called where the sender reads its clock: `elapsed` since the stream
    /// started, `sent` messages so far. Opens the window once the warm-up is over.
    #[inline]
    pub fn at_clock_check(&mut self, elapsed: Duration, sent: u64) {
        if self.open.is_none() && elapsed >= self.warmup {
            self.open = Some((alloc::snapshot(), sent));
        }
    }

    /// Closes the window after `sent` messages in all: (allocator diff over the
    /// window, messages sent in it). The diff is `None` when the counting
    /// allocator is not installed; a window that never opened is empty.
    #[must_use]
    pub fn close(self, sent: u64) -> (Option<AllocSnapshot>, u64) {
        let Some((before, sent_before)) = self.open else {
            return (self.counting.then(AllocSnapshot::default), 0);
        };
        let diff = alloc::snapshot().since(&before);
        (self.counting.then_some(diff), sent - sent_before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_warmup_and_counts_only_inside() {
        let mut w = AllocWindow::new(Duration::from_secs(10));
        let early = std::hint::black_box(vec![1u8; 16]);
        w.at_clock_check(Duration::from_millis(999), 50);
        assert!(w.open.is_none());
        w.at_clock_check(Duration::from_secs(1), 64);
        let (allocs, msgs) = w.close(200);
        assert_eq!(msgs, 136);
        // Lib tests install the counting allocator; other test threads may
        // allocate meanwhile, so only "counted" is certain here.
        assert!(allocs.is_some());
        drop(early);
    }

    #[test]
    fn a_window_that_never_opened_is_empty() {
        let w = AllocWindow::new(Duration::from_secs(1));
        assert_eq!(w.close(64), (Some(AllocSnapshot::default()), 0));
    }
}
