//! Core pinning: the client of every case runs on one core, the server on another.
//!
//! The machines this runs on have two cores, so the client takes core 0 and the
//! server core 1; with more cores the same two are used, with fewer both share
//! core 0 (and latency will show it: the report says whether pinning held).

/// Core the client (the side that measures) is pinned to.
pub const CLIENT_CORE: usize = 0;
/// Core the server (the echoing or receiving side) is pinned to.
pub const SERVER_CORE: usize = 1;

/// Number of cores this process may run on.
#[must_use]
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Maps a wanted core onto one that exists here.
#[must_use]
pub fn core_for(wanted: usize) -> usize {
    wanted % available_cores()
}

/// Pins the calling thread to `core_for(wanted)`. Returns whether it held.
pub fn pin_current(wanted: usize) -> bool {
    let core = core_for(wanted);
    let Some(ids) = core_affinity::get_core_ids() else {
        return false;
    };
    match ids.into_iter().find(|c| c.id == core) {
        Some(id) => core_affinity::set_for_current(id),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_for_stays_in_range() {
        let n = available_cores();
        for w in 0..8 {
            assert!(core_for(w) < n);
        }
    }

    #[test]
    fn pinning_a_thread_holds() {
        let pinned = std::thread::spawn(|| pin_current(SERVER_CORE))
            .join()
            .unwrap();
        assert!(pinned);
    }
}
