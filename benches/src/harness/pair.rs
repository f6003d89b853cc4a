//! Two pinned threads and the loopback connection between them: the shape of
//! every case.
//!
//! The client (the side that measures) wants core 0 and the server (the
//! echoing or receiving side) core 1, mapped onto the CPUs this process may
//! use by [`concord_runtime::affinity::pin_to`]: on these two-core machines
//! that is CPUs 0 and 1; with a single allowed CPU both share it (and latency
//! will show it: the report says whether pinning held).

use anyhow::{Context as _, bail};
use concord_runtime::affinity;
use std::net::{TcpListener, TcpStream};

/// Core the client (the side that measures) is pinned to.
pub const CLIENT_CORE: usize = 0;
/// Core the server (the echoing or receiving side) is pinned to.
pub const SERVER_CORE: usize = 1;

/// Pins the calling thread to core `wanted` (mapped as the module docs say).
/// Returns whether it held.
pub fn pin_current(wanted: usize) -> bool {
    affinity::pin_to(wanted).is_ok()
}

/// Results of [`run_pair`].
#[derive(Debug)]
pub struct Pair<S, C> {
    /// What the server closure returned.
    pub server: S,
    /// What the client closure returned.
    pub client: C,
    /// Whether both threads were pinned.
    pub pinned: bool,
}

/// Runs `server` on a thread pinned to [`SERVER_CORE`] and `client` on one
/// pinned to [`CLIENT_CORE`], and joins both. An error or panic on either side
/// fails the whole run, naming the side (both, when both failed).
pub fn run_pair<S, C, SR, CR>(server: S, client: C) -> anyhow::Result<Pair<SR, CR>>
where
    S: FnOnce() -> anyhow::Result<SR> + Send + 'static,
    C: FnOnce() -> anyhow::Result<CR> + Send + 'static,
    SR: Send + 'static,
    CR: Send + 'static,
{
    let s = std::thread::Builder::new()
        .name("bench-server".into())
        .spawn(move || {
            let pinned = pin_current(SERVER_CORE);
            server().map(|r| (r, pinned))
        })
        .context("spawning server thread")?;
    let c = std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || {
            let pinned = pin_current(CLIENT_CORE);
            client().map(|r| (r, pinned))
        })
        .context("spawning client thread")?;
    let cr = flatten_join("client", c.join());
    let sr = flatten_join("server", s.join());
    match (sr, cr) {
        (Ok((s, sp)), Ok((c, cp))) => Ok(Pair {
            server: s,
            client: c,
            pinned: sp && cp,
        }),
        (Err(se), Ok(_)) => Err(se),
        (Ok(_), Err(ce)) => Err(ce),
        // The first failure usually causes the other (a closed socket): show both.
        (Err(se), Err(ce)) => Err(ce.context(format!("and {se:#}"))),
    }
}

fn flatten_join<T>(side: &str, r: std::thread::Result<anyhow::Result<T>>) -> anyhow::Result<T> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.context(format!("{side} failed"))),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            bail!("{side} panicked: {msg}")
        }
    }
}

/// A connected loopback pair: (client side, server side).
///
/// Connect and accept happen on the calling thread (the kernel completes a
/// loopback connect from the listen backlog before `accept`), so a side that
/// fails to start cannot leave the other blocked in `accept` forever.
pub fn loopback_pair() -> anyhow::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding loopback listener")?;
    let addr = listener.local_addr()?;
    let client = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    let (server, _) = listener.accept().context("accepting loopback connection")?;
    for s in [&client, &server] {
        s.set_nodelay(true).context("setting TCP_NODELAY")?;
    }
    Ok((client, server))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::round_trip::measure_round_trips;
    use crate::harness::seq::{expect_seq, stamp};
    use std::io::{Read as _, Write as _};

    #[test]
    fn pinning_a_thread_holds() {
        let pinned = std::thread::spawn(|| pin_current(SERVER_CORE))
            .join()
            .unwrap();
        assert!(pinned);
    }

    #[test]
    fn a_server_that_corrupts_fails_the_case() {
        // A server that echoes the wrong sequence number: the client must fail.
        let (client, server) = loopback_pair().unwrap();
        let res = run_pair(
            move || {
                let mut s = server;
                let mut buf = [0u8; 16];
                s.read_exact(&mut buf)?;
                stamp(&mut buf, 999);
                s.write_all(&buf)?;
                Ok(())
            },
            move || {
                let mut s = client;
                measure_round_trips(0, 5, |seq| {
                    let mut b = [0u8; 16];
                    stamp(&mut b, seq);
                    s.write_all(&b)?;
                    s.read_exact(&mut b)?;
                    expect_seq(&b, seq)
                })
            },
        );
        let e = res.unwrap_err();
        assert!(
            format!("{e:#}").contains("expected sequence 0, got 999"),
            "{e:#}"
        );
    }

    #[test]
    fn a_panicking_side_is_reported() {
        let res = run_pair(|| -> anyhow::Result<()> { panic!("boom") }, || Ok(()));
        let e = res.unwrap_err();
        assert!(format!("{e:#}").contains("server panicked: boom"), "{e:#}");
    }
}
