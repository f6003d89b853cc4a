//! The node's clock: `CLOCK_BOOTTIME`, in nanoseconds.
//!
//! The Engine's sequencer lease is only safe if the clock it is given never
//! jumps forward or back relative to the clocks of its peers by more than
//! `Config::lease_drift` over a lease. `CLOCK_REALTIME` is stepped by NTP and
//! by hand; `CLOCK_MONOTONIC` stops while the machine is suspended, so a node
//! that wakes from suspend would believe a lease it granted is still running
//! after its peers' leases expired. `CLOCK_BOOTTIME` is monotonic, never
//! stepped, and counts through suspend (clock_gettime(2)). Every process on
//! one host reads the same `CLOCK_BOOTTIME`, which is also what lets the
//! multi-process tests compare timestamps across processes.

use concord_membership::Time;

/// Nanoseconds since boot (`CLOCK_BOOTTIME`), including time suspended.
pub fn now() -> Time {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on
    // every Linux since 2.6.39, and clock_gettime only writes `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME) cannot fail on Linux");
    Time(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_back() {
        let mut last = now();
        for _ in 0..10_000 {
            let t = now();
            assert!(t >= last);
            last = t;
        }
    }
}
