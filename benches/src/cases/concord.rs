//! concord's own case: the same ping-pong and stream over `concord_transport::Driver`.
//!
//! Same shape as the baselines: two threads pinned like the others, each
//! building its own [`Driver`] (it is `!Send`, one per shard) and polling it
//! the way a runtime shard does: ping-pong busy-polls; streaming parks when a
//! poll finds nothing to do, by default ([`StreamIdle`]). Ping-pong goes through
//! [`crate::harness::round_trip::measure_round_trips`], so its latencies and allocation
//! counts mean exactly what the baselines' do; the echo server replies from
//! inside the poll callback with [`Driver::send`]. The stream sender writes
//! frames in place with [`Driver::claim`] (the zero-copy path) and the receiver
//! checks every sequence number on the borrowed [`RecvFrame`](concord_transport::RecvFrame).
//!
//! [`Unavailable`](crate::harness::status::Unavailable) remains for builds where
//! concord's case cannot run; the binaries report it as "unavailable" with null
//! ratios, never made-up numbers.

use crate::harness::STALL_TIMEOUT;
use crate::harness::alloc_window::AllocWindow;
use crate::harness::pair::run_pair;
use crate::harness::result::{CaseResult, StreamResult};
use crate::harness::round_trip::measure_round_trips;
use crate::harness::seq::{expect_seq, seq_of, stamp};
use crate::harness::size::{STD_BUF, check_pingpong_size, check_stream_size};
use anyhow::{Context as _, anyhow, bail};
use concord_runtime::alloc::AllocSnapshot;
use concord_transport::{Claimed, ConnId, Driver, DriverConfig, Event, SendBuf, SendOutcome};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Name of concord's case in tables, JSON and `--cases`.
pub const NAME: &str = "concord";

const CLUSTER: u64 = 0xbe_4c;
const SERVER_NODE: u64 = 1;
const CLIENT_NODE: u64 = 2;

fn config(node_id: u64) -> DriverConfig {
    DriverConfig {
        node_id,
        cluster_id: CLUSTER,
        ..DriverConfig::default()
    }
}

/// How the stream case's two threads wait when a poll finds nothing to do
/// (`--concord-idle`). Pingpong always busy-polls: it is compared with a
/// busy-polled floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamIdle {
    /// Park in the kernel at the first poll that finds nothing, until the
    /// next completion (the runtime's `IdleStrategy::Park`). A thread waits
    /// exactly when the blocking std baseline would block. Default: on a
    /// shared machine it measured best, and a throughput stream has MiBs of
    /// socket and staging buffers to cover a wake-up (docs/DESIGN.md, 3).
    #[default]
    Park,
    /// Spin 50 us on empty polls, then park (the runtime's `SpinThenPark`).
    SpinThenPark,
    /// Never park (the runtime's `BusySpin`): only for cores nobody else wants.
    Spin,
}

/// Idle-poll bookkeeping: the clock is read only after many empty polls, so a
/// hot loop pays nothing, and a peer that stops answering fails the case
/// after [`STALL_TIMEOUT`] instead of hanging.
#[derive(Default)]
struct Idle {
    polls: u32,
    since: Option<Instant>,
    /// First empty poll of the current idle spell (spin-then-park only).
    spin_since: Option<Instant>,
}

/// [`StreamIdle::SpinThenPark`]'s spin.
const SPIN_BEFORE_PARK: Duration = Duration::from_micros(50);
/// Longest single park (a completion ends it sooner).
const PARK_MAX: Duration = Duration::from_millis(1);

impl Idle {
    const CHECK_EVERY: u32 = 1 << 12;
    /// Empty polls between clock reads while deciding whether to park.
    const PARK_CHECK_EVERY: u32 = 64;

    /// [`after_poll`](Idle::after_poll), then wait the `how` way when `d`
    /// had no work: parking gives the peer thread and everything else the
    /// core until `d`'s next completion, as a blocking socket does.
    fn after_poll_or_park(
        &mut self,
        d: &mut Driver,
        work: usize,
        how: StreamIdle,
        what: &str,
    ) -> anyhow::Result<()> {
        self.after_poll(work, what)?;
        if work > 0 {
            self.spin_since = None;
            return Ok(());
        }
        let park = match how {
            StreamIdle::Park => true,
            StreamIdle::Spin => false,
            StreamIdle::SpinThenPark => {
                self.polls.is_multiple_of(Self::PARK_CHECK_EVERY)
                    && self.spin_since.get_or_insert_with(Instant::now).elapsed()
                        >= SPIN_BEFORE_PARK
            }
        };
        if park {
            d.park(Some(PARK_MAX)).context("parking the driver")?;
        }
        Ok(())
    }

    #[inline]
    fn after_poll(&mut self, work: usize, what: &str) -> anyhow::Result<()> {
        if work > 0 {
            self.polls = 0;
            self.since = None;
            return Ok(());
        }
        self.polls = self.polls.wrapping_add(1);
        if self.polls.is_multiple_of(Self::CHECK_EVERY) {
            let since = *self.since.get_or_insert_with(Instant::now);
            if since.elapsed() > STALL_TIMEOUT {
                bail!("no progress for {STALL_TIMEOUT:?} while {what}");
            }
        }
        Ok(())
    }
}

/// Server side: a Driver listening on loopback; its address goes to the client.
fn listen(tx: &mpsc::Sender<SocketAddr>) -> anyhow::Result<Driver> {
    let mut d = Driver::new(config(SERVER_NODE)).context("creating the server Driver")?;
    let addr = d
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .context("listening on loopback")?;
    tx.send(addr)
        .map_err(|_| anyhow!("client thread went away"))?;
    Ok(d)
}

/// Client side: a Driver connected to the server, handshake done.
fn connect(rx: &mpsc::Receiver<SocketAddr>) -> anyhow::Result<(Driver, ConnId)> {
    let addr = rx
        .recv()
        .map_err(|_| anyhow!("the server Driver failed to start"))?;
    let mut d = Driver::new(config(CLIENT_NODE)).context("creating the client Driver")?;
    let conn = d
        .connect(addr)
        .with_context(|| format!("connecting to {addr}"))?;
    let mut up = false;
    let mut fault = None;
    let mut idle = Idle::default();
    while !up {
        let work = d.poll(&mut |_, ev| match ev {
            Event::Connected { .. } => up = true,
            Event::HandshakeFailed { reason, .. } | Event::Disconnected { reason, .. } => {
                fault = Some(anyhow::Error::new(reason));
            }
            _ => {}
        });
        if let Some(e) = fault.take() {
            return Err(e.context("handshake with the server failed"));
        }
        idle.after_poll(work, "connecting")?;
    }
    Ok((d, conn))
}

/// Closes `conn` and polls until the Goodbye is out (bounded), so the peer
/// sees an orderly close rather than a reset.
fn close(d: &mut Driver, conn: ConnId) -> anyhow::Result<()> {
    d.close(conn).context("closing the connection")?;
    let t = Instant::now();
    let mut gone = false;
    while !gone && t.elapsed() < Duration::from_secs(5) {
        d.poll(&mut |_, ev| {
            if matches!(ev, Event::Disconnected { .. }) {
                gone = true;
            }
        });
    }
    Ok(())
}

/// Ping-pong over concord's transport.
pub fn pingpong(size: usize, warmup: u64, iters: u64) -> anyhow::Result<CaseResult> {
    check_pingpong_size(size)?;
    let (tx, rx) = mpsc::channel();
    let pair = run_pair(
        move || echo_server(&tx, size),
        move || {
            let (mut d, conn) = connect(&rx)?;
            let mut out = vec![0u8; size];
            for (i, b) in out.iter_mut().enumerate().skip(8) {
                *b = i as u8;
            }
            let m =
                measure_round_trips(warmup, iters, |seq| round_trip(&mut d, conn, &mut out, seq))?;
            let straddled = d.stats().straddled_frames;
            close(&mut d, conn)?;
            Ok((m, straddled))
        },
    )?;
    let (echoed, server_straddled) = pair.server;
    let (m, client_straddled) = pair.client;
    if echoed != warmup + iters {
        bail!(
            "server echoed {echoed} messages, client sent {}",
            warmup + iters
        );
    }
    Ok(CaseResult {
        summary: m.hist.summary(),
        round_trips: m.hist.len(),
        allocs: m.allocs,
        pinned: pair.pinned,
        straddled_frames: Some(server_straddled + client_straddled),
    })
}

/// Sends message `seq` and spins until its echo is back.
#[inline]
fn round_trip(d: &mut Driver, conn: ConnId, out: &mut [u8], seq: u64) -> anyhow::Result<()> {
    stamp(out, seq);
    let mut idle = Idle::default();
    loop {
        match d.send(conn, out)? {
            SendOutcome::Queued => break,
            // One message in flight cannot fill a queue, but if it ever does the
            // answer is to let the driver drain and retry, not to fail.
            SendOutcome::BackPressured => {
                let work = d.poll(&mut |_, _| {});
                idle.after_poll(work, "waiting for send queue room")?;
            }
        }
    }
    let size = out.len();
    let mut echo: Option<(u64, usize)> = None;
    let mut gone = false;
    while echo.is_none() {
        let work = d.poll(&mut |_, ev| match ev {
            Event::Frame { frame, .. } => echo = Some((seq_of(&frame), frame.len())),
            Event::Disconnected { .. } => gone = true,
            _ => {}
        });
        if gone {
            bail!("server disconnected while waiting for echo {seq}");
        }
        idle.after_poll(work, "waiting for an echo")?;
    }
    let (got, len) = echo.unwrap_or_default();
    if len != size {
        bail!("echo {seq} has {len} bytes, sent {size}");
    }
    if got != seq {
        bail!("message out of order: expected sequence {seq}, got {got}");
    }
    Ok(())
}

/// Echoes every frame back from inside the poll callback until the client
/// disconnects. Returns (messages echoed, frames that straddled buffers).
fn echo_server(tx: &mpsc::Sender<SocketAddr>, size: usize) -> anyhow::Result<(u64, u64)> {
    let mut d = listen(tx)?;
    let mut seq = 0u64;
    let mut fault: Option<anyhow::Error> = None;
    // A frame whose echo was back-pressured: kept (its receive buffer with it)
    // and retried after the next poll. Cannot happen with one message in flight.
    let mut held = None;
    let mut done = false;
    let mut connected = false;
    let mut idle = Idle::default();
    while !done {
        let work = d.poll(&mut |d, ev| match ev {
            Event::Connected { .. } => connected = true,
            Event::Frame { conn, frame } => {
                if fault.is_some() {
                    return;
                }
                if frame.len() != size {
                    fault = Some(anyhow!(
                        "frame {seq} has {} bytes, expected {size}",
                        frame.len()
                    ));
                    return;
                }
                if let Err(e) = expect_seq(&frame, seq) {
                    fault = Some(e.context("server"));
                    return;
                }
                seq += 1;
                match d.send(conn, &frame) {
                    Ok(SendOutcome::Queued) => {}
                    Ok(SendOutcome::BackPressured) => held = Some((conn, frame)),
                    Err(e) => fault = Some(anyhow::Error::new(e).context("echo send")),
                }
            }
            Event::Disconnected { .. } => done = true,
            Event::HandshakeFailed { reason, .. } => {
                fault = Some(anyhow::Error::new(reason).context("client handshake failed"));
            }
            Event::Writable { .. }
            | Event::PoolWritable
            | Event::RecvPressure { .. }
            | Event::RecvResumed { .. } => {}
        });
        if let Some(e) = fault.take() {
            return Err(e);
        }
        if let Some((conn, frame)) = held.take() {
            match d.send(conn, &frame).context("echo send")? {
                SendOutcome::Queued => {}
                SendOutcome::BackPressured => held = Some((conn, frame)),
            }
        }
        // Before the client connects, waiting is not a stall of ours to judge
        // (the client's own connect loop times out and disconnects).
        if connected {
            idle.after_poll(work, "waiting for the next request")?;
        }
    }
    Ok((seq, d.stats().straddled_frames))
}

/// One-way streaming over concord's transport.
///
/// The sender claims space in the connection's staging chunk, writes the
/// sequence number in place and commits (no payload copy in user space), for
/// `duration`; then an empty frame marks the end. Both sides wait as `idle`
/// says when a poll finds nothing to do (by default they park at once, where
/// the std baseline would block). The receiver checks length
/// and sequence of every frame and answers the end marker with the count it
/// received, which the sender compares with what it sent.
pub fn stream(size: usize, duration: Duration, idle: StreamIdle) -> anyhow::Result<StreamResult> {
    check_stream_size(size)?;
    let (tx, rx) = mpsc::channel();
    let pair = run_pair(
        move || stream_receiver(&tx, size, idle),
        move || stream_sender(&rx, size, duration, idle),
    )?;
    let (received, elapsed, rx_straddled) = pair.server;
    let SenderEnd {
        sent,
        acked,
        straddled: tx_straddled,
        allocs,
        steady_messages,
    } = pair.client;
    if received != sent || acked != sent {
        bail!("sent {sent} messages, {received} arrived, receiver acknowledged {acked}");
    }
    Ok(StreamResult {
        messages: received,
        payload_bytes: received * size as u64,
        elapsed,
        allocs,
        steady_messages,
        pinned: pair.pinned,
        straddled_frames: Some(rx_straddled + tx_straddled),
    })
}

/// Frame bytes the sender queues between polls: the same 64 KiB the std
/// baseline's `BufWriter` gathers per syscall, so both batch alike.
const SEND_BATCH_BYTES: usize = STD_BUF;

/// Messages queued between polls for `size`-byte payloads (at least one).
fn send_batch(size: usize) -> u64 {
    (SEND_BATCH_BYTES / (size + concord_transport::frame::HEADER_LEN)).max(1) as u64
}

/// What the stream sender reports when its stream is done.
struct SenderEnd {
    /// Messages sent.
    sent: u64,
    /// The count the receiver acknowledged.
    acked: u64,
    /// Frames that straddled the sender's receive buffers.
    straddled: u64,
    /// Allocator diff over the steady part of the stream, if counting.
    allocs: Option<AllocSnapshot>,
    /// Messages sent in that part.
    steady_messages: u64,
}

fn stream_sender(
    rx: &mpsc::Receiver<SocketAddr>,
    size: usize,
    duration: Duration,
    how: StreamIdle,
) -> anyhow::Result<SenderEnd> {
    let (mut d, conn) = connect(rx)?;
    let max = d.config().max_frame_len as usize;
    if size > max {
        bail!("message size {size} exceeds the transport's max_frame_len {max}");
    }
    // Frames that fit a staging chunk are claimed and written in place; larger
    // ones go through a pooled SendBuf (filled in place too).
    let large = size + concord_transport::frame::HEADER_LEN > d.config().send_chunk_size;
    let mut held: Option<SendBuf> = None;
    let mut sent = 0u64;
    let mut gone = false;
    let mut idle = Idle::default();
    let batch = send_batch(size);
    let mut window = AllocWindow::new(duration);
    let start = Instant::now();
    loop {
        let queued = if large {
            offer_pooled(&mut d, conn, size, sent, &mut held)?
        } else {
            match d.claim(conn, size).context("claiming send space")? {
                Claimed::Claim(mut c) => {
                    stamp(c.payload_mut(), sent);
                    c.commit();
                    true
                }
                Claimed::BackPressured => false,
            }
        };
        if queued {
            sent += 1;
            if sent.is_multiple_of(batch) {
                let work = d.poll(&mut |_, ev| gone |= matches!(ev, Event::Disconnected { .. }));
                let elapsed = start.elapsed();
                window.at_clock_check(elapsed, sent);
                if elapsed >= duration {
                    break;
                }
                idle.after_poll(work.max(1), "streaming")?;
            }
        } else {
            let work = d.poll(&mut |_, ev| gone |= matches!(ev, Event::Disconnected { .. }));
            idle.after_poll_or_park(&mut d, work, how, "waiting for send queue room")?;
        }
        if gone {
            bail!("receiver disconnected after {sent} messages");
        }
    }
    let (allocs, steady_messages) = window.close(sent);
    // End marker: an empty frame (data frames are at least 8 bytes).
    loop {
        match d.send(conn, &[]).context("sending end marker")? {
            SendOutcome::Queued => break,
            SendOutcome::BackPressured => {
                let work = d.poll(&mut |_, ev| gone |= matches!(ev, Event::Disconnected { .. }));
                if gone {
                    bail!("receiver disconnected before the end marker");
                }
                idle.after_poll(work, "sending the end marker")?;
            }
        }
    }
    let mut acked: Option<anyhow::Result<u64>> = None;
    while acked.is_none() {
        let work = d.poll(&mut |_, ev| match ev {
            Event::Frame { frame, .. } if frame.len() == 8 => acked = Some(Ok(seq_of(&frame))),
            Event::Frame { frame, .. } => {
                acked = Some(Err(anyhow!(
                    "ack frame has {} bytes, expected 8",
                    frame.len()
                )));
            }
            Event::Disconnected { .. } => {
                acked = Some(Err(anyhow!("receiver disconnected before acknowledging")));
            }
            _ => {}
        });
        idle.after_poll(work, "waiting for the receiver's count")?;
    }
    let acked = acked.unwrap_or_else(|| Err(anyhow!("no acknowledgement")))?;
    let straddled = d.stats().straddled_frames;
    close(&mut d, conn)?;
    Ok(SenderEnd {
        sent,
        acked,
        straddled,
        allocs,
        steady_messages,
    })
}

/// Offers message `seq` through a pooled [`SendBuf`]. `Ok(false)` is
/// back-pressure (pool exhausted or queue full); a back-pressured buffer is
/// kept in `held` and offered again, so its sequence number is not lost.
fn offer_pooled(
    d: &mut Driver,
    conn: ConnId,
    size: usize,
    seq: u64,
    held: &mut Option<SendBuf>,
) -> anyhow::Result<bool> {
    let buf = match held.take() {
        Some(b) => b,
        None => {
            let Some(mut b) = d.alloc_buf(size) else {
                return Ok(false);
            };
            let payload = b
                .payload_mut()
                .ok_or_else(|| anyhow!("a fresh pooled buffer is already frozen"))?;
            stamp(payload, seq);
            b
        }
    };
    match d.send_buf(conn, &buf).context("sending a pooled buffer")? {
        SendOutcome::Queued => Ok(true),
        SendOutcome::BackPressured => {
            *held = Some(buf);
            Ok(false)
        }
    }
}

/// Returns (messages received, first frame to end marker, straddled frames).
fn stream_receiver(
    tx: &mpsc::Sender<SocketAddr>,
    size: usize,
    how: StreamIdle,
) -> anyhow::Result<(u64, Duration, u64)> {
    let mut d = listen(tx)?;
    let mut seq = 0u64;
    let mut start: Option<Instant> = None;
    let mut end: Option<(ConnId, Instant)> = None;
    let mut fault: Option<anyhow::Error> = None;
    let mut connected = false;
    let mut idle = Idle::default();
    while end.is_none() {
        let work = d.poll(&mut |_, ev| match ev {
            Event::Connected { .. } => connected = true,
            Event::Frame { conn, frame } => {
                if fault.is_some() || end.is_some() {
                    return;
                }
                start.get_or_insert_with(Instant::now);
                if frame.is_empty() {
                    end = Some((conn, Instant::now()));
                } else if frame.len() != size {
                    fault = Some(anyhow!(
                        "frame {seq} has {} bytes, expected {size}",
                        frame.len()
                    ));
                } else if seq_of(&frame) != seq {
                    fault = expect_seq(&frame, seq).err().map(|e| e.context("receiver"));
                } else {
                    seq += 1;
                }
            }
            Event::Disconnected { .. } => {
                fault.get_or_insert_with(|| anyhow!("sender disconnected before the end marker"));
            }
            Event::HandshakeFailed { reason, .. } => {
                fault = Some(anyhow::Error::new(reason).context("sender handshake failed"));
            }
            Event::Writable { .. }
            | Event::PoolWritable
            | Event::RecvPressure { .. }
            | Event::RecvResumed { .. } => {}
        });
        if let Some(e) = fault.take() {
            return Err(e);
        }
        if connected {
            idle.after_poll_or_park(&mut d, work, how, "receiving the stream")?;
        }
    }
    let Some((conn, t_end)) = end else {
        bail!("stream ended without an end marker");
    };
    let elapsed = t_end.duration_since(start.unwrap_or(t_end));
    let mut idle = Idle::default();
    loop {
        match d
            .send(conn, &seq.to_le_bytes())
            .context("sending the count")?
        {
            SendOutcome::Queued => break,
            SendOutcome::BackPressured => {
                let work = d.poll(&mut |_, _| {});
                idle.after_poll(work, "sending the count")?;
            }
        }
    }
    // Stay until the sender closes, so the count is flushed before we drop.
    let mut done = false;
    while !done {
        let work = d.poll(&mut |_, ev| done |= matches!(ev, Event::Disconnected { .. }));
        idle.after_poll(work, "waiting for the sender to close")?;
    }
    Ok((seq, elapsed, d.stats().straddled_frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concord_pingpong_runs_and_counts() {
        let r = pingpong(64, 20, 200).unwrap();
        assert_eq!(r.round_trips, 200);
        assert_eq!(r.summary.count, 200);
        assert!(r.summary.min_ns <= r.summary.p50_ns && r.summary.p50_ns <= r.summary.max_ns);
        assert!(r.straddled_frames.is_some());
    }

    #[test]
    fn concord_stream_delivers_everything() {
        // 1 MiB exceeds a staging chunk: the pooled SendBuf path.
        for size in [8, 4096, 65536, 1 << 20] {
            let r = stream(size, Duration::from_millis(30), StreamIdle::Park).unwrap();
            assert!(r.messages >= send_batch(size), "{size}: {}", r.messages);
            assert_eq!(r.payload_bytes, r.messages * size as u64);
            assert!(
                r.allocs.is_some(),
                "lib tests install the counting allocator"
            );
        }
        // The other idle strategies deliver everything too.
        for idle in [StreamIdle::SpinThenPark, StreamIdle::Spin] {
            let r = stream(65536, Duration::from_millis(30), idle).unwrap();
            assert!(r.messages >= 1, "{idle:?}: {}", r.messages);
            assert_eq!(r.payload_bytes, r.messages * 65536);
        }
    }

    #[test]
    fn bad_sizes_are_refused_before_any_socket() {
        assert!(pingpong(4, 1, 1).is_err());
        assert!(stream(4, Duration::from_millis(1), StreamIdle::Park).is_err());
    }
}
