//! CPU affinity of threads (`sched_getaffinity` / `sched_setaffinity`).
//!
//! The runtime pins each shard to one CPU with [`pin_current_thread`]. Benches,
//! tests and examples that want "core 0" and "core 1" use [`pin_to`], which maps
//! a wanted core onto the CPUs the process may use, so the same code runs on a
//! machine with fewer cores or a narrower affinity mask.

use std::io;
use std::mem;

/// The CPUs the calling thread may run on, ascending.
pub fn current_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is the valid empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t and the size passed is its size; pid 0 is
    // the calling thread.
    let rc = unsafe { libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the bit count of `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Pin the calling thread to exactly `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpu {cpu} is beyond CPU_SETSIZE"),
        ));
    }
    // SAFETY: an all-zero cpu_set_t is the valid empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `cpu` was checked to be below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t and the size passed is its size; pid 0 is
    // the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPU that stands for core `wanted` here: the `wanted % n`-th (ascending)
/// of the `n` CPUs the calling thread may run on. Core 0 is the first allowed
/// CPU, core 1 the second; with a single allowed CPU every core maps onto it.
///
/// A thread starts with the mask of the thread that spawned it, so call this
/// on threads spawned by one that is not pinned (or before pinning it): the
/// mask is then the process's.
pub fn cpu_for(wanted: usize) -> io::Result<usize> {
    let cpus = current_cpus()?;
    if cpus.is_empty() {
        return Err(io::Error::other(
            "the affinity mask of this thread is empty",
        ));
    }
    Ok(cpus[wanted % cpus.len()])
}

/// Pins the calling thread to [`cpu_for`]`(wanted)`; returns that CPU.
pub fn pin_to(wanted: usize) -> io::Result<usize> {
    let cpu = cpu_for(wanted)?;
    pin_current_thread(cpu)?;
    Ok(cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_restricts_the_thread_to_one_cpu() {
        let cpus = current_cpus().unwrap();
        assert!(!cpus.is_empty());
        let last = *cpus.last().unwrap();
        std::thread::spawn(move || {
            pin_current_thread(last).unwrap();
            assert_eq!(current_cpus().unwrap(), vec![last]);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn wanted_cores_map_onto_the_allowed_cpus() {
        let cpus = current_cpus().unwrap();
        for wanted in 0..2 * cpus.len() + 1 {
            assert_eq!(cpu_for(wanted).unwrap(), cpus[wanted % cpus.len()]);
        }
        let want = 1;
        let got = std::thread::spawn(move || {
            let cpu = pin_to(want).unwrap();
            assert_eq!(current_cpus().unwrap(), vec![cpu]);
            cpu
        })
        .join()
        .unwrap();
        assert_eq!(got, cpus[want % cpus.len()]);
    }

    #[test]
    fn out_of_range_cpu_is_an_error() {
        let err = std::thread::spawn(|| pin_current_thread(1 << 20))
            .join()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
