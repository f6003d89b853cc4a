//! Ping-pong: one client, one echo server, two pinned threads, one connection.
//!
//! Every message is `size` bytes whose first 8 carry a sequence number (little
//! endian). The server checks it arrives in order and echoes the message; the
//! client checks the echo carries the number it sent. A case that loses,
//! reorders or corrupts a message fails instead of reporting a latency.
//!
//! The client times each round trip with [`Instant`] into a histogram allocated
//! before the loop, and diffs the counting allocator around the measured loop
//! only (after warm-up), so the figures describe the steady state.

use crate::alloc::{self, AllocSnapshot};
use crate::pin::{self, CLIENT_CORE, SERVER_CORE};
use crate::summary::{LatencyHistogram, Summary};
use anyhow::{Context as _, bail};
use serde::Serialize;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Smallest message: the sequence number.
pub const MIN_SIZE: usize = 8;

/// A peer that makes no progress for this long is declared stalled, so a broken
/// case fails instead of hanging CI.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What one ping-pong case measured.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Round-trip latency over the measured loop.
    pub summary: Summary,
    /// Measured round trips (each is two messages: request and echo).
    pub round_trips: u64,
    /// Heap activity across the measured loop on every thread; `None` when the
    /// counting allocator is not installed in this process.
    pub allocs: Option<AllocSnapshot>,
    /// Whether both threads were pinned to their cores.
    pub pinned: bool,
    /// Frames that straddled two receive buffers and were copied (concord's
    /// transport only; both sides together).
    pub straddled_frames: Option<u64>,
}

impl CaseResult {
    /// Heap allocations per message (two messages per round trip).
    #[must_use]
    pub fn allocs_per_msg(&self) -> Option<f64> {
        let a = self.allocs?;
        if self.round_trips == 0 {
            return None;
        }
        Some(a.allocs as f64 / (2 * self.round_trips) as f64)
    }
}

/// Writes `seq` into the message header.
#[inline]
pub fn stamp(buf: &mut [u8], seq: u64) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
}

/// Reads the sequence number from a message header.
#[inline]
#[must_use]
pub fn seq_of(buf: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[..8]);
    u64::from_le_bytes(b)
}

/// Fails unless `buf` carries `want`.
#[inline]
pub fn expect_seq(buf: &[u8], want: u64) -> anyhow::Result<()> {
    let got = seq_of(buf);
    if got != want {
        bail!("message out of order: expected sequence {want}, got {got}");
    }
    Ok(())
}

/// Checks a size is usable for ping-pong.
pub fn check_size(size: usize) -> anyhow::Result<()> {
    if size < MIN_SIZE {
        bail!("message size {size} is below the minimum of {MIN_SIZE} bytes (the sequence number)");
    }
    Ok(())
}

/// Latencies plus the allocator diff of one measured loop.
#[derive(Debug)]
pub struct Measured {
    /// One sample per measured round trip.
    pub hist: LatencyHistogram,
    /// Allocator diff across the measured loop, if the counting allocator is installed.
    pub allocs: Option<AllocSnapshot>,
}

/// The client's warm-up + measure loop shared by every synchronous case.
///
/// `round_trip(seq)` sends message `seq`, waits for its echo and verifies it.
/// Warm-up uses sequence numbers `0..warmup`, the measured loop continues from
/// there, so the server sees one unbroken sequence.
pub fn measure_round_trips(
    warmup: u64,
    iters: u64,
    mut round_trip: impl FnMut(u64) -> anyhow::Result<()>,
) -> anyhow::Result<Measured> {
    let mut hist = LatencyHistogram::new()?;
    let counting = alloc::is_installed();
    for seq in 0..warmup {
        round_trip(seq).with_context(|| format!("warm-up round trip {seq}"))?;
    }
    let before = alloc::snapshot();
    for seq in warmup..warmup + iters {
        let t0 = Instant::now();
        round_trip(seq).with_context(|| format!("round trip {seq}"))?;
        hist.record(t0.elapsed());
    }
    let after = alloc::snapshot();
    Ok(Measured {
        hist,
        allocs: counting.then(|| after.since(&before)),
    })
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
            let pinned = pin::pin_current(SERVER_CORE);
            server().map(|r| (r, pinned))
        })
        .context("spawning server thread")?;
    let c = std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || {
            let pinned = pin::pin_current(CLIENT_CORE);
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

/// How a std-socket case waits for the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdMode {
    /// Non-blocking socket; both sides spin on `EAGAIN`. The floor.
    BusyPoll,
    /// Blocking socket: the thread sleeps in the kernel until data arrives.
    Blocking,
}

impl StdMode {
    fn prepare(self, s: &TcpStream) -> io::Result<()> {
        match self {
            StdMode::BusyPoll => s.set_nonblocking(true),
            StdMode::Blocking => {
                s.set_read_timeout(Some(STALL_TIMEOUT))?;
                s.set_write_timeout(Some(STALL_TIMEOUT))
            }
        }
    }

    /// Reads exactly `buf.len()` bytes. `Ok(false)`: the peer closed cleanly
    /// before the first byte (the end of the run).
    fn read_msg(self, s: &mut TcpStream, buf: &mut [u8]) -> io::Result<bool> {
        let mut off = 0;
        let mut stall = Stall::default();
        while off < buf.len() {
            match s.read(&mut buf[off..]) {
                Ok(0) if off == 0 => return Ok(false),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("peer closed mid-message after {off} of {} bytes", buf.len()),
                    ));
                }
                Ok(n) => {
                    off += n;
                    stall = Stall::default();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && self == StdMode::BusyPoll => {
                    stall.spin()?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn write_msg(self, s: &mut TcpStream, buf: &[u8]) -> io::Result<()> {
        let mut off = 0;
        let mut stall = Stall::default();
        while off < buf.len() {
            match s.write(&buf[off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    off += n;
                    stall = Stall::default();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && self == StdMode::BusyPoll => {
                    stall.spin()?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Spin bookkeeping: reading the clock on every `EAGAIN` would dominate a
/// 5 us round trip, so the clock starts only after many idle spins.
#[derive(Default)]
struct Stall {
    spins: u32,
    since: Option<Instant>,
}

impl Stall {
    const CHECK_EVERY: u32 = 1 << 14;

    #[inline]
    fn spin(&mut self) -> io::Result<()> {
        self.spins = self.spins.wrapping_add(1);
        if self.spins.is_multiple_of(Self::CHECK_EVERY) {
            let since = *self.since.get_or_insert_with(Instant::now);
            if since.elapsed() > STALL_TIMEOUT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("peer made no progress for {STALL_TIMEOUT:?}"),
                ));
            }
        }
        std::hint::spin_loop();
        Ok(())
    }
}

/// Echo server loop for std sockets: returns the number of messages echoed.
fn std_echo(mode: StdMode, mut s: TcpStream, size: usize) -> anyhow::Result<u64> {
    mode.prepare(&s)?;
    let mut buf = vec![0u8; size];
    let mut seq = 0u64;
    while mode.read_msg(&mut s, &mut buf)? {
        expect_seq(&buf, seq).context("server")?;
        mode.write_msg(&mut s, &buf)?;
        seq += 1;
    }
    Ok(seq)
}

/// A std-socket ping-pong case (the floor or the blocking baseline).
pub fn std_pingpong(
    mode: StdMode,
    size: usize,
    warmup: u64,
    iters: u64,
) -> anyhow::Result<CaseResult> {
    check_size(size)?;
    let (client, server) = loopback_pair()?;
    let pair = run_pair(
        move || std_echo(mode, server, size),
        move || {
            let mut s = client;
            mode.prepare(&s)?;
            let mut out = vec![0u8; size];
            let mut inb = vec![0u8; size];
            for (i, b) in out.iter_mut().enumerate().skip(8) {
                *b = i as u8;
            }
            let m = measure_round_trips(warmup, iters, |seq| {
                stamp(&mut out, seq);
                mode.write_msg(&mut s, &out)?;
                if !mode.read_msg(&mut s, &mut inb)? {
                    bail!("server closed the connection");
                }
                expect_seq(&inb, seq)
            })?;
            // Tell the server we are done: it sees a clean EOF.
            s.shutdown(Shutdown::Write)
                .context("shutting down client")?;
            Ok(m)
        },
    )?;
    let echoed = pair.server;
    if echoed != warmup + iters {
        bail!(
            "server echoed {echoed} messages, client sent {}",
            warmup + iters
        );
    }
    Ok(CaseResult {
        summary: pair.client.hist.summary(),
        round_trips: pair.client.hist.len(),
        allocs: pair.client.allocs,
        pinned: pair.pinned,
        straddled_frames: None,
    })
}

/// Busy-polled non-blocking std sockets: the floor every other case is held to.
pub fn floor(size: usize, warmup: u64, iters: u64) -> anyhow::Result<CaseResult> {
    std_pingpong(StdMode::BusyPoll, size, warmup, iters)
}

/// Blocking std sockets.
pub fn blocking(size: usize, warmup: u64, iters: u64) -> anyhow::Result<CaseResult> {
    std_pingpong(StdMode::Blocking, size, warmup, iters)
}

/// Status of one case in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Measured.
    Ok,
    /// Not built yet (concord's transport): no numbers, by design.
    Unavailable,
    /// Tried and failed: a bug or a missing resource. Reported loudly.
    Failed,
}

/// One row of the ping-pong report (and of its JSON `cases`).
#[derive(Debug, Clone, Serialize)]
pub struct PingpongRecord {
    /// Case name.
    pub name: String,
    /// Message size in bytes.
    pub size: usize,
    /// Outcome.
    pub status: Status,
    /// Why it is unavailable or failed.
    pub error: Option<String>,
    /// Measured round trips.
    pub round_trips: Option<u64>,
    /// Median round trip.
    pub p50_ns: Option<u64>,
    /// 99th percentile round trip.
    pub p99_ns: Option<u64>,
    /// 99.9th percentile round trip.
    pub p999_ns: Option<u64>,
    /// Slowest round trip.
    pub max_ns: Option<u64>,
    /// Fastest round trip.
    pub min_ns: Option<u64>,
    /// Mean round trip.
    pub mean_ns: Option<f64>,
    /// Allocations across the measured loop (both threads).
    pub allocs_total: Option<u64>,
    /// Allocations per message (two per round trip).
    pub allocs_per_msg: Option<f64>,
    /// Whether both threads were pinned.
    pub pinned: Option<bool>,
    /// Frames copied because they straddled receive buffers (concord only).
    pub straddled_frames: Option<u64>,
}

impl PingpongRecord {
    /// Builds a row from a case's outcome. An error whose root cause is
    /// [`crate::concord_case::Unavailable`] makes an `unavailable` row.
    #[must_use]
    pub fn new(name: &str, size: usize, outcome: &anyhow::Result<CaseResult>) -> Self {
        let mut r = PingpongRecord {
            name: name.to_string(),
            size,
            status: Status::Ok,
            error: None,
            round_trips: None,
            p50_ns: None,
            p99_ns: None,
            p999_ns: None,
            max_ns: None,
            min_ns: None,
            mean_ns: None,
            allocs_total: None,
            allocs_per_msg: None,
            pinned: None,
            straddled_frames: None,
        };
        match outcome {
            Ok(c) => {
                r.round_trips = Some(c.round_trips);
                r.p50_ns = Some(c.summary.p50_ns);
                r.p99_ns = Some(c.summary.p99_ns);
                r.p999_ns = Some(c.summary.p999_ns);
                r.max_ns = Some(c.summary.max_ns);
                r.min_ns = Some(c.summary.min_ns);
                r.mean_ns = Some(c.summary.mean_ns);
                r.allocs_total = c.allocs.map(|a| a.allocs);
                r.allocs_per_msg = c.allocs_per_msg();
                r.pinned = Some(c.pinned);
                r.straddled_frames = c.straddled_frames;
            }
            Err(e) => {
                r.status = crate::concord_case::status_of(e);
                r.error = Some(format!("{e:#}"));
            }
        }
        r
    }
}

/// The whole ping-pong JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct PingpongReport {
    /// Always `"pingpong"`.
    pub bench: &'static str,
    /// Machine, commit, time and arguments of the run.
    pub run: crate::report::RunInfo,
    /// One row per case and size.
    pub cases: Vec<PingpongRecord>,
    /// concord p50 / floor p50 at 64 B; null when either is missing.
    pub ratio_p50_vs_floor_64: Option<f64>,
    /// concord p99 / floor p99 at 64 B; null when either is missing.
    pub ratio_p99_vs_floor_64: Option<f64>,
    /// Heap allocations per message in concord's 64 B steady state; null when
    /// concord's case did not run at 64 B.
    pub allocs_per_msg: Option<f64>,
    /// The same for the floor (expected 0), for comparison.
    pub floor_allocs_per_msg: Option<f64>,
    /// Names (`name@size`) of the cases that failed.
    pub failures: Vec<String>,
}

impl PingpongReport {
    /// Derives the ratios and failure list from the rows.
    #[must_use]
    pub fn new(run: crate::report::RunInfo, cases: Vec<PingpongRecord>) -> Self {
        let find = |name: &str| {
            cases
                .iter()
                .find(|c| c.name == name && c.size == 64 && c.status == Status::Ok)
        };
        let ratio = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) if b > 0 => Some(a as f64 / b as f64),
            _ => None,
        };
        let concord = find(crate::concord_case::NAME);
        let floor = find("floor");
        let ratio_p50_vs_floor_64 =
            ratio(concord.and_then(|c| c.p50_ns), floor.and_then(|c| c.p50_ns));
        let ratio_p99_vs_floor_64 =
            ratio(concord.and_then(|c| c.p99_ns), floor.and_then(|c| c.p99_ns));
        let failures = cases
            .iter()
            .filter(|c| c.status == Status::Failed)
            .map(|c| format!("{}@{}", c.name, c.size))
            .collect();
        PingpongReport {
            bench: "pingpong",
            run,
            ratio_p50_vs_floor_64,
            ratio_p99_vs_floor_64,
            allocs_per_msg: concord.and_then(|c| c.allocs_per_msg),
            floor_allocs_per_msg: floor.and_then(|c| c.allocs_per_msg),
            failures,
            cases,
        }
    }

    /// The table printed to stdout.
    #[must_use]
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let us = |v: Option<u64>| v.map_or("-".to_string(), |n| format!("{:.2}", n as f64 / 1e3));
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{:<14} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10} {:>7}  status",
            "case", "size", "p50 us", "p99 us", "p99.9 us", "max us", "n", "allocs/msg", "allocs"
        );
        for c in &self.cases {
            let status = match c.status {
                Status::Ok if c.pinned == Some(false) => "ok (NOT PINNED)".to_string(),
                Status::Ok => match c.straddled_frames {
                    Some(n) => format!("ok (straddled frames copied: {n})"),
                    None => "ok".to_string(),
                },
                Status::Unavailable => format!(
                    "unavailable: {}",
                    c.error.as_deref().unwrap_or("no reason given")
                ),
                Status::Failed => format!(
                    "FAILED: {}",
                    c.error.as_deref().unwrap_or("no reason given")
                ),
            };
            let _ = writeln!(
                t,
                "{:<14} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10} {:>7}  {}",
                c.name,
                c.size,
                us(c.p50_ns),
                us(c.p99_ns),
                us(c.p999_ns),
                us(c.max_ns),
                c.round_trips.map_or("-".into(), |n| n.to_string()),
                c.allocs_per_msg.map_or("-".into(), |a| format!("{a:.3}")),
                c.allocs_total.map_or("-".into(), |a| a.to_string()),
                status
            );
        }
        let r = |v: Option<f64>| {
            v.map_or("null (concord or floor missing)".into(), |x| {
                format!("{x:.3}")
            })
        };
        let _ = writeln!(
            t,
            "concord/floor p50 at 64 B: {}",
            r(self.ratio_p50_vs_floor_64)
        );
        let _ = writeln!(
            t,
            "concord/floor p99 at 64 B: {}",
            r(self.ratio_p99_vs_floor_64)
        );
        let _ = writeln!(
            t,
            "allocs/msg at 64 B: concord {}, floor {}",
            self.allocs_per_msg
                .map_or("null".into(), |a| format!("{a:.3}")),
            self.floor_allocs_per_msg
                .map_or("null".into(), |a| format!("{a:.3}"))
        );
        if !self.failures.is_empty() {
            let _ = writeln!(
                t,
                "!!! {} case(s) FAILED: {}",
                self.failures.len(),
                self.failures.join(", ")
            );
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(r: &CaseResult, iters: u64) {
        assert_eq!(r.round_trips, iters);
        assert_eq!(r.summary.count, iters);
        let s = r.summary;
        assert!(s.min_ns > 0);
        assert!(s.min_ns <= s.p50_ns && s.p50_ns <= s.p99_ns);
        assert!(s.p99_ns <= s.p999_ns && s.p999_ns <= s.max_ns);
        assert!(
            r.allocs.is_some(),
            "lib tests install the counting allocator"
        );
    }

    #[test]
    fn floor_runs_and_counts() {
        for size in [8, 64, 4096] {
            let r = floor(size, 20, 200).unwrap();
            check(&r, 200);
        }
    }

    #[test]
    fn blocking_runs_and_counts() {
        let r = blocking(64, 20, 200).unwrap();
        check(&r, 200);
        let r = blocking(70_000, 2, 20).unwrap();
        check(&r, 20);
    }

    #[test]
    fn too_small_size_is_rejected() {
        let e = floor(4, 1, 1).unwrap_err();
        assert!(format!("{e:#}").contains("minimum"), "{e:#}");
    }

    #[test]
    fn out_of_order_echo_is_detected() {
        let mut buf = [0u8; 64];
        stamp(&mut buf, 41);
        assert_eq!(seq_of(&buf), 41);
        assert!(expect_seq(&buf, 41).is_ok());
        let e = expect_seq(&buf, 42).unwrap_err();
        assert!(format!("{e}").contains("expected sequence 42, got 41"));
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

    #[test]
    fn report_ratios_and_json_shape() {
        let mk = |p50| CaseResult {
            summary: Summary {
                count: 10,
                min_ns: p50 / 2,
                p50_ns: p50,
                p99_ns: p50 * 2,
                p999_ns: p50 * 3,
                max_ns: p50 * 4,
                mean_ns: p50 as f64,
            },
            round_trips: 10,
            allocs: Some(AllocSnapshot {
                allocs: 5,
                ..Default::default()
            }),
            pinned: true,
            straddled_frames: None,
        };
        let rows = vec![
            PingpongRecord::new("concord", 64, &Ok(mk(6000))),
            PingpongRecord::new("floor", 64, &Ok(mk(5000))),
            PingpongRecord::new("glommio", 64, &Err(anyhow::anyhow!("memlock too low"))),
        ];
        let rep = PingpongReport::new(crate::report::RunInfo::collect(&"args"), rows);
        assert_eq!(rep.ratio_p50_vs_floor_64, Some(1.2));
        assert_eq!(rep.allocs_per_msg, Some(0.25));
        assert_eq!(rep.failures, vec!["glommio@64".to_string()]);
        let v = serde_json::to_value(&rep).unwrap();
        for key in [
            "cases",
            "ratio_p50_vs_floor_64",
            "allocs_per_msg",
            "floor_allocs_per_msg",
            "run",
            "failures",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        let case = &v["cases"][0];
        for key in [
            "name", "size", "p50_ns", "p99_ns", "p999_ns", "max_ns", "status",
        ] {
            assert!(case.get(key).is_some(), "case missing {key}");
        }
        assert_eq!(v["cases"][2]["status"], "failed");
        assert!(v["cases"][2]["p50_ns"].is_null());
        assert!(v["run"]["machine"]["nproc"].as_u64().unwrap() >= 1);
        let table = rep.table();
        assert!(table.contains("FAILED: memlock too low"), "{table}");
    }

    #[test]
    fn missing_concord_gives_null_ratio() {
        let rows = vec![
            PingpongRecord::new(
                "concord",
                64,
                &Err(anyhow::Error::new(crate::concord_case::Unavailable {
                    reason: "not yet",
                })),
            ),
            PingpongRecord::new("floor", 64, &floor(64, 5, 50)),
        ];
        let rep = PingpongReport::new(crate::report::RunInfo::collect(&"args"), rows);
        assert_eq!(rep.cases[0].status, Status::Unavailable);
        assert_eq!(rep.cases[1].status, Status::Ok);
        assert!(rep.ratio_p50_vs_floor_64.is_none());
        assert!(rep.allocs_per_msg.is_none());
        assert!(rep.failures.is_empty());
        let v = serde_json::to_value(&rep).unwrap();
        assert!(v["ratio_p50_vs_floor_64"].is_null());
        assert_eq!(v["cases"][0]["status"], "unavailable");
    }
}
