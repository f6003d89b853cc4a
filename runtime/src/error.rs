//! The runtime's one error type.
//!
//! Split by what the caller can do about it:
//! - environment errors ([`Error::MemLockLimit`], [`Error::IoUringUnavailable`],
//!   [`Error::TooManyShards`], [`Error::Config`]) are fixed by the operator; their
//!   `Display` says how;
//! - task outcomes ([`Error::TaskPanicked`], [`Error::Cancelled`]) concern one task and
//!   leave the shard running;
//! - shard failures ([`Error::ShardPanicked`], [`Error::Reactor`], [`Error::ReactorBusy`])
//!   stopped a shard and come back from [`Runtime::shutdown`](crate::Runtime::shutdown);
//! - usage errors ([`Error::NoSuchShard`], [`Error::NotOnShard`], [`Error::ShuttingDown`],
//!   [`Error::ReactorType`], [`Error::WouldDeadlock`]) are returned instead of panicking.
//!
//! A full channel is not an error: see [`Offer::BackPressured`](crate::Offer).

use std::fmt;
use std::io;

/// Everything that can go wrong in concord-runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// RLIMIT_MEMLOCK is below what the configured shards pin for io_uring.
    #[error(
        "memlock limit too low: soft limit {}, hard limit {}, concord needs {} ({shards} shards). \
         Fix: raise it in the shell that starts concord with `ulimit -l {}` (or `ulimit -l unlimited`); \
         for login sessions add `<user> - memlock unlimited` to /etc/security/limits.conf; \
         for a systemd unit set `LimitMEMLOCK=infinity`; for docker pass `--ulimit memlock=-1:-1`; \
         or grant the process CAP_IPC_LOCK, which lifts the limit",
        Bytes(*.have), Bytes(*.hard), Bytes(*.need), need.div_ceil(1024)
    )]
    MemLockLimit {
        /// Current soft limit in bytes (`u64::MAX` = unlimited).
        have: u64,
        /// Current hard limit in bytes (`u64::MAX` = unlimited).
        hard: u64,
        /// Bytes the configured shards need.
        need: u64,
        /// Shard count the need was computed for.
        shards: usize,
    },

    /// io_uring cannot be used the way the transport needs it.
    #[error("io_uring is unavailable: {reason}")]
    IoUringUnavailable {
        /// Why, with the fix in its `Display`.
        reason: UringBlocker,
    },

    /// Pinning was requested for more shards than the process may run on.
    #[error(
        "{shards} pinned shards requested but this process may run on only {cores} CPUs. \
         Fix: use at most {cores} shards, or turn pinning off (two spinning shards on one core \
         take turns by the scheduler's time slice, which costs milliseconds)"
    )]
    TooManyShards {
        /// Shards requested.
        shards: usize,
        /// CPUs in the process's affinity mask.
        cores: usize,
    },

    /// A builder setting is out of range.
    #[error("invalid runtime configuration: {field}: {reason}")]
    Config {
        /// The setting.
        field: &'static str,
        /// Why it is rejected.
        reason: &'static str,
    },

    /// The OS refused to start a shard thread.
    #[error("could not start shard {shard}: {source}")]
    Spawn {
        /// Shard index.
        shard: usize,
        /// The OS error.
        source: io::Error,
    },

    /// `sched_setaffinity` failed for a shard.
    #[error("could not pin shard {shard} to CPU {cpu}: {source}")]
    Pin {
        /// Shard index.
        shard: usize,
        /// CPU it was to be pinned to.
        cpu: usize,
        /// The OS error.
        source: io::Error,
    },

    /// The reactor factory failed on a shard.
    #[error("could not create the reactor of shard {shard}: {source}")]
    ReactorInit {
        /// Shard index.
        shard: usize,
        /// What the factory returned.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Setting the transport up (creating a driver, listen, connect, park)
    /// failed.
    #[error("transport: {0}")]
    Transport(#[from] concord_transport::SetupError),

    /// A transport send (or close) was refused. Whether it is worth retrying
    /// is [`concord_transport::SendError::is_retryable`].
    #[error("transport: {0}")]
    TransportSend(#[from] concord_transport::SendError),

    /// The reactor's `poll` or `park` failed; the shard stopped.
    #[error("reactor of shard {shard} failed: {source}")]
    Reactor {
        /// Shard index.
        shard: usize,
        /// The I/O error.
        source: io::Error,
    },

    /// The duty loop found the reactor still borrowed: a task held the reactor
    /// (e.g. `ShardContext::with_reactor` re-entered) across a suspension point.
    #[error(
        "shard {shard}: reactor borrowed while the duty loop needed it (held across an await?)"
    )]
    ReactorBusy {
        /// Shard index.
        shard: usize,
    },

    /// The shard's reactor is not of the requested type.
    #[error("shard {shard}: reactor is not a {expected}")]
    ReactorType {
        /// Shard index.
        shard: usize,
        /// Requested type name.
        expected: &'static str,
    },

    /// No shard with this index.
    #[error("no shard {shard}: the runtime has {shards} shards")]
    NoSuchShard {
        /// Requested index.
        shard: usize,
        /// Shard count.
        shards: usize,
    },

    /// A shard-local operation was called from a thread that is not a shard.
    #[error("not on a concord shard thread")]
    NotOnShard,

    /// Blocking on a task from a shard thread would stall that shard (and deadlock
    /// if the task runs there); await the handle instead.
    #[error("blocking join on shard {shard} would stall it; await the JoinHandle instead")]
    WouldDeadlock {
        /// The shard that tried to block.
        shard: usize,
    },

    /// The runtime (or the target shard) is shutting down.
    #[error("the runtime is shutting down")]
    ShuttingDown,

    /// A task panicked; the shard kept running.
    #[error("task on shard {shard} panicked: {message}")]
    TaskPanicked {
        /// Shard the task ran on.
        shard: usize,
        /// The panic message.
        message: String,
    },

    /// A timer callback panicked; the shard kept running.
    #[error("timer callback on shard {shard} panicked: {message}")]
    TimerPanicked {
        /// Shard the callback ran on.
        shard: usize,
        /// The panic message.
        message: String,
    },

    /// A task was dropped before it finished (shutdown, or its shard stopped).
    #[error("task on shard {shard} was cancelled before it finished")]
    Cancelled {
        /// Shard the task was on.
        shard: usize,
    },

    /// A shard's duty loop panicked outside any task; the shard stopped.
    #[error("shard {shard} panicked: {message}")]
    ShardPanicked {
        /// Shard index.
        shard: usize,
        /// The panic message.
        message: String,
    },

    /// Several shards failed; one entry per failure, in shard order.
    #[error("{} failures during shutdown; first: {}", .failures.len(), .failures[0])]
    Shutdown {
        /// The failures (never empty).
        failures: Vec<Error>,
    },
}

/// Why io_uring cannot be used. Each variant's `Display` says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UringBlocker {
    /// `kernel.io_uring_disabled` forbids io_uring for this process.
    DisabledBySysctl {
        /// The sysctl's value (1: only the io_uring_group may use it, 2: nobody).
        value: u8,
    },
    /// `io_uring_setup` failed.
    SetupFailed {
        /// errno of the failure.
        errno: i32,
    },
    /// The kernel is older than the features concord uses.
    KernelTooOld {
        /// Running kernel (major, minor).
        have: (u32, u32),
        /// Minimum (major, minor).
        need: (u32, u32),
    },
    /// A required opcode is not supported by this kernel.
    MissingOpcode {
        /// The opcode name, e.g. `SEND_ZC`.
        op: &'static str,
    },
    /// Registering a provided-buffer ring failed.
    BufRing {
        /// errno of the failure.
        errno: i32,
    },
}

impl fmt::Display for UringBlocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DisabledBySysctl { value } => write!(
                f,
                "sysctl kernel.io_uring_disabled = {value}. Fix: `sysctl -w kernel.io_uring_disabled=0` \
                 (persist it in /etc/sysctl.d/), or with value 1 add this user to the group named by \
                 kernel.io_uring_group"
            ),
            Self::SetupFailed { errno } => {
                let err = io::Error::from_raw_os_error(*errno);
                write!(f, "io_uring_setup failed: {err}. ")?;
                match *errno {
                    libc::EPERM | libc::EACCES => write!(
                        f,
                        "Fix: a seccomp profile or LSM blocks io_uring (docker's default profile does): \
                         run with `--security-opt seccomp=unconfined` or allow io_uring_setup, \
                         io_uring_enter and io_uring_register"
                    ),
                    libc::ENOSYS => write!(
                        f,
                        "Fix: the kernel was built without CONFIG_IO_URING; use a kernel with it"
                    ),
                    libc::ENOMEM => write!(
                        f,
                        "Fix: raise the memlock limit (`ulimit -l unlimited`) or free memory"
                    ),
                    _ => write!(
                        f,
                        "Fix: check dmesg and the kernel's io_uring configuration"
                    ),
                }
            }
            Self::KernelTooOld { have, need } => write!(
                f,
                "kernel {}.{} is older than {}.{} (incremental provided-buffer rings, multishot receive, SEND_ZC). \
                 Fix: run on Linux {}.{} or newer",
                have.0, have.1, need.0, need.1, need.0, need.1
            ),
            Self::MissingOpcode { op } => write!(
                f,
                "the kernel does not support IORING_OP_{op}. Fix: run on Linux 6.12 or newer \
                 with io_uring fully enabled"
            ),
            Self::BufRing { errno } => write!(
                f,
                "registering an incremental provided-buffer ring failed: {}. Fix: Linux 6.12 or newer, and a \
                 memlock limit large enough (`ulimit -l unlimited`)",
                io::Error::from_raw_os_error(*errno)
            ),
        }
    }
}

/// Bytes shown the way `ulimit` users think of them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        const GIB: u64 = 1024 * MIB;
        match self.0 {
            u64::MAX => f.write_str("unlimited"),
            b if b >= GIB && b % GIB == 0 => write!(f, "{} GiB", b / GIB),
            b if b >= MIB && b % MIB == 0 => write!(f, "{} MiB", b / MIB),
            b if b >= KIB && b % KIB == 0 => write!(f, "{} KiB", b / KIB),
            b => write!(f, "{b} B"),
        }
    }
}

/// The message of a panic payload, for reports.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_render_in_the_largest_exact_unit() {
        assert_eq!(Bytes(u64::MAX).to_string(), "unlimited");
        assert_eq!(Bytes(8 * 1024 * 1024).to_string(), "8 MiB");
        assert_eq!(Bytes(3 * 1024).to_string(), "3 KiB");
        assert_eq!(Bytes(1500).to_string(), "1500 B");
        assert_eq!(Bytes(2 << 30).to_string(), "2 GiB");
    }

    #[test]
    fn memlock_error_says_how_to_fix() {
        let e = Error::MemLockLimit {
            have: 8 << 20,
            hard: 8 << 20,
            need: 32 << 20,
            shards: 4,
        };
        let s = e.to_string();
        assert!(s.contains("soft limit 8 MiB"), "{s}");
        assert!(s.contains("needs 32 MiB"), "{s}");
        assert!(s.contains("ulimit -l 32768"), "{s}");
        assert!(s.contains("LimitMEMLOCK"), "{s}");
        assert!(s.contains("limits.conf"), "{s}");
    }

    #[test]
    fn uring_blockers_name_their_fix() {
        let s = UringBlocker::DisabledBySysctl { value: 2 }.to_string();
        assert!(s.contains("kernel.io_uring_disabled=0"), "{s}");
        let s = UringBlocker::SetupFailed { errno: libc::EPERM }.to_string();
        assert!(s.contains("seccomp"), "{s}");
        let s = UringBlocker::KernelTooOld {
            have: (5, 10),
            need: (6, 0),
        }
        .to_string();
        assert!(s.contains("5.10") && s.contains("6.0"), "{s}");
    }
}
