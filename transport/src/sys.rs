//! Thin socket helpers over libc: the cold path (socket creation, options,
//! addresses). Everything hot goes through the ring.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A socket address in the kernel's layout, kept at a stable address while a
/// connect operation may read it.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct RawAddr {
    pub storage: libc::sockaddr_storage,
    pub len: libc::socklen_t,
}

impl std::fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawAddr({:?})", to_std(&self.storage, self.len))
    }
}

pub(crate) fn to_raw(addr: SocketAddr) -> RawAddr {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    RawAddr {
        storage,
        len: len as libc::socklen_t,
    }
}

pub(crate) fn to_std(s: &libc::sockaddr_storage, _len: libc::socklen_t) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn family(addr: &SocketAddr) -> libc::c_int {
    if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// A blocking-mode TCP socket: io_uring drives it, and a blocking socket lets
/// the kernel park a send or recv internally instead of bouncing EAGAIN.
pub(crate) fn tcp_socket(addr: &SocketAddr) -> io::Result<RawFd> {
    // SAFETY: plain syscall, no pointers.
    cvt(unsafe { libc::socket(family(addr), libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, val: T) -> io::Result<()> {
    // SAFETY: `val` lives on our stack for the duration of the call and its
    // size is passed alongside it.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&val as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

pub(crate) fn set_nodelay(fd: RawFd) -> io::Result<()> {
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1 as libc::c_int)
}

/// Kernel-side dead-peer detection: keepalive probes after `idle`, and
/// TCP_USER_TIMEOUT so unacknowledged data also fails the connection.
pub(crate) fn set_keepalive(fd: RawFd, idle: std::time::Duration) -> io::Result<()> {
    let secs = idle.as_secs().clamp(1, i32::MAX as u64) as libc::c_int;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1 as libc::c_int)?;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs)?;
    setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPINTVL,
        (secs / 3).max(1),
    )?;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3 as libc::c_int)?;
    let ms = idle.as_millis().saturating_mul(2).min(u32::MAX as u128) as libc::c_uint;
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)
}

/// On close, reset instead of lingering: pending data (and any SEND_ZC pages
/// it pins) is released at once. Used when a connection is aborted.
pub(crate) fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_LINGER,
        libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
}

pub(crate) fn listen(addr: SocketAddr, backlog: i32) -> io::Result<(RawFd, SocketAddr)> {
    let fd = tcp_socket(&addr)?;
    let res = (|| {
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1 as libc::c_int)?;
        let raw = to_raw(addr);
        // SAFETY: `raw` is a valid sockaddr of `raw.len` bytes on our stack.
        cvt(unsafe { libc::bind(fd, std::ptr::addr_of!(raw.storage).cast(), raw.len) })?;
        // SAFETY: plain syscall.
        cvt(unsafe { libc::listen(fd, backlog) })?;
        local_addr(fd)
    })();
    match res {
        Ok(a) => Ok((fd, a)),
        Err(e) => {
            close(fd);
            Err(e)
        }
    }
}

pub(crate) fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: all-zero sockaddr_storage is valid.
    let mut s: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `s` and `len` are valid for writes and `len` holds the capacity.
    cvt(unsafe { libc::getsockname(fd, std::ptr::addr_of_mut!(s).cast(), &mut len) })?;
    to_std(&s, len).ok_or_else(|| io::Error::from_raw_os_error(libc::EAFNOSUPPORT))
}

pub(crate) fn peer_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: all-zero sockaddr_storage is valid.
    let mut s: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `s` and `len` are valid for writes and `len` holds the capacity.
    cvt(unsafe { libc::getpeername(fd, std::ptr::addr_of_mut!(s).cast(), &mut len) })?;
    to_std(&s, len).ok_or_else(|| io::Error::from_raw_os_error(libc::EAFNOSUPPORT))
}

pub(crate) fn shutdown(fd: RawFd) {
    // SAFETY: plain syscall; failure (e.g. ENOTCONN) is harmless here.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

pub(crate) fn close(fd: RawFd) {
    // SAFETY: we own `fd` and close it exactly once.
    unsafe { libc::close(fd) };
}

pub(crate) fn eventfd() -> io::Result<RawFd> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })
}

pub(crate) fn eventfd_write(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 on our stack. A failure can only
    // be EAGAIN at counter saturation, which still leaves the fd readable.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

pub(crate) fn memlock_limit() -> io::Result<u64> {
    // SAFETY: all-zero rlimit is valid; getrlimit writes into it.
    let mut r: libc::rlimit = unsafe { mem::zeroed() };
    // SAFETY: `r` is valid for writes.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) })?;
    Ok(r.rlim_cur)
}
