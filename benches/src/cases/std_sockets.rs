//! The std-socket baselines: ping-pong over busy-polled non-blocking sockets
//! (`floor`, the best a socket-based transport can do here) and blocking ones
//! (`blocking`), and one-way streaming over blocking sockets with 64 KiB
//! userspace batching (`std`).
//!
//! Stream frame: a 4-byte little-endian payload length, then the payload,
//! whose first 8 bytes are the sequence number. Throughput counts payload
//! bytes only, and the clock runs on the receiver from its first byte to the
//! sender's close, so it measures what was delivered, not what sat in socket
//! buffers.

use crate::harness::STALL_TIMEOUT;
use crate::harness::alloc_window::AllocWindow;
use crate::harness::pair::{CLIENT_CORE, loopback_pair, run_pair};
use crate::harness::result::{CaseResult, StreamResult};
use crate::harness::round_trip::{Measured, measure_round_trips};
use crate::harness::seq::{expect_seq, stamp};
use crate::harness::size::{STD_BUF, check_pingpong_size, check_stream_size};
use anyhow::{Context as _, bail};
use concord_runtime::alloc::AllocSnapshot;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// Name of the busy-polled ping-pong baseline.
pub const FLOOR: &str = "floor";
/// Name of the blocking ping-pong baseline.
pub const BLOCKING: &str = "blocking";
/// Name of the stream baseline.
pub const STD: &str = "std";

/// The stream sender reads the clock once per this many messages.
const CLOCK_EVERY: u64 = 64;

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

/// The measuring side of a std-socket ping-pong over `s`: `warmup` then
/// `iters` round trips of `size` bytes, then a clean shutdown of the write
/// side so the echoing side ([`echo`]) sees the end.
pub fn ping(
    mode: StdMode,
    mut s: TcpStream,
    size: usize,
    warmup: u64,
    iters: u64,
) -> anyhow::Result<Measured> {
    check_pingpong_size(size)?;
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
}

/// The echoing side of a std-socket ping-pong over `s`, until the measuring
/// side ([`ping`]) closes: returns the number of messages echoed.
pub fn echo(mode: StdMode, s: TcpStream, size: usize) -> anyhow::Result<u64> {
    check_pingpong_size(size)?;
    std_echo(mode, s, size)
}

/// A std-socket ping-pong case (the floor or the blocking baseline).
pub fn std_pingpong(
    mode: StdMode,
    size: usize,
    warmup: u64,
    iters: u64,
) -> anyhow::Result<CaseResult> {
    check_pingpong_size(size)?;
    let (client, server) = loopback_pair()?;
    let pair = run_pair(
        move || std_echo(mode, server, size),
        move || ping(mode, client, size, warmup, iters),
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

/// Receives frames until the sender closes; returns (messages, elapsed).
///
/// Generic over the reader so tests can feed it corrupt streams.
pub fn receive_frames(r: &mut impl BufRead, size: usize) -> anyhow::Result<(u64, Duration)> {
    let mut payload = vec![0u8; size];
    let mut seq = 0u64;
    let mut start: Option<Instant> = None;
    loop {
        // A clean end is EOF exactly at a frame boundary.
        if r.fill_buf().context("receiving")?.is_empty() {
            break;
        }
        start.get_or_insert_with(Instant::now);
        let mut hdr = [0u8; 4];
        r.read_exact(&mut hdr)
            .with_context(|| format!("frame {seq}: truncated length prefix"))?;
        let len = u32::from_le_bytes(hdr) as usize;
        if len != size {
            bail!("frame {seq}: length prefix says {len} bytes, expected {size}");
        }
        r.read_exact(&mut payload)
            .with_context(|| format!("frame {seq}: truncated payload"))?;
        expect_seq(&payload, seq).context("receiver")?;
        seq += 1;
    }
    let elapsed = start.map_or(Duration::ZERO, |s| s.elapsed());
    Ok((seq, elapsed))
}

/// What [`send_frames`] did.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Frames sent.
    pub messages: u64,
    /// Allocator diff over the steady part of the stream (see
    /// [`crate::harness::alloc_window`]), to the final flush, if the counting
    /// allocator is installed.
    pub allocs: Option<AllocSnapshot>,
    /// Frames sent inside that window.
    pub steady_messages: u64,
}

/// Sends frames for `duration` (a multiple of 64 frames, at least 64).
///
/// Header and payload sit in one buffer so each frame is one `write_all`: with
/// two, a frame larger than a `BufWriter`'s buffer would cost an extra
/// 4-byte syscall for the header.
pub fn send_frames(w: &mut impl Write, size: usize, duration: Duration) -> io::Result<Sent> {
    let len = u32::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut frame = vec![0u8; 4 + size];
    frame[..4].copy_from_slice(&len.to_le_bytes());
    for (i, b) in frame.iter_mut().enumerate().skip(12) {
        *b = i as u8;
    }
    let mut window = AllocWindow::new(duration);
    let start = Instant::now();
    let mut seq = 0u64;
    loop {
        stamp(&mut frame[4..], seq);
        w.write_all(&frame)?;
        seq += 1;
        if seq.is_multiple_of(CLOCK_EVERY) {
            let elapsed = start.elapsed();
            window.at_clock_check(elapsed, seq);
            if elapsed >= duration {
                break;
            }
        }
    }
    w.flush()?;
    let (allocs, steady_messages) = window.close(seq);
    Ok(Sent {
        messages: seq,
        allocs,
        steady_messages,
    })
}

/// The std-socket stream baseline: blocking sockets, TCP_NODELAY, a 64 KiB
/// `BufWriter` and `BufReader` so small frames are batched into large syscalls
/// (what a careful std program would do; frames larger than the buffer bypass
/// it).
pub fn std_stream(size: usize, duration: Duration) -> anyhow::Result<StreamResult> {
    check_stream_size(size)?;
    let (sender, receiver) = loopback_pair()?;
    for s in [&sender, &receiver] {
        s.set_read_timeout(Some(STALL_TIMEOUT))?;
        s.set_write_timeout(Some(STALL_TIMEOUT))?;
    }
    // The sender is the client (core 0), the receiver the server (core 1).
    debug_assert_eq!(CLIENT_CORE, 0);
    let pair = run_pair(
        move || {
            let mut r = BufReader::with_capacity(STD_BUF, receiver);
            receive_frames(&mut r, size)
        },
        move || {
            let mut w = BufWriter::with_capacity(STD_BUF, sender);
            let sent = send_frames(&mut w, size, duration).context("sending")?;
            let s = w.into_inner().map_err(|e| e.into_error())?;
            s.shutdown(Shutdown::Write).context("closing sender")?;
            Ok(sent)
        },
    )?;
    let (received, elapsed) = pair.server;
    if received != pair.client.messages {
        bail!(
            "sent {} messages but {received} arrived",
            pair.client.messages
        );
    }
    Ok(StreamResult {
        messages: received,
        payload_bytes: received * size as u64,
        elapsed,
        allocs: pair.client.allocs,
        steady_messages: pair.client.steady_messages,
        pinned: pair.pinned,
        straddled_frames: None,
    })
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

    fn frames(size: usize, seqs: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        for &s in seqs {
            out.extend_from_slice(&(size as u32).to_le_bytes());
            let mut p = vec![0u8; size];
            stamp(&mut p, s);
            out.extend_from_slice(&p);
        }
        out
    }

    #[test]
    fn std_stream_delivers_everything_in_order() {
        for size in [8, 64, 65536] {
            let r = std_stream(size, Duration::from_millis(30)).unwrap();
            assert!(r.messages >= CLOCK_EVERY, "sent at least one clock batch");
            assert_eq!(r.payload_bytes, r.messages * size as u64);
            assert!(
                r.allocs.is_some(),
                "lib tests install the counting allocator"
            );
        }
    }

    #[test]
    fn send_then_receive_round_trips_through_memory() {
        let mut buf = Vec::new();
        let sent = send_frames(&mut buf, 16, Duration::ZERO).unwrap();
        assert_eq!(sent.messages, CLOCK_EVERY);
        let (got, _) = receive_frames(&mut &buf[..], 16).unwrap();
        assert_eq!(got, sent.messages);
    }

    #[test]
    fn receiver_rejects_gaps_bad_lengths_and_truncation() {
        let gap = frames(16, &[0, 1, 3]);
        let e = receive_frames(&mut &gap[..], 16).unwrap_err();
        assert!(
            format!("{e:#}").contains("expected sequence 2, got 3"),
            "{e:#}"
        );

        let wrong_len = frames(24, &[0]);
        let e = receive_frames(&mut &wrong_len[..], 16).unwrap_err();
        assert!(format!("{e:#}").contains("length prefix says 24"), "{e:#}");

        let mut cut = frames(16, &[0, 1]);
        cut.truncate(cut.len() - 3);
        let e = receive_frames(&mut &cut[..], 16).unwrap_err();
        assert!(
            format!("{e:#}").contains("frame 1: truncated payload"),
            "{e:#}"
        );

        let (n, _) = receive_frames(&mut &[][..], 16).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn stream_sizes_are_checked() {
        use crate::harness::size::STREAM_MAX_SIZE;
        assert!(std_stream(4, Duration::from_millis(1)).is_err());
        assert!(std_stream(STREAM_MAX_SIZE + 1, Duration::from_millis(1)).is_err());
    }
}
