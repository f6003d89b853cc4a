//! The glommio baseline: the same ping-pong on two glommio executors. Built
//! only with the bench crate's `glommio` feature.
//!
//! glommio 0.9 registers `io_memory` with io_uring, which counts against
//! RLIMIT_MEMLOCK. Its default (10 MiB) alone exceeds the 8 MiB default limit on
//! these machines, and the bench never does storage I/O, so each executor asks
//! for 256 KiB. If the executor still cannot start, glommio's error (with the
//! limit it saw) is returned as the case's failure; the other cases still run.

use crate::harness::STALL_TIMEOUT;
use crate::harness::pair::{CLIENT_CORE, SERVER_CORE};
use crate::harness::result::CaseResult;
use crate::harness::round_trip::Measured;
use crate::harness::seq::{expect_seq, stamp};
use crate::harness::size::check_pingpong_size;
use crate::harness::summary::LatencyHistogram;
use anyhow::{Context as _, anyhow, bail};
use concord_runtime::{affinity, alloc};
use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

/// Name of the glommio case with glommio's defaults (park when idle).
pub const NAME: &str = "glommio";
/// Name of the glommio case with [`SPIN_BEFORE_PARK`].
pub const NAME_SPIN: &str = "glommio-spin";

/// io_uring-registered memory per executor (see the module docs).
pub const IO_MEMORY: usize = 256 * 1024;

/// `spin_before_park` used by the spinning variant: longer than a round trip,
/// so a hot connection never parks, short enough not to burn a core when idle.
pub const SPIN_BEFORE_PARK: Duration = Duration::from_micros(200);

/// glommio's error type holds a non-`Sync` panic payload, so it cannot go into
/// `anyhow` as is: keep its message.
fn gerr<T>(e: glommio::GlommioError<T>) -> anyhow::Error {
    anyhow!("glommio: {e}")
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean close before the first byte.
async fn read_msg(s: &mut TcpStream, buf: &mut [u8]) -> anyhow::Result<bool> {
    let mut off = 0;
    while off < buf.len() {
        let n = s.read(&mut buf[off..]).await?;
        if n == 0 {
            if off == 0 {
                return Ok(false);
            }
            bail!("peer closed mid-message after {off} of {} bytes", buf.len());
        }
        off += n;
    }
    Ok(true)
}

/// An executor pinned to core `core`, mapped onto this process's CPUs as the
/// other cases' threads are.
fn builder(
    core: usize,
    name: &str,
    spin: Option<Duration>,
) -> anyhow::Result<LocalExecutorBuilder> {
    let cpu = affinity::cpu_for(core).context("reading this process's CPUs")?;
    let b = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(name)
        .io_memory(IO_MEMORY);
    Ok(match spin {
        Some(d) => b.spin_before_park(d),
        None => b,
    })
}

/// Ping-pong between two glommio executors pinned like the other cases.
/// `spin`: `None` for glommio's default (park when idle), or its `spin_before_park`.
pub fn pingpong(
    size: usize,
    warmup: u64,
    iters: u64,
    spin: Option<Duration>,
) -> anyhow::Result<CaseResult> {
    check_pingpong_size(size)?;
    // Both placements first: a failure after the server started would leave it
    // in accept().
    let server_builder = builder(SERVER_CORE, "glommio-server", spin)?;
    let client_builder = builder(CLIENT_CORE, "glommio-client", spin)?;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let server = server_builder
        .spawn(move || async move {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").map_err(gerr)?;
            addr_tx
                .send(listener.local_addr().map_err(gerr)?)
                .map_err(|_| anyhow!("bench main thread went away"))?;
            let mut s = listener.accept().await.map_err(gerr)?;
            s.set_nodelay(true).map_err(gerr)?;
            s.set_read_timeout(Some(STALL_TIMEOUT)).map_err(gerr)?;
            let mut buf = vec![0u8; size];
            let mut seq = 0u64;
            while read_msg(&mut s, &mut buf).await? {
                expect_seq(&buf, seq).context("server")?;
                s.write_all(&buf).await?;
                seq += 1;
            }
            anyhow::Ok(seq)
        })
        .map_err(gerr)
        .context("spawning glommio server executor")?;
    let join_server = |h: glommio::ExecutorJoinHandle<anyhow::Result<u64>>| {
        h.join()
            .map_err(gerr)
            .and_then(|r| r)
            .context("glommio server executor")
    };

    // The sender is dropped without sending only if the server failed to start.
    let Ok(addr) = addr_rx.recv() else {
        let e = match join_server(server) {
            Err(e) => e,
            Ok(_) => anyhow!("glommio server exited before listening"),
        };
        return Err(e.context(memlock_hint()));
    };

    let client = client_builder
        .spawn(move || async move {
            let mut s = TcpStream::connect(addr).await.map_err(gerr)?;
            s.set_nodelay(true).map_err(gerr)?;
            s.set_read_timeout(Some(STALL_TIMEOUT)).map_err(gerr)?;
            let mut out = vec![0u8; size];
            let mut inb = vec![0u8; size];
            let mut hist = LatencyHistogram::new()?;
            let counting = alloc::is_installed();
            let mut before = alloc::snapshot();
            for seq in 0..warmup + iters {
                if seq == warmup {
                    before = alloc::snapshot();
                }
                let t0 = Instant::now();
                stamp(&mut out, seq);
                s.write_all(&out).await?;
                if !read_msg(&mut s, &mut inb).await? {
                    bail!("server closed the connection at round trip {seq}");
                }
                expect_seq(&inb, seq)?;
                if seq >= warmup {
                    hist.record(t0.elapsed());
                }
            }
            let after = alloc::snapshot();
            s.shutdown(Shutdown::Write).await.map_err(gerr)?;
            anyhow::Ok(Measured {
                hist,
                allocs: counting.then(|| after.since(&before)),
            })
        })
        .map_err(gerr)
        .context("spawning glommio client executor");
    let client = client.and_then(|h| {
        h.join()
            .map_err(gerr)
            .and_then(|r| r)
            .context("glommio client executor")
    });

    let measured = match client {
        Ok(m) => m,
        Err(e) => {
            // The server may still sit in accept(): a connection that closes at
            // once lets it finish, so joining it cannot hang.
            drop(std::net::TcpStream::connect(addr));
            let _ = join_server(server);
            return Err(e.context(memlock_hint()));
        }
    };
    let echoed = join_server(server)?;
    if echoed != warmup + iters {
        bail!(
            "glommio server echoed {echoed} messages, client sent {}",
            warmup + iters
        );
    }
    Ok(CaseResult {
        summary: measured.hist.summary(),
        round_trips: measured.hist.len(),
        allocs: measured.allocs,
        pinned: true,
        straddled_frames: None,
    })
}

fn memlock_hint() -> String {
    let limit = crate::harness::report::Machine::collect()
        .memlock
        .unwrap_or_else(|| "unknown".into());
    format!(
        "glommio case could not run (memlock soft/hard: {limit}; raise it with `ulimit -l unlimited` as root)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glommio_runs_and_counts() {
        let r = pingpong(64, 10, 100, Some(SPIN_BEFORE_PARK)).unwrap();
        assert_eq!(r.round_trips, 100);
        assert_eq!(r.summary.count, 100);
        assert!(r.summary.p50_ns <= r.summary.max_ns);
    }
}
