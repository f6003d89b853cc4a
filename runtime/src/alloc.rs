//! A counting global allocator: a measurement tool for tests, benches and
//! examples that must show a hot path allocates nothing.
//!
//! It is not part of the runtime proper and nothing in the runtime installs it;
//! a binary that wants the counts installs it itself:
//!
//! ```
//! use concord_runtime::alloc::{self, CountingAlloc};
//!
//! #[global_allocator]
//! static ALLOC: CountingAlloc = CountingAlloc;
//!
//! fn main() {
//!     assert!(alloc::is_installed());
//!     let before = alloc::thread_allocs();
//!     let v = std::hint::black_box(vec![0u8; 64]);
//!     assert_eq!(alloc::thread_allocs() - before, 1);
//!     drop(v);
//! }
//! ```
//!
//! and then diffs [`snapshot`]s taken around the measured loop. The counters are
//! process-wide statics (relaxed atomics: we want totals, not ordering between
//! threads), so allocations on the peer thread of a ping-pong count too, which is
//! what "allocations per message" must include. Beside them:
//!
//! - a per-thread counter ([`thread_allocs`]) for callers that must not see
//!   other threads' allocations;
//! - a counter of the allocations made on the threads that called
//!   [`track_current_thread`] ([`tracked_allocs`]), for a test whose measured
//!   work spans several threads it owns (two runtime shards) while other
//!   threads of the process (a test harness printing that a test is slow)
//!   allocate at the same time.
//!
//! If a binary forgets to install the allocator every counter stays at zero and a
//! bench would report a reassuring but false "0 allocations": [`is_installed`]
//! detects that.
//!
//! Each allocation pays a few relaxed atomic increments and two thread-local
//! reads: fine for measuring, not meant for production binaries.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static DEALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static TRACKED_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // `const` initialisation with Drop-free types: access never allocates and
    // never registers a destructor, which is what makes them usable from inside
    // the global allocator (a lazily initialised TLS slot could recurse into
    // `alloc`).
    static THREAD_ALLOCS: Cell<u64> = const { Cell::new(0) };
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

/// The global allocator wrapper: forwards to [`System`] and counts.
///
/// `realloc` counts as an allocation too: a growing `Vec` on the hot path is a
/// per-message heap operation just like a fresh `Box`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

impl CountingAlloc {
    fn count(size: usize) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
        // `try_with` because a thread being torn down may still free or allocate
        // after its TLS is gone; losing that count is fine, panicking is not.
        let _ = THREAD_ALLOCS.try_with(|c| c.set(c.get() + 1));
        if TRACKED.try_with(Cell::get).unwrap_or(false) {
            TRACKED_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged,
// so `System`'s guarantees (valid, suitably aligned blocks; realloc/dealloc of
// blocks it handed out) carry over; the counting touches only atomics and
// Drop-free const thread-locals, none of which allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract (non-zero
        // size), which is exactly `System.alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: same contract as `alloc`, forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        DEALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` was returned by this allocator, i.e. by `System`, with
        // this `layout` (the caller's contract).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(new_size);
        REALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr`/`layout` came from `System` via this allocator and
        // `new_size` satisfies the caller's contract, forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Process-wide allocation counters at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllocSnapshot {
    /// Allocations, including `alloc_zeroed` and `realloc`.
    pub allocs: u64,
    /// Of which reallocations.
    pub reallocs: u64,
    /// Deallocations.
    pub deallocs: u64,
    /// Bytes requested by the counted allocations.
    pub bytes: u64,
}

impl AllocSnapshot {
    /// What happened between `earlier` and `self`.
    #[must_use]
    pub fn since(&self, earlier: &AllocSnapshot) -> AllocSnapshot {
        AllocSnapshot {
            allocs: self.allocs.wrapping_sub(earlier.allocs),
            reallocs: self.reallocs.wrapping_sub(earlier.reallocs),
            deallocs: self.deallocs.wrapping_sub(earlier.deallocs),
            bytes: self.bytes.wrapping_sub(earlier.bytes),
        }
    }
}

/// Reads the process-wide counters.
#[must_use]
pub fn snapshot() -> AllocSnapshot {
    AllocSnapshot {
        allocs: ALLOCS.load(Ordering::Relaxed),
        reallocs: REALLOCS.load(Ordering::Relaxed),
        deallocs: DEALLOCS.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
    }
}

/// Allocations made by the calling thread so far.
#[must_use]
pub fn thread_allocs() -> u64 {
    THREAD_ALLOCS.try_with(Cell::get).unwrap_or(0)
}

/// Counts the calling thread's allocations from now on in [`tracked_allocs`]
/// (for the rest of the thread's life).
pub fn track_current_thread() {
    let _ = TRACKED.try_with(|t| t.set(true));
}

/// Allocations made so far on the threads that called [`track_current_thread`],
/// each counted from its call on.
#[must_use]
pub fn tracked_allocs() -> u64 {
    TRACKED_ALLOCS.load(Ordering::SeqCst)
}

/// Whether [`CountingAlloc`] is the global allocator of this process.
///
/// Checked by allocating once and seeing whether the thread's counter moved.
#[must_use]
pub fn is_installed() -> bool {
    let before = thread_allocs();
    let probe = std::hint::black_box(Box::new(std::hint::black_box(0u64)));
    drop(probe);
    thread_allocs() != before
}

#[cfg(test)]
mod tests {
    use super::*;

    // The counting itself is tested in `tests/no_alloc.rs`, the binary that
    // installs the allocator; the runtime's unit tests run on the system one.

    #[test]
    fn since_diffs_every_counter() {
        let a = AllocSnapshot {
            allocs: 5,
            reallocs: 1,
            deallocs: 2,
            bytes: 100,
        };
        let b = AllocSnapshot {
            allocs: 9,
            reallocs: 1,
            deallocs: 7,
            bytes: 164,
        };
        assert_eq!(
            b.since(&a),
            AllocSnapshot {
                allocs: 4,
                reallocs: 0,
                deallocs: 5,
                bytes: 64
            }
        );
    }

    #[test]
    fn not_installed_is_detected() {
        assert!(!is_installed(), "unit tests run on the system allocator");
        assert_eq!(thread_allocs(), 0);
    }
}
