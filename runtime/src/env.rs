//! Start-up checks: is io_uring usable the way the transport needs it, and does
//! the memlock limit cover what the shards pin?
//!
//! [`probe`] gathers everything without failing (the `concord doctor` command
//! prints it); [`EnvReport::problems`] turns it into typed errors whose `Display`
//! says how to fix each one; [`check_environment`] is the two together and is
//! what [`Builder::build`](crate::Builder::build) runs.
//!
//! Memlock, precisely: io_uring ring memory is charged to the memory cgroup since
//! Linux 5.12, but pages the kernel pins for registered buffers and user-memory
//! provided-buffer rings are charged to RLIMIT_MEMLOCK, unless the process holds
//! CAP_IPC_LOCK, which skips the accounting (io_uring/rsrc.c `io_account_mem`,
//! only done when `ctx->user` is set, which `io_uring_create` does only without
//! CAP_IPC_LOCK). So root passes regardless of `ulimit -l`; everyone else needs
//! the limit.

use std::io;

use io_uring::{IoUring, Probe, opcode};

use crate::error::{Error, UringBlocker};

/// Oldest kernel with everything the transport uses: incremental provided-buffer
/// rings (`IOU_PBUF_RING_INC`, 6.12), multishot receive (6.0), SEND_ZC (6.0),
/// COOP_TASKRUN (5.19).
pub const MIN_KERNEL: (u32, u32) = (6, 12);

/// `IOU_PBUF_RING_INC` (include/uapi/linux/io_uring.h, 6.12): the kernel consumes a
/// provided buffer incrementally; the transport's receive path depends on it.
const IOU_PBUF_RING_INC: u16 = 2;

/// Memlock a shard's transport pins with the default `DriverConfig`: one page of
/// buffer-ring entries per connection for up to 64 connections plus 1 MiB
/// (the transport's own estimate, 1.25 MiB), rounded up for headroom. A shard
/// configured larger should say so with
/// [`Builder::memlock_per_shard`](crate::Builder::memlock_per_shard).
pub const DEFAULT_MEMLOCK_PER_SHARD: u64 = 2 << 20;

/// Linux capability number of CAP_IPC_LOCK (include/uapi/linux/capability.h).
const CAP_IPC_LOCK: u32 = 14;

/// What the runtime about to start will need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirements {
    /// Shards that will each own an io_uring.
    pub shards: usize,
    /// Bytes each shard pins (charged to RLIMIT_MEMLOCK).
    pub memlock_per_shard: u64,
}

impl Requirements {
    /// Total memlock bytes needed.
    pub fn memlock_need(&self) -> u64 {
        self.memlock_per_shard.saturating_mul(self.shards as u64)
    }
}

/// One io_uring opcode the transport uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpSupport {
    /// Name without the `IORING_OP_` prefix.
    pub name: &'static str,
    /// Whether concord cannot run without it.
    pub required: bool,
    /// Whether the kernel reports it supported.
    pub supported: bool,
}

/// What the io_uring probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoUringReport {
    /// `kernel.io_uring_disabled` (absent before Linux 6.6).
    pub disabled_sysctl: Option<u8>,
    /// `Err(errno)` if no ring could be created.
    pub setup: Result<(), i32>,
    /// Whether a ring with COOP_TASKRUN | TASKRUN_FLAG (the low-latency setup the
    /// transport uses) could be created.
    pub coop_taskrun: bool,
    /// The opcodes probed (empty if setup failed).
    pub ops: Vec<OpSupport>,
    /// Registering a provided-buffer ring: `None` if not tried (setup failed).
    pub buf_ring: Option<Result<(), i32>>,
}

/// The memlock numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemLockReport {
    /// Soft limit in bytes (`u64::MAX` = unlimited).
    pub soft: u64,
    /// Hard limit in bytes (`u64::MAX` = unlimited).
    pub hard: u64,
    /// Bytes needed.
    pub need: u64,
    /// Shards the need is for.
    pub shards: usize,
    /// The process holds CAP_IPC_LOCK, so the limit is not enforced on io_uring.
    pub cap_ipc_lock: bool,
}

/// Everything [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvReport {
    /// `uname -r`.
    pub kernel_release: String,
    /// (major, minor) parsed from the release, if it parses.
    pub kernel_version: Option<(u32, u32)>,
    /// CPUs online.
    pub cpus_online: usize,
    /// CPUs this process may run on.
    pub cpus_allowed: Vec<usize>,
    /// io_uring findings.
    pub io_uring: IoUringReport,
    /// Memlock findings.
    pub memlock: MemLockReport,
}

impl EnvReport {
    /// Every problem found, most fundamental first. Empty means concord can run.
    pub fn problems(&self) -> Vec<Error> {
        let mut out = Vec::new();
        if let Some(have) = self.kernel_version
            && have < MIN_KERNEL
        {
            out.push(Error::IoUringUnavailable {
                reason: UringBlocker::KernelTooOld {
                    have,
                    need: MIN_KERNEL,
                },
            });
        }
        match self.io_uring.setup {
            Err(errno) => {
                let reason = match self.io_uring.disabled_sysctl {
                    Some(value)
                        if value != 0 && (errno == libc::EPERM || errno == libc::EACCES) =>
                    {
                        UringBlocker::DisabledBySysctl { value }
                    }
                    _ => UringBlocker::SetupFailed { errno },
                };
                out.push(Error::IoUringUnavailable { reason });
            }
            Ok(()) => {
                for op in &self.io_uring.ops {
                    if op.required && !op.supported {
                        out.push(Error::IoUringUnavailable {
                            reason: UringBlocker::MissingOpcode { op: op.name },
                        });
                    }
                }
                if let Some(Err(errno)) = self.io_uring.buf_ring {
                    out.push(Error::IoUringUnavailable {
                        reason: UringBlocker::BufRing { errno },
                    });
                }
            }
        }
        let m = &self.memlock;
        if let Err(e) = check_memlock(m.soft, m.hard, m.need, m.shards, m.cap_ipc_lock) {
            out.push(e);
        }
        out
    }

    /// The first problem, if any.
    pub fn check(&self) -> Result<(), Error> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The memlock rule on its own, with every input injectable.
pub fn check_memlock(
    soft: u64,
    hard: u64,
    need: u64,
    shards: usize,
    cap_ipc_lock: bool,
) -> Result<(), Error> {
    if cap_ipc_lock || soft >= need {
        Ok(())
    } else {
        Err(Error::MemLockLimit {
            have: soft,
            hard,
            need,
            shards,
        })
    }
}

/// Probe the environment for `req`. Never fails; see [`EnvReport::problems`].
pub fn probe(req: &Requirements) -> EnvReport {
    let kernel_release = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kernel_version = parse_kernel_version(&kernel_release);
    let cpus_allowed = crate::affinity::current_cpus().unwrap_or_default();
    let cpus_online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| count_cpu_list(s.trim()))
        .unwrap_or(cpus_allowed.len());
    let (soft, hard) = memlock_limits().unwrap_or((0, 0));
    EnvReport {
        kernel_release,
        kernel_version,
        cpus_online,
        cpus_allowed,
        io_uring: probe_io_uring(),
        memlock: MemLockReport {
            soft,
            hard,
            need: req.memlock_need(),
            shards: req.shards,
            cap_ipc_lock: has_effective_capability(CAP_IPC_LOCK),
        },
    }
}

/// Probe, then fail with the first problem.
pub fn check_environment(req: &Requirements) -> Result<EnvReport, Error> {
    let report = probe(req);
    report.check()?;
    Ok(report)
}

/// Current RLIMIT_MEMLOCK (soft, hard) in bytes; `u64::MAX` means unlimited.
pub fn memlock_limits() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let conv = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            v
        }
    };
    Ok((conv(lim.rlim_cur), conv(lim.rlim_max)))
}

/// Raise the soft memlock limit to `need` if it is lower and the hard limit
/// allows it (no privilege needed). Returns whether it changed anything.
pub fn raise_memlock_soft_limit(need: u64) -> io::Result<bool> {
    let (soft, hard) = memlock_limits()?;
    if soft >= need || hard < need {
        return Ok(false);
    }
    let lim = libc::rlimit {
        rlim_cur: need,
        rlim_max: if hard == u64::MAX {
            libc::RLIM_INFINITY
        } else {
            hard
        },
    };
    // SAFETY: `lim` is a valid rlimit for the duration of the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// `bytes` the way `ulimit` users read it: "8 MiB", "unlimited" for `u64::MAX`.
pub fn display_bytes(bytes: u64) -> impl std::fmt::Display {
    crate::error::Bytes(bytes)
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// "6.18.44-fc-v78" -> (6, 18).
fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    Some((major, minor))
}

/// Count the CPUs in a kernel cpu list such as "0-3,8,10-11".
fn count_cpu_list(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                n += b.checked_sub(a)? + 1;
            }
            None => {
                part.parse::<usize>().ok()?;
                n += 1;
            }
        }
    }
    Some(n)
}

/// Whether the calling thread's effective set holds capability `cap`.
fn has_effective_capability(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/thread-self/status")
        .or_else(|_| std::fs::read_to_string("/proc/self/status"))
        .unwrap_or_default();
    parse_cap_eff(&status).is_some_and(|mask| mask & (1u64 << cap) != 0)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

fn probe_io_uring() -> IoUringReport {
    let disabled_sysctl =
        read_trimmed("/proc/sys/kernel/io_uring_disabled").and_then(|s| s.parse().ok());
    let (ring, coop_taskrun) = match IoUring::builder()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(8)
    {
        Ok(r) => (Ok(r), true),
        Err(_) => (IoUring::new(8), false),
    };
    let ring = match ring {
        Ok(r) => r,
        Err(e) => {
            return IoUringReport {
                disabled_sysctl,
                setup: Err(e.raw_os_error().unwrap_or(libc::EIO)),
                coop_taskrun: false,
                ops: Vec::new(),
                buf_ring: None,
            };
        }
    };
    let mut probe = Probe::new();
    let probed = ring.submitter().register_probe(&mut probe).is_ok();
    let op = |name, required, code| OpSupport {
        name,
        required,
        supported: probed && probe.is_supported(code),
    };
    let ops = vec![
        op("SEND", true, opcode::Send::CODE),
        op("RECV", true, opcode::Recv::CODE),
        op("SEND_ZC", true, opcode::SendZc::CODE),
        op("ACCEPT", true, opcode::Accept::CODE),
        op("CONNECT", true, opcode::Connect::CODE),
        op("CLOSE", true, opcode::Close::CODE),
        op("PROVIDE_BUFFERS", true, opcode::ProvideBuffers::CODE),
        op("ASYNC_CANCEL", true, opcode::AsyncCancel::CODE),
        op("TIMEOUT", true, opcode::Timeout::CODE),
        op("MSG_RING", false, opcode::MsgRingData::CODE),
        op("SENDMSG_ZC", false, opcode::SendMsgZc::CODE),
    ];
    let buf_ring = Some(probe_buf_ring(&ring));
    IoUringReport {
        disabled_sysctl,
        setup: Ok(()),
        coop_taskrun,
        ops,
        buf_ring,
    }
}

/// Register and unregister a small user-memory provided-buffer ring in
/// incremental mode, as the transport does.
fn probe_buf_ring(ring: &IoUring) -> Result<(), i32> {
    const ENTRIES: u16 = 8;
    const PAGE: usize = 4096;
    // io_uring_buf is 16 bytes; the ring must be page aligned.
    let layout = std::alloc::Layout::from_size_align(PAGE, PAGE).map_err(|_| libc::EINVAL)?;
    // SAFETY: `layout` has a non-zero size.
    let mem = unsafe { std::alloc::alloc_zeroed(layout) };
    if mem.is_null() {
        return Err(libc::ENOMEM);
    }
    const BGID: u16 = 0x7c0d;
    // SAFETY: `mem` is a live, zeroed, page-aligned allocation of PAGE bytes, enough
    // for ENTRIES 16-byte io_uring_buf entries; it stays allocated until after
    // the ring is unregistered below.
    let res = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(mem as u64, ENTRIES, BGID, IOU_PBUF_RING_INC)
    };
    let (out, registered) = match res {
        Ok(()) => match ring.submitter().unregister_buf_ring(BGID) {
            Ok(()) => (Ok(()), false),
            Err(e) => (Err(e.raw_os_error().unwrap_or(libc::EIO)), true),
        },
        Err(e) => (Err(e.raw_os_error().unwrap_or(libc::EIO)), false),
    };
    if !registered {
        // SAFETY: allocated above with `layout`; the kernel does not reference it
        // (never registered, or unregistered).
        unsafe { std::alloc::dealloc(mem, layout) };
    }
    // else: a failed unregister may leave the kernel reading the page until the
    // ring is destroyed; leaking 4 KiB once is the safe choice.
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v78"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.10.0"), Some((5, 10)));
        assert_eq!(parse_kernel_version("6.1rc2"), Some((6, 1)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert_eq!(parse_kernel_version(""), None);
    }

    #[test]
    fn cpu_lists_count() {
        assert_eq!(count_cpu_list("0-1"), Some(2));
        assert_eq!(count_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn cap_eff_parses() {
        let status = "Name:\tx\nCapPrm:\t0000000000000000\nCapEff:\t0000000000004000\n";
        assert_eq!(parse_cap_eff(status), Some(1 << CAP_IPC_LOCK));
        assert_eq!(parse_cap_eff("nothing"), None);
    }

    #[test]
    fn memlock_below_need_is_an_error_unless_cap_ipc_lock() {
        let err = check_memlock(8 << 20, 8 << 20, 16 << 20, 2, false).unwrap_err();
        assert!(matches!(
            err,
            Error::MemLockLimit {
                have,
                hard,
                need,
                shards: 2
            } if have == 8 << 20 && hard == 8 << 20 && need == 16 << 20
        ));
        assert!(check_memlock(8 << 20, 8 << 20, 16 << 20, 2, true).is_ok());
        assert!(check_memlock(16 << 20, 16 << 20, 16 << 20, 2, false).is_ok());
        assert!(check_memlock(u64::MAX, u64::MAX, u64::MAX - 1, 2, false).is_ok());
    }

    #[test]
    fn report_problems_map_to_typed_errors() {
        let mut report = EnvReport {
            kernel_release: "5.10.0".into(),
            kernel_version: Some((5, 10)),
            cpus_online: 2,
            cpus_allowed: vec![0, 1],
            io_uring: IoUringReport {
                disabled_sysctl: Some(2),
                setup: Err(libc::EPERM),
                coop_taskrun: false,
                ops: Vec::new(),
                buf_ring: None,
            },
            memlock: MemLockReport {
                soft: 64 << 10,
                hard: 64 << 10,
                need: 16 << 20,
                shards: 2,
                cap_ipc_lock: false,
            },
        };
        let problems = report.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(matches!(
            problems[0],
            Error::IoUringUnavailable {
                reason: UringBlocker::KernelTooOld { .. }
            }
        ));
        assert!(matches!(
            problems[1],
            Error::IoUringUnavailable {
                reason: UringBlocker::DisabledBySysctl { value: 2 }
            }
        ));
        assert!(matches!(problems[2], Error::MemLockLimit { .. }));

        report.kernel_version = Some((6, 18));
        report.io_uring.setup = Ok(());
        report.io_uring.ops = vec![OpSupport {
            name: "SEND_ZC",
            required: true,
            supported: false,
        }];
        report.io_uring.buf_ring = Some(Ok(()));
        report.memlock.cap_ipc_lock = true;
        let problems = report.problems();
        assert!(
            matches!(
                problems.as_slice(),
                [Error::IoUringUnavailable {
                    reason: UringBlocker::MissingOpcode { op: "SEND_ZC" }
                }]
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn this_machine_probes_clean() {
        // The project's machines (and CI) run as root on Linux 6.18 with io_uring
        // enabled; a failure here is a real environment regression.
        let report = probe(&Requirements {
            shards: 2,
            memlock_per_shard: DEFAULT_MEMLOCK_PER_SHARD,
        });
        assert!(report.problems().is_empty(), "{report:#?}");
        assert!(
            report
                .io_uring
                .ops
                .iter()
                .any(|o| o.name == "SEND_ZC" && o.supported)
        );
        assert_eq!(report.io_uring.buf_ring, Some(Ok(())));
        assert!(report.cpus_online >= 1);
    }
}
